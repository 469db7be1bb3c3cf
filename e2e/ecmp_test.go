package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/lab"
	"github.com/syngate/syngate/metrics"
)

// requireBird skips when BIRD 2, the real BGP router of these tests, is
// missing.
func requireBird(t *testing.T) {
	t.Helper()
	for _, p := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("skipping: needs BIRD 2 (%s) as the router's BGP speaker: apt-get install bird2", p)
		}
	}
}

// ecmpLab is a router running BIRD with ECMP toward gateways running
// syngate, a client and a backend behind the router.
type ecmpLab struct {
	t        *testing.T
	e        *lab.ECMP
	dir      string
	birdSock string
	bird     *lab.Daemon
	gws      []*ecmpGateway

	ipv6 bool // IPv6 sessions and service too

	wg    sync.WaitGroup
	mu    sync.Mutex
	ln    net.Listener // the backend's echo server
	conns []net.Conn
}

// serveBackend starts the backend's echo server.
func (l *ecmpLab) serveBackend() {
	ln, err := listen(l.e.Backend, netip.AddrPortFrom(netip.IPv4Unspecified(), backendPort))
	if err != nil {
		l.t.Fatal(err)
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.mu.Lock()
			l.conns = append(l.conns, c)
			l.mu.Unlock()
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

// stopBackend closes the echo server's listener: the backend refuses.
func (l *ecmpLab) stopBackend() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ln.Close()
	l.ln = nil
}

type ecmpGateway struct {
	i       int // from 1
	ns      *lab.NS
	addr    netip.Addr // on the router's link
	addr6   netip.Addr
	d       *lab.Daemon
	cfgPath string
	ready   string
	log     string
}

const (
	routerASN  = 65000
	gatewayASN = 65010
	bgpHold    = 3 * time.Second
)

// ecmpOptions shape an ECMP lab.
type ecmpOptions struct {
	// cookies[i] is gateway i+1's cookie policy; one gateway per entry.
	cookies     []string
	restartTime string // bgp.restart_time
	queues      int
	// ipv6 adds a service on VIP6 (backend over IPv6) and an IPv6 BGP
	// session from every gateway to the router, which carries the /128.
	ipv6 bool
	// pinned runs every gateway with a bpffs of its own (the data path
	// outlives syngate), instead of bpffs off.
	pinned bool
}

// newECMPLab builds the topology, starts BIRD and one syngate per gateway,
// and waits until the router has a route to the VIP (and VIP6) through
// every gateway.
func newECMPLab(t *testing.T, o ecmpOptions) *ecmpLab {
	t.Helper()
	lab.RequireRoot(t)
	requireBird(t)
	cookies := o.cookies
	e, err := lab.NewECMP(t, lab.ECMPOptions{Gateways: len(cookies), Prefix: "sgs2-", Queues: o.queues})
	if err != nil {
		t.Fatal(err)
	}
	l := &ecmpLab{t: t, e: e, dir: t.TempDir(), ipv6: o.ipv6}
	l.startBird()
	l.serveBackend()
	t.Cleanup(func() {
		l.mu.Lock()
		ln := l.ln
		l.mu.Unlock()
		if ln != nil {
			ln.Close()
		}
		// Connections a dead gateway broke never end by themselves.
		l.mu.Lock()
		for _, c := range l.conns {
			c.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	secret := make([]byte, 32)
	rand.Read(secret)
	secretPath := filepath.Join(l.dir, "secret")
	if err := os.WriteFile(secretPath, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	var pins string
	if o.pinned {
		pins = filepath.Dir(privateBPFFS(t, l.dir))
	}
	for i, policy := range cookies {
		g := &ecmpGateway{i: i + 1, ns: e.Gateways[i], addr: lab.ECMPGatewayV4(i + 1).Addr(), addr6: lab.ECMPGatewayV6(i + 1).Addr()}
		gdir := filepath.Join(l.dir, fmt.Sprintf("gw%d", g.i))
		os.Mkdir(gdir, 0o700)
		g.cfgPath, g.ready, g.log = filepath.Join(gdir, "syngate.yaml"), filepath.Join(gdir, "ready"), filepath.Join(gdir, "syngate.log")
		bpffs := `"off"`
		if o.pinned {
			bpffs = filepath.Join(pins, fmt.Sprintf("gw%d", g.i))
		}
		var svc6, peer6 string
		if o.ipv6 {
			svc6 = fmt.Sprintf("  - name: web6\n    listen: \"%s\"\n    backend: \"%s\"\n    health_check:\n      interval: 1s\n",
				netip.AddrPortFrom(e.VIP6, servicePort), netip.AddrPortFrom(lab.ECMPBackendV6.Addr(), backendPort))
			peer6 = fmt.Sprintf("    - address: %s\n      asn: %d\n      hold_time: %s\n      keepalive: 1s\n      connect_retry: 1s\n",
				lab.ECMPRouterGwV6.Addr(), routerASN, bgpHold)
		}
		cfg := fmt.Sprintf(`interfaces:
  - name: %s
secret_file: %s
bpffs: %s
control:
  socket: %s
metrics:
  listen: 127.0.0.1:9420
syn:
  cookies: %s
backend:
  connect_timeout: 2s
  probe_interval: 1s
services:
  - name: web
    listen: %s
    backend: %s
    health_check:
      interval: 1s
%sbgp:
  local_asn: %d
  router_id: %s
  restart_time: %s
  peers:
    - address: %s
      asn: %d
      hold_time: %s
      keepalive: 1s
      connect_retry: 1s
%speers: [%s]
`, e.GatewayIf, secretPath, bpffs, filepath.Join(gdir, "control.sock"), policy, netip.AddrPortFrom(e.VIP4, servicePort), netip.AddrPortFrom(lab.ECMPBackendV4.Addr(), backendPort),
			svc6, gatewayASN, g.addr, o.restartTime, lab.ECMPRouterGwV4.Addr(), routerASN, bgpHold, peer6, peerList(len(cookies), g.i))
		if err := os.WriteFile(g.cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		l.gws = append(l.gws, g)
		l.start(g)
	}
	l.waitNexthops(len(cookies), 30*time.Second)
	if o.ipv6 {
		l.waitNexthopsOf(e.VIP6, len(cookies), 30*time.Second)
	}
	return l
}

// peerList is the YAML list of the gateways other than self.
func peerList(n, self int) string {
	var out []string
	for i := 1; i <= n; i++ {
		if i != self {
			out = append(out, lab.ECMPGatewayV4(i).Addr().String())
		}
	}
	return strings.Join(out, ", ")
}

func (l *ecmpLab) startBird() {
	t := l.t
	// One IPv4 session per gateway (protocol gw<i>) and, with ipv6, one
	// IPv6 session (gw<i>v6) carrying the /128: GoBGP sets the next hop of
	// a route to the session's local address, which for IPv6 routes over
	// an IPv4 session would be an IPv4 address.
	var peers strings.Builder
	for i := range l.e.Gateways {
		fmt.Fprintf(&peers, "protocol bgp gw%d from peers { neighbor %s as %d; }\n", i+1, lab.ECMPGatewayV4(i+1).Addr(), gatewayASN)
		if l.ipv6 {
			fmt.Fprintf(&peers, "protocol bgp gw%dv6 from peers6 { neighbor %s as %d; }\n", i+1, lab.ECMPGatewayV6(i+1).Addr(), gatewayASN)
		}
	}
	conf := fmt.Sprintf(`log "%[1]s" all;
router id %[2]s;
protocol device { scan time 1; }
protocol kernel {
	ipv4 { import none; export all; };
	merge paths on;
}
protocol kernel {
	ipv6 { import none; export all; };
	merge paths on;
}
template bgp peers {
	local as %[3]d;
	passive on;
	hold time %[4]d;
	keepalive time 1;
	graceful restart on;
	ipv4 { import all; export none; };
}
template bgp peers6 {
	local as %[3]d;
	passive on;
	hold time %[4]d;
	keepalive time 1;
	graceful restart on;
	ipv6 { import all; export none; };
}
%[5]s`, filepath.Join(l.dir, "bird.log"), lab.ECMPRouterV4.Addr(), routerASN, int(bgpHold.Seconds()), peers.String())
	confPath := filepath.Join(l.dir, "bird.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	l.birdSock = filepath.Join(l.dir, "bird.ctl")
	d, err := lab.StartDaemon(l.e.Router, filepath.Join(l.dir, "bird.out"), "bird", "-f", "-c", confPath, "-s", l.birdSock, "-P", filepath.Join(l.dir, "bird.pid"))
	if err != nil {
		t.Fatal(err)
	}
	l.bird = d
	t.Cleanup(func() {
		d.Stop(5 * time.Second)
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(l.dir, "bird.log"))
			t.Logf("bird log:\n%s", b)
		}
	})
	if err := d.WaitFile(l.birdSock, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// birdc runs a BIRD command on the router.
func (l *ecmpLab) birdc(args ...string) string {
	l.t.Helper()
	out, err := l.e.Router.Command("birdc", append([]string{"-s", l.birdSock}, args...)...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("birdc %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (l *ecmpLab) start(g *ecmpGateway) {
	t := l.t
	os.Remove(g.ready)
	d, err := lab.StartDaemon(g.ns, g.log, syngateBin, "run", "-c", g.cfgPath, "-ready-file", g.ready, "-log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	g.d = d
	t.Cleanup(func() {
		d.Stop(10 * time.Second)
		if t.Failed() || os.Getenv("E2E_LOGS") != "" {
			b, _ := os.ReadFile(g.log)
			t.Logf("gateway %d log:\n%s", g.i, b)
		}
	})
	if err := d.WaitFile(g.ready, 20*time.Second); err != nil {
		t.Fatal(err)
	}
}

// nexthops lists the router's next hops toward the VIP.
func (l *ecmpLab) nexthops() []netip.Addr { return l.nexthopsOf(l.e.VIP4) }

// nexthopsOf lists the router's next hops toward vip's host route.
func (l *ecmpLab) nexthopsOf(vip netip.Addr) []netip.Addr {
	out, err := l.routeVia(vip)
	if err != nil {
		l.t.Fatal(err)
	}
	return out
}

// routeVia lists the router's next hops toward vip's host route; it does
// not fail the test, so other goroutines may call it.
func (l *ecmpLab) routeVia(vip netip.Addr) ([]netip.Addr, error) {
	var out []netip.Addr
	fam, bits := netlink.FAMILY_V4, 32
	if vip.Is6() {
		fam, bits = netlink.FAMILY_V6, 128
	}
	err := l.e.Router.Netlink(func(h *netlink.Handle) error {
		rs, err := h.RouteListFiltered(fam, &netlink.Route{
			Dst: &net.IPNet{IP: vip.AsSlice(), Mask: net.CIDRMask(bits, bits)},
		}, netlink.RT_FILTER_DST)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Gw != nil {
				a, _ := netip.AddrFromSlice(r.Gw)
				out = append(out, a.Unmap())
			}
			for _, p := range r.MultiPath {
				a, _ := netip.AddrFromSlice(p.Gw)
				out = append(out, a.Unmap())
			}
		}
		return nil
	})
	return out, err
}

// hasNexthop reports whether the router routes the VIP of a's family
// through a.
func (l *ecmpLab) hasNexthop(a netip.Addr) bool {
	vip := l.e.VIP4
	if a.Is6() {
		vip = l.e.VIP6
	}
	for _, n := range l.nexthopsOf(vip) {
		if n == a {
			return true
		}
	}
	return false
}

// waitNexthops waits until the VIP route has n next hops.
func (l *ecmpLab) waitNexthops(n int, timeout time.Duration) time.Duration {
	l.t.Helper()
	return l.waitNexthopsOf(l.e.VIP4, n, timeout)
}

// waitNexthopsOf waits until vip's route has n next hops.
func (l *ecmpLab) waitNexthopsOf(vip netip.Addr, n int, timeout time.Duration) time.Duration {
	l.t.Helper()
	start := time.Now()
	for len(l.nexthopsOf(vip)) != n {
		if time.Since(start) > timeout {
			l.t.Fatalf("%v route has next hops %v after %v, want %d\n%s", vip, l.nexthopsOf(vip), timeout, n, l.birdc("show", "protocols"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func (g *ecmpGateway) metrics(t *testing.T) metrics.Samples {
	t.Helper()
	body, err := g.ns.HTTPGet(netip.MustParseAddrPort("127.0.0.1:9420"), "/metrics", 5*time.Second)
	if err != nil {
		t.Fatalf("gateway %d metrics: %v", g.i, err)
	}
	m, err := metrics.ParseText(string(body))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// established reports whether the gateway's BGP session is up.
func (g *ecmpGateway) established(t *testing.T) bool {
	for k, v := range g.metrics(t) {
		if strings.HasPrefix(k, "syngate_bgp_session_established{") && v == 1 {
			return true
		}
	}
	return false
}

const (
	mSpliced = `syngate_connections_spliced_total{service="web"}`
	mSYNs    = `syngate_syn_received_total{service="web"}`
	mOpen    = `syngate_connections_open`
	mPeer    = `syngate_ack_validated_total{path="peer_cookie",service="web"}`
	mHanded  = `syngate_handed_off_total{service="web"}`
)

// sum adds one metric over the gateways.
func (l *ecmpLab) sum(name string, gws ...*ecmpGateway) float64 {
	var s float64
	for _, g := range gws {
		s += g.metrics(l.t)[name]
	}
	return s
}

// echoOnce round-trips a short message over a new connection.
func (l *ecmpLab) echoOnce(timeout time.Duration) error { return l.echoOnceTo(l.e.VIP4, timeout) }

// echoOnceTo round-trips a short message over a new connection to vip.
func (l *ecmpLab) echoOnceTo(vip netip.Addr, timeout time.Duration) error {
	c, err := dial(l.e.Client, netip.AddrPortFrom(vip, servicePort), timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	msg := []byte("hello through ecmp")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo differs")
	}
	return nil
}

// transfer is a paced echo of random bytes over one connection, checked by
// SHA-256 at the end.
type transfer struct {
	c    net.Conn
	done chan error
}

// drainCase is what drainWhileServing watches, for one address family.
type drainCase struct {
	vip, nexthop    netip.Addr // the service's VIP; gateway 2's next hop for it at the router
	spliced, handed string     // the service's spliced and handed-off counters
}

// drainWhileServing runs `syngate drain` on gateway 2 while it carries
// transfers to the VIP: its route leaves the router's kernel table, new
// connections avoid it, the transfers it carried finish (gateways 1 and 3
// hand their segments to it), and drain reports done.
func (l *ecmpLab) drainWhileServing(t *testing.T, dc drainCase) {
	t.Helper()
	g1, g2, g3 := l.gws[0], l.gws[1], l.gws[2]
	// Transfers until gateway 2 carries at least two of them.
	var trs []*transfer
	spliced := g2.metrics(t)[dc.spliced]
	for len(trs) < 30 {
		tr, err := l.startTransferTo(dc.vip, 4*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		trs = append(trs, tr)
		if len(trs) >= 6 && g2.metrics(t)[dc.spliced]-spliced >= 2 {
			break
		}
	}
	time.Sleep(200 * time.Millisecond)
	after := g2.metrics(t)[dc.spliced]
	onDrained := after - spliced
	start := time.Now()
	drain := g2.ns.Command(syngateBin, "drain", "-socket", filepath.Join(filepath.Dir(g2.cfgPath), "control.sock"), "-deadline", "40s")
	var out bytes.Buffer
	drain.Stdout, drain.Stderr = &out, &out
	if err := drain.Start(); err != nil {
		t.Fatal(err)
	}
	for l.hasNexthop(dc.nexthop) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("gateway 2's route to %v still there 10s after drain", dc.vip)
		}
		time.Sleep(10 * time.Millisecond)
	}
	withdrawn := time.Since(start)
	for i := range 30 {
		if err := l.echoOnceTo(dc.vip, 5*time.Second); err != nil {
			t.Fatalf("new connection %d during the drain: %v", i, err)
		}
	}
	// (Closed connections count as open until flows.close_timeout, 10s,
	// and the next expiry scan: the drain waits for them too.)
	if d := g2.metrics(t)[dc.spliced] - after; d != 0 {
		t.Errorf("gateway 2 took %v new connections after its drain", d)
	}
	var broken int
	for i, tr := range trs {
		if err := <-tr.done; err != nil {
			broken++
			t.Logf("transfer %d: %v", i, err)
		}
	}
	err := drain.Wait()
	handed := l.sum(dc.handed, g1, g3)
	t.Logf("drain of %v: route withdrawn from the router's kernel table %v after syngate drain; 30 new connections, none on gateway 2; %d of %d transfers broke, gateway 2 carried %v of them, %v segments handed back to it by gateways 1 and 3; syngate drain (err %v):\n%s",
		dc.vip, withdrawn.Round(time.Millisecond), broken, len(trs), onDrained, handed, err, out.String())
	if broken > 0 {
		t.Errorf("%d transfers broke (the drained gateway carried %v)", broken, onDrained)
	}
	if handed == 0 {
		t.Error("no segment handed off: did the drained gateway's transfers not move?")
	}
	if err != nil || !strings.Contains(out.String(), "drain: done") {
		t.Errorf("syngate drain: %v", err)
	}
}

// startTransfer opens a connection and sends 16 KiB every 20 ms for dur,
// reading the echo back.
func (l *ecmpLab) startTransfer(dur time.Duration) (*transfer, error) {
	return l.startTransferTo(l.e.VIP4, dur)
}

// startTransferTo is startTransfer to vip.
func (l *ecmpLab) startTransferTo(vip netip.Addr, dur time.Duration) (*transfer, error) {
	c, err := dial(l.e.Client, netip.AddrPortFrom(vip, servicePort), 3*time.Second)
	if err != nil {
		return nil, err
	}
	tr := &transfer{c: c, done: make(chan error, 1)}
	go func() {
		defer c.Close()
		c.SetDeadline(time.Now().Add(dur + 20*time.Second))
		sent, got := sha256.New(), sha256.New()
		werr := make(chan error, 1)
		var n int64
		go func() {
			buf := make([]byte, 16<<10)
			end := time.Now().Add(dur)
			for time.Now().Before(end) {
				rand.Read(buf)
				if _, err := c.Write(buf); err != nil {
					werr <- err
					return
				}
				sent.Write(buf)
				n += int64(len(buf))
				time.Sleep(20 * time.Millisecond)
			}
			werr <- c.(*net.TCPConn).CloseWrite()
		}()
		m, err := io.Copy(got, c)
		if err != nil {
			tr.done <- fmt.Errorf("read after %d bytes: %w", m, err)
			return
		}
		if err := <-werr; err != nil {
			tr.done <- fmt.Errorf("write: %w", err)
			return
		}
		if m != n || !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
			tr.done <- fmt.Errorf("echoed %d bytes of %d, or they differ", m, n)
			return
		}
		tr.done <- nil
	}()
	return tr, nil
}

// TestECMPGateways runs three syngate gateways behind a BIRD router with
// ECMP and L4 hashing: connections spread over them; a handshake whose ACK
// lands on another gateway completes; a drained gateway's route goes away
// and its transfers finish; a dead gateway costs only its own flows and the
// others take its new connections within the BGP hold time.
func TestECMPGateways(t *testing.T) {
	// Gateway 1 answers every SYN with a cookie (what a flooded gateway
	// does): the handshakes it starts are the ones that can move.
	l := newECMPLab(t, ecmpOptions{cookies: []string{"always", "auto", "auto"}, restartTime: "120s"})
	g1, g2, g3 := l.gws[0], l.gws[1], l.gws[2]
	t.Logf("router: VIP via %v", l.nexthops())

	t.Run("spread", func(t *testing.T) {
		const n = 60
		before := make([]float64, 3)
		for i, g := range l.gws {
			before[i] = g.metrics(t)[mSpliced]
		}
		for i := range n {
			if err := l.echoOnce(5 * time.Second); err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
		}
		var counts []float64
		for i, g := range l.gws {
			// A connection's splice is counted when its backend leg opens,
			// which may trail the client's echo by nothing: poll briefly.
			var c float64
			for range 20 {
				if c = g.metrics(t)[mSpliced] - before[i]; c > 0 {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			counts = append(counts, c)
		}
		t.Logf("%d connections spread over the gateways: %v", n, counts)
		for i, c := range counts {
			if c == 0 {
				t.Errorf("gateway %d got no connection of %d", i+1, n)
			}
		}
	})

	t.Run("backend down withdraws", func(t *testing.T) {
		// The backend refuses: every gateway's health check (every
		// second, down after 3 failures, up after 2 passes) takes the
		// backend down and its VIP goes; it comes back when the backend
		// does.
		l.stopBackend()
		start := time.Now()
		l.waitNexthops(0, 15*time.Second)
		down := time.Since(start)
		l.serveBackend()
		start = time.Now()
		l.waitNexthops(3, 15*time.Second)
		t.Logf("backend down: VIP withdrawn by all gateways %v after the backend refused (health_check interval 1s, fall 3); announced again %v after it came back (rise 2)",
			down.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	})

	t.Run("handshake moves", func(t *testing.T) {
		// Hold back the client's handshake ACKs, so the SYN-ACK arrives
		// and the ACK does not; then take gateway 1 out of the router's
		// ECMP set; the client's first data segment (which acknowledges
		// the cookie too) lands on gateway 2 or 3.
		f, err := l.e.Client.NewFilter("hold_acks", lab.HookOutput)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Drop(lab.Match{
			Dst: l.e.VIP4, Proto: unix.IPPROTO_TCP, DstPort: servicePort,
			TCPFlagsMask: lab.TCPSyn | lab.TCPAck | lab.TCPFin | lab.TCPRst | lab.TCPPsh, TCPFlags: lab.TCPAck,
		}); err != nil {
			t.Fatal(err)
		}
		var c net.Conn
		for try := 0; c == nil; try++ {
			if try == 40 {
				t.Fatal("40 connections and none reached gateway 1")
			}
			others := l.sum(mSYNs, g2, g3)
			conn, err := dial(l.e.Client, netip.AddrPortFrom(l.e.VIP4, servicePort), 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if l.sum(mSYNs, g2, g3) == others {
				c = conn // gateway 1 (cookies, in XDP) answered this SYN
			} else {
				conn.(*net.TCPConn).SetLinger(0)
				conn.Close()
			}
		}
		defer c.Close()
		peerBefore := l.sum(mPeer, g2, g3)
		l.birdc("disable", "gw1")
		l.waitNexthops(2, 10*time.Second)
		if err := f.Delete(); err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		msg := []byte("this handshake finished on another gateway")
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("echo after the ECMP change: %v", err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatal("echo differs")
		}
		if d := l.sum(mPeer, g2, g3) - peerBefore; d != 1 {
			t.Errorf("peer cookies validated on gateways 2 and 3: %v, want 1", d)
		}
		l.birdc("enable", "gw1")
		l.waitNexthops(3, 30*time.Second)
	})

	t.Run("drain", func(t *testing.T) {
		l.drainWhileServing(t, drainCase{vip: l.e.VIP4, nexthop: g2.addr, spliced: mSpliced, handed: mHanded})
		if g2.metrics(t)[`syngate_draining`] != 1 {
			t.Error("syngate_draining is not 1")
		}
	})

	t.Run("gateway dies", func(t *testing.T) {
		// Gateways 1 and 3 serve; transfers on both.
		var trs []*transfer
		s1, s3 := g1.metrics(t)[mSpliced], g3.metrics(t)[mSpliced]
		for len(trs) < 30 {
			tr, err := l.startTransfer(6 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			trs = append(trs, tr)
			if len(trs) >= 6 && g3.metrics(t)[mSpliced] > s3 && g1.metrics(t)[mSpliced] > s1 {
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
		onDead := g3.metrics(t)[mSpliced] - s3
		// Gateway 3 dies: nothing it sends reaches the router any more
		// (a machine that lost power sends no FIN), and its syngate is
		// killed.
		dead, err := l.e.Switch.NewFilter("dead_gw3", lab.HookIngress(l.e.SwitchPort(3)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dead.Drop(lab.Match{}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		g3.d.Signal(syscall.SIGKILL)
		// New connections, one every 100 ms with a 1 s connect timeout,
		// until ten in a row succeed.
		var failed, streak int
		var recovered time.Duration
		for streak < 10 {
			if time.Since(start) > 4*bgpHold+10*time.Second {
				t.Fatalf("new connections still failing %v after the gateway died (%d failed)", time.Since(start), failed)
			}
			if err := l.echoOnce(time.Second); err != nil {
				failed++
				streak = 0
				recovered = 0
			} else {
				if streak == 0 {
					recovered = time.Since(start)
				}
				streak++
			}
			time.Sleep(100 * time.Millisecond)
		}
		routeGone := !l.hasNexthop(g3.addr)
		var broken int
		for _, tr := range trs {
			if err := <-tr.done; err != nil {
				broken++
			}
		}
		t.Logf("gateway 3 died with %v of %d transfers: %d transfers broke, the rest finished; new connections failed %d times and succeed from %v after the death (BGP hold time %v); route gone: %v",
			onDead, len(trs), broken, failed, recovered.Round(10*time.Millisecond), bgpHold, routeGone)
		if float64(broken) > onDead {
			t.Errorf("%d transfers broke, but the dead gateway carried only %v", broken, onDead)
		}
		if !routeGone {
			t.Error("the router still routes to the dead gateway")
		}
	})

	t.Run("restart keeps the route, shutdown withdraws it", func(t *testing.T) {
		if !l.hasNexthop(g1.addr) {
			t.Fatalf("gateway 1 not in the VIP route: %v", l.nexthops())
		}
		// SIGUSR2: exit for a restart. The session closes without a
		// withdrawal, and graceful restart keeps the route at the router.
		g1.d.Signal(syscall.SIGUSR2)
		deadline := time.Now().Add(10 * time.Second)
		for !g1.d.Exited() {
			if time.Now().After(deadline) {
				t.Fatal("syngate did not exit on SIGUSR2")
			}
			time.Sleep(20 * time.Millisecond)
		}
		down := time.Now()
		for time.Since(down) < 2*bgpHold {
			if !l.hasNexthop(g1.addr) {
				t.Fatalf("the router dropped gateway 1's route %v after its restart began", time.Since(down).Round(time.Millisecond))
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("router state during the restart:\n%s", l.birdc("show", "route", "all", l.e.VIP4.String()+"/32"))
		l.start(g1)
		restarted := time.Since(down)
		var err error
		for range 50 {
			if err = l.echoOnce(time.Second); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("no connection through the restarted gateway: %v", err)
		}
		if !l.hasNexthop(g1.addr) {
			t.Fatal("gateway 1's route gone after its restart")
		}
		// Until the new session is up, the router holds the stale route
		// and a withdrawal has no session to go out on.
		for start := time.Now(); !g1.established(t); {
			if time.Since(start) > 10*time.Second {
				t.Fatal("gateway 1's BGP session not re-established 10s after its restart")
			}
			time.Sleep(50 * time.Millisecond)
		}
		// SIGTERM: shutdown. The route goes before syngate exits.
		start := time.Now()
		g1.d.Signal(syscall.SIGTERM)
		for l.hasNexthop(g1.addr) {
			if time.Since(start) > 5*time.Second {
				t.Fatal("gateway 1's route still there 5s after SIGTERM")
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("restart: route kept through %v of restart (graceful restart); shutdown: route withdrawn %v after SIGTERM",
			restarted.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	})
}
