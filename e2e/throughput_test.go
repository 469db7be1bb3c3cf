package e2e

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/syngate/syngate/lab"
)

// sinkServer runs a server in the backend namespace that reads a
// connection to its end and answers with the byte count (8 bytes).
func sinkServer(tb testing.TB, top *lab.Topology) {
	tb.Helper()
	ln, err := listen(top.Backend, netip.AddrPortFrom(netip.IPv6Unspecified(), backendPort))
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				c.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
			}()
		}
	}()
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

// BenchmarkSpliceVsRouted compares one spliced bulk transfer (client ->
// VIP -> backend through syngate) with one routed by the gateway's kernel
// (client -> backend address, through the same gateway with syngate
// attached), alternating, in the same lab: ratio is spliced/routed. The
// routed figure before syngate starts (routed-bare) shows what attaching
// XDP costs routed traffic on veth. Run with a fixed count, e.g.
//
//	go test ./e2e -run '^$' -bench SpliceVsRouted -benchtime 5x
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
			o := labOptions{offloads: tc.offloads, datapath: tc.datapath}
			top := newLab(b, o)
			sinkServer(b, top)
			routed := netip.AddrPortFrom(backendAddr(top), backendPort)
			bare, err := sendBulk(top, routed, size)
			if err != nil {
				b.Fatal(err)
			}
			startSyngate(b, top, o)
			vip := netip.AddrPortFrom(top.VIP4, servicePort)
			var spliceSum, routeSum float64
			var ratios []float64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				order := []netip.AddrPort{vip, routed}
				if i%2 == 1 {
					order = []netip.AddrPort{routed, vip}
				}
				var s, r float64
				for _, a := range order {
					g, err := sendBulk(top, a, size)
					if err != nil {
						b.Fatal(err)
					}
					if a == vip {
						s = g
					} else {
						r = g
					}
				}
				b.Logf("run %d: spliced %.2f Gb/s, routed %.2f Gb/s, ratio %.2f", i, s, r, s/r)
				spliceSum += s
				routeSum += r
				ratios = append(ratios, s/r)
			}
			slices.Sort(ratios)
			b.ReportMetric(spliceSum/float64(b.N), "spliced-Gb/s")
			b.ReportMetric(routeSum/float64(b.N), "routed-Gb/s")
			b.ReportMetric(spliceSum/routeSum, "ratio")
			b.ReportMetric(ratios[len(ratios)/2], "median-ratio")
			b.ReportMetric(bare, "routed-bare-Gb/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
