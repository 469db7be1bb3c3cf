package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/syngate/syngate/lab"
	"github.com/syngate/syngate/loadgen"
)

// exampleConfig is config/example.yaml with only the lab's addresses and
// interfaces put in, so a test runs syngate on the documented defaults.
// The secret goes to dir and pinning is off: tests run side by side and
// must not share /var/lib/syngate or /sys/fs/bpf/syngate.
func exampleConfig(t *testing.T, top *lab.Topology, dir string) string {
	t.Helper()
	b, err := os.ReadFile("../config/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ifaces := fmt.Sprintf("  - name: %s\n  - name: %s", top.GatewayClient.Name, top.GatewayBackend.Name)
	cfg := string(b)
	for _, r := range [][2]string{
		{"  - name: eth0", ifaces},
		{"secret_file: /var/lib/syngate/secret", "secret_file: " + filepath.Join(dir, "secret")},
		{"bpffs: /sys/fs/bpf/syngate", `bpffs: "off"`},
		{"192.0.2.10:80", netip.AddrPortFrom(top.VIP4, servicePort).String()},
		{"10.0.0.5:8080", netip.AddrPortFrom(backendAddr(top), backendPort).String()},
		{"source: 10.0.0.1", "source: " + top.GatewayBackend.V4.Addr().String()},
		{"[2001:db8::10]:443", netip.AddrPortFrom(top.VIP6, 443).String()},
		{"[2001:db8:1::5]:8443", netip.AddrPortFrom(top.BackendIf.V6.Addr(), 8443).String()},
		{"192.0.2.10:25", netip.AddrPortFrom(top.VIP4, 25).String()},
		{"10.0.0.6:25", netip.AddrPortFrom(backendAddr(top), 25).String()},
		{"10.0.0.7:25", netip.AddrPortFrom(backendAddr(top), 26).String()},
	} {
		if strings.Count(cfg, r[0]) != 1 {
			t.Fatalf("example.yaml: %q not found once; update exampleConfig", r[0])
		}
		cfg = strings.Replace(cfg, r[0], r[1], 1)
	}
	return cfg
}

// envInt reads a positive integer knob of a long test from the environment.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// TestNewConnectionBurst opens new connections at a high rate for a bounded
// time through syngate on the example config's defaults (one source
// address, ports 16384-32767): every one must succeed, and no connection
// may have waited for or failed on a source port. The backend closes first,
// so it holds each used port in TIME_WAIT: once more connections were made
// than there are ports, every reuse meets one, and must get through
// without a clearing RST. SYNGATE_BURST_SECONDS (default 10; the issue asks
// for 60) and SYNGATE_BURST_RATE (default 3000/s) set the load.
func TestNewConnectionBurst(t *testing.T) {
	secs := envInt(t, "SYNGATE_BURST_SECONDS", 10)
	rate := envInt(t, "SYNGATE_BURST_RATE", 3000)
	top := newLab(t, labOptions{})
	// A busy client: every ephemeral port, and its TIME_WAIT ports reused.
	for _, s := range [][2]string{{"net.ipv4.ip_local_port_range", "1024 65535"}, {"net.ipv4.tcp_tw_reuse", "1"}} {
		if err := top.Client.Sysctl(s[0], s[1]); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := loadgen.Serve(top.Backend, netip.AddrPortFrom(backendAddr(top), backendPort), loadgen.HTTPishHandler)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	dir := t.TempDir()
	g := startSyngateConfig(t, top, dir, exampleConfig(t, top, dir), false)

	rep, err := loadgen.Run(context.Background(), loadgen.Config{
		From: top.Client, Target: netip.AddrPortFrom(top.VIP4, servicePort),
		Concurrency: 512, Rate: float64(rate), Duration: time.Duration(secs) * time.Second,
		Timeout: 10 * time.Second, Exchange: loadgen.HTTPishExchange,
	})
	if err != nil {
		t.Fatal(err)
	}
	m := g.metrics()
	ports := 32767 - 16384 + 1
	t.Logf("%d s at %d/s asked: %v", secs, rate, rep)
	t.Logf("achieved %.0f new connections/s; spliced %v; source port waits %v, failures %v; backend TIME_WAIT resets %v; flows reclaimed %v, closed %v, reused %v",
		rep.Rate, m[`syngate_connections_spliced_total{service="web"}`],
		m[`syngate_source_port_waits_total{outcome="waited",service="web"}`], m[`syngate_source_port_waits_total{outcome="failed",service="web"}`],
		m[`syngate_backend_timewait_resets_total{service="web"}`],
		m[`syngate_flows_expired_total{reason="reclaimed"}`], m[`syngate_flows_expired_total{reason="closed"}`], m[`syngate_flows_expired_total{reason="reused"}`])
	if rep.Failures.Total() > 0 || rep.Successes != rep.Attempts || rep.Attempts == 0 {
		t.Errorf("%d of %d connections failed (%+v), last: %s", rep.Failures.Total(), rep.Attempts, rep.Failures, rep.LastError)
	}
	for _, k := range []string{
		`syngate_source_port_waits_total{outcome="waited",service="web"}`,
		`syngate_source_port_waits_total{outcome="failed",service="web"}`,
		`syngate_backend_failures_total{reason="no_port",service="web"}`,
		`syngate_backend_timewait_resets_total{service="web"}`,
	} {
		if v := m[k]; v != 0 {
			t.Errorf("%s = %v, want 0", k, v)
		}
	}
	if rep.Successes <= uint64(ports) {
		t.Logf("only %d connections: the %d source ports were not all reused (a slow machine); raise SYNGATE_BURST_SECONDS", rep.Successes, ports)
	}
}

// TestFullTableResets: with the smallest flow table (16 entries, so 8
// connections), 20 clients connect and stay: 8 carry data, the 12 others
// are reset at once instead of hanging, and the metric counts them.
func TestFullTableResets(t *testing.T) {
	const clients, fit = 20, 8
	o := labOptions{extra: "flows:\n  max: 16\n"}
	top := newLab(t, o)
	echoServer(t, top)
	g := startSyngate(t, top, o)
	vip := netip.AddrPortFrom(top.VIP4, servicePort)
	var ok, reset int
	for i := range clients {
		c, err := dial(top.Client, vip, 5*time.Second)
		if errors.Is(err, syscall.ECONNRESET) {
			reset++ // the RST beat connect()'s return
			continue
		}
		if err != nil {
			t.Fatalf("client %d: connect: %v", i, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		start := time.Now()
		msg := []byte(fmt.Sprintf("client %d\n", i))
		_, err = c.Write(msg)
		if err == nil {
			_, err = io.ReadFull(c, make([]byte, len(msg)))
		}
		switch {
		case err == nil:
			ok++
		case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
			reset++
			t.Logf("client %d reset after %v", i, time.Since(start).Round(time.Millisecond))
		default:
			t.Errorf("client %d: %v; want its echo or a prompt RST", i, err)
		}
	}
	if ok != fit || reset != clients-fit {
		t.Errorf("%d clients served, %d reset; want %d and %d", ok, reset, fit, clients-fit)
	}
	// A refused client's next segment (its data, racing the RST) no longer
	// finds a half-open entry; under auto the peer-cookie budget checks it,
	// and as the queue's ISNs are cookies too it validates and is refused
	// again: counted once more, with a peer_cookie validation.
	m := g.metrics()
	again := m[`syngate_ack_validated_total{path="peer_cookie",service="web"}`]
	if got := m[`syngate_backend_failures_total{reason="conn_table_full",service="web"}`]; got != clients-fit+again {
		t.Errorf("conn_table_full = %v, want %d (+%v refused again)", got, clients-fit, again)
	}
}

// TestKeepaliveKeepsFlow: with a 2 s established timeout, a connection
// whose client sends TCP keepalive probes every second stays spliced for
// six timeouts and still carries data; an idle one without keepalive
// expires (the control: the timeout does work).
func TestKeepaliveKeepsFlow(t *testing.T) {
	o := labOptions{extra: "flows:\n  established_timeout: 2s\n"}
	top := newLab(t, o)
	echoServer(t, top)
	g := startSyngate(t, top, o)
	vip := netip.AddrPortFrom(top.VIP4, servicePort)
	var keep, idle net.Conn
	err := top.Client.Run(func() error {
		d := net.Dialer{Timeout: 5 * time.Second, KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 9}}
		var err error
		if keep, err = d.Dial("tcp", vip.String()); err != nil {
			return err
		}
		d.KeepAliveConfig = net.KeepAliveConfig{Enable: false}
		d.KeepAlive = -1
		idle, err = d.Dial("tcp", vip.String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	defer idle.Close()
	echo := func(c net.Conn, msg string) error {
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, len(msg)))
		return err
	}
	for _, c := range []net.Conn{keep, idle} {
		if err := echo(c, "hello\n"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(12 * time.Second) // six timeouts, at least two expiry scans
	m := g.metrics()
	if got := m[`syngate_flows_expired_total{reason="idle"}`]; got != 1 {
		t.Errorf("flows expired idle = %v, want 1 (the connection without keepalive)", got)
	}
	if err := echo(keep, "still there\n"); err != nil {
		t.Errorf("the connection with keepalive after %d s idle: %v", 12, err)
	}
}

// TestPortReuseMeetsTimeWait narrows the example config's ports to 50 per
// source address and gives the service two source addresses, then opens 300
// connections to a backend that closes first: every port is reused several
// times while the backend holds it in TIME_WAIT. With client timestamps the
// backend accepts each reuse by its newer timestamp; without, by its
// sequence number above the old connection's. Either way no connection may
// fail and none may need the clearing RST, and both addresses carry
// connections.
func TestPortReuseMeetsTimeWait(t *testing.T) {
	for _, ts := range []bool{true, false} {
		t.Run(fmt.Sprintf("timestamps=%v", ts), func(t *testing.T) {
			top := newLab(t, labOptions{})
			if !ts {
				if err := top.Client.Sysctl("net.ipv4.tcp_timestamps", "0"); err != nil {
					t.Fatal(err)
				}
			}
			first := top.GatewayBackend.V4.Addr()
			second := netip.MustParseAddr("198.51.100.11")
			if err := top.Gateway.AddAddr(top.GatewayBackend.Name, netip.PrefixFrom(second, top.GatewayBackend.V4.Bits())); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			peers := map[netip.Addr]int{}
			srv, err := loadgen.Serve(top.Backend, netip.AddrPortFrom(backendAddr(top), backendPort), func(c net.Conn) error {
				mu.Lock()
				peers[c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()]++
				mu.Unlock()
				return loadgen.HTTPishHandler(c)
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Close() })
			dir := t.TempDir()
			cfg := exampleConfig(t, top, dir)
			for _, r := range [][2]string{
				{"source: " + first.String(), fmt.Sprintf("source: [%s, %s]", first, second)},
				{"ports: 16384-32767", "ports: 20000-20049"},
			} {
				if strings.Count(cfg, r[0]) != 1 {
					t.Fatalf("config: %q not found once", r[0])
				}
				cfg = strings.Replace(cfg, r[0], r[1], 1)
			}
			g := startSyngateConfig(t, top, dir, cfg, false)
			rep, err := loadgen.Run(context.Background(), loadgen.Config{
				From: top.Client, Target: netip.AddrPortFrom(top.VIP4, servicePort),
				Concurrency: 16, Rate: 60, Count: 300, Timeout: 10 * time.Second, Exchange: loadgen.HTTPishExchange,
			})
			if err != nil {
				t.Fatal(err)
			}
			m := g.metrics()
			t.Logf("%v", rep)
			t.Logf("backend saw %v; port waits %v (failed %v); TIME_WAIT resets %v; reclaimed %v",
				peers, m[`syngate_source_port_waits_total{outcome="waited",service="web"}`], m[`syngate_source_port_waits_total{outcome="failed",service="web"}`],
				m[`syngate_backend_timewait_resets_total{service="web"}`], m[`syngate_flows_expired_total{reason="reclaimed"}`])
			if rep.Successes != 300 {
				t.Errorf("%d of 300 connections succeeded (%+v), last: %s", rep.Successes, rep.Failures, rep.LastError)
			}
			if v := m[`syngate_backend_timewait_resets_total{service="web"}`]; v != 0 {
				t.Errorf("%v TIME_WAIT resets, want 0: the leg's ISN or timestamps did not clear the old connection", v)
			}
			if v := m[`syngate_source_port_waits_total{outcome="failed",service="web"}`]; v != 0 {
				t.Errorf("%v connections failed on a source port", v)
			}
			mu.Lock()
			defer mu.Unlock()
			// The gateway's own option probes come from the first address too.
			if peers[first] < 100 || peers[second] < 100 || peers[first]+peers[second] < 300 || len(peers) != 2 {
				t.Errorf("backend saw connections from %v, want all 300 from %s and %s, both used", peers, first, second)
			}
		})
	}
}
