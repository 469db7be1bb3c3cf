package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/syngate/syngate/control"
)

func TestPrintStatusAndFlows(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	prev := &control.Status{PID: 9, Time: t0, XDP: map[string]uint64{"tx_synack_cookie": 100},
		Services: []control.Service{{Name: "web", Counters: control.Counters{SynReceived: 10, SynAcks: 10, AcksValidated: 4, Spliced: 4}}}}
	cur := &control.Status{
		Version: "1.0", PID: 9, Started: t0.Add(-time.Hour), Time: t0.Add(2 * time.Second),
		Interfaces: []control.Interface{{Name: "eth0", XDPMode: "native", Datapath: "tc", Sockets: []control.Socket{{Queue: 0, RxRingFull: 3}, {Queue: 1, RxRingFull: 4}}}},
		FlowTable:  control.FlowTable{Entries: 8, Limit: 16},
		XDP:        map[string]uint64{"tx_synack_cookie": 2100},
		Services: []control.Service{{
			Name: "web", Listen: "192.0.2.10:80", CookiePolicy: "auto", CookieMode: "cookies",
			Queues:   control.Queues{Syn: 4096, SynLimit: 4096, Accept: 1, AcceptLimit: 1024},
			Counters: control.Counters{SynReceived: 30, SynAcks: 30, AcksValidated: 10, Spliced: 8, BackendFailures: map[string]uint64{"timeout": 2}},
			Conns:    control.Conns{Opening: 1, Spliced: 4},
			Backends: []control.Backend{{Addr: "10.0.0.5:8080", Source: "10.0.0.1", Health: "failing", LastProbe: t0,
				ProbeError: "refused", LastFailure: t0, LastFailureError: "refused", Connects: 8, ConnectSeconds: 0.008,
				LastLegFailure: t0.Add(time.Second), LastLegFailureReason: "timeout"}},
		}},
	}
	control.ComputeRates(prev, cur)
	var b bytes.Buffer
	printStatus(&b, cur)
	out := b.String()
	for _, want := range []string{
		"syngate 1.0, pid 9, up 1h0m2s",
		"interface eth0: xdp native, datapath tc, 2 af_xdp sockets, drops: rx 0, rx ring full 7, fill ring empty 0",
		"flow table: 8 of 16 entries (50.0%)",
		"1000 cookie SYN-ACKs/s in XDP",
		"web      192.0.2.10:80  auto/cookies  4096/4096  1/1024    10.0   10.0       3.0    2.0       1        4",
		"10.0.0.5:8080  web      10.0.0.1  failing  2s ago",
		"1ms", "timeout 2 (last: timeout 1s ago)", "2s ago: refused",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	printFlows(&b, &control.FlowList{Total: 2, Flows: []control.Flow{{
		Service: "web", Client: "192.0.2.7:40000", Listen: "192.0.2.10:80", Source: "10.0.0.1:16384", Backend: "10.0.0.5:8080",
		State: "established", Created: t0.Add(-90 * time.Second),
		ToBackend: control.FlowDir{Packets: 3, Bytes: 200, LastSeen: t0.Add(-5 * time.Second)},
		ToClient:  control.FlowDir{Packets: 4, Bytes: 3000, LastSeen: t0.Add(-2 * time.Second)},
	}, {Service: "web", Client: "192.0.2.8:40001", State: "opening", Created: t0}}}, t0)
	out = b.String()
	for _, want := range []string{
		"web      192.0.2.7:40000  192.0.2.10:80  10.0.0.1:16384  10.0.0.5:8080  established  1m30s  3          200         4          3000        2s",
		"opening", "2 flows",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("flows lack %q:\n%s", want, out)
		}
	}
	b.Reset()
	printFlows(&b, &control.FlowList{Total: 5000, Flows: []control.Flow{{Service: "web", Created: t0}}}, t0)
	if !strings.Contains(b.String(), "1 of 5000 flows (narrow with") {
		t.Errorf("truncated list:\n%s", b.String())
	}
}
