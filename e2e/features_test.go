package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/lab"
)

// tcpiOptECN is a tcp_info.tcpi_options bit (include/uapi/linux/tcp.h).
const tcpiOptECN = 8

// newFeatureLab is the routed lab under the sgi- prefix.
func newFeatureLab(t *testing.T) *lab.Topology {
	t.Helper()
	lab.RequireRoot(t)
	top, err := lab.NewTopology(t, lab.Options{Prefix: "sgi-"})
	if err != nil {
		t.Fatal(err)
	}
	return top
}

// TestECN: a client that asks for ECN (net.ipv4.tcp_ecn=1) gets it end to
// end, on the queue path and on the XDP cookie path, when the backend does
// ECN (Linux's default, tcp_ecn=2); with a backend that does not
// (tcp_ecn=0) neither leg uses it.
func TestECN(t *testing.T) {
	for _, tc := range []struct {
		cookies    string
		backendECN string
		want       bool
	}{
		{"never", "2", true},
		{"always", "2", true},
		{"never", "0", false},
		{"always", "0", false},
	} {
		t.Run(fmt.Sprintf("cookies %s backend tcp_ecn=%s", tc.cookies, tc.backendECN), func(t *testing.T) {
			top := newFeatureLab(t)
			if err := top.Client.Sysctl("net.ipv4.tcp_ecn", "1"); err != nil {
				t.Fatal(err)
			}
			if err := top.Backend.Sysctl("net.ipv4.tcp_ecn", tc.backendECN); err != nil {
				t.Fatal(err)
			}
			infos := infoEchoServer(t, top.Backend, 1<<20)
			g := startSyngate(t, top, labOptions{cookies: tc.cookies})
			for _, vip := range []netip.Addr{top.VIP4, top.VIP6} {
				c, err := dial(top.Client, netip.AddrPortFrom(vip, servicePort), 5*time.Second)
				if err != nil {
					t.Fatalf("%v: connect: %v", vip, err)
				}
				err = echoOver(c, 1<<20, 3, 30*time.Second)
				ci, ierr := tcpInfo(c)
				c.Close()
				if err != nil || ierr != nil {
					t.Fatalf("%v: %v %v", vip, err, ierr)
				}
				var bi *unix.TCPInfo
				select {
				case bi = <-infos:
				case <-time.After(10 * time.Second):
					t.Fatalf("%v: the backend did not finish its echo", vip)
				}
				cECN, bECN := ci.Options&tcpiOptECN != 0, bi.Options&tcpiOptECN != 0
				t.Logf("%v: ECN client %v, backend %v", vip, cECN, bECN)
				if cECN != tc.want || bECN != tc.want {
					t.Errorf("%v: ECN on the client %v, on the backend %v; want %v on both", vip, cECN, bECN, tc.want)
				}
			}
			m := g.metrics()
			result := map[bool]string{true: "negotiated", false: "not_offered"}[tc.want]
			if got := m[`syngate_ecn_total{result="`+result+`",service="web"}`] + m[`syngate_ecn_total{result="`+result+`",service="web6"}`]; got != 2 {
				t.Errorf("ecn_total{result=%q} = %v, want 2", result, got)
			}
			if tc.cookies == "always" && m[`syngate_xdp_packets_total{reason="tx_synack_cookie",verdict="tx"}`] < 2 {
				t.Error("the SYN-ACKs were not the XDP program's cookies")
			}
		})
	}
}

// tfoEcho opens a TCP Fast Open connection from ns to dst with msg in its
// SYN (TCP_FASTOPEN_CONNECT: connect is deferred to the first write) and
// returns how long it took until msg came back echoed.
func tfoEcho(ns *lab.NS, dst netip.AddrPort, msg []byte) (time.Duration, error) {
	fam := unix.AF_INET6
	var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: dst.Addr().As16(), Port: int(dst.Port())}
	if dst.Addr().Is4() {
		fam = unix.AF_INET
		sa = &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())}
	}
	var fd int
	err := ns.Run(func() (err error) {
		fd, err = unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_FASTOPEN_CONNECT, 1); err != nil {
		return 0, fmt.Errorf("TCP_FASTOPEN_CONNECT: %w", err)
	}
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	start := time.Now()
	if err := unix.Connect(fd, sa); err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	if _, err := unix.Write(fd, msg); err != nil {
		return 0, fmt.Errorf("write: %w", err)
	}
	got := make([]byte, 0, len(msg))
	buf := make([]byte, len(msg))
	for len(got) < len(msg) {
		n, err := unix.Read(fd, buf)
		if err != nil {
			return 0, fmt.Errorf("read after %d bytes: %w", len(got), err)
		}
		if n == 0 {
			return 0, fmt.Errorf("eof after %d bytes", len(got))
		}
		got = append(got, buf[:n]...)
	}
	el := time.Since(start)
	if string(got) != string(msg) {
		return 0, fmt.Errorf("echo %q, sent %q", got, msg)
	}
	return el, nil
}

// TestTFO: a client with a Fast Open cookie for the VIP puts data in its
// SYN. syngate answers with a SYN-ACK acknowledging only the SYN and the
// client sends the data again at once: no SYN timeout (1 s) on the way,
// although filters.drop_syn_payload is on (the default). The cookie comes
// from a kernel listener with Fast Open on another port of the VIP, as if
// the service had not always been behind syngate (the client caches
// cookies per server address). A client in the no-cookie mode
// (tcp_fastopen=0x4) puts data in a SYN without the option, which the
// filter still drops: it connects after its SYN timeout.
func TestTFO(t *testing.T) {
	top := newFeatureLab(t)
	echoServer(t, top)
	if err := top.Gateway.Sysctl("net.ipv4.tcp_fastopen", "3"); err != nil {
		t.Fatal(err)
	}
	if err := top.Client.Sysctl("net.ipv4.tcp_fastopen", "1"); err != nil {
		t.Fatal(err)
	}
	g := startSyngate(t, top, labOptions{cookies: "never"})
	msg := []byte("GET / HTTP/1.1\r\n\r\n")
	for _, vip := range []netip.Addr{top.VIP4, top.VIP6} {
		// A kernel server with Fast Open on VIP:81 gives the client its
		// cookie for vip.
		cookieSrv := netip.AddrPortFrom(vip, 81)
		var ln net.Listener
		err := top.Gateway.Run(func() (err error) {
			lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
				var serr error
				c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_FASTOPEN, 16) })
				return serr
			}}
			ln, err = lc.Listen(context.Background(), "tcp", cookieSrv.String())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); io.Copy(c, c) }()
			}
		}()
		for i := range 2 { // the first asks for a cookie, the second uses it
			if _, err := tfoEcho(top.Client, cookieSrv, msg); err != nil {
				t.Fatalf("%v: cookie server, connection %d: %v", vip, i, err)
			}
		}
		ln.Close()

		before := g.metrics()
		el, err := tfoEcho(top.Client, netip.AddrPortFrom(vip, servicePort), msg)
		if err != nil {
			t.Fatalf("%v: %v", vip, err)
		}
		after := g.metrics()
		dropped := after[`syngate_xdp_packets_total{reason="drop_syn_payload",verdict="drop"}`] - before[`syngate_xdp_packets_total{reason="drop_syn_payload",verdict="drop"}`]
		data := after[`syngate_syn_data_total{service="web"}`] + after[`syngate_syn_data_total{service="web6"}`] -
			before[`syngate_syn_data_total{service="web"}`] - before[`syngate_syn_data_total{service="web6"}`]
		t.Logf("%v: TFO request echoed in %v; SYNs with data answered %v, dropped %v", vip, el.Round(100*time.Microsecond), data, dropped)
		if dropped != 0 || data != 1 {
			t.Errorf("%v: %v SYNs with data dropped, %v answered; want the one SYN answered", vip, dropped, data)
		}
		if el > 700*time.Millisecond {
			t.Errorf("%v: TFO request took %v: a SYN timed out", vip, el)
		}
	}

	// No-cookie mode: data without the option is what the filter drops.
	if err := top.Client.Sysctl("net.ipv4.tcp_fastopen", "5"); err != nil {
		t.Fatal(err)
	}
	before := g.metrics()[`syngate_xdp_packets_total{reason="drop_syn_payload",verdict="drop"}`]
	el, err := tfoEcho(top.Client, netip.AddrPortFrom(top.VIP4, servicePort), msg)
	if err != nil {
		t.Fatal(err)
	}
	dropped := g.metrics()[`syngate_xdp_packets_total{reason="drop_syn_payload",verdict="drop"}`] - before
	t.Logf("no-cookie TFO request echoed in %v; SYNs with data dropped %v", el.Round(time.Millisecond), dropped)
	if dropped != 1 {
		t.Errorf("%v SYNs with data and no Fast Open option dropped, want 1", dropped)
	}
}

// TestBackendWithoutWindowScale: syngate announces a window scale (7, set
// in the config) but the backend does not do window scaling
// (tcp_window_scaling=0), so its SYN-ACK has no window scale option. Each
// leg then scales on its own: the client must read the backend's unscaled
// window as it is (not 128 times larger), and the backend the client's
// scaled window as its size (not 128 times smaller).
func TestBackendWithoutWindowScale(t *testing.T) {
	top := newFeatureLab(t)
	if err := top.Backend.Sysctl("net.ipv4.tcp_window_scaling", "0"); err != nil {
		t.Fatal(err)
	}
	infos := infoEchoServer(t, top.Backend, 8<<20)
	g := startSyngate(t, top, labOptions{cookies: "never", extra: "    announce:\n      window_scale: 7\n"})
	c, err := dial(top.Client, netip.AddrPortFrom(top.VIP4, servicePort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = echoOver(c, 8<<20, 5, time.Minute)
	el := time.Since(start)
	ci, ierr := tcpInfo(c)
	c.Close()
	if err != nil || ierr != nil {
		t.Fatal(err, ierr)
	}
	var bi *unix.TCPInfo
	select {
	case bi = <-infos:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend did not finish its echo")
	}
	const tcpiOptWScale = 4
	cws, bws := ci.Options&tcpiOptWScale != 0, bi.Options&tcpiOptWScale != 0
	t.Logf("8 MiB each way in %v; client's send window %d (scaling %v), backend's %d (scaling %v)",
		el.Round(time.Millisecond), ci.Snd_wnd, cws, bi.Snd_wnd, bws)
	if !cws || bws {
		t.Errorf("window scaling on the client %v, on the backend %v; want on (announced) and off", cws, bws)
	}
	if ci.Snd_wnd > 65535 {
		t.Errorf("client's send window %d: more than an unscaled backend can offer", ci.Snd_wnd)
	}
	// The backend reads the client's window through the splice, which
	// shifts it by the client's scale: what it sees is the client's receive
	// window (capped at 65535), not that 128th of it (an unscaled read).
	// Halved for the window's moves between the two reads. A zero window
	// (the client's buffer full at the backend's last read, seen now and
	// then with the veth defaults' aggregates) tells nothing either way.
	if want := min(ci.Rcv_wnd, 65535); bi.Snd_wnd != 0 && bi.Snd_wnd < want/2 {
		t.Errorf("backend's send window %d, client's receive window %d: the client's scaled window was read unscaled", bi.Snd_wnd, ci.Rcv_wnd)
	}
	// The tracking reads each sender's window with its own shift: the
	// backend's unscaled, the client's scaled.
	g.checkInWindow()
}

// TestRateLimitExempt runs the per-source SYN rate limit at 2 SYNs per
// second with two services: the exempt one (web, IPv4) takes a burst of
// new connections from one client untouched, while the other (web6, the
// same client over IPv6) gets its SYNs past the budget dropped in the data
// path.
func TestRateLimitExempt(t *testing.T) {
	o := labOptions{
		top:   "filters:\n  rate_limit: 2\n  rate_burst: 2\n",
		extra: "    rate_limit_exempt: true\n",
	}
	top := newLab(t, o)
	echoServer(t, top)
	g := startSyngate(t, top, o)
	const burst = 20
	dialAll := func(vip netip.Addr) (ok int) {
		for range burst {
			c, err := dial(top.Client, netip.AddrPortFrom(vip, servicePort), 500*time.Millisecond)
			if err == nil {
				ok++
				c.Close()
			}
		}
		return ok
	}
	if ok := dialAll(top.VIP4); ok != burst {
		t.Errorf("exempt service: %d of %d connections in a burst, want all", ok, burst)
	}
	if d := g.metrics().Sum("syngate_xdp_packets_total", `reason="drop_syn_ratelimit"`); d != 0 {
		t.Errorf("%v SYNs to the exempt service dropped by the rate limit", d)
	}
	ok := dialAll(top.VIP6)
	dropped := g.metrics().Sum("syngate_xdp_packets_total", `reason="drop_syn_ratelimit"`)
	t.Logf("service under the limit: %d of %d connections within 500 ms each, %v SYNs dropped by the rate limit", ok, burst, dropped)
	if ok == burst || dropped == 0 {
		t.Errorf("the rate limit did not hold the other service's burst: %d of %d connected, %v SYNs dropped", ok, burst, dropped)
	}
}
