package proxy

import (
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/syngate/syngate/cookie"
	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/spec"
)

// TestMillionConns tracks a million spliced connections in the engine's
// table (each indexed by client tuple and backend leg, as a splice leaves
// it) and reports the process memory per connection; the default MaxConns
// takes them all and refuses the one past it. -short tracks a tenth.
func TestMillionConns(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n /= 10
	}
	svc := &service{Service: spec.Service{Backends: []spec.Backend{{Addr: backend, Weight: 1}}}}
	tab := newConnTable(n)
	now := time.Unix(0, 0)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	start := time.Now()
	for i := range n {
		ft := flow.Tuple{
			Client:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(1024+i%50000)),
			Service: vip,
		}
		c, created := tab.getOrCreate(svc, ft, now)
		if !created {
			t.Fatalf("connection %d refused", i)
		}
		c.source = netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, byte(i >> 22), byte(i >> 14)}), uint16(16384+i%16384))
		tab.setSource(c, legKey{source: c.source, backend: backend})
		tab.opened(c)
		c.state = stateSpliced
	}
	took := time.Since(start)
	after := heap()
	per := float64(after-before) / float64(n)
	t.Logf("%d connections tracked in %v; Go heap %.1f MiB, %.0f bytes per connection (conn %d bytes + two index entries)",
		n, took.Round(time.Millisecond), float64(after-before)/(1<<20), per, connSize())
	extra := flow.Tuple{Client: netip.MustParseAddrPort("10.255.255.255:1"), Service: vip}
	if c, _ := tab.getOrCreate(svc, extra, now); c != nil || tab.full.Load() != 1 {
		t.Errorf("connection past the bound: %v, refusals %d; want refused and counted", c, tab.full.Load())
	}
	if per > 4096 {
		t.Errorf("%.0f bytes per connection", per)
	}
	runtime.KeepAlive(tab)
}

func connSize() uintptr {
	var c conn
	return unsafe.Sizeof(c)
}

// liveFlows answers every lookup with a flow that just saw a packet, and
// counts the lookups.
type liveFlows struct {
	fakeFlows
	mono    time.Duration
	lookups atomic.Int64
}

func (f *liveFlows) LookupFlow(flow.Key) (flow.State, error) {
	f.lookups.Add(1)
	return flow.State{LastSeen: f.mono}, nil
}

// TestFlowScanPaced: the expiry scan of many connections is spread over
// time at flowScanRate connections per second (two lookups each), instead
// of reading every flow entry every flowScanInterval, and still visits
// every connection.
func TestFlowScanPaced(t *testing.T) {
	const n = 200_000
	flows := &liveFlows{mono: time.Hour}
	now := time.Unix(1_700_000_000, 0)
	jar, _ := cookie.NewJar([]byte("0123456789abcdef0123456789abcdef"), cookie.Config{})
	e, err := New(Config{
		Services: []spec.Service{{Name: "web", Listen: vip, Backends: []spec.Backend{{Addr: backend, Weight: 1}}, Sources: []netip.Addr{source},
			Cookies: spec.CookiesAuto, OnOverflow: spec.OverflowDrop, Limits: spec.Limits{MaxSynBacklog: 16, SynAckRetries: 5, Backlog: 8, Somaxconn: 128}}},
		Jar: jar, Datapath: flows, Sender: &fakeSender{ch: make(chan packet.Segment, 1)},
		Now: func() time.Time { return now }, Monotonic: func() time.Duration { return flows.mono },
	})
	if err != nil {
		t.Fatal(err)
	}
	svc := e.set.Load().order[0]
	for i := range n {
		ft := flow.Tuple{Client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 1024), Service: vip}
		c, _ := e.conns.getOrCreate(svc, ft, now)
		c.state, c.splicedAt = stateSpliced, now
		e.conns.opened(c)
	}
	start := now
	for range 40 { // 10 s of 250 ms ticks
		now = now.Add(250 * time.Millisecond)
		e.scanFlows(now)
	}
	checked := int(flows.lookups.Load() / 2)
	burst := flowScanRate * int(flowScanInterval/time.Second)
	if limit := burst + flowScanRate*int(now.Sub(start)/time.Second) + n/connShards*2; checked > limit {
		t.Errorf("%d connections checked in %v, want at most %d", checked, now.Sub(start), limit)
	}
	for range 80 { // a full pass completes
		now = now.Add(250 * time.Millisecond)
		e.scanFlows(now)
	}
	if checked := int(flows.lookups.Load() / 2); checked < n {
		t.Errorf("%d connections checked in %v, want all %d at least once", checked, now.Sub(start), n)
	}
}
