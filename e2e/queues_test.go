package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/syngate/syngate/loadgen"
)

// TestMultiQueue runs a gateway on veths with 4 queues on the XDP data path
// (the TC one has one ring per interface): it opens one AF_XDP socket per
// queue, pins each loop to a CPU, and 400 connections (spread over the
// queues by the client's transmit-queue hash) all complete, whichever
// queue their SYN, ACK and the backend's SYN-ACK arrive on.
func TestMultiQueue(t *testing.T) {
	o := labOptions{queues: 4, offloadsOff: true}
	top := newLab(t, o)
	srv, err := loadgen.Serve(top.Backend, netip.AddrPortFrom(backendAddr(top), backendPort), loadgen.HTTPishHandler)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	g := startSyngate(t, top, o)
	rep, err := loadgen.Run(context.Background(), loadgen.Config{
		From: top.Client, Target: netip.AddrPortFrom(top.VIP4, servicePort),
		Concurrency: 16, Count: 400, Timeout: 5 * time.Second, Exchange: loadgen.HTTPishExchange,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Successes != 400 {
		t.Errorf("%v (last error %q)", rep, rep.LastError)
	}
	logs := g.d.Logs()
	for q := range 4 {
		if !strings.Contains(logs, fmt.Sprintf("queue=%d mode=", q)) {
			t.Errorf("no AF_XDP socket on queue %d:\n%s", q, logs)
		}
	}
	if n := strings.Count(logs, "cpu_from="); n != 8 { // two interfaces, four queues each
		t.Errorf("%d receive loops placed on a CPU, want 8:\n%s", n, logs)
	}
	if strings.Contains(logs, "runs unpinned") {
		t.Errorf("a receive loop could not be pinned:\n%s", logs)
	}
	if got := g.metrics()[`syngate_connections_spliced_total{service="web"}`]; got != 400 {
		t.Errorf("spliced %v, want 400", got)
	}
}
