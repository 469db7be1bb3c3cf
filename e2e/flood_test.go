package e2e

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/syngate/syngate/flood"
	"github.com/syngate/syngate/loadgen"
)

// TestLegitimateClientsUnderFlood floods the VIP with spoofed SYNs (bounded
// in rate, count and time) while legitimate clients connect and make a
// request: every one must succeed, on cookies once the SYN queue is full.
func TestLegitimateClientsUnderFlood(t *testing.T) {
	o := labOptions{cookies: "auto"}
	top := newLab(t, o)
	srv, err := loadgen.Serve(top.Backend, netip.AddrPortFrom(backendAddr(top), backendPort), loadgen.HTTPishHandler)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	g := startSyngate(t, top, o)
	vip := netip.AddrPortFrom(top.VIP4, servicePort)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const floodFor = 4 * time.Second
	fl, err := flood.Start(ctx, flood.Config{From: top.Client, Target: vip, Rate: 60000, Packets: 300000, Duration: floodFor, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let the flood fill the SYN queue first
	rep, err := loadgen.Run(ctx, loadgen.Config{
		From: top.Client, Target: vip, Concurrency: 4, Duration: floodFor - time.Second,
		Timeout: 5 * time.Second, Exchange: loadgen.HTTPishExchange,
	})
	if err != nil {
		t.Fatal(err)
	}
	fr, err := fl.Wait()
	if err != nil {
		t.Fatal(err)
	}
	m := g.metrics()
	t.Logf("flood: %v; legit: %d ok, %d failed, connect p50 %v p99 %v", fr, rep.Successes, rep.Failures.Total(), rep.Connect.P50, rep.Connect.P99)
	if rep.Successes < 100 || rep.Failures.Judged() > 0 {
		t.Errorf("legitimate clients under flood: %d ok, failures %+v (last: %s)", rep.Successes, rep.Failures, rep.LastError)
	}
	if fr.Sent < 100000 {
		t.Errorf("the flood sent only %d SYNs", fr.Sent)
	}
	// The queue overflows into cookies, then the XDP program takes the
	// cookie SYN-ACKs over (policy auto with offload).
	engineCookies := m[`syngate_syn_queue_full_total{action="cookie",service="web"}`]
	xdpCookies := m[`syngate_xdp_packets_total{reason="tx_synack_cookie",verdict="tx"}`]
	t.Logf("cookie SYN-ACKs: %v from the engine, %v from XDP", engineCookies, xdpCookies)
	if engineCookies < 1 {
		t.Error("the SYN queue never overflowed into cookies")
	}
	if engineCookies+xdpCookies < float64(fr.Sent)*3/4 {
		t.Errorf("cookie SYN-ACKs %v + %v for %d flood SYNs", engineCookies, xdpCookies, fr.Sent)
	}
	if got := m[`syngate_queue_depth{queue="syn",service="web"}`]; got > m[`syngate_queue_limit{queue="syn",service="web"}`] {
		t.Errorf("SYN queue depth %v above its limit", got)
	}
	if got := m[`syngate_connections_spliced_total{service="web"}`]; got < float64(rep.Successes) {
		t.Errorf("spliced %v < %d successful clients", got, rep.Successes)
	}
}
