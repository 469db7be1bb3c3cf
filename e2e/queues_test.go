package e2e

import (
	"context"
	"fmt"
	"net/netip"
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
				o := labOptions{queues: q, extra: "flows:\n  close_timeout: 1s\n"}
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
