package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/lab"
)

// readProxyHeader reads a PROXY protocol header (v1 or v2) off r, as the
// spec (haproxy.org proxy-protocol.txt) describes it, and returns the
// client address it carries.
func readProxyHeader(r *bufio.Reader) (netip.AddrPort, error) {
	sig, err := r.Peek(12)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if bytes.Equal(sig, []byte("\r\n\r\n\x00\r\nQUIT\n")) {
		var h [16]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return netip.AddrPort{}, err
		}
		body := make([]byte, binary.BigEndian.Uint16(h[14:]))
		if _, err := io.ReadFull(r, body); err != nil {
			return netip.AddrPort{}, err
		}
		switch {
		case h[12] != 0x21:
			return netip.AddrPort{}, fmt.Errorf("v2 version/command %#x", h[12])
		case h[13] == 0x11 && len(body) >= 12:
			a, _ := netip.AddrFromSlice(body[:4])
			return netip.AddrPortFrom(a, binary.BigEndian.Uint16(body[8:])), nil
		case h[13] == 0x21 && len(body) >= 36:
			a, _ := netip.AddrFromSlice(body[:16])
			return netip.AddrPortFrom(a, binary.BigEndian.Uint16(body[32:])), nil
		}
		return netip.AddrPort{}, fmt.Errorf("v2 family %#x, %d bytes", h[13], len(body))
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return netip.AddrPort{}, err
	}
	f := strings.Fields(line)
	if len(f) != 6 || f[0] != "PROXY" || !strings.HasSuffix(line, "\r\n") {
		return netip.AddrPort{}, fmt.Errorf("not a PROXY v1 line: %q", line)
	}
	return netip.ParseAddrPort(net.JoinHostPort(f[2], f[4]))
}

// proxyServer serves on the backend's port (IPv4 and IPv6): it reads the
// PROXY header of each connection and hands the rest to serve.
func proxyServer(t *testing.T, top *lab.Topology, serve func(c net.Conn, r *bufio.Reader, client netip.AddrPort)) {
	t.Helper()
	serveConns(t, top.Backend, netip.AddrPortFrom(netip.IPv6Unspecified(), backendPort), func(c net.Conn) {
		serve(c, bufio.NewReader(c), netip.AddrPort{})
	})
}

// proxyConfig runs syngate with the lab's two services (web on IPv4, web6
// on IPv6) sending PROXY protocol version v.
func proxyConfig(t *testing.T, top *lab.Topology, v string) *gatewayRun {
	return proxyConfigCookies(t, top, v, "auto")
}

// proxyConfigCookies is proxyConfig with syn.cookies set.
func proxyConfigCookies(t *testing.T, top *lab.Topology, v, cookies string) *gatewayRun {
	dir := t.TempDir()
	svcs := fmt.Sprintf(`  - name: web
    listen: %s
    backend: %s
    proxy_protocol: %s
  - name: web6
    listen: "%s"
    backend: "%s"
    proxy_protocol: %s
`, netip.AddrPortFrom(top.VIP4, servicePort), netip.AddrPortFrom(backendAddr(top), backendPort), v,
		netip.AddrPortFrom(top.VIP6, servicePort), netip.AddrPortFrom(top.BackendIf.V6.Addr(), backendPort), v)
	cfg := strings.Replace(poolConfig(top, dir, svcs), "services:\n", "syn:\n  cookies: "+cookies+"\nservices:\n", 1)
	return startSyngateConfig(t, top, dir, cfg, false)
}

// TestProxyProtocolServerSpeaksFirst: a backend that greets before the
// client says anything (SMTP-like) gets the PROXY header first and the
// client gets the greeting at once, even while the header segment is
// being lost (the backend drops every segment with PSH for a second): the
// engine retransmits the header until it is acknowledged, and the backend
// then sees the client's address.
func TestProxyProtocolServerSpeaksFirst(t *testing.T) {
	v4 := func(t *lab.Topology) (netip.Addr, netip.Addr) { return t.VIP4, t.ClientIf.V4.Addr() }
	v6 := func(t *lab.Topology) (netip.Addr, netip.Addr) { return t.VIP6, t.ClientIf.V6.Addr() }
	for _, tc := range []struct {
		v, cookies string
		addrs      func(*lab.Topology) (vip, client netip.Addr)
		svc        string
	}{
		{"v2", "auto", v4, "web"},
		{"v1", "auto", v6, "web6"},
		{"v2", "always", v6, "web6"}, // cookies minted in XDP
		{"v1", "always", v4, "web"},
	} {
		t.Run(tc.v+"/"+tc.svc+"/cookies-"+tc.cookies, func(t *testing.T) {
			top := newLab(t, labOptions{prefix: lbPrefix})
			proxyServer(t, top, func(c net.Conn, r *bufio.Reader, _ netip.AddrPort) {
				io.WriteString(c, "220 banner\r\n")
				client, err := readProxyHeader(r)
				if err != nil {
					io.WriteString(c, "bad header: "+err.Error()+"\r\n")
					return
				}
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprintf(c, "250 %s said %s", client, line)
				}
			})
			g := proxyConfigCookies(t, top, tc.v, tc.cookies)
			vip, cli := tc.addrs(top)
			lossy := drop(t, top.Backend, "hdrloss", lab.HookInput, lab.Match{
				Proto: unix.IPPROTO_TCP, DstPort: backendPort, TCPFlagsMask: lab.TCPPsh, TCPFlags: lab.TCPPsh,
			})
			c, err := dial(top.Client, netip.AddrPortFrom(vip, servicePort), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			banner, err := r.ReadString('\n')
			if err != nil || banner != "220 banner\r\n" {
				t.Fatalf("banner %q, %v: want it before the client sends anything", banner, err)
			}
			time.Sleep(time.Second) // the header's first sends are lost meanwhile
			if err := lossy.Delete(); err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, "hello\r\n")
			reply, err := r.ReadString('\n')
			local := netip.AddrPortFrom(cli, netip.MustParseAddrPort(c.LocalAddr().String()).Port())
			if want := fmt.Sprintf("250 %s said hello\r\n", local); err != nil || reply != want {
				t.Fatalf("reply %q, %v; want %q", reply, err, want)
			}
			n := g.metrics()[fmt.Sprintf(`syngate_proxy_header_retransmits_total{service=%q}`, tc.svc)]
			t.Logf("PROXY %s header retransmitted %v times while its segments were dropped for 1 s", tc.v, n)
			if n < 1 {
				t.Error("the lost header was not retransmitted")
			}
			// Sent on after the header's ACK: the tracked state the engine
			// seeded holds the rest of the connection.
			io.WriteString(c, "more\r\n")
			if more, err := r.ReadString('\n'); err != nil || !strings.HasSuffix(more, "said more\r\n") {
				t.Errorf("second exchange: %q, %v", more, err)
			}
			// The client's "hello" went through the fast path while the
			// backend's direction was not installed (nothing learned from
			// it); the engine moves the client direction's seq_end up to
			// what the header's ACK acknowledges, so every later segment
			// of both ends is inside the tracked window, even when the
			// backend's reply races the install and takes the slow path.
			g.checkInWindow()
			path := map[string]string{"auto": "queue", "always": "cookie"}[tc.cookies]
			if got := g.metrics()[fmt.Sprintf(`syngate_ack_validated_total{path=%q,service=%q}`, path, tc.svc)]; got != 1 {
				t.Errorf("ack_validated_total{path=%q} = %v, want 1", path, got)
			}
		})
	}
}

// TestProxyProtocolBulkLoss: 64 MiB each way with checksums through a
// PROXY v2 service over IPv4 and IPv6 with 2% loss on the client and the
// backend: the fast path's shift of sequence numbers, ACKs and SACK
// blocks by the header holds under retransmissions and SACK recovery.
func TestProxyProtocolBulkLoss(t *testing.T) {
	top := newLab(t, labOptions{prefix: lbPrefix})
	// E2E_PROXY_OFF=1 runs the same without the header, for comparison.
	v := "v2"
	if os.Getenv("E2E_PROXY_OFF") != "" {
		v = "off"
	}
	var mu sync.Mutex
	var seen []netip.AddrPort
	proxyServer(t, top, func(c net.Conn, r *bufio.Reader, _ netip.AddrPort) {
		client := netip.MustParseAddrPort(c.RemoteAddr().String())
		if v != "off" {
			var err error
			if client, err = readProxyHeader(r); err != nil {
				return
			}
		}
		mu.Lock()
		seen = append(seen, client)
		mu.Unlock()
		io.Copy(c, r)
		c.(*net.TCPConn).CloseWrite()
	})
	g := proxyConfig(t, top, v)
	var losses []*lab.Rule
	for _, ns := range []*lab.NS{top.Client, top.Backend} {
		l, err := ns.AddLoss(2)
		if err != nil {
			t.Fatal(err)
		}
		losses = append(losses, l)
	}
	before := []map[string]int64{tcpExt(t, top.Client), tcpExt(t, top.Backend)}
	for i, vip := range []netip.Addr{top.VIP4, top.VIP6} {
		c, err := dial(top.Client, netip.AddrPortFrom(vip, servicePort), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = echoOver(c, 64<<20, uint64(i), 3*time.Minute)
		local := c.LocalAddr().String()
		c.Close()
		if err != nil {
			t.Fatalf("%v: %v", vip, err)
		}
		t.Logf("%v: 64 MiB each way with 2%% loss in %v", vip, time.Since(start).Round(time.Millisecond))
		mu.Lock()
		got := seen[len(seen)-1]
		mu.Unlock()
		if got.String() != local && v != "off" {
			t.Errorf("backend saw client %v, want %v", got, local)
		}
	}
	// SACK blocks cross the splice shifted by the header both ways. A
	// kernel discards a SACK block outside what it sent (TCPSACKDiscard);
	// none may be. How often SACK recovery runs at all varies a lot from
	// run to run here (0 to 8 recoveries per run, with and without the
	// header: E2E_PROXY_OFF=1), so it is logged, not asserted; the exact
	// shift of every SACK edge is bpf's TestProxyHeaderShift.
	for i, ns := range []*lab.NS{top.Client, top.Backend} {
		name := []string{"client", "backend"}[i]
		after := tcpExt(t, ns)
		d := func(k string) int64 { return after[k] - before[i][k] }
		dropped, err := losses[i].Packets()
		t.Logf("%s: loss rule dropped %d packets; TCPSackRecovery %d, TCPFastRetrans %d, TCPTimeouts %d, TCPSACKDiscard %d, TCPDSACKRecv %d, TCPDSACKIgnoredDubious %d",
			name, dropped, d("TCPSackRecovery"), d("TCPFastRetrans"), d("TCPTimeouts"), d("TCPSACKDiscard"), d("TCPDSACKRecv"), d("TCPDSACKIgnoredDubious"))
		if err != nil || dropped == 0 {
			t.Errorf("%s: the loss rule dropped %d packets (%v)", name, dropped, err)
		}
		if d("TCPSACKDiscard") != 0 {
			t.Errorf("%s discarded %d SACK blocks as invalid", name, d("TCPSACKDiscard"))
		}
	}
	m := g.metrics()
	// The tracked windows, seeded for the header, hold every segment of
	// both ends.
	if got := m.Sum("syngate_xdp_packets_total", `reason="fast_tx_out_of_window"`) +
		m.Sum("syngate_xdp_packets_total", `reason="fast_redirect_out_of_window"`); got != 0 {
		t.Errorf("%v legitimate segments judged outside the window", got)
	}
	t.Logf("header retransmits %v, slow-path packets %v", m[`syngate_proxy_header_retransmits_total{service="web"}`]+m[`syngate_proxy_header_retransmits_total{service="web6"}`],
		m[`syngate_slowpath_packets_total{service="web"}`]+m[`syngate_slowpath_packets_total{service="web6"}`])
}

// tcpExt reads the TcpExt counters of ns's kernel (/proc/net/netstat).
func tcpExt(t *testing.T, ns *lab.NS) map[string]int64 {
	t.Helper()
	text, err := ns.ReadFile("/proc/net/netstat")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(text, "\n")
	out := map[string]int64{}
	for i := 0; i+1 < len(lines); i += 2 {
		names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(vals) != len(names) {
			continue
		}
		for j := 1; j < len(names); j++ {
			var v int64
			fmt.Sscan(vals[j], &v)
			out[names[j]] = v
		}
	}
	return out
}

// nginxBin finds nginx, or skips naming the package that provides it.
func nginxBin(t *testing.T) string {
	p, err := exec.LookPath("nginx")
	if err != nil {
		for _, c := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
			if _, err := os.Stat(c); err == nil {
				return c
			}
		}
		t.Skip("nginx is not installed: apt-get install nginx-light")
	}
	return p
}

// TestProxyProtocolNginx: nginx, with `listen ... proxy_protocol`, logs
// the client's address ($proxy_protocol_addr) for connections through
// syngate with PROXY v1 and v2, over IPv4 and IPv6; with v2 it also
// serves a 64 MiB file under 2% loss that arrives intact.
func TestProxyProtocolNginx(t *testing.T) {
	bin := nginxBin(t)
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			top := newLab(t, labOptions{prefix: lbPrefix})
			dir := t.TempDir()
			www := filepath.Join(dir, "www")
			if err := os.Mkdir(www, 0o755); err != nil {
				t.Fatal(err)
			}
			size := 4 << 10
			if v == "v2" {
				size = 64 << 20
			}
			body := make([]byte, size)
			rand.NewChaCha8([32]byte{7}).Read(body)
			if err := os.WriteFile(filepath.Join(www, "blob"), body, 0o644); err != nil {
				t.Fatal(err)
			}
			want := sha256.Sum256(body)
			accessLog := filepath.Join(dir, "access.log")
			conf := fmt.Sprintf(`user root;
worker_processes 1;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 64; }
http {
	client_body_temp_path %[1]s/body;
	log_format pp '$proxy_protocol_addr $proxy_protocol_port $remote_addr $status $bytes_sent';
	server {
		listen %[2]s:%[4]d proxy_protocol;
		listen [%[3]s]:%[4]d proxy_protocol;
		access_log %[5]s pp;
		location / { root %[6]s; }
	}
}
`, dir, backendAddr(top), top.BackendIf.V6.Addr(), backendPort, accessLog, www)
			if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
				t.Fatal(err)
			}
			d, err := lab.StartDaemon(top.Backend, filepath.Join(dir, "nginx.out"), bin, "-c", filepath.Join(dir, "nginx.conf"), "-p", dir, "-e", filepath.Join(dir, "error.log"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				d.Stop(5 * time.Second)
				if t.Failed() {
					errs, _ := os.ReadFile(filepath.Join(dir, "error.log"))
					t.Logf("nginx error log:\n%s", errs)
				}
			})
			if err := d.WaitFile(filepath.Join(dir, "nginx.pid"), 10*time.Second); err != nil {
				t.Fatal(err)
			}
			g := proxyConfig(t, top, v)
			if v == "v2" {
				for _, ns := range []*lab.NS{top.Client, top.Backend} {
					if _, err := ns.AddLoss(2); err != nil {
						t.Fatal(err)
					}
				}
			}
			var locals []string
			for _, vip := range []netip.Addr{top.VIP4, top.VIP6} {
				start := time.Now()
				sum, local, err := httpGet(top.Client, netip.AddrPortFrom(vip, servicePort), "/blob", 3*time.Minute)
				if err != nil {
					t.Fatalf("GET through %v: %v", vip, err)
				}
				if sum != want {
					t.Fatalf("GET through %v: %d bytes differ from the file", vip, size)
				}
				t.Logf("%s %v: %d bytes in %v, sha256 %s", v, vip, size, time.Since(start).Round(time.Millisecond), hex.EncodeToString(sum[:4]))
				locals = append(locals, local)
			}
			logged := waitLines(t, accessLog, 2)
			for i, l := range logged {
				f := strings.Fields(l)
				want := netip.MustParseAddrPort(locals[i])
				if len(f) < 3 || f[0] != want.Addr().String() || f[1] != fmt.Sprint(want.Port()) || f[3] != "200" {
					t.Errorf("nginx logged %q, want the client %v first", l, want)
				}
				if f[2] == want.Addr().String() {
					t.Errorf("nginx's $remote_addr %s is the client: the connection did not come through syngate", f[2])
				}
			}
			t.Logf("nginx access log:\n%s", strings.Join(logged, "\n"))
			// syngate's health checks and option probes (one each at
			// start) send the header of a local connection: nginx sees
			// neither a broken nor a missing one.
			for _, svc := range []struct {
				name string
				addr netip.AddrPort
			}{{"web", netip.AddrPortFrom(backendAddr(top), backendPort)}, {"web6", netip.AddrPortFrom(top.BackendIf.V6.Addr(), backendPort)}} {
				if n := g.waitMetric(fmt.Sprintf(`syngate_backend_checks_total{backend=%q,result="ok",service=%q}`, svc.addr.String(), svc.name), 1, 5*time.Second); n < 1 {
					t.Errorf("no passing health check of %s's backend", svc.name)
				}
			}
			time.Sleep(100 * time.Millisecond) // nginx writes its log after the close
			// Without it nginx logs "client closed connection while
			// reading PROXY protocol" for each (checked by hand).
			if errs, err := os.ReadFile(filepath.Join(dir, "error.log")); err != nil || bytes.Contains(errs, []byte("broken header")) ||
				bytes.Contains(errs, []byte("while reading PROXY protocol")) {
				t.Errorf("nginx error log (%v):\n%s", err, errs)
			}
		})
	}
}

// httpGet fetches path over HTTP/1.0 from inside ns and returns the body's
// SHA-256 and the local address of the connection.
func httpGet(ns *lab.NS, addr netip.AddrPort, path string, timeout time.Duration) ([32]byte, string, error) {
	c, err := dial(ns, addr, 5*time.Second)
	if err != nil {
		return [32]byte{}, "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: test\r\n\r\n", path); err != nil {
		return [32]byte{}, "", err
	}
	r := bufio.NewReaderSize(c, 64<<10)
	status, err := r.ReadString('\n')
	if err != nil {
		return [32]byte{}, "", fmt.Errorf("status: %w", err)
	}
	if !strings.Contains(status, " 200 ") {
		return [32]byte{}, "", fmt.Errorf("status %q", status)
	}
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return [32]byte{}, "", err
		}
		if l == "\r\n" {
			break
		}
	}
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return [32]byte{}, "", fmt.Errorf("body: %w", err)
	}
	return [32]byte(h.Sum(nil)), c.LocalAddr().String(), nil
}

// waitLines waits until the file has n lines and returns them.
func waitLines(t *testing.T, path string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(b) > 0 && len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %q, want %d lines", path, b, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
