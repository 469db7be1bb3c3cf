package lab

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

func TestNSRunEntersNamespace(t *testing.T) {
	RequireRoot(t)
	ns, err := NewNS(t, "sg-lab-")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ns.Name(), "sg-lab-") || len(ns.Name()) != len("sg-lab-")+6 {
		t.Fatalf("name %q: want prefix plus 6 hex digits", ns.Name())
	}
	host, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var inside string
	err = ns.Run(func() error {
		var err error
		inside, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside == host {
		t.Fatalf("Run stayed in the host namespace %s", host)
	}
	// The only interface of a fresh namespace is lo, and it is up.
	ifs, err := func() (ifs []net.Interface, err error) {
		err = ns.Run(func() error { ifs, err = net.Interfaces(); return err })
		return
	}()
	if err != nil {
		t.Fatal(err)
	}
	if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp == 0 {
		t.Fatalf("interfaces in a fresh namespace: %+v", ifs)
	}
	wantErr := errors.New("from fn")
	if err := ns.Run(func() error { return wantErr }); !errors.Is(err, wantErr) {
		t.Fatalf("Run returned %v, want fn's error", err)
	}
	if _, err := ns.Link("nope0"); err == nil || !strings.Contains(err.Error(), "nope0") {
		t.Fatalf("failing lookup: error %v should name the interface", err)
	}
	// A per-namespace sysctl changes in the namespace and not on the host.
	const key = "/proc/sys/net/ipv4/conf/lo/accept_local"
	hostBefore, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	want := "1"
	if strings.TrimSpace(string(hostBefore)) == "1" {
		want = "0"
	}
	if err := ns.Sysctl("net.ipv4.conf.lo.accept_local", want); err != nil {
		t.Fatal(err)
	}
	if out, err := ns.ReadSysctl("net.ipv4.conf.lo.accept_local"); err != nil || out != want {
		t.Fatalf("accept_local in namespace = %q, %v; want %s", out, err, want)
	}
	if hostAfter, err := os.ReadFile(key); err != nil || string(hostAfter) != string(hostBefore) {
		t.Fatalf("host accept_local changed from %q to %q (%v)", hostBefore, hostAfter, err)
	}
}

func TestCloseDeletesNamespace(t *testing.T) {
	RequireRoot(t)
	a, err := Create("sg-lab-")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Create("sg-lab-")
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	if a.Name() == b.Name() {
		t.Fatalf("two namespaces named %s", a.Name())
	}
	if err := Veth(a, "x0", b, "y0"); err != nil {
		t.Fatal(err)
	}
	if err := AttachXDPPass(a, "x0"); err != nil {
		t.Fatal(err)
	}
	attrs, err := a.Link("x0")
	if err != nil || attrs.Xdp == nil || !attrs.Xdp.Attached {
		t.Fatalf("x0 should have an xdp program: %+v %v", attrs, err)
	}
	for _, ns := range []*NS{a, b} {
		if !Exists(ns.Name()) {
			t.Fatalf("%s missing before Close", ns)
		}
		if err := ns.Close(); err != nil {
			t.Fatal(err)
		}
		if Exists(ns.Name()) {
			t.Fatalf("%s still exists after Close", ns)
		}
		if err := ns.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
}

// echo serves one connection at a time on l, copying back what it reads.
func echo(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// roundTrip dials addr from ns, sends a line and expects it echoed back.
func roundTrip(t *testing.T, ns *NS, addr netip.AddrPort) {
	t.Helper()
	err := ns.Run(func() error {
		c, err := net.DialTimeout("tcp", addr.String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("hello\n")); err != nil {
			return err
		}
		buf := make([]byte, 6)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != "hello\n" {
			return errors.New("echo mismatch: " + string(buf))
		}
		return nil
	})
	if err != nil {
		t.Errorf("%s -> %s: %v", ns, addr, err)
	}
}

func listen(t *testing.T, ns *NS, addr netip.Addr) netip.AddrPort {
	t.Helper()
	var l net.Listener
	err := ns.Run(func() error {
		var err error
		l, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s on %s: %v", ns, addr, err)
	}
	t.Cleanup(func() { l.Close() })
	go echo(l)
	return netip.MustParseAddrPort(l.Addr().String())
}

func testTopology(t *testing.T, opts Options) {
	RequireRoot(t)
	var names []string
	t.Cleanup(func() {
		// Registered first, so it runs after the topology's cleanup.
		for _, n := range names {
			if Exists(n) {
				t.Errorf("namespace %s survived cleanup", n)
			}
		}
	})
	top, err := NewTopology(t, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range top.Namespaces() {
		names = append(names, ns.Name())
	}
	if len(names) < 3 {
		t.Fatalf("topology has %d namespaces", len(names))
	}
	if err := top.PrepareGatewayXDP(); err != nil {
		t.Fatal(err)
	}

	// Client to backend (routed through the gateway or across the segment)
	// and client to the VIP on the gateway, both families.
	for _, a := range []netip.Addr{top.BackendIf.V4.Addr(), top.BackendIf.V6.Addr()} {
		roundTrip(t, top.Client, listen(t, top.Backend, a))
	}
	for _, a := range []netip.Addr{top.VIP4, top.VIP6} {
		roundTrip(t, top.Client, listen(t, top.Gateway, a))
		roundTrip(t, top.Backend, listen(t, top.Gateway, a))
	}
	if opts.OneArm {
		if top.GatewayClient != top.GatewayBackend || top.Switch == nil {
			t.Fatal("one-arm gateway should have a single interface behind a switch")
		}
		return
	}
	// In the routed lab the client reaches the backend only through the
	// gateway: without forwarding the connection must fail.
	if err := top.Gateway.Sysctl("net.ipv4.ip_forward", "0"); err != nil {
		t.Fatal(err)
	}
	addr := listen(t, top.Backend, top.BackendIf.V4.Addr())
	err = top.Client.Run(func() error {
		c, err := net.DialTimeout("tcp", addr.String(), 300*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Fatal("client reached the backend with forwarding off on the gateway")
	}
}

func TestRoutedTopology(t *testing.T) { testTopology(t, Options{NoOffloads: true}) }
func TestOneArmTopology(t *testing.T) { testTopology(t, Options{OneArm: true}) }
