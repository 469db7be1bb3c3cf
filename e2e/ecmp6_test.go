package e2e

import (
	"slices"
	"testing"
	"time"
)

const (
	mSpliced6 = `syngate_connections_spliced_total{service="web6"}`
	mHanded6  = `syngate_handed_off_total{service="web6"}`
)

// TestECMPIPv6 runs three gateways with an IPv6 service behind a BIRD
// router: each gateway keeps an IPv6 BGP session next to its IPv4 one and
// announces the /128 over it (next hop: its own IPv6 address on the link);
// the router installs one ECMP route over the three (hashed on the L4
// tuple, net.ipv6.fib_multipath_hash_policy=1); new IPv6 connections spread
// over the gateways and complete; a drain withdraws the /128 (and the /32)
// at once, new connections avoid the drained gateway and its own transfers
// finish.
func TestECMPIPv6(t *testing.T) {
	l := newECMPLab(t, ecmpOptions{cookies: []string{"auto", "auto", "auto"}, restartTime: "120s", ipv6: true})
	vip := l.e.VIP6
	var want []string
	for _, g := range l.gws {
		want = append(want, g.addr6.String())
	}
	var got []string
	for _, a := range l.nexthopsOf(vip) {
		got = append(got, a.String())
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("the router routes %v via %v, want the gateways' IPv6 addresses %v", vip, got, want)
	}
	t.Logf("router: %v via %v\n%s", vip, got, l.birdc("show", "route", "all", vip.String()+"/128"))

	t.Run("spread", func(t *testing.T) {
		const n = 60
		before := make([]float64, len(l.gws))
		for i, g := range l.gws {
			before[i] = g.metrics(t)[mSpliced6]
		}
		for i := range n {
			if err := l.echoOnceTo(vip, 5*time.Second); err != nil {
				t.Fatalf("IPv6 connection %d: %v", i, err)
			}
		}
		var counts []float64
		var total float64
		for i, g := range l.gws {
			var c float64
			for range 20 {
				if c = g.metrics(t)[mSpliced6] - before[i]; c > 0 {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			counts = append(counts, c)
			total += c
		}
		t.Logf("%d IPv6 connections spread over the gateways: %v", n, counts)
		for i, c := range counts {
			if c == 0 {
				t.Errorf("gateway %d got no IPv6 connection of %d", i+1, n)
			}
		}
		if total != n {
			t.Errorf("the gateways spliced %v IPv6 connections, want %d", total, n)
		}
	})

	t.Run("drain", func(t *testing.T) {
		g2 := l.gws[1]
		l.drainWhileServing(t, drainCase{vip: vip, nexthop: g2.addr6, spliced: mSpliced6, handed: mHanded6})
		// The /32 goes in the same announcement round as the /128.
		if l.hasNexthop(g2.addr) {
			t.Error("gateway 2's /32 still routed after the drain")
		}
	})
}
