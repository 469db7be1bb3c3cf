package e2e

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/syngate/syngate/lab"
)

// sinkServer runs a server in the backend namespace that reads a
// connection to its end and answers with the byte count (8 bytes).
func sinkServer(tb testing.TB, top *lab.Topology) {
	tb.Helper()
	serveConns(tb, top.Backend, netip.AddrPortFrom(netip.IPv6Unspecified(), backendPort), func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		c.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
	})
}

// sendBulk sends n bytes from the client to addr and waits for the sink's
// count: it returns the goodput in Gb/s.
func sendBulk(top *lab.Topology, addr netip.AddrPort, n int64) (float64, error) {
	start := time.Now()
	c, err := dial(top.Client, addr, 5*time.Second)
	if err != nil {
		return 0, fmt.Errorf("connect %v: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for sent := int64(0); sent < n; {
		k, err := c.Write(buf[:min(int64(len(buf)), n-sent)])
		sent += int64(k)
		if err != nil {
			return 0, fmt.Errorf("write to %v after %d bytes: %w", addr, sent, err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	var got [8]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return 0, fmt.Errorf("read the count from %v: %w", addr, err)
	}
	if m := int64(binary.BigEndian.Uint64(got[:])); m != n {
		return 0, fmt.Errorf("%v received %d bytes of %d", addr, m, n)
	}
	return float64(n) * 8 / time.Since(start).Seconds() / 1e9, nil
}

// BenchmarkSpliceVsRouted compares spliced bulk transfers (client -> VIP
// -> backend through syngate) with plain routing over the same links, in
// the same lab and run. Each of the b.N rounds makes one transfer routed by
// the gateway's kernel while no syngate runs (routed-bare: nothing of
// syngate's attached; bpffs off, so a stopped syngate leaves nothing
// behind), then starts syngate and makes a spliced transfer and one routed
// through the same gateway with syngate attached, in alternating order,
// and stops syngate: the bare and spliced figures of a round are measured
// seconds apart, so the machine's other load moves them alike. bare-ratio
// is the median of the rounds' spliced/bare, ratio of spliced/routed; the
// range is logged. Run with a fixed count, e.g.
//
//	go test ./e2e -run '^$' -bench SpliceVsRouted -benchtime 7x -v
func BenchmarkSpliceVsRouted(b *testing.B) {
	const size = 256 << 20
	for _, tc := range []struct {
		name     string
		offloads bool
		datapath string
	}{
		{"veth-defaults/auto", true, "auto"},
		{"offloads-off/xdp", false, "xdp"},
		{"offloads-off/tc", false, "tc"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			o := labOptions{offloadsOff: !tc.offloads, datapath: tc.datapath}
			top := newLab(b, o)
			sinkServer(b, top)
			routed := netip.AddrPortFrom(backendAddr(top), backendPort)
			vip := netip.AddrPortFrom(top.VIP4, servicePort)
			var bare, spliced, routedOn, ratios, bareRatios []float64
			for i := 0; i < b.N; i++ {
				bg, err := sendBulk(top, routed, size)
				if err != nil {
					b.Fatal(err)
				}
				g := startSyngate(b, top, o)
				order := []netip.AddrPort{vip, routed}
				if i%2 == 1 {
					order = []netip.AddrPort{routed, vip}
				}
				var s, r float64
				for _, a := range order {
					got, err := sendBulk(top, a, size)
					if err != nil {
						b.Fatal(err)
					}
					if a == vip {
						s = got
					} else {
						r = got
					}
				}
				g.stop()
				b.Logf("round %d: bare %.2f Gb/s, spliced %.2f Gb/s, routed %.2f Gb/s; spliced/bare %.2f, spliced/routed %.2f", i, bg, s, r, s/bg, s/r)
				bare = append(bare, bg)
				spliced = append(spliced, s)
				routedOn = append(routedOn, r)
				ratios = append(ratios, s/r)
				bareRatios = append(bareRatios, s/bg)
			}
			b.Logf("spliced/bare over %d rounds: min %.2f median %.2f max %.2f; spliced/routed: min %.2f median %.2f max %.2f",
				b.N, slices.Min(bareRatios), median(bareRatios), slices.Max(bareRatios), slices.Min(ratios), median(ratios), slices.Max(ratios))
			b.ReportMetric(median(spliced), "spliced-Gb/s")
			b.ReportMetric(median(routedOn), "routed-Gb/s")
			b.ReportMetric(median(bare), "routed-bare-Gb/s")
			b.ReportMetric(median(ratios), "median-ratio")
			b.ReportMetric(median(bareRatios), "bare-ratio")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// median returns the median of v (the mean of the middle two for an even
// count); v is not changed.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
