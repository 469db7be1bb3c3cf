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

// BenchmarkQueues measures one gateway with 1, 2 and 4 receive queues on
// its veths (one AF_XDP socket and one pinned engine loop per queue):
// handshakes/s (connect and close: the client's connect returns on the
// engine's SYN-ACK, so this is SYN-ACKs/s of the engine's queue path) and
// new connections/s (a request and its answer through the splice). On this
// 2-core machine the queues can only scale to 2 cores, which the client,
// the backend and the softirq work share with the gateway.
//
//	sudo go test ./e2e -run '^$' -bench Queues -benchtime 4000x
func BenchmarkQueues(b *testing.B) {
	for _, q := range []int{1, 2, 4} {
		for _, kind := range []string{"synack", "conn"} {
			b.Run(fmt.Sprintf("queues=%d/%s", q, kind), func(b *testing.B) {
				// Short close and quiet times, so the source ports toward
				// the backend are not what limits the rate.
				o := labOptions{queues: q, offloadsOff: true, extra: "flows:\n  close_timeout: 1s\n"}
				top := newLab(b, o)
				srv, err := loadgen.Serve(top.Backend, netip.AddrPortFrom(backendAddr(top), backendPort), loadgen.HTTPishHandler)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { srv.Close() })
				g := startSyngate(b, top, o)
				var ex loadgen.Exchange
				if kind == "conn" {
					ex = loadgen.HTTPishExchange
				}
				b.ResetTimer()
				rep, err := loadgen.Run(context.Background(), loadgen.Config{
					From: top.Client, Target: netip.AddrPortFrom(top.VIP4, servicePort),
					Concurrency: 64, Count: uint64(b.N), Timeout: 5 * time.Second, Exchange: ex,
				})
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if rep.SuccessRate() < 0.99 {
					b.Errorf("%v (last error %q)", rep, rep.LastError)
				}
				b.ReportMetric(rep.Rate, kind+"/s")
				b.Logf("%d queues, %s: %v", q, kind, rep)
				if m := g.metrics(); kind == "synack" {
					b.Logf("synack_sent queue %v cookie %v", m[`syngate_synack_sent_total{kind="queue",service="web"}`], m[`syngate_synack_sent_total{kind="cookie",service="web"}`])
				}
			})
		}
	}
}

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
