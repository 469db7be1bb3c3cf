package e2e

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
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
		g1, g2, g3 := l.gws[0], l.gws[1], l.gws[2]
		var trs []*transfer
		spliced := g2.metrics(t)[mSpliced6]
		for len(trs) < 30 {
			tr, err := l.startTransferTo(vip, 4*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			trs = append(trs, tr)
			if len(trs) >= 6 && g2.metrics(t)[mSpliced6]-spliced >= 2 {
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
		after := g2.metrics(t)[mSpliced6]
		onDrained := after - spliced
		start := time.Now()
		drain := g2.ns.Command(syngateBin, "drain", "-socket", filepath.Join(filepath.Dir(g2.cfgPath), "control.sock"), "-deadline", "40s")
		var out bytes.Buffer
		drain.Stdout, drain.Stderr = &out, &out
		if err := drain.Start(); err != nil {
			t.Fatal(err)
		}
		for l.hasNexthop(g2.addr6) {
			if time.Since(start) > 10*time.Second {
				t.Fatal("gateway 2's /128 still routed 10s after drain")
			}
			time.Sleep(10 * time.Millisecond)
		}
		withdrawn := time.Since(start)
		if l.hasNexthop(g2.addr) {
			// The /32 goes in the same announcement round; give it a moment.
			time.Sleep(500 * time.Millisecond)
			if l.hasNexthop(g2.addr) {
				t.Error("gateway 2's /32 still routed after its /128 went")
			}
		}
		for i := range 30 {
			if err := l.echoOnceTo(vip, 5*time.Second); err != nil {
				t.Fatalf("new IPv6 connection %d during the drain: %v", i, err)
			}
		}
		if d := g2.metrics(t)[mSpliced6] - after; d != 0 {
			t.Errorf("gateway 2 took %v new IPv6 connections after its drain", d)
		}
		var broken int
		for i, tr := range trs {
			if err := <-tr.done; err != nil {
				broken++
				t.Logf("transfer %d: %v", i, err)
			}
		}
		err := drain.Wait()
		handed := l.sum(mHanded6, g1, g3)
		t.Logf("IPv6 drain: /128 withdrawn from the router's kernel table %v after syngate drain; 30 new connections, none on gateway 2; %d of %d transfers broke, gateway 2 carried %v of them, %v segments handed back to it; syngate drain (err %v):\n%s",
			withdrawn.Round(time.Millisecond), broken, len(trs), onDrained, handed, err, out.String())
		if broken > 0 {
			t.Errorf("%d IPv6 transfers broke (the drained gateway carried %v)", broken, onDrained)
		}
		if handed == 0 {
			t.Error("no IPv6 segment handed off: did the drained gateway's transfers not move?")
		}
		if err != nil || !strings.Contains(out.String(), "drain: done") {
			t.Errorf("syngate drain: %v", err)
		}
	})
}
