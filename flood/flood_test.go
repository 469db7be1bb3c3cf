package flood

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/lab"
)

func TestRefusals(t *testing.T) {
	target := netip.MustParseAddrPort("203.0.113.1:80")
	ok := Config{Target: target, Packets: 10, Duration: time.Second}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want error
	}{
		{"no count", func(c *Config) { c.Packets = 0 }, ErrUnbounded},
		{"no duration", func(c *Config) { c.Duration = 0 }, ErrUnbounded},
		{"too long", func(c *Config) { c.Duration = MaxDuration + time.Second }, ErrUnbounded},
		{"public target", func(c *Config) { c.Target = netip.MustParseAddrPort("8.8.8.8:53") }, ErrTarget},
		{"private target", func(c *Config) { c.Target = netip.MustParseAddrPort("10.0.0.1:80") }, ErrTarget},
		{"loopback target", func(c *Config) { c.Target = netip.MustParseAddrPort("127.0.0.1:80") }, ErrTarget},
		{"public v6 target", func(c *Config) { c.Target = netip.MustParseAddrPort("[2606:4700::1]:80") }, ErrTarget},
		{"mapped target", func(c *Config) { c.Target = netip.MustParseAddrPort("[::ffff:203.0.113.1]:80") }, ErrTarget},
		{"port zero", func(c *Config) { c.Target = netip.AddrPortFrom(target.Addr(), 0) }, ErrTarget},
		{"private spoof", func(c *Config) { c.SpoofPrefix = netip.MustParsePrefix("10.0.0.0/8") }, ErrSpoofPrefix},
		{"wider spoof", func(c *Config) { c.SpoofPrefix = netip.MustParsePrefix("198.16.0.0/14") }, ErrSpoofPrefix},
		{"lab spoof", func(c *Config) { c.SpoofPrefix = netip.MustParsePrefix("192.0.2.0/24") }, ErrSpoofPrefix},
		{"v6 spoof for v4", func(c *Config) { c.SpoofPrefix = spoofV6 }, ErrSpoofPrefix},
		{"v6 spoof outside", func(c *Config) {
			c.Target = netip.MustParseAddrPort("[2001:db8:3::1]:80")
			c.SpoofPrefix = netip.MustParsePrefix("2001:db8:1::/64")
		}, ErrSpoofPrefix},
		{"no namespace", func(c *Config) {}, ErrNotLab},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.edit(&cfg)
			_, err := Run(context.Background(), cfg)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestRefusesForeignNamespaces(t *testing.T) {
	lab.RequireRoot(t)
	foreign, err := lab.NewNS(t, "xx-")
	if err != nil {
		t.Fatal(err)
	}
	gone, err := lab.Create(LabPrefix + "gone-")
	if err != nil {
		t.Fatal(err)
	}
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []*lab.NS{foreign, gone} {
		_, err := Run(context.Background(), Config{From: ns, Target: netip.MustParseAddrPort("203.0.113.1:80"), Packets: 10, Duration: time.Second})
		if !errors.Is(err, ErrNotLab) {
			t.Errorf("%s: got %v, want ErrNotLab", ns, err)
		}
	}
}

// gatewayCounters counts, at the gateway's client-side ingress, SYNs to the
// target and those of them whose source is inside spoof.
func gatewayCounters(t *testing.T, top *lab.Topology, target netip.AddrPort, spoof netip.Prefix) func() (all, spoofed uint64) {
	t.Helper()
	f, err := top.Gateway.NewFilter("floodtest", lab.HookIngress(top.GatewayClient.Name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Delete() })
	syn := lab.Match{Dst: target.Addr(), Proto: unix.IPPROTO_TCP, DstPort: target.Port(), TCPFlagsMask: lab.TCPSyn | lab.TCPAck, TCPFlags: lab.TCPSyn}
	syns, err := f.Count(syn)
	if err != nil {
		t.Fatal(err)
	}
	syn.Src = spoof
	spoofed, err := f.Count(syn)
	if err != nil {
		t.Fatal(err)
	}
	read := func(r *lab.Rule) uint64 {
		n, err := r.Packets()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	return func() (uint64, uint64) { return read(syns), read(spoofed) }
}

// snmp reads one counter of /proc/net/snmp (e.g. "Tcp", "InCsumErrors")
// in ns.
func snmp(t *testing.T, ns *lab.NS, group, field string) uint64 {
	t.Helper()
	out, err := ns.ReadFile("/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != group+":" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == field && i < len(f) {
				v, err := strconv.ParseUint(f[i], 10, 64)
				if err != nil {
					t.Fatalf("snmp %s %s: %v", group, field, err)
				}
				return v
			}
		}
	}
	t.Fatalf("snmp %s %s not found", group, field)
	return 0
}

func newLab(t *testing.T) *lab.Topology {
	t.Helper()
	lab.RequireRoot(t)
	top, err := lab.NewTopology(t, lab.Options{NoOffloads: true})
	if err != nil {
		t.Fatal(err)
	}
	// Let spoofed sources through to TCP, which then checks every checksum.
	for _, k := range []string{"net.ipv4.conf.all.rp_filter", "net.ipv4.conf." + top.GatewayClient.Name + ".rp_filter"} {
		if err := top.Gateway.Sysctl(k, "0"); err != nil {
			t.Fatal(err)
		}
	}
	return top
}

func TestFloodArrives(t *testing.T) {
	top := newLab(t)
	for _, target := range []netip.AddrPort{
		netip.AddrPortFrom(top.VIP4, 80),
		netip.AddrPortFrom(top.VIP6, 80),
	} {
		t.Run(target.String(), func(t *testing.T) {
			spoof := spoofV4
			if target.Addr().Is6() {
				spoof = spoofV6
			}
			counters := gatewayCounters(t, top, target, spoof)
			inSegs := snmp(t, top.Gateway, "Tcp", "InSegs")
			csumErrs := snmp(t, top.Gateway, "Tcp", "InCsumErrors")

			const packets = 200_000
			res, err := Run(context.Background(), Config{From: top.Client, Target: target, Packets: packets, Duration: 3 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%v: %v", target, res)
			if res.Sent+res.Errors > packets || res.Elapsed > 3*time.Second+200*time.Millisecond {
				t.Fatalf("flood overran its bounds: %v", res)
			}
			if res.Sent < packets/10 {
				t.Fatalf("flood too slow to be useful: %v", res)
			}
			all, spoofed := counters()
			if all != spoofed {
				t.Errorf("%d SYNs arrived but only %d from %v", all, spoofed, spoof)
			}
			// The veth reports every frame it drops to the sender, so what
			// was sent arrived; allow a sliver for anything else in flight.
			if all < res.Sent*999/1000 || all > res.Sent {
				t.Errorf("gateway saw %d SYNs, flood sent %d", all, res.Sent)
			}
			segs := snmp(t, top.Gateway, "Tcp", "InSegs") - inSegs
			if segs < all*99/100 {
				t.Errorf("TCP took %d segments of %d SYNs", segs, all)
			}
			if n := snmp(t, top.Gateway, "Tcp", "InCsumErrors") - csumErrs; n != 0 {
				t.Errorf("%d TCP checksum errors at the gateway", n)
			}
		})
	}
}

func TestFloodBounds(t *testing.T) {
	top := newLab(t)
	target := netip.AddrPortFrom(top.VIP4, 80)

	// Count bound: stops after exactly that many attempts, long before
	// the duration.
	res, err := Run(context.Background(), Config{From: top.Client, Target: target, Packets: 5000, Duration: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent+res.Errors != 5000 || res.Elapsed > 5*time.Second {
		t.Fatalf("count-bounded flood: %v", res)
	}

	// Rate and duration: 20k pps for half a second is about 10k frames.
	res, err = Run(context.Background(), Config{From: top.Client, Target: target, Packets: 1 << 30, Duration: 500 * time.Millisecond, Rate: 20_000, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if n := res.Sent + res.Errors; n < 8_000 || n > 11_000 || res.Elapsed < 450*time.Millisecond || res.Elapsed > 800*time.Millisecond {
		t.Fatalf("20k pps for 500ms: %v", res)
	}

	// Live counters grow while it runs, and Stop ends it early.
	f, err := Start(context.Background(), Config{From: top.Client, Target: target, Packets: 1 << 30, Duration: time.Minute, Rate: 50_000})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	mid := f.Stats()
	f.Stop()
	res, err = f.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if mid.Sent == 0 || mid.PPS <= 0 || res.Sent < mid.Sent || res.Elapsed > 2*time.Second {
		t.Fatalf("live %v, final %v", mid, res)
	}
}

// BenchmarkFlood reports the rate one flood reaches from the client to the
// VIP (no listener: the gateway's kernel answers each SYN with a RST it
// cannot route), per worker count.
func BenchmarkFlood(b *testing.B) {
	lab.RequireRoot(b)
	top, err := lab.NewTopology(b, lab.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := top.Gateway.Sysctl("net.ipv4.conf.all.rp_filter", "0"); err != nil {
		b.Fatal(err)
	}
	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			b.ReportAllocs()
			res, err := Run(context.Background(), Config{
				From: top.Client, Target: netip.AddrPortFrom(top.VIP4, 80),
				Packets: uint64(b.N), Duration: time.Minute, Workers: workers,
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(res.PPS, "pps")
			b.ReportMetric(float64(res.Errors), "errors")
		})
	}
}
