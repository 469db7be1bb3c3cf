package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/syngate/syngate/bpf"
	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/lab"
)

// Restart test sizes: restartTransfers connections each move
// restartBytes each way, paced at restartRate so that each lasts about 27
// s and spans every switch of a run (the last one serves about 14 s after
// the transfers start; the test fails if a transfer ended before). Twenty at 2.4 MiB/s
// carry what eight at 6 MiB/s did, about 48 MiB/s each way through the
// gateway: twenty at 6 MiB/s overran the veths of a shared 2-core machine
// (hundreds of thousands of interface drops a phase, new connections
// failing). Each transfer is checked end to end by SHA-256.
const (
	restartTransfers = 20
	restartBytes     = 64 << 20
	restartRate      = 2400 << 10 // bytes per second per direction per transfer
	newConnEvery     = 10 * time.Millisecond
)

// TestRestartKeepsConnections switches syngate three ways, one after
// another, while twenty transfers run through it across all three and new
// connections keep arriving: SIGTERM and a new start, SIGKILL and a new
// start, and an upgrade to a differently built binary; half the transfers
// over IPv6. No transfer may break or lose a byte; every new
// connection must succeed (a retransmission is allowed); after each
// switch no stale service is left, no new backend leg takes a live flow's
// port, the flows gauge matches the pinned flow table, and adopted flows
// expire.
//
// It runs with offloads off on the XDP data path, and with the veth
// defaults on the TC data path (datapath auto): there the pinned TC links
// keep splicing while no syngate runs, and are taken over.
func TestRestartKeepsConnections(t *testing.T) {
	forLinkModes(t, testRestartKeepsConnections)
}

func testRestartKeepsConnections(t *testing.T, mode linkMode) {
	datapath := mode.datapath()
	top := newLab(t, labOptions{offloadsOff: !mode.offloads, prefix: "sgl-"})
	dir := t.TempDir()
	pins := privateBPFFS(t, dir)

	upgraded := filepath.Join(dir, "syngate-upgraded")
	if out, err := exec.Command("go", "build", "-ldflags", "-X main.version=e2e-upgraded", "-o", upgraded, "../cmd/syngate").CombinedOutput(); err != nil {
		t.Fatalf("build the upgraded binary: %v\n%s", err, out)
	}

	srv := newRecordingEcho(t, top)
	cfgWith81 := restartConfig(t, top, dir, pins, true, 0, datapath)
	cfgV4 := restartConfig(t, top, dir, pins, false, 0, datapath)
	// The upgrade also resizes the flow table: the pinned one is migrated.
	cfgResized := restartConfig(t, top, dir, pins, false, 131072, datapath)

	r := &restarter{t: t, root: t, top: top, dir: dir}
	r.start(syngateBin, cfgWith81)
	t.Cleanup(func() { r.cur.stop() })

	switches := []struct {
		name string
		do   func()
	}{
		{"baseline-no-switch", func() {}},
		{"SIGTERM", func() {
			if err := r.cur.d.Stop(10 * time.Second); err != nil {
				t.Error(err)
			}
			r.start(syngateBin, cfgV4) // and web81 is removed from the config
		}},
		{"SIGKILL", func() {
			syscall.Kill(r.cur.d.PID(), syscall.SIGKILL)
			r.cur.d.Stop(5 * time.Second) // reaps it
			r.start(syngateBin, cfgV4)
		}},
		{"upgrade", func() {
			if err := r.cur.d.Stop(10 * time.Second); err != nil {
				t.Error(err)
			}
			r.start(upgraded, cfgResized)
		}},
	}
	// One set of transfers spans every switch, one after another.
	tr := r.startTransfers(t)
	var lastSwitch time.Time
	for i, sw := range switches {
		ok := t.Run(sw.name, func(st *testing.T) {
			r.t = st
			defer func() { r.t = t }()
			lastSwitch = r.runSwitch(st, srv, tr, i > 0, sw.do)
		})
		if !ok {
			tr.wait()
			return
		}
	}
	broken := tr.wait()
	for _, err := range broken {
		t.Error(err)
	}
	if first := tr.firstEnd(); first.Before(lastSwitch) {
		t.Errorf("a transfer ended %v before the last switch: the transfers no longer span every switch (raise restartBytes)", lastSwitch.Sub(first).Round(time.Millisecond))
	}
	t.Logf("%d transfers of %d MiB each way across every switch: %d broken; the first ended %v after the last switch served",
		restartTransfers, restartBytes>>20, len(broken), tr.firstEnd().Sub(lastSwitch).Round(time.Millisecond))
	if m, err := ebpf.LoadPinnedMap(filepath.Join(pins, "flows"), nil); err != nil {
		t.Error(err)
	} else {
		if n := m.MaxEntries(); n != 131072 {
			t.Errorf("flow table has %d entries after the upgrade resized it to 131072", n)
		}
		m.Close()
	}
	if body, err := top.Gateway.HTTPGet(netip.MustParseAddrPort("127.0.0.1:9420"), "/metrics", 5*time.Second); err != nil || !strings.Contains(string(body), `version="e2e-upgraded"`) {
		t.Errorf("after the upgrade, build_info does not show the upgraded binary (%v)", err)
	}

	// Everything closed: the adopted flows expire on time (close_timeout
	// 2s, scanned every 5s) and the gauge follows the table to zero.
	g := r.cur.g
	deadline := time.Now().Add(30 * time.Second)
	for {
		gauge, entries := g.metrics()["syngate_flows"], pinnedFlows(t, pins)
		if gauge == 0 && entries == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the last transfer closed: flows gauge %v, %d entries in the table; "+
				"out-of-window segments forwarded unlearned (this syngate): %v; the entries:\n%s",
				gauge, entries,
				outOfWindow(g.metrics()),
				describeFlows(t, pins))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("expired after close: %v", g.metrics()[`syngate_flows_expired_total{reason="closed"}`])
}

// restartConfig writes a config with pinning under pins and a short
// close timeout, an IPv4 and an IPv6 service; with81 adds a service on
// VIP:81 that later configs drop; maxFlows, when set, sizes the flow
// table.
//
// datapath is every interface's datapath; empty leaves the default (auto).
func restartConfig(t *testing.T, top *lab.Topology, dir, pins string, with81 bool, maxFlows int, datapath string) string {
	t.Helper()
	dp := ""
	if datapath != "" {
		dp = "    datapath: " + datapath + "\n"
	}
	flows := ""
	if maxFlows > 0 {
		flows = fmt.Sprintf("  max: %d\n", maxFlows)
	}
	v6 := fmt.Sprintf("  - name: web6\n    listen: \"%s\"\n    backend: \"%s\"\n",
		netip.AddrPortFrom(top.VIP6, servicePort), netip.AddrPortFrom(top.BackendIf.V6.Addr(), backendPort))
	if with81 {
		v6 += fmt.Sprintf("  - name: web81\n    listen: %s\n    backend: %s\n",
			netip.AddrPortFrom(top.VIP4, 81), netip.AddrPortFrom(backendAddr(top), backendPort))
	}
	cfg := fmt.Sprintf(`interfaces:
  - name: %s
%s  - name: %s
%ssecret_file: %s
bpffs: %s
metrics:
  listen: 127.0.0.1:9420
backend:
  connect_timeout: 2s
flows:
%s  close_timeout: 2s
services:
%s  - name: web
    listen: %s
    backend: %s
`, top.GatewayClient.Name, dp, top.GatewayBackend.Name, dp, filepath.Join(dir, "secret"), pins, flows, v6,
		netip.AddrPortFrom(top.VIP4, servicePort), netip.AddrPortFrom(backendAddr(top), backendPort))
	path := filepath.Join(dir, fmt.Sprintf("syngate-%v-%d.yaml", with81, maxFlows))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// restarter runs one syngate after another in the lab's gateway.
type restarter struct {
	t    *testing.T // the running (sub)test
	root *testing.T // the whole test: owns the daemons and their cleanup
	top  *lab.Topology
	dir  string
	n    int
	cur  struct {
		d *lab.Daemon
		g *gatewayRun
		// startup is from the exec to the ready file.
		startup time.Duration
		stop    func()
	}
}

func (r *restarter) start(bin, cfg string) {
	r.t.Helper()
	r.n++
	ready := filepath.Join(r.dir, fmt.Sprintf("ready-%d", r.n))
	begin := time.Now()
	d, err := lab.StartDaemon(r.top.Gateway, filepath.Join(r.dir, fmt.Sprintf("syngate-%d.log", r.n)),
		bin, "run", "-c", cfg, "-ready-file", ready, "-log-level", "debug")
	if err != nil {
		r.t.Fatal(err)
	}
	if err := d.WaitFile(ready, 20*time.Second); err != nil {
		r.t.Fatal(err)
	}
	r.cur.startup = time.Since(begin)
	r.cur.d = d
	r.cur.g = &gatewayRun{t: r.root, top: r.top, d: d}
	r.cur.stop = func() {
		d.Stop(10 * time.Second)
		if r.root.Failed() || os.Getenv("E2E_LOGS") != "" {
			r.root.Logf("syngate log:\n%s", d.Logs())
		}
	}
}

// transfers are the long connections that run across every switch of a
// run, each echoing restartBytes at restartRate.
type transfers struct {
	wg     sync.WaitGroup
	errs   chan error
	echoed []atomic.Int64 // bytes read back so far, by transfer
	mu     sync.Mutex
	ended  []time.Time
}

// startTransfers connects every transfer (half of them over IPv6) and
// starts them.
func (r *restarter) startTransfers(t *testing.T) *transfers {
	vip := netip.AddrPortFrom(r.top.VIP4, servicePort)
	vip6 := netip.AddrPortFrom(r.top.VIP6, servicePort)
	tr := &transfers{errs: make(chan error, restartTransfers), echoed: make([]atomic.Int64, restartTransfers)}
	conns := make([]*net.TCPConn, restartTransfers)
	for i := range conns {
		to := vip
		if i%2 == 1 {
			to = vip6
		}
		c, err := dial(r.top.Client, to, 5*time.Second)
		if err != nil {
			t.Fatalf("transfer %d: connect: %v", i, err)
		}
		conns[i] = c.(*net.TCPConn)
	}
	for i, c := range conns {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			defer c.Close()
			cc := &countingConn{TCPConn: c, n: &tr.echoed[i]}
			if err := pacedEcho(cc, restartBytes, uint64(i), restartRate, 3*time.Minute); err != nil {
				tr.errs <- fmt.Errorf("transfer %d: %w", i, err)
			}
			tr.mu.Lock()
			tr.ended = append(tr.ended, time.Now())
			tr.mu.Unlock()
		}()
	}
	return tr
}

// progress is how many bytes each transfer has read back.
func (tr *transfers) progress() []int64 {
	out := make([]int64, len(tr.echoed))
	for i := range tr.echoed {
		out[i] = tr.echoed[i].Load()
	}
	return out
}

// stalled counts the transfers that read nothing back since before and
// have not finished.
func (tr *transfers) stalled(before []int64) int {
	n := 0
	for i, b := range tr.progress() {
		if b == before[i] && b < restartBytes {
			n++
		}
	}
	return n
}

// wait waits for every transfer and returns the broken ones' errors.
func (tr *transfers) wait() []error {
	tr.wg.Wait()
	close(tr.errs)
	var out []error
	for err := range tr.errs {
		out = append(out, err)
	}
	return out
}

// firstEnd is when the first transfer ended.
func (tr *transfers) firstEnd() time.Time {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	first := time.Now()
	for _, e := range tr.ended {
		if e.Before(first) {
			first = e
		}
	}
	return first
}

// countingConn counts the bytes read from a connection.
type countingConn struct {
	*net.TCPConn
	n *atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	m, err := c.TCPConn.Read(b)
	c.n.Add(int64(m))
	return m, err
}

// WriteTo hides the TCP connection's own, which io.Copy would use to read
// past Read.
func (c *countingConn) WriteTo(w io.Writer) (int64, error) {
	return io.Copy(w, struct{ io.Reader }{c})
}

// runSwitch runs a stream of new connections across one switch while the
// transfers run, checks and reports what happened, and returns when the
// new syngate served.
func (r *restarter) runSwitch(t *testing.T, srv *recordingEcho, tr *transfers, web81Removed bool, do func()) time.Time {
	vip := netip.AddrPortFrom(r.top.VIP4, servicePort)
	before := r.cur.g.metrics()
	retrans0 := [2]int{tcpStat(t, r.top.Client, "RetransSegs"), tcpStat(t, r.top.Backend, "RetransSegs")}
	// The gateway's kernel resets what reaches it for a spliced flow (it
	// has no socket for it); the engine's own RSTs go out raw, uncounted.
	rsts0 := tcpStat(t, r.top.Gateway, "OutRsts")
	nss := []*lab.NS{r.top.Client, r.top.Gateway, r.top.Backend}
	var drops0 [3]int
	for i, ns := range nss {
		drops0[i] = linkDrops(t, ns)
	}

	// New connections every 10 ms from just before the switch until a
	// few seconds after it.
	nc := &newConns{}
	ncCtx, stopNew := context.WithCancel(context.Background())
	var ncWG sync.WaitGroup
	ncWG.Add(1)
	go func() { defer ncWG.Done(); nc.run(ncCtx, r.top.Client, vip) }()

	time.Sleep(time.Second)
	progress0 := tr.progress()
	switchAt := time.Now()
	do()
	served := time.Since(switchAt)
	servedAt := time.Now()
	time.Sleep(3 * time.Second)
	stopNew()
	ncWG.Wait()
	stalled := tr.stalled(progress0)

	// The flows gauge matches the pinned table (transfers still running,
	// the short connections closed but not yet expired).
	var gauge float64
	var entries int
	for range 5 { // the short connections' flows come and go; take a quiet reading
		gauge, entries = r.cur.g.metrics()["syngate_flows"], pinnedFlows(t, filepath.Join(r.dir, "bpffs", "syngate"))
		if int(gauge) == entries {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if int(gauge) != entries {
		t.Errorf("flows gauge %v, %d entries in the pinned table", gauge, entries)
	}

	// The removed IPv6 service's SYNs reach the kernel again, which
	// refuses them at once (a stale entry would steer them to AF_XDP).
	if web81Removed {
		if c, err := dial(r.top.Client, netip.AddrPortFrom(r.top.VIP4, 81), 3*time.Second); err == nil {
			c.Close()
			t.Error("the removed service still answers")
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("the removed service: %v, want connection refused from the kernel", err)
		}
	}
	if overlaps := srv.portOverlaps(); len(overlaps) > 0 {
		t.Errorf("backend legs sharing a source port while both live: %v", overlaps)
	}

	after := r.cur.g.metrics()
	delta := func(k string) float64 { return after[k] - before[k] }
	retrans := [2]int{tcpStat(t, r.top.Client, "RetransSegs") - retrans0[0], tcpStat(t, r.top.Backend, "RetransSegs") - retrans0[1]}
	kernelRSTs := tcpStat(t, r.top.Gateway, "OutRsts") - rsts0
	var drops [3]int
	for i, ns := range nss {
		drops[i] = linkDrops(t, ns) - drops0[i]
	}
	if web81Removed {
		kernelRSTs-- // the refusal of the removed service's SYN
	}
	nc.mu.Lock()
	defer nc.mu.Unlock()
	t.Logf("%d transfers running: %d read nothing back from just before the switch to 3 s after it; new connections: %d ok, %d failed, %d after a retransmission (>900 ms), slowest %v",
		restartTransfers, stalled, nc.ok, len(nc.failed), nc.retried, nc.slowest.Round(time.Millisecond))
	t.Logf("switch: new syngate serving %v after the old one was signalled (its own start %v); TCP retransmissions client %d, backend %d; "+
		"interface drops client %d, gateway %d, backend %d; RSTs from the gateway's kernel %d (a new syngate's ECN probes, one raw SYN per service, are answered by it); "+
		"XDP during the phase: drop_no_socket %v, cookie SYN-ACKs (standby or offload) %v",
		served.Round(time.Millisecond), r.cur.startup.Round(time.Millisecond), retrans[0], retrans[1],
		drops[0], drops[1], drops[2], kernelRSTs,
		delta(`syngate_xdp_packets_total{reason="drop_no_socket",verdict="drop"}`),
		delta(`syngate_xdp_packets_total{reason="tx_synack_cookie",verdict="tx"}`))
	// No spliced packet may be dropped by the switch itself.
	for _, reason := range []string{"drop_fast_no_port", "drop_fast_no_route", "drop_fast_no_neigh"} {
		if d := delta(`syngate_xdp_packets_total{reason="` + reason + `",verdict="drop"}`); d != 0 {
			t.Errorf("%v spliced packets dropped as %s during the phase", d, reason)
		}
	}
	t.Logf("spliced segments forwarded outside the tracked window (not learned) during the phase: %v",
		outOfWindow(after)-outOfWindow(before))
	t.Logf("slow path packets of the syngate running at the end (its counters start at its start): %v",
		after[`syngate_slowpath_packets_total{service="web"}`]+after[`syngate_slowpath_packets_total{service="web6"}`])
	for i, err := range nc.failed {
		if i < 5 {
			t.Errorf("new connection failed: %v", err)
		}
	}
	if len(nc.failed) > 5 {
		t.Errorf("... %d new connections failed in all", len(nc.failed))
	}
	return servedAt
}

// pacedEcho is echoOver with the writer held to rate bytes per second.
func pacedEcho(c net.Conn, n int64, seed uint64, rate int64, timeout time.Duration) error {
	return echoOverFrom(c, n, seed, timeout, func(w io.Writer, src io.Reader) (int64, error) {
		buf := make([]byte, 64<<10)
		start := time.Now()
		var total int64
		for {
			m, rerr := io.ReadFull(src, buf)
			if m > 0 {
				if _, err := w.Write(buf[:m]); err != nil {
					return total, err
				}
				total += int64(m)
				if ahead := time.Duration(total*int64(time.Second)/rate) - time.Since(start); ahead > 0 {
					time.Sleep(ahead)
				}
			}
			if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
				return total, nil
			}
			if rerr != nil {
				return total, rerr
			}
		}
	})
}

// newConns opens short connections one after another and records how
// they fared.
type newConns struct {
	mu      sync.Mutex
	ok      int
	retried int
	slowest time.Duration
	failed  []error
}

func (n *newConns) run(ctx context.Context, client *lab.NS, vip netip.AddrPort) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := 0; ctx.Err() == nil; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			err := shortEcho(client, vip, i)
			el := time.Since(start)
			n.mu.Lock()
			defer n.mu.Unlock()
			if err != nil {
				n.failed = append(n.failed, fmt.Errorf("connection %d after %v: %w", i, el.Round(time.Millisecond), err))
				return
			}
			n.ok++
			n.slowest = max(n.slowest, el)
			if el > 900*time.Millisecond {
				n.retried++
			}
		}()
		time.Sleep(newConnEvery)
	}
}

// shortEcho connects, sends a line and reads its echo, within 15 s (room
// for a SYN or data retransmission or two).
func shortEcho(client *lab.NS, vip netip.AddrPort, i int) error {
	c, err := dial(client, vip, 15*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	msg := fmt.Sprintf("hello %d\n", i)
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if got != msg {
		return fmt.Errorf("echo %q, sent %q", got, msg)
	}
	return nil
}

// recordingEcho is the backend's echo server, recording when each backend
// leg (by its source port) was open.
type recordingEcho struct {
	mu   sync.Mutex
	legs []leg
}

type leg struct {
	src        netip.AddrPort // syngate's source address and port
	start, end time.Time
}

func newRecordingEcho(t *testing.T, top *lab.Topology) *recordingEcho {
	t.Helper()
	s := &recordingEcho{}
	serveAccepted(t, top.Backend, netip.AddrPortFrom(netip.IPv6Unspecified(), backendPort), func(c net.Conn) func(net.Conn) {
		s.mu.Lock()
		i := len(s.legs)
		src := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		s.legs = append(s.legs, leg{src: netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), start: time.Now()})
		s.mu.Unlock()
		return func(c net.Conn) {
			io.Copy(c, c)
			s.mu.Lock()
			s.legs[i].end = time.Now()
			s.mu.Unlock()
		}
	})
	return s
}

// portOverlaps lists source addresses and ports that two backend legs held
// at once.
func (s *recordingEcho) portOverlaps() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	far := time.Now().Add(time.Hour)
	var out []netip.AddrPort
	for i, a := range s.legs {
		for _, b := range s.legs[i+1:] {
			if a.src != b.src {
				continue
			}
			ae, be := a.end, b.end
			if ae.IsZero() {
				ae = far
			}
			if be.IsZero() {
				be = far
			}
			if a.start.Before(be) && b.start.Before(ae) {
				out = append(out, a.src)
			}
		}
	}
	return out
}

// pinnedFlows counts the entries of the pinned flow table.
func pinnedFlows(t *testing.T, pins string) int {
	t.Helper()
	return pinnedEntries(t, filepath.Join(pins, "flows"))
}

// tcpStat reads one of the namespace's Tcp counters (RetransSegs,
// OutRsts, ...).
func tcpStat(t *testing.T, ns *lab.NS, stat string) int {
	t.Helper()
	var n int
	err := ns.Run(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		var head []string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != "Tcp:" {
				continue
			}
			if head == nil {
				head = f
				continue
			}
			for i, name := range head {
				if name == stat && i < len(f) {
					n, err = strconv.Atoi(f[i])
					return err
				}
			}
		}
		return fmt.Errorf("no Tcp %s in /proc/net/snmp", stat)
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// linkDrops sums the receive and transmit drops of every interface of the
// namespace (/proc/net/dev): a veth that cannot take a redirected frame
// counts it there.
func linkDrops(t *testing.T, ns *lab.NS) int {
	t.Helper()
	var n int
	err := ns.Run(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/dev")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			name, rest, ok := strings.Cut(line, ":")
			f := strings.Fields(rest)
			if !ok || len(f) < 12 || strings.Contains(name, "|") {
				continue
			}
			rx, err1 := strconv.Atoi(f[3])
			tx, err2 := strconv.Atoi(f[11])
			if err := errors.Join(err1, err2); err != nil {
				return fmt.Errorf("/proc/net/dev %q: %w", line, err)
			}
			n += rx + tx
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// describeFlows lists the pinned flow table's entries a connection at a
// time (each direction's flags and tracked state, and whether the other
// direction acknowledged its FIN), so a failure says why a connection was
// not expired: no FIN learned (its segments judged out of window), a FIN
// not acknowledged as far as the tracked state knows (the 30 s fallback),
// or an entry without its other direction.
func describeFlows(t *testing.T, pins string) string {
	t.Helper()
	all := make(map[flow.Key]flow.State)
	if err := bpf.ReadPinnedFlows(filepath.Join(pins, "flows"), func(k flow.Key, s flow.State) bool {
		all[k] = s
		return true
	}); err != nil {
		return err.Error()
	}
	now := flow.Monotonic()
	dir := func(k flow.Key, s, rev flow.State, haveRev bool) string {
		return fmt.Sprintf("  %v (to %v): tracked %v resync %v fin %v (end %d, acked %v) rst %v; seq_end %d ack_max %d win_end %d win_max %d wscale %d; "+
			"idle %v, %d packets, %d bytes",
			k, s.NAT.Dst, s.Tracked, s.Resync, s.FIN, s.FinEnd, haveRev && s.FINAcked(rev), s.RST,
			s.Track.SeqEnd, s.Track.AckMax, s.Track.WinEnd, s.Track.WinMax, s.Track.WScale,
			(now - s.LastSeen).Round(time.Millisecond), s.Packets, s.Bytes)
	}
	var b strings.Builder
	done := make(map[flow.Key]bool)
	for k, s := range all {
		if done[k] {
			continue
		}
		pk := flow.Key{Src: s.NAT.Dst, Dst: s.NAT.Src}
		rev, ok := all[pk]
		done[k], done[pk] = true, true
		fmt.Fprintf(&b, "connection:\n%s\n", dir(k, s, rev, ok))
		if ok {
			fmt.Fprintf(&b, "%s\n", dir(pk, rev, s, true))
		} else {
			fmt.Fprintf(&b, "  (no entry for %v)\n", pk)
		}
	}
	return b.String()
}

// outOfWindow sums the spliced segments the program forwarded without
// learning from them (outside the tracked window).
func outOfWindow(m map[string]float64) float64 {
	var n float64
	for k, v := range m {
		if strings.HasPrefix(k, "syngate_xdp_packets_total{") && (strings.Contains(k, `reason="fast_`) || strings.Contains(k, `reason="pass_tc_`)) && strings.Contains(k, "out_of_window") {
			n += v
		}
	}
	return n
}
