package loadgen

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/lab"
)

func newLab(t *testing.T) *lab.Topology {
	t.Helper()
	lab.RequireRoot(t)
	top, err := lab.NewTopology(t, lab.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return top
}

func serve(t *testing.T, ns *lab.NS, addr netip.Addr, h Handler) *Server {
	t.Helper()
	s, err := Serve(ns, netip.AddrPortFrom(addr, 0), h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConnectionsThroughGateway(t *testing.T) {
	top := newLab(t)
	for _, addr := range []netip.Addr{top.BackendIf.V4.Addr(), top.BackendIf.V6.Addr()} {
		t.Run(addr.String(), func(t *testing.T) {
			srv := serve(t, top.Backend, addr, HTTPishHandler)
			const n = 200
			g, err := Start(context.Background(), Config{
				From: top.Client, Target: srv.Addr(), Concurrency: 8, Count: n,
				Timeout: 3 * time.Second, Exchange: HTTPishExchange,
			})
			if err != nil {
				t.Fatal(err)
			}
			live := g.Snapshot()
			rep := g.Wait()
			t.Log(rep)
			if live.Attempts > n || live.Successes > rep.Successes {
				t.Errorf("live snapshot %v ahead of the end %v", live, rep)
			}
			if rep.Attempts != n || rep.Successes != n || rep.Failures.Total() != 0 {
				t.Fatalf("want %d successes: %v (last error %q)", n, rep, rep.LastError)
			}
			if got := srv.Accepted(); got != n || srv.Failed() != 0 {
				t.Errorf("server accepted %d, %d failed", got, srv.Failed())
			}
			for _, l := range []Latency{rep.Connect, rep.Request} {
				if l.Count != n || l.Min <= 0 || l.P50 < l.Min || l.P90 < l.P50 || l.P99 < l.P90 || l.Max < l.P99 || l.Max > 3*time.Second {
					t.Errorf("latency summary %+v", l)
				}
			}
			var sum uint64
			for _, s := range rep.PerSecond {
				sum += s
			}
			if sum != n || rep.Rate <= 0 {
				t.Errorf("per-second successes %v sum to %d, rate %.1f", rep.PerSecond, sum, rep.Rate)
			}
		})
	}
}

func TestBulkThroughGateway(t *testing.T) {
	top := newLab(t)
	srv := serve(t, top.Backend, top.BackendIf.V4.Addr(), BulkHandler)
	const size = 8 << 20
	err := top.Client.Run(func() error {
		c, err := net.DialTimeout("tcp", srv.Addr().String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if err := Put(c, size, 42); err != nil {
			return fmt.Errorf("put: %w", err)
		}
		if err := Get(c, size, 43); err != nil {
			return fmt.Errorf("get: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The same through the generator, both directions at once over v6.
	srv6 := serve(t, top.Backend, top.BackendIf.V6.Addr(), BulkHandler)
	rep, err := Run(context.Background(), Config{
		From: top.Client, Target: srv6.Addr(), Concurrency: 2, Count: 2, Timeout: 20 * time.Second,
		Exchange: func(c net.Conn) error {
			if err := Put(c, size, 1); err != nil {
				return err
			}
			return Get(c, size, 2)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Successes != 2 || rep.Request.Count != 2 {
		t.Fatalf("bulk via generator: %v (last error %q)", rep, rep.LastError)
	}
}

func TestRefusedAndTimeout(t *testing.T) {
	top := newLab(t)
	// A port that was just listened on and is now closed: RSTs.
	srv := serve(t, top.Backend, top.BackendIf.V4.Addr(), HTTPishHandler)
	closed := srv.Addr()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), Config{From: top.Client, Target: closed, Concurrency: 4, Count: 20, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Attempts != 20 || rep.Failures.Refused != 20 || rep.Successes != 0 || rep.Connect.Count != 0 {
		t.Fatalf("closed port: %v", rep)
	}

	// SYNs the gateway drops: timeouts.
	srv = serve(t, top.Backend, top.BackendIf.V4.Addr(), HTTPishHandler)
	f, err := top.Gateway.NewFilter("lgtest", lab.HookForward)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Drop(lab.Match{Proto: unix.IPPROTO_TCP, DstPort: srv.Addr().Port()}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rep, err = Run(context.Background(), Config{From: top.Client, Target: srv.Addr(), Concurrency: 4, Count: 4, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failures.Timeout != 4 || rep.Successes != 0 || time.Since(start) > 2*time.Second {
		t.Fatalf("dropped SYNs: %v in %v", rep, time.Since(start))
	}
}

func TestBoundsAndStop(t *testing.T) {
	top := newLab(t)
	srv := serve(t, top.Backend, top.BackendIf.V4.Addr(), HTTPishHandler)
	if _, err := Start(context.Background(), Config{From: top.Client, Target: srv.Addr()}); err != ErrUnbounded {
		t.Fatalf("no bound: %v", err)
	}
	// 100 per second for a second.
	rep, err := Run(context.Background(), Config{From: top.Client, Target: srv.Addr(), Concurrency: 4, Rate: 100, Duration: time.Second, Exchange: HTTPishExchange})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Attempts < 90 || rep.Attempts > 101 || rep.Successes != rep.Attempts || rep.Elapsed > 1500*time.Millisecond {
		t.Fatalf("100/s for 1s: %v", rep)
	}
	// Stop ends an hour-long load at once.
	g, err := Start(context.Background(), Config{From: top.Client, Target: srv.Addr(), Concurrency: 2, Duration: time.Hour, Exchange: HTTPishExchange})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	g.Stop()
	select {
	case <-g.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not end the load")
	}
	if rep := g.Wait(); rep.Successes == 0 || rep.Attempts != rep.Successes+rep.Failures.Total() {
		t.Fatalf("stopped load: %v", rep)
	}
}

// BenchmarkConnections reports how many http-ish connections per second
// the generator completes through the routed lab (plain kernel forwarding).
func BenchmarkConnections(b *testing.B) {
	lab.RequireRoot(b)
	top, err := lab.NewTopology(b, lab.Options{})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := Serve(top.Backend, netip.AddrPortFrom(top.BackendIf.V4.Addr(), 0), HTTPishHandler)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	b.ReportAllocs()
	b.ResetTimer()
	rep, err := Run(context.Background(), Config{
		From: top.Client, Target: srv.Addr(), Concurrency: 16, Count: uint64(b.N),
		Timeout: 5 * time.Second, Exchange: HTTPishExchange,
	})
	if err != nil {
		b.Fatal(err)
	}
	if rep.Successes != uint64(b.N) {
		b.Fatalf("%v (last error %q)", rep, rep.LastError)
	}
	b.ReportMetric(rep.Rate, "conns/s")
	b.ReportMetric(float64(rep.Connect.P99.Microseconds()), "p99-connect-µs")
}
