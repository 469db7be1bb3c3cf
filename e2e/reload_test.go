package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/syngate/syngate/lab"
)

// Reload test sizes: reloadTransfers paced transfers of reloadBytes each
// way, about eight seconds each, spanning the reloads.
const (
	reloadTransfers = 6
	reloadBytes     = 32 << 20
	reloadRate      = 4 << 20
	newBackendPort  = 8081
)

// reloadServices describes the services of one config of the test.
type reloadServices struct {
	gone      bool   // "gone" on VIP:81, later removed
	chgPort   uint16 // the backend port of "chg" on VIP:82
	api       bool   // "api" on VIP:83 (backend :8081), added by the reload
	ports     string // backend.ports
	badFlags  bool   // filters.drop_bad_flags
	establish string // flows.established_timeout
	datapath  string // every interface's datapath; empty: the default
}

func reloadConfig(top *lab.Topology, dir, pins string, s reloadServices) string {
	b := backendAddr(top)
	svc := func(name string, port uint16, backend uint16) string {
		return fmt.Sprintf("  - name: %s\n    listen: %s\n    backend: %s\n", name,
			netip.AddrPortFrom(top.VIP4, port), netip.AddrPortFrom(b, backend))
	}
	svcs := svc("web", servicePort, backendPort)
	svcs += fmt.Sprintf("  - name: web6\n    listen: \"%s\"\n    backend: \"%s\"\n",
		netip.AddrPortFrom(top.VIP6, servicePort), netip.AddrPortFrom(top.BackendIf.V6.Addr(), backendPort))
	if s.gone {
		svcs += svc("gone", 81, backendPort)
	}
	svcs += svc("chg", 82, s.chgPort)
	if s.api {
		svcs += svc("api", 83, newBackendPort)
	}
	dp := ""
	if s.datapath != "" {
		dp = "    datapath: " + s.datapath + "\n"
	}
	return fmt.Sprintf(`interfaces:
  - name: %s
%s  - name: %s
%ssecret_file: %s
bpffs: %s
metrics:
  listen: 127.0.0.1:9420
control:
  socket: %s
backend:
  connect_timeout: 2s
  ports: %s
filters:
  drop_bad_flags: %v
flows:
  close_timeout: 2s
  established_timeout: %s
services:
%s`, top.GatewayClient.Name, dp, top.GatewayBackend.Name, dp, filepath.Join(dir, "secret"), pins,
		filepath.Join(dir, "control.sock"), s.ports, s.badFlags, s.establish, svcs)
}

// countingEcho is an echo server that counts the connections it accepted.
type countingEcho struct{ n atomic.Int64 }

func newCountingEcho(t *testing.T, ns *lab.NS, addr netip.AddrPort) *countingEcho {
	t.Helper()
	s := &countingEcho{}
	serveConns(t, ns, addr, func(c net.Conn) {
		s.n.Add(1)
		io.Copy(c, c)
	})
	return s
}

// TestReload reloads syngate's config while checksummed transfers run
// through it, over a service that stays, one whose backend changes and one
// that is removed: none may break. After the SIGHUP the added service
// answers, the removed one is refused, and new
// connections of the changed one reach its new backend; the filters
// change too (a new XDP program under the running transfers). Then a
// file that does not parse and one that changes a restart-only key are
// refused by `syngate reload` (non-zero exit, the reason printed) and
// change nothing, and a good one is applied by it. It runs on the XDP data
// path (offloads off) and on the TC one (veth defaults, datapath auto),
// where the filters' reload replaces the TC programs too.
func TestReload(t *testing.T) {
	forLinkModes(t, testReload)
}

func testReload(t *testing.T, mode linkMode) {
	datapath := mode.datapath()
	top := newLab(t, labOptions{offloadsOff: !mode.offloads, prefix: "sgr-"})
	dir := t.TempDir()
	pins := privateBPFFS(t, dir)
	socket := filepath.Join(dir, "control.sock")

	old := newRecordingEcho(t, top) // :8080, IPv4 and IPv6
	next := newCountingEcho(t, top.Backend, netip.AddrPortFrom(backendAddr(top), newBackendPort))

	first := reloadServices{gone: true, chgPort: backendPort, ports: "16384-32767", badFlags: true, establish: "120h", datapath: datapath}
	second := reloadServices{chgPort: newBackendPort, api: true, ports: "16384-32767", badFlags: false, establish: "1h", datapath: datapath}
	cfgPath := filepath.Join(dir, "syngate.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(reloadConfig(top, dir, pins, first))
	ready := filepath.Join(dir, "ready")
	d, err := lab.StartDaemon(top.Gateway, filepath.Join(dir, "syngate.log"), syngateBin, "run", "-c", cfgPath, "-ready-file", ready, "-log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	g := &gatewayRun{t: t, top: top, d: d}
	t.Cleanup(g.stop)
	if err := d.WaitFile(ready, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	vip := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(top.VIP4, port) }

	// Before: "chg" goes to the old backend.
	for i := range 3 {
		if err := shortEcho(top.Client, vip(82), i); err != nil {
			t.Fatalf("chg before the reload: %v", err)
		}
	}
	if n := next.n.Load(); n != 0 {
		t.Fatalf("the new backend got %d connections before the reload", n)
	}
	m0 := g.metrics()
	if m0["syngate_reload_last_success_timestamp_seconds"] < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last success gauge %v at start: want the start time", m0["syngate_reload_last_success_timestamp_seconds"])
	}

	// The transfers: two over web, one over web6, two over chg, one over
	// gone.
	targets := []netip.AddrPort{vip(servicePort), vip(servicePort), netip.AddrPortFrom(top.VIP6, servicePort), vip(82), vip(82), vip(81)}
	var wg sync.WaitGroup
	errs := make(chan error, reloadTransfers)
	for i, to := range targets[:reloadTransfers] {
		c, err := dial(top.Client, to, 5*time.Second)
		if err != nil {
			t.Fatalf("transfer %d to %v: connect: %v", i, to, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			if err := pacedEcho(c, reloadBytes, uint64(1000+i), reloadRate, 2*time.Minute); err != nil {
				errs <- fmt.Errorf("transfer %d to %v: %w", i, to, err)
			}
		}()
	}
	nc := &newConns{}
	ncCtx, stopNew := context.WithCancel(context.Background())
	var ncWG sync.WaitGroup
	ncWG.Add(1)
	go func() { defer ncWG.Done(); nc.run(ncCtx, top.Client, vip(servicePort)) }()

	rstOOW := func(when string) {
		t.Logf("%s: out-of-window RSTs dropped so far: %v", when, g.metrics().Sum("syngate_xdp_packets_total", `reason="drop_rst_out_of_window"`))
	}
	// The reload, by SIGHUP.
	time.Sleep(2 * time.Second)
	rstOOW("before SIGHUP")
	write(reloadConfig(top, dir, pins, second))
	hupAt := time.Now()
	if err := syscall.Kill(d.PID(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if got := g.waitMetric("syngate_reload_successes_total", 1, 15*time.Second); got != 1 {
		t.Fatalf("reload successes %v after SIGHUP; log:\n%s", got, d.Logs())
	}
	applied := time.Since(hupAt)
	rstOOW("SIGHUP applied")
	m1 := g.metrics()
	if m1["syngate_reload_failures_total"] != 0 || m1["syngate_reload_last_success_timestamp_seconds"] < float64(hupAt.Unix()) {
		t.Errorf("after SIGHUP: failures %v, last success %v (SIGHUP at %v)", m1["syngate_reload_failures_total"],
			m1["syngate_reload_last_success_timestamp_seconds"], hupAt.Unix())
	}

	// The added service answers; the changed one goes to its new backend.
	if err := shortEcho(top.Client, vip(83), 0); err != nil {
		t.Errorf("added service: %v", err)
	}
	before := next.n.Load()
	for i := range 3 {
		if err := shortEcho(top.Client, vip(82), i); err != nil {
			t.Errorf("chg after the reload: %v", err)
		}
	}
	if got := next.n.Load() - before; got != 3 {
		t.Errorf("the new backend got %d of 3 new connections of the changed service", got)
	}
	// The removed one is refused: by the engine while its connections
	// (the transfer over it) live, then by the kernel.
	refusedAfter := waitRefused(t, top.Client, vip(81), 10*time.Second)
	t.Logf("SIGHUP applied in %v; the removed service refused (RST) %v after the SIGHUP",
		applied.Round(time.Millisecond), refusedAfter.Round(time.Millisecond))

	rstOOW("after the checks of the new config")
	// A file that does not parse: refused, nothing changes.
	write("services: [\n")
	out, err := exec.Command(syngateBin, "reload", "-socket", socket).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "invalid config") {
		t.Errorf("reload of a broken file: err %v, output %q; want a failure naming the invalid config", err, out)
	}
	// A restart-only key: refused by name.
	bad := second
	bad.ports = "20000-29999"
	write(reloadConfig(top, dir, pins, bad))
	out, err = exec.Command(syngateBin, "reload", "-socket", socket).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "backend.ports") || !strings.Contains(string(out), "restart") {
		t.Errorf("reload changing backend.ports: err %v, output %q; want a failure naming backend.ports and a restart", err, out)
	}
	m2 := g.metrics()
	if m2["syngate_reload_failures_total"] != 2 || m2["syngate_reload_successes_total"] != 1 ||
		m2["syngate_reload_last_success_timestamp_seconds"] != m1["syngate_reload_last_success_timestamp_seconds"] {
		t.Errorf("after two refused reloads: failures %v, successes %v, last success %v (was %v)",
			m2["syngate_reload_failures_total"], m2["syngate_reload_successes_total"],
			m2["syngate_reload_last_success_timestamp_seconds"], m1["syngate_reload_last_success_timestamp_seconds"])
	}
	// Nothing changed: the added service still answers, the changed one
	// still goes to its new backend.
	before = next.n.Load()
	if err := shortEcho(top.Client, vip(83), 1); err != nil {
		t.Errorf("added service after the refused reloads: %v", err)
	}
	if err := shortEcho(top.Client, vip(82), 4); err != nil {
		t.Errorf("chg after the refused reloads: %v", err)
	}
	if got := next.n.Load() - before; got != 2 {
		t.Errorf("the new backend got %d of 2 connections after the refused reloads", got)
	}

	rstOOW("before the transfers end")
	wg.Wait()
	rstOOW("after the transfers")
	close(errs)
	broken := 0
	for err := range errs {
		t.Error(err)
		broken++
	}
	// The transfer over the removed service has ended: its listener
	// leaves the data plane (after the close timeout and the expiry scan)
	// and the kernel refuses it from then on.
	ended := time.Now()
	var kernelAfter time.Duration
	for {
		rsts := tcpStat(t, top.Gateway, "OutRsts")
		c, err := dial(top.Client, vip(81), 2*time.Second)
		if err == nil {
			c.Close()
			t.Fatal("the removed service answers")
		}
		if errors.Is(err, syscall.ECONNREFUSED) && tcpStat(t, top.Gateway, "OutRsts") > rsts {
			kernelAfter = time.Since(ended)
			break
		}
		if time.Since(ended) > 30*time.Second {
			t.Fatalf("30 s after its last connection ended, the removed service is not refused by the kernel: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}

	rstOOW("after the kernel refused the removed service")
	// A good file through `syngate reload`: "gone" comes back.
	third := second
	third.gone = true
	write(reloadConfig(top, dir, pins, third))
	out, err = exec.Command(syngateBin, "reload", "-socket", socket).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "added: gone") {
		t.Errorf("syngate reload: err %v, output %q", err, out)
	}
	t.Logf("syngate reload: %s", strings.TrimSpace(string(out)))
	if err := shortEcho(top.Client, vip(81), 0); err != nil {
		t.Errorf("the re-added service: %v", err)
	}

	stopNew()
	ncWG.Wait()
	if overlaps := old.portOverlaps(); len(overlaps) > 0 {
		t.Errorf("backend legs sharing a source port while both live: %v", overlaps)
	}
	m3 := g.metrics()
	checkDatapath(t, m3, mode)
	// Logged, not asserted: about half the runs see 1-3 RSTs judged
	// outside the window (dropped), in one run already before the SIGHUP,
	// so not the reload's; not located yet (see the phase lines above).
	t.Logf("XDP: out-of-window segments forwarded %v, out-of-window RSTs dropped %v",
		m3.Sum("syngate_xdp_packets_total", `reason="fast_tx_out_of_window"`)+m3.Sum("syngate_xdp_packets_total", `reason="fast_redirect_out_of_window"`),
		m3.Sum("syngate_xdp_packets_total", `reason="drop_rst_out_of_window"`))
	nc.mu.Lock()
	defer nc.mu.Unlock()
	t.Logf("%d transfers of %d MiB each way (web x2, web6, chg x2, gone): %d broken; new connections to web across the reloads: %d ok, %d failed, slowest %v; reloads: %v applied, %v refused; "+
		"the removed service refused by the kernel %v after its last transfer ended",
		reloadTransfers, reloadBytes>>20, broken, nc.ok, len(nc.failed), nc.slowest.Round(time.Millisecond),
		m3["syngate_reload_successes_total"], m3["syngate_reload_failures_total"], kernelAfter.Round(100*time.Millisecond))
	for i, err := range nc.failed {
		if i < 5 {
			t.Errorf("new connection failed: %v", err)
		}
	}
	if len(nc.failed) > 5 {
		t.Errorf("... %d new connections failed in all", len(nc.failed))
	}
}

// waitRefused dials addr until the kernel refuses it and returns how long
// that took; unanswered SYNs (the engine's retired service) time out.
func waitRefused(t *testing.T, ns *lab.NS, addr netip.AddrPort, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		c, err := dial(ns, addr, 500*time.Millisecond)
		if err == nil {
			c.Close()
			t.Errorf("the removed service %v still answers", addr)
			return time.Since(start)
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return time.Since(start)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Logf("dial %v: %v", addr, err)
			}
		}
	}
	t.Errorf("the removed service %v was not refused within %v", addr, within)
	return within
}

// TestRestartRemovedServiceKeepsConnections: a restart whose config drops a
// service keeps that service's spliced connections going (the adopted
// stand-in keeps its listener in the data plane until they end; before,
// the listener was deleted at start and their client segments met the
// gateway's kernel, which reset them), refuses its new SYNs meanwhile, and
// leaves it to the kernel once they ended.
func TestRestartRemovedServiceKeepsConnections(t *testing.T) {
	lab.RequireRoot(t)
	top, err := lab.NewTopology(t, lab.Options{Prefix: "sgr-"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pins := privateBPFFS(t, dir)
	newRecordingEcho(t, top)
	withGone := filepath.Join(dir, "with-gone.yaml")
	without := filepath.Join(dir, "without.yaml")
	if err := os.WriteFile(withGone, []byte(reloadConfig(top, dir, pins, reloadServices{gone: true, chgPort: backendPort, ports: "16384-32767", badFlags: true, establish: "120h"})), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(without, []byte(reloadConfig(top, dir, pins, reloadServices{chgPort: backendPort, ports: "16384-32767", badFlags: true, establish: "120h"})), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &restarter{t: t, root: t, top: top, dir: dir}
	r.start(syngateBin, withGone)
	t.Cleanup(func() { r.cur.stop() })

	gone := netip.AddrPortFrom(top.VIP4, 81)
	const n, size = 3, 16 << 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		c, err := dial(top.Client, gone, 5*time.Second)
		if err != nil {
			t.Fatalf("transfer %d: connect: %v", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			if err := pacedEcho(c, size, uint64(2000+i), reloadRate, time.Minute); err != nil {
				errs <- fmt.Errorf("transfer %d over the removed service: %w", i, err)
			}
		}()
	}
	time.Sleep(time.Second)
	if err := r.cur.d.Stop(10 * time.Second); err != nil {
		t.Error(err)
	}
	r.start(syngateBin, without)
	// Refused while its connections live (by the engine: its listener
	// stays in the data plane).
	if c, err := dial(top.Client, gone, 2*time.Second); err == nil {
		c.Close()
		t.Error("the removed service answers after the restart")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("the removed service after the restart: %v, want refused", err)
	}
	wg.Wait()
	close(errs)
	broken := 0
	for err := range errs {
		t.Error(err)
		broken++
	}
	ended := time.Now()
	for {
		rsts := tcpStat(t, top.Gateway, "OutRsts")
		c, err := dial(top.Client, gone, 2*time.Second)
		if err == nil {
			c.Close()
			t.Fatal("the removed service answers")
		}
		if errors.Is(err, syscall.ECONNREFUSED) && tcpStat(t, top.Gateway, "OutRsts") > rsts {
			break
		}
		if time.Since(ended) > 30*time.Second {
			t.Fatalf("30 s after its last connection ended, the removed service is not left to the kernel: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%d transfers of %d MiB each way over a service the restart removed: %d broken; left to the kernel %v after they ended",
		n, size>>20, broken, time.Since(ended).Round(100*time.Millisecond))
}
