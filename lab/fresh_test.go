package lab

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain lets the test binary serve as the child process of
// TestCommandRunsInNamespace: with LAB_TEST_CHILD set it prints the network
// namespace it runs in and exits.
func TestMain(m *testing.M) {
	if os.Getenv("LAB_TEST_CHILD") == "netns" {
		ns, err := os.Readlink("/proc/self/ns/net")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Print(ns)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func threadNetns(t *testing.T) string {
	t.Helper()
	s, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCommandRunsInNamespace: a program started with Command runs in the
// namespace (no `ip netns exec` in between), from any goroutine and many at
// once, and the threads that forked it go back to the host namespace.
func TestCommandRunsInNamespace(t *testing.T) {
	RequireRoot(t)
	a, err := NewNS(t, "sgf-cmd-")
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewNS(t, "sgf-cmd-")
	if err != nil {
		t.Fatal(err)
	}
	host := threadNetns(t)
	want := map[*NS]string{}
	for _, ns := range []*NS{a, b} {
		if err := ns.Run(func() (err error) { want[ns], err = os.Readlink("/proc/thread-self/ns/net"); return err }); err != nil {
			t.Fatal(err)
		}
	}
	if want[a] == host || want[a] == want[b] {
		t.Fatalf("namespaces: host %s, a %s, b %s", host, want[a], want[b])
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 16 {
		ns := []*NS{a, b}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := ns.Command(self)
			cmd.Env = append(os.Environ(), "LAB_TEST_CHILD=netns")
			out, err := cmd.Output()
			if err != nil || string(out) != want[ns] {
				t.Errorf("child of %s runs in %q (%v), want %s", ns, out, err, want[ns])
			}
		}()
	}
	wg.Wait()
	// Threads that forked children serve other goroutines again: every
	// one of them must be back in the host namespace.
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s, err := os.Readlink("/proc/thread-self/ns/net"); err != nil || s != host {
				t.Errorf("a goroutine runs in %s (%v), not the host's %s", s, err, host)
			}
		}()
	}
	wg.Wait()
	// Exec reports the program and its output on failure.
	if _, err := a.Exec(self, "-test.run=^$", "-test.bogus"); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("failing Exec: %v", err)
	}
}

// TestLinkSettings covers the netlink and ethtool operations the
// topologies and tests use, by reading back what the kernel holds.
func TestLinkSettings(t *testing.T) {
	RequireRoot(t)
	a, err := NewNS(t, "sgf-link-")
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewNS(t, "sgf-link-")
	if err != nil {
		t.Fatal(err)
	}
	if err := VethWith(a, "a0", b, "b0", VethOptions{Queues: 4}); err != nil {
		t.Fatal(err)
	}
	attrs, err := a.Link("a0")
	if err != nil {
		t.Fatal(err)
	}
	if attrs.NumRxQueues != 4 || attrs.OperState != 6 /* up */ && attrs.Flags&net.FlagUp == 0 {
		t.Errorf("a0: %d rx queues, flags %v", attrs.NumRxQueues, attrs.Flags)
	}
	on, err := a.OffloadsOn("a0")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(on, "tx-checksumming") {
		t.Errorf("a fresh veth has offloads %v; want tx checksumming on (the test would prove nothing)", on)
	}
	if err := a.DisableOffloads("a0"); err != nil {
		t.Fatal(err)
	}
	if on, err := a.OffloadsOn("a0"); err != nil || len(on) != 0 {
		t.Errorf("after DisableOffloads: %v on (%v)", on, err)
	}
	if err := a.SetMTU("a0", 1400); err != nil {
		t.Fatal(err)
	}
	p4, p6 := netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("2001:db8::1/64")
	for _, p := range []netip.Prefix{p4, p6} {
		if err := a.AddAddr("a0", p); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.AddAddr("b0", netip.MustParsePrefix("192.0.2.2/24")); err != nil {
		t.Fatal(err)
	}
	ifi, err := a.Interface("a0")
	if err != nil || ifi.MTU != 1400 {
		t.Fatalf("a0: %+v %v", ifi, err)
	}
	addrs := func() (addrs []net.Addr) {
		// Addrs asks netlink from the calling thread's namespace.
		if err := a.Run(func() (err error) { addrs, err = ifi.Addrs(); return err }); err != nil {
			t.Fatal(err)
		}
		return addrs
	}
	if got := addrs(); len(got) < 2 {
		t.Errorf("a0 addresses %v", got)
	}
	// A routed destination resolves to its gateway and interface.
	dst := netip.MustParsePrefix("198.51.100.0/24")
	if err := a.AddRoute(dst, netip.MustParseAddr("192.0.2.2")); err != nil {
		t.Fatal(err)
	}
	dev, gw, err := a.RouteGet(netip.MustParseAddr("198.51.100.7"))
	if err != nil || dev != "a0" || gw != netip.MustParseAddr("192.0.2.2") {
		t.Errorf("route get: %s via %v (%v)", dev, gw, err)
	}
	// A neighbour is unresolved until added.
	nb := netip.MustParseAddr("192.0.2.9")
	if mac, err := a.Neighbour("a0", nb); err != nil || mac != nil {
		t.Errorf("unknown neighbour: %v %v", mac, err)
	}
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 9}
	if err := a.AddNeigh("a0", nb, mac); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Neighbour("a0", nb); err != nil || got.String() != mac.String() {
		t.Errorf("neighbour: %v %v", got, err)
	}
	// The IPv6 address is usable at once (no DAD): bind to it.
	err = a.Run(func() error {
		l, err := net.Listen("tcp", netip.AddrPortFrom(p6.Addr(), 0).String())
		if err == nil {
			l.Close()
		}
		return err
	})
	if err != nil {
		t.Errorf("bind to the new IPv6 address: %v", err)
	}
	if err := a.DelAddr("a0", p4); err != nil {
		t.Fatal(err)
	}
	if got := addrs(); slices.ContainsFunc(got, func(x net.Addr) bool { return strings.HasPrefix(x.String(), "192.0.2.1/") }) {
		t.Errorf("address still there after DelAddr: %v", got)
	}
}

// TestLossRule: AddLoss-style rules drop about the share they are asked to
// and count exactly what they dropped.
func TestLossRule(t *testing.T) {
	RequireRoot(t)
	ns, err := NewNS(t, "sgf-loss-")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ns.NewFilter("sgftest", HookOutput)
	if err != nil {
		t.Fatal(err)
	}
	var conn *net.UDPConn
	err = ns.Run(func() (err error) {
		conn, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	port := uint16(conn.LocalAddr().(*net.UDPAddr).Port)
	rule, err := f.Drop(Match{Dst: netip.MustParseAddr("127.0.0.1"), Proto: unix.IPPROTO_UDP, DstPort: port, Percent: 30})
	if err != nil {
		t.Fatal(err)
	}
	const sent = 2000
	received := 0
	buf := make([]byte, 16)
	for i := range sent {
		// A datagram the output hook drops fails with EPERM.
		if _, err := conn.WriteToUDPAddrPort([]byte{1}, netip.MustParseAddrPort(conn.LocalAddr().String())); err != nil && !strings.Contains(err.Error(), "not permitted") {
			t.Fatal(err)
		}
		if i%100 != 99 {
			continue
		}
		// Drain before the receive buffer overflows.
		for {
			conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, _, err := conn.ReadFrom(buf); err != nil {
				break
			}
			received++
		}
	}
	dropped, err := rule.Packets()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sent %d, dropped %d, received %d", sent, dropped, received)
	if dropped+uint64(received) != sent {
		t.Errorf("dropped %d + received %d != sent %d", dropped, received, sent)
	}
	// 30% of 2000 is 600 with a standard deviation of about 20.
	if dropped < 450 || dropped > 750 {
		t.Errorf("dropped %d of %d at 30%%", dropped, sent)
	}
	if err := f.Delete(); err != nil {
		t.Fatal(err)
	}
	// AddLoss drops TCP only.
	loss, err := ns.AddLoss(50)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteToUDPAddrPort([]byte{1}, netip.MustParseAddrPort(conn.LocalAddr().String())); err != nil {
		t.Errorf("AddLoss dropped UDP: %v", err)
	}
	if n, err := loss.Packets(); err != nil || n != 0 {
		t.Errorf("loss counter %d %v after a UDP datagram", n, err)
	}
}
