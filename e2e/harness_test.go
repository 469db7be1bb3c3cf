// Package e2e runs syngate end to end: a real `syngate run` in the gateway
// namespace of a lab, the kernel's TCP stacks in the client and backend
// namespaces, traffic only inside those namespaces.
package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/syngate/syngate/lab"
	"github.com/syngate/syngate/metrics"
	"golang.org/x/sys/unix"
)

// syngateBin is the binary under test, built once by TestMain.
var syngateBin string

func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == netnsExecFlag {
		asIPNetnsExec(os.Args[2:]) // does not return
	}
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipping: the end-to-end tests need root (network namespaces, XDP, AF_XDP)")
		os.Exit(m.Run()) // every test skips itself with the same reason
	}
	dir, err := os.MkdirTemp("", "syngate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	syngateBin = filepath.Join(dir, "syngate")
	out, err := exec.Command("go", "build", "-o", syngateBin, "../cmd/syngate").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build syngate: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// gatewayRun is a running `syngate run` inside a lab's gateway namespace.
type gatewayRun struct {
	t   testing.TB
	top *lab.Topology
	d   *lab.Daemon
}

// serviceVIP is where the lab's service listens, backendPort where the
// backend server does.
const (
	servicePort = 80
	backendPort = 8080
)

// labOptions tunes a lab and its syngate config.
type labOptions struct {
	oneArm   bool
	cookies  string // never | auto | always
	backlog  int
	overflow string
	extra    string // appended to the service's YAML
	// connectTimeout is backend.connect_timeout; default 2s.
	connectTimeout string
	// top is appended to the YAML at the top level (after the services).
	top string
	// prefix starts the lab's namespace names; default "sg-e2e-".
	prefix string
	// bpffs is the config's bpffs; default "off" (pins outlive a test).
	bpffs string
	// netnsExec starts syngate the way `ip netns exec` does: in a mount
	// namespace of its own with a fresh sysfs on /sys.
	netnsExec bool
	// offloadsOff turns the veths' checksum and segmentation offloads off.
	// By default the lab keeps the veth defaults (checksum offload, TSO,
	// GRO) as containers have them: local senders' segments arrive with
	// partial checksums and as aggregates.
	offloadsOff bool
	// datapath is every interface's datapath; default auto (tc on veth)
	// with the veth defaults, xdp with offloads off (the XDP fast path).
	datapath string
	// backendDatapath is the datapath of the gateway's backend-side
	// interface in the routed topology; default datapath.
	backendDatapath string
	// queues gives the lab's links this many queues (0: one).
	queues int
}

// linkMode is one way the lab's links are set up.
type linkMode struct {
	name     string
	offloads bool
}

// datapath is the config's datapath for m: xdp with offloads off, auto
// (which picks tc on a veth) with the veth defaults.
func (m linkMode) datapath() string {
	if m.offloads {
		return "auto"
	}
	return "xdp"
}

// linkModes are the two the key tests run in: offloads off (the XDP data
// path) and the veth defaults (partial checksums and GRO aggregates; auto
// picks the TC data path).
var linkModes = []linkMode{{"offloads-off", false}, {"veth-defaults", true}}

// forLinkModes runs f as one subtest per link mode.
func forLinkModes(t *testing.T, f func(t *testing.T, m linkMode)) {
	for _, m := range linkModes {
		t.Run(m.name, func(t *testing.T) { f(t, m) })
	}
}

// checkDatapath asserts from the verdict counters that the spliced data
// went through the data path mode selects: TC with the veth defaults, XDP
// with offloads off, never both.
func checkDatapath(t *testing.T, m metrics.Samples, mode linkMode) {
	t.Helper()
	v := func(verdict, reason string) float64 {
		return m[`syngate_xdp_packets_total{reason="`+reason+`",verdict="`+verdict+`"}`]
	}
	xdp := v("tx", "fast_tx") + v("redirect", "fast_redirect")
	tc := v("redirect", "fast_tc_redirect") + v("redirect", "fast_tc_redirect_neigh")
	switch {
	case mode.offloads && (tc == 0 || xdp != 0):
		t.Errorf("veth defaults: %v segments spliced by TC, %v by XDP; want TC only", tc, xdp)
	case !mode.offloads && (xdp == 0 || tc != 0):
		t.Errorf("offloads off: %v segments spliced by XDP, %v by TC; want XDP only", xdp, tc)
	}
	// The handshakes reached the engine through the TC ring ports exactly
	// when the TC data path ran, and the ports lost nothing. (They send
	// only the engine's own SYN-ACKs: with cookies always, nothing.)
	rx, tx := m.Sum("syngate_tc_ring_frames_total", `direction="rx"`), m.Sum("syngate_tc_ring_frames_total", `direction="tx"`)
	lost := m.Sum("syngate_tc_ring_dropped_total") + m.Sum("syngate_tc_ring_tx_errors_total")
	switch {
	case mode.offloads && (rx == 0 || lost != 0):
		t.Errorf("veth defaults: TC ring ports read %v frames, sent %v, lost %v; want handshake packets read, none lost", rx, tx, lost)
	case !mode.offloads && rx+tx != 0:
		t.Errorf("offloads off: TC ring ports read %v frames, sent %v; want none", rx, tx)
	}
}

// newLab builds a topology, with the veth defaults unless o.offloadsOff.
func newLab(t testing.TB, o labOptions) *lab.Topology {
	t.Helper()
	lab.RequireRoot(t)
	if o.prefix == "" {
		o.prefix = "sg-e2e-"
	}
	top, err := lab.NewTopology(t, lab.Options{OneArm: o.oneArm, NoOffloads: o.offloadsOff, Prefix: o.prefix, Queues: o.queues})
	if err != nil {
		t.Fatal(err)
	}
	if needsXDPPass(o) {
		if err := top.PrepareGatewayXDP(); err != nil {
			t.Fatal(err)
		}
	}
	return top
}

// needsXDPPass says whether some gateway interface of o's lab runs the XDP
// program, whose XDP_TX and redirects a veth takes only when its peer has
// an XDP program too. A TC-datapath interface runs none: its peer keeps
// the veth defaults untouched (an XDP program on the peer would turn the
// gateway side's TSO off).
func needsXDPPass(o labOptions) bool {
	onTC := func(dp string) bool { return dp == "tc" || (!o.offloadsOff && (dp == "" || dp == "auto")) }
	return !onTC(o.datapath) || (!o.oneArm && o.backendDatapath != "" && !onTC(o.backendDatapath))
}

// echoRig is what link-mode tests start from: a lab in mode's link setup
// with the echo server behind a running syngate.
func echoRig(t *testing.T, mode linkMode) (*lab.Topology, *gatewayRun) {
	t.Helper()
	o := labOptions{offloadsOff: !mode.offloads}
	top := newLab(t, o)
	echoServer(t, top)
	return top, startSyngate(t, top, o)
}

// backendAddr is the backend's address in top.
func backendAddr(top *lab.Topology) netip.Addr { return top.BackendIf.V4.Addr() }

// startSyngate writes a config for top and runs syngate with it.
func startSyngate(t testing.TB, top *lab.Topology, o labOptions) *gatewayRun {
	t.Helper()
	dir := t.TempDir()
	if o.datapath == "" {
		o.datapath = map[bool]string{true: "xdp", false: "auto"}[o.offloadsOff]
	}
	ifaces := fmt.Sprintf("  - name: %s\n    datapath: %s\n", top.GatewayClient.Name, o.datapath)
	if o.backendDatapath == "" {
		o.backendDatapath = o.datapath
	}
	if top.GatewayBackend.Name != top.GatewayClient.Name {
		ifaces += fmt.Sprintf("  - name: %s\n    datapath: %s\n", top.GatewayBackend.Name, o.backendDatapath)
	}
	if o.cookies == "" {
		o.cookies = "auto"
	}
	if o.backlog == 0 {
		o.backlog = 1024
	}
	if o.connectTimeout == "" {
		o.connectTimeout = "2s"
	}
	if o.overflow == "" {
		o.overflow = "drop"
	}
	if o.bpffs == "" {
		o.bpffs = "off"
	}
	cfg := fmt.Sprintf(`interfaces:
%ssecret_file: %s
bpffs: %q
metrics:
  listen: 127.0.0.1:9420
syn:
  cookies: %s
backend:
  connect_timeout: %s
services:
  - name: web6
    listen: "%s"
    backend: "%s"
  - name: web
    listen: %s
    backend: %s
    backlog: %d
    on_overflow: %s
%s%s`, ifaces, filepath.Join(dir, "secret"), o.bpffs, o.cookies, o.connectTimeout,
		netip.AddrPortFrom(top.VIP6, servicePort), netip.AddrPortFrom(top.BackendIf.V6.Addr(), backendPort),
		netip.AddrPortFrom(top.VIP4, servicePort), netip.AddrPortFrom(backendAddr(top), backendPort),
		o.backlog, o.overflow, o.extra, o.top)
	return startSyngateConfig(t, top, dir, cfg, o.netnsExec)
}

// startSyngateConfig runs syngate in top's gateway namespace with the config
// text cfg, written into dir; netnsExec starts it the way `ip netns exec`
// would (see labOptions).
func startSyngateConfig(t testing.TB, top *lab.Topology, dir, cfg string, netnsExec bool) *gatewayRun {
	t.Helper()
	cfgPath := filepath.Join(dir, "syngate.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(dir, "ready")
	args := []string{syngateBin, "run", "-c", cfgPath, "-ready-file", ready, "-log-level", "debug"}
	if netnsExec {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		args = append([]string{self, netnsExecFlag}, args...)
	}
	d, err := lab.StartDaemon(top.Gateway, filepath.Join(dir, "syngate.log"), args[0], args[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	g := &gatewayRun{t: t, top: top, d: d}
	t.Cleanup(g.stop)
	if err := d.WaitFile(ready, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return g
}

// stop ends syngate by its PID (SIGTERM, then SIGKILL after a grace time).
func (g *gatewayRun) stop() {
	if err := g.d.Stop(10 * time.Second); err != nil {
		g.t.Error(err)
	}
	if g.t.Failed() || os.Getenv("E2E_LOGS") != "" {
		g.t.Logf("syngate log:\n%s", g.d.Logs())
	}
}

// metrics scrapes syngate's /metrics from inside the gateway namespace.
func (g *gatewayRun) metrics() metrics.Samples {
	g.t.Helper()
	body, err := g.top.Gateway.HTTPGet(netip.MustParseAddrPort("127.0.0.1:9420"), "/metrics", 5*time.Second)
	if err != nil {
		g.t.Fatalf("scrape metrics: %v", err)
	}
	m, err := metrics.ParseText(string(body))
	if err != nil {
		g.t.Fatal(err)
	}
	return m
}

// waitMetric polls /metrics until sample reaches want: a client's connect()
// returns on the SYN-ACK, before syngate has opened the backend leg.
func (g *gatewayRun) waitMetric(sample string, want float64, timeout time.Duration) float64 {
	g.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := g.metrics()[sample]
		if got >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkInWindow fails the test if XDP judged segments of the endpoints
// outside the tracked window: in a test without an attacker every segment
// is legitimate, and one judged outside means the tracking lost step.
func (g *gatewayRun) checkInWindow() {
	g.t.Helper()
	m := g.metrics()
	oow := m.Sum("syngate_xdp_packets_total", `reason="fast_tx_out_of_window"`) +
		m.Sum("syngate_xdp_packets_total", `reason="fast_redirect_out_of_window"`) +
		m.Sum("syngate_xdp_packets_total", `reason="pass_tc_out_of_window"`)
	drops := m.Sum("syngate_xdp_packets_total", `reason="drop_rst_out_of_window"`)
	inWin := m.Sum("syngate_xdp_packets_total", `reason="xsk_rst_in_window"`)
	if oow != 0 || drops != 0 {
		g.t.Errorf("legitimate segments judged outside the window: %v forwarded, %v RSTs dropped", oow, drops)
	}
	if inWin != 0 {
		g.t.Logf("%v legitimate RSTs judged in the window but not exact", inWin)
	}
	// A closed end's RST answering a duplicate the network delivered late
	// (the lab's veths do, under bursts) is dropped as the receiver would;
	// it is counted apart from blind RSTs.
	if closed := m.Sum("syngate_xdp_packets_total", `reason="drop_rst_closed"`); closed != 0 {
		g.t.Logf("%v RSTs of closed ends answering late duplicates dropped", closed)
	}
}

// dial opens a TCP connection from inside ns.
func dial(ns *lab.NS, addr netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := ns.Run(func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr.String())
		return err
	})
	return c, err
}

// listen opens a TCP listener inside ns.
func listen(ns *lab.NS, addr netip.AddrPort) (net.Listener, error) {
	var l net.Listener
	err := ns.Run(func() (err error) {
		l, err = net.Listen("tcp", addr.String())
		return err
	})
	return l, err
}

// privateBPFFS mounts a bpffs of the test's own under dir, so its pins are
// in no other test's way and go with it, and returns the pin directory
// syngate uses there.
func privateBPFFS(t *testing.T, dir string) string {
	t.Helper()
	mnt := filepath.Join(dir, "bpffs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpffs", mnt, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount a bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	return filepath.Join(mnt, "syngate")
}

// serveConns listens on addr in ns and runs handle for every connection on
// its own goroutine, closing the connection when handle returns. The
// listener closes, and every handler is waited for, at the test's end.
func serveConns(t testing.TB, ns *lab.NS, addr netip.AddrPort, handle func(c net.Conn)) net.Listener {
	t.Helper()
	return serveAccepted(t, ns, addr, func(net.Conn) func(net.Conn) { return handle })
}

// serveAccepted is serveConns for servers that record something at accept
// time, in accept order: accepted runs on the accept loop and returns the
// connection's handler.
func serveAccepted(t testing.TB, ns *lab.NS, addr netip.AddrPort, accepted func(c net.Conn) (handle func(c net.Conn))) net.Listener {
	t.Helper()
	ln, err := listen(ns, addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			handle := accepted(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln
}
