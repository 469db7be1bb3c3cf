package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/lab"
)

// lbPrefix names the namespaces of the load-balancing tests.
const lbPrefix = "sgb-"

// idServer is one backend of a pool: it greets every connection with its
// name and then echoes. kill closes the listener and every connection, as
// a dying process would; start listens again.
type idServer struct {
	t    *testing.T
	ns   *lab.NS
	name string
	addr netip.AddrPort
	mu   sync.Mutex
	ln   net.Listener
	conn map[net.Conn]bool
	wg   sync.WaitGroup
}

func newIDServer(t *testing.T, ns *lab.NS, name string, addr netip.AddrPort) *idServer {
	s := &idServer{t: t, ns: ns, name: name, addr: addr, conn: map[net.Conn]bool{}}
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *idServer) start() {
	s.t.Helper()
	ln, err := listen(s.ns, s.addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conn[c] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() { s.mu.Lock(); delete(s.conn, c); s.mu.Unlock(); c.Close() }()
				if _, err := io.WriteString(c, s.name+"\n"); err != nil {
					return
				}
				io.Copy(c, c)
			}()
		}
	}()
}

func (s *idServer) kill() {
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
	for c := range s.conn {
		c.(*net.TCPConn).SetLinger(0) // a dead process's connections are reset
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// identify connects to the VIP and reads the backend's name.
func identify(ns *lab.NS, vip netip.AddrPort) (string, net.Conn, error) {
	c, err := dial(ns, vip, 5*time.Second)
	if err != nil {
		return "", nil, err
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return "", nil, fmt.Errorf("read greeting: %w", err)
	}
	return strings.TrimSpace(line), c, nil
}

// echoes checks that c still carries data both ways.
func echoes(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

// poolConfig is a syngate config for top with the given services' YAML.
func poolConfig(top *lab.Topology, dir, services string) string {
	return fmt.Sprintf(`interfaces:
  - name: %s
  - name: %s
secret_file: %s
bpffs: "off"
metrics:
  listen: 127.0.0.1:9420
backend:
  connect_timeout: 2s
services:
%s`, top.GatewayClient.Name, top.GatewayBackend.Name, filepath.Join(dir, "secret"), services)
}

// poolLab builds a lab with three backends (names b1-b3), runs syngate
// with a pool of them of the given weights and returns both.
func poolLab(t *testing.T, weights [3]int) (*gatewayRun, []*idServer, string, string) {
	t.Helper()
	top := newLab(t, labOptions{prefix: lbPrefix})
	v4, _, err := top.AddBackendPool()
	if err != nil {
		t.Fatal(err)
	}
	var servers []*idServer
	pool := ""
	for i, a := range v4 {
		ap := netip.AddrPortFrom(a, backendPort)
		servers = append(servers, newIDServer(t, top.Backend, fmt.Sprintf("b%d", i+1), ap))
		pool += fmt.Sprintf("      - {address: %s, weight: %d}\n", ap, weights[i])
	}
	dir := t.TempDir()
	svc := fmt.Sprintf(`  - name: web
    listen: %s
    backends:
%s    health_check: {type: tcp, interval: 500ms, timeout: 300ms, rise: 2, fall: 2}
`, netip.AddrPortFrom(top.VIP4, servicePort), pool)
	cfg := poolConfig(top, dir, svc)
	g := startSyngateConfig(t, top, dir, cfg, false)
	return g, servers, dir, cfg
}

// spread opens n connections one after another and counts them by backend.
func spread(t *testing.T, g *gatewayRun, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		name, c, err := identify(g.top.Client, netip.AddrPortFrom(g.top.VIP4, servicePort))
		if err != nil {
			t.Fatalf("connection %d: %v", len(got), err)
		}
		c.Close()
		got[name]++
	}
	return got
}

func checkShares(t *testing.T, got map[string]int, weights map[string]int, n int) {
	t.Helper()
	total := 0
	for _, w := range weights {
		total += w
	}
	for name, w := range weights {
		want := float64(n) * float64(w) / float64(total)
		if g := float64(got[name]); g < 0.6*want || g > 1.5*want {
			t.Errorf("%s (weight %d): %d of %d connections, want about %.0f", name, w, got[name], n, want)
		}
	}
}

// TestPoolFailover: a pool of three backends of weights 1, 1, 2 spreads
// connections by weight; when one dies, new connections stop going to it
// once fall x interval checks failed (and meanwhile a refused leg is
// opened again toward another backend, so no client fails), connections
// to the others carry on, and when it is back it gets connections again.
func TestPoolFailover(t *testing.T) {
	g, servers, _, _ := poolLab(t, [3]int{1, 1, 2})
	const n = 400
	got := spread(t, g, n)
	t.Logf("distribution over %d connections, weights b1=1 b2=1 b3=2: %v", n, got)
	checkShares(t, got, map[string]int{"b1": 1, "b2": 1, "b3": 2}, n)

	// Long-lived connections, to every backend.
	var live []net.Conn
	liveAt := map[net.Conn]string{}
	for range 24 {
		name, c, err := identify(g.top.Client, netip.AddrPortFrom(g.top.VIP4, servicePort))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		live = append(live, c)
		liveAt[c] = name
	}

	// New connections keep coming while b2 dies.
	type attempt struct {
		at      time.Time
		backend string
		err     error
	}
	var mu sync.Mutex
	var attempts []attempt
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			name, c, err := identify(g.top.Client, netip.AddrPortFrom(g.top.VIP4, servicePort))
			if c != nil {
				c.Close()
			}
			mu.Lock()
			attempts = append(attempts, attempt{time.Now(), name, err})
			mu.Unlock()
		}
	}()
	b2 := servers[1]
	upMetric := fmt.Sprintf(`syngate_backend_check_up{backend="%s",service="web"}`, b2.addr)
	redispatched := `syngate_backend_redispatched_total{service="web"}`
	killed := time.Now()
	b2.kill()
	var down time.Time
	for time.Since(killed) < 10*time.Second {
		if g.metrics()[upMetric] == 0 {
			down = time.Now()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if down.IsZero() {
		t.Fatal("b2 not marked down 10 s after it died")
	}
	redispatchedAtDown := g.metrics()[redispatched]
	health, err := g.top.Gateway.HTTPGet(metricsAddr, "/healthz", 5*time.Second)
	if want := fmt.Sprintf("backend %s weight 1: down", b2.addr); err != nil || !strings.Contains(string(health), want) {
		t.Errorf("/healthz with b2 down: %v\n%s\nwant a line %q", err, health, want)
	}
	if ready, err := g.top.Gateway.HTTPGet(metricsAddr, "/readyz", 5*time.Second); err != nil {
		t.Errorf("/readyz with two of three backends up: %v\n%s", err, ready)
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	t.Logf("b2 marked down %v after it died (checks every 500 ms, fall 2); %v legs redispatched meanwhile", down.Sub(killed).Round(time.Millisecond), redispatchedAtDown)
	if d := down.Sub(killed); d > 3*time.Second {
		t.Errorf("marked down after %v, want within about fall x interval = 1 s", d)
	}
	if r := g.metrics()[redispatched]; r != redispatchedAtDown {
		t.Errorf("%v legs still went to b2 after it was marked down", r-redispatchedAtDown)
	}
	failed, after := 0, 0
	for _, a := range attempts {
		if a.err != nil {
			failed++
			t.Errorf("connection at %v after b2 died: %v", a.at.Sub(killed).Round(time.Millisecond), a.err)
		}
		if a.backend == "b2" && a.at.After(killed) {
			t.Errorf("connection at +%v reached b2 after it died", a.at.Sub(killed))
		}
		if a.at.After(down) {
			after++
		}
	}
	t.Logf("%d connections while b2 died and after (%d after it was marked down), %d failed", len(attempts), after, failed)
	for _, c := range live {
		err := echoes(c, "still there")
		if liveAt[c] == "b2" {
			if err == nil {
				t.Error("a connection to the dead b2 still echoes")
			}
			continue
		}
		if err != nil {
			t.Errorf("connection to %s broke when b2 died: %v", liveAt[c], err)
		}
	}

	// b2 comes back: after rise checks it takes connections again (the
	// passing checks also end an ejection by the refused legs).
	b2.start()
	back := time.Now()
	usable := fmt.Sprintf(`syngate_backend_up{backend="%s",service="web"}`, b2.addr)
	for time.Since(back) < 10*time.Second && g.metrics()[usable] != 1 {
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("b2 usable again %v after it came back (rise 2)", time.Since(back).Round(time.Millisecond))
	if g.metrics()[usable] != 1 {
		t.Fatal("b2 not usable 10 s after it came back")
	}
	got = spread(t, g, 200)
	t.Logf("after b2 came back, 200 connections: %v", got)
	checkShares(t, got, map[string]int{"b1": 1, "b2": 1, "b3": 2}, 200)
}

// metricsAddr is where syngate serves /metrics, /healthz and /readyz.
var metricsAddr = netip.MustParseAddrPort("127.0.0.1:9420")

// TestPoolAllDown: with every backend dead, /readyz says so, a new SYN is
// answered with a RST at once (on_no_backend: reset) and counted; when a
// backend is back it takes the connections.
func TestPoolAllDown(t *testing.T) {
	g, servers, _, _ := poolLab(t, [3]int{1, 1, 1})
	for _, s := range servers {
		s.kill()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		body, err := g.top.Gateway.HTTPGet(metricsAddr, "/readyz", 5*time.Second)
		if err != nil && strings.Contains(err.Error(), "503") {
			t.Logf("/readyz: %v\n%s", err, body)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %v 10 s after every backend died:\n%s", err, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	start := time.Now()
	_, err := dial(g.top.Client, netip.AddrPortFrom(g.top.VIP4, servicePort), 5*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect with no backend: %v, want connection refused", err)
	}
	t.Logf("connect with no usable backend refused after %v", time.Since(start).Round(time.Millisecond))
	if n := g.metrics()[`syngate_no_backend_total{service="web"}`]; n < 1 {
		t.Errorf("no_backend_total = %v", n)
	}
	servers[2].start()
	deadline = time.Now().Add(10 * time.Second)
	for {
		if _, err := g.top.Gateway.HTTPGet(metricsAddr, "/readyz", 5*time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz not ready 10 s after a backend came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := spread(t, g, 30); got["b3"] != 30 {
		t.Errorf("with only b3 back: %v", got)
	}
}

// TestPoolDrain: weight 0, applied with a reload (SIGHUP: syngate applies
// the pools of the re-read config), sends no new connection to the
// drained backend and breaks none of its connections.
func TestPoolDrain(t *testing.T) {
	g, servers, dir, cfg := poolLab(t, [3]int{1, 1, 1})
	var live []net.Conn
	toB1 := 0
	for range 30 {
		name, c, err := identify(g.top.Client, netip.AddrPortFrom(g.top.VIP4, servicePort))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		live = append(live, c)
		if name == "b1" {
			toB1++
		}
	}
	if toB1 == 0 {
		t.Fatal("no connection went to b1 before the drain")
	}
	b1 := servers[0].addr.String()
	drained := strings.Replace(cfg, "{address: "+b1+", weight: 1}", "{address: "+b1+", weight: 0}", 1)
	if drained == cfg {
		t.Fatal("config has no b1 entry to drain")
	}
	if err := os.WriteFile(filepath.Join(dir, "syngate.yaml"), []byte(drained), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(g.d.PID(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	weight := fmt.Sprintf(`syngate_backend_weight{backend="%s",service="web"}`, b1)
	deadline := time.Now().Add(5 * time.Second)
	for g.metrics()[weight] != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if g.metrics()[weight] != 0 {
		t.Fatal("the reload did not set b1's weight to 0")
	}
	got := spread(t, g, 150)
	t.Logf("after draining b1: %v (%d live connections were on b1)", got, toB1)
	if got["b1"] != 0 {
		t.Errorf("%d new connections went to the drained b1", got["b1"])
	}
	for i, c := range live {
		if err := echoes(c, "draining"); err != nil {
			t.Errorf("live connection %d broke on the drain: %v", i, err)
		}
	}
	if a := g.metrics()[fmt.Sprintf(`syngate_backend_connections{backend="%s",service="web"}`, b1)]; int(a) != toB1 {
		t.Errorf("backend_connections of b1 = %v, want its %d live connections", a, toB1)
	}
}

// TestPoolSilentBackend: a backend that stops answering at all (its host
// gone, not its process) costs the clients that were hashed to it one
// connect timeout, not their connection: the leg is opened again toward
// another backend; the checks then take it out.
func TestPoolSilentBackend(t *testing.T) {
	g, servers, _, _ := poolLab(t, [3]int{1, 1, 1})
	b2 := servers[1]
	drop(t, g.top.Backend, "silent", lab.HookInput, lab.Match{Dst: b2.addr.Addr(), Proto: unix.IPPROTO_TCP})
	start := time.Now()
	type result struct {
		backend string
		took    time.Duration
		err     error
	}
	results := make(chan result, 30)
	var wg sync.WaitGroup
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			name, c, err := identify(g.top.Client, netip.AddrPortFrom(g.top.VIP4, servicePort))
			if c != nil {
				c.Close()
			}
			results <- result{name, time.Since(t0), err}
		}()
	}
	wg.Wait()
	close(results)
	slow, got := 0, map[string]int{}
	for r := range results {
		if r.err != nil {
			t.Errorf("connection failed while b2 was silent: %v", r.err)
			continue
		}
		got[r.backend]++
		if r.took > time.Second {
			slow++
		}
	}
	t.Logf("30 connections with b2 silent: %v, %d waited for the connect timeout (2 s) and were redispatched; redispatched_total %v",
		got, slow, g.metrics()[`syngate_backend_redispatched_total{service="web"}`])
	if got["b2"] != 0 {
		t.Errorf("%d connections reached the silent b2", got["b2"])
	}
	up := fmt.Sprintf(`syngate_backend_check_up{backend="%s",service="web"}`, b2.addr)
	for time.Since(start) < 10*time.Second && g.metrics()[up] != 0 {
		time.Sleep(20 * time.Millisecond)
	}
	if g.metrics()[up] != 0 {
		t.Error("the silent b2 not marked down")
	}
}
