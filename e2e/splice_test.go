package e2e

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/lab"
)

// echoServer runs a TCP echo server in the backend namespace. It returns
// the kernel's view (tcp_info) of the last connection it accepted, taken at
// accept: what the backend negotiated with syngate's replayed SYN.
func echoServer(t *testing.T, top *lab.Topology) (lastAccepted func() *unix.TCPInfo) {
	t.Helper()
	var mu sync.Mutex
	var last *unix.TCPInfo
	echo := func(c net.Conn) { io.Copy(c, c) }
	serveAccepted(t, top.Backend, netip.AddrPortFrom(netip.IPv6Unspecified(), backendPort), func(c net.Conn) func(net.Conn) { // v4 and v6
		if raw, err := c.(*net.TCPConn).SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) {
				if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
					mu.Lock()
					last = info
					mu.Unlock()
				}
			})
		}
		return echo
	})
	return func() *unix.TCPInfo {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

// roundTrip sends msg over a new connection to vip and expects it back.
func roundTrip(t *testing.T, g *gatewayRun, vip netip.Addr, msg []byte) {
	t.Helper()
	c, err := dial(g.top.Client, netip.AddrPortFrom(vip, servicePort), 5*time.Second)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo mismatch")
	}
	c.(*net.TCPConn).CloseWrite()
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after close: %d bytes, %v; want EOF", n, err)
	}
}

func TestEcho(t *testing.T) {
	forLinkModes(t, testEcho)
}

func testEcho(t *testing.T, mode linkMode) {
	for _, tc := range []struct {
		name string
		o    labOptions
	}{
		{"routed/auto", labOptions{}},
		{"routed/always", labOptions{cookies: "always"}},
		{"routed/never", labOptions{cookies: "never"}},
		{"one-arm/always", labOptions{oneArm: true, cookies: "always"}},
	} {
		tc.o.offloadsOff = !mode.offloads
		t.Run(tc.name, func(t *testing.T) {
			top := newLab(t, tc.o)
			echoServer(t, top)
			g := startSyngate(t, top, tc.o)
			for i := 0; i < 3; i++ {
				roundTrip(t, g, top.VIP4, bytes.Repeat([]byte("syngate "), 1000*(i+1)))
			}
			m := g.metrics()
			if got := m[`syngate_connections_spliced_total{service="web"}`]; got != 3 {
				t.Errorf("spliced = %v, want 3", got)
			}
			kind := "queue"
			if tc.o.cookies == "always" {
				kind = "cookie"
			}
			if got := m[`syngate_ack_validated_total{path="`+kind+`",service="web"}`]; got != 3 {
				t.Errorf("ack validated via %s = %v, want 3", kind, got)
			}
			fast := m[`syngate_fastpath_packets_total`]
			slow := m[`syngate_slowpath_packets_total{service="web"}`]
			if fast < 20 {
				t.Errorf("fast path packets = %v, want the data to go through XDP", fast)
			}
			t.Logf("fast path %v packets, slow path %v", fast, slow)
			checkDatapath(t, m, mode)
		})
	}
}

func TestEchoIPv6(t *testing.T) {
	forLinkModes(t, testEchoIPv6)
}

func testEchoIPv6(t *testing.T, mode linkMode) {
	for _, cookies := range []string{"never", "always"} {
		t.Run(cookies, func(t *testing.T) {
			o := labOptions{cookies: cookies, offloadsOff: !mode.offloads}
			top := newLab(t, o)
			echoServer(t, top)
			g := startSyngate(t, top, o)
			for i := 0; i < 3; i++ {
				roundTrip(t, g, top.VIP6, bytes.Repeat([]byte("syngate6 "), 1000*(i+1)))
			}
			m := g.metrics()
			if got := m[`syngate_connections_spliced_total{service="web6"}`]; got != 3 {
				t.Errorf("spliced over IPv6 = %v, want 3", got)
			}
			if got := m[`syngate_connections_spliced_total{service="web"}`]; got != 0 {
				t.Errorf("IPv4 service spliced %v connections", got)
			}
			checkDatapath(t, m, mode)
		})
	}
}

// TestMixedDatapaths splices between a veth with the defaults (TC data
// path) and one with offloads off (XDP data path), both ways round: a
// connection's two directions then take different programs, and segments
// cross from one to the other (TC redirects an skb out of an XDP interface,
// XDP redirects a frame out of a TC interface).
func TestMixedDatapaths(t *testing.T) {
	for _, tc := range []struct {
		name            string
		plainSide       string // the side whose links get offloads off
		client, backend string // datapaths of the gateway's interfaces
	}{
		{"client-tc/backend-xdp", "backend", "tc", "xdp"},
		{"client-xdp/backend-tc", "client", "xdp", "tc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := labOptions{datapath: tc.client, backendDatapath: tc.backend}
			lab.RequireRoot(t)
			top, err := lab.NewTopology(t, lab.Options{Prefix: "sg-e2e-"})
			if err != nil {
				t.Fatal(err)
			}
			plain := []lab.Iface{top.BackendIf, top.GatewayBackend}
			if tc.plainSide == "client" {
				plain = []lab.Iface{top.ClientIf, top.GatewayClient}
			}
			// Before PrepareGatewayXDP: a peer's XDP program takes TSO
			// off a veth's settable features.
			for _, i := range plain {
				if err := i.NS.DisableOffloads(i.Name); err != nil {
					t.Fatal(err)
				}
			}
			if err := top.PrepareGatewayXDP(); err != nil {
				t.Fatal(err)
			}
			echoServer(t, top)
			g := startSyngate(t, top, o)
			if err := echoBulk(g, 16<<20, 7, time.Minute); err != nil {
				t.Fatal(err)
			}
			roundTrip(t, g, top.VIP6, bytes.Repeat([]byte("mixed6 "), 3000))
			m := g.metrics()
			v := func(verdict, reason string) float64 {
				return m[`syngate_xdp_packets_total{reason="`+reason+`",verdict="`+verdict+`"}`]
			}
			xdp := v("redirect", "fast_redirect")
			tcr := v("redirect", "fast_tc_redirect") + v("redirect", "fast_tc_redirect_neigh")
			if xdp < 1000 || tcr < 1000 {
				t.Errorf("spliced by XDP %v, by TC %v segments: want both directions' data on their own path", xdp, tcr)
			}
			t.Logf("spliced by XDP %v, by TC %v segments", xdp, tcr)
		})
	}
}

// TestFirstFlight writes a request of several segments the moment the
// connection is up, as HTTP clients (and TLS ClientHellos with post-quantum
// key shares, ~1.8 KB) do. With the veth defaults the client's stack hands
// that first flight over as one aggregate before the splice exists; the
// engine holds it and passes it on cut to the leg's MSS. No connection may
// wait for a retransmission timeout (200 ms at least: what a lost first
// flight cost, since nothing follows it to trigger a fast retransmit).
// Fast retransmissions are counted and logged: the engine's held data and
// the fast path's later segments can reach the backend out of order.
func TestFirstFlight(t *testing.T) {
	forLinkModes(t, testFirstFlight)
}

func testFirstFlight(t *testing.T, mode linkMode) {
	top, g := echoRig(t, mode)
	for _, vip := range []netip.Addr{top.VIP4, top.VIP6} {
		for _, size := range []int{1800, 4 << 10, 12 << 10, 32 << 10} {
			var slowest time.Duration
			var retransmitted uint32
			for i := range 10 {
				took, info := firstFlight(t, top, vip, size, byte(i))
				slowest = max(slowest, took)
				retransmitted += info.Total_retrans
				if info.Total_rto != 0 {
					t.Errorf("%v, %d bytes at once, connection %d: %d retransmission timeouts", vip, size, i, info.Total_rto)
				}
			}
			t.Logf("%s, %v: %d bytes written at once, echoed: slowest of 10 in %v, %d segments fast-retransmitted by the clients",
				mode.name, vip, size, slowest.Round(time.Microsecond), retransmitted)
		}
	}
	checkDatapath(t, g.metrics(), mode)
}

// firstFlight connects to vip, writes size bytes of fill at once, reads
// the echo, and returns how long the echo took and the client's tcp_info.
func firstFlight(t *testing.T, top *lab.Topology, vip netip.Addr, size int, fill byte) (time.Duration, *unix.TCPInfo) {
	t.Helper()
	c, err := dial(top.Client, netip.AddrPortFrom(vip, servicePort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	msg := bytes.Repeat([]byte{fill}, size)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	werr := make(chan error, 1)
	go func() { _, err := c.Write(msg); werr <- err }()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("%v, %d bytes at once: echo %v", vip, size, err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	if cerr := raw.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); cerr != nil || err != nil {
		t.Fatalf("tcp_info: %v %v", cerr, err)
	}
	return took, info
}
