package e2e

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/lab"
)

// tcpInfo reads a connection's tcp_info.
func tcpInfo(c net.Conn) (*unix.TCPInfo, error) {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return nil, err
	}
	var info *unix.TCPInfo
	cerr := raw.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if cerr != nil {
		return nil, cerr
	}
	return info, err
}

// infoEchoServer echoes every connection on the backend and hands over its
// tcp_info once the client has finished (after the echo, before closing),
// if it carried at least minBytes: syngate's backend probes connect too.
func infoEchoServer(t *testing.T, ns *lab.NS, minBytes uint64) <-chan *unix.TCPInfo {
	t.Helper()
	infos := make(chan *unix.TCPInfo, 16)
	// v4 and v6
	serveConns(t, ns, netip.AddrPortFrom(netip.IPv6Unspecified(), backendPort), func(c net.Conn) {
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
		if info, err := tcpInfo(c); err == nil && info.Bytes_received >= minBytes {
			select {
			case infos <- info:
			default:
			}
		}
	})
	return infos
}

// TestPMTU moves 64 MiB each way through syngate over a path with a
// 1200-byte link between two routers (1280 for IPv6, its minimum), on the
// client side and then on the backend side, IPv4 and IPv6. Packets of 1500 bytes only get through once
// each sender learned the path MTU from a router's ICMP error; for the
// sender behind the gateway that error reaches it only through syngate's
// translation (the client side: the backend's segments; the backend side:
// the client's). Both endpoints' connections must end up on 1200.
func TestPMTU(t *testing.T) {
	lab.RequireRoot(t)
	const mtu = 1200
	for _, side := range []lab.PMTUSide{lab.NarrowClientSide, lab.NarrowBackendSide} {
		name := map[lab.PMTUSide]string{lab.NarrowClientSide: "client side", lab.NarrowBackendSide: "backend side"}[side]
		t.Run(name, func(t *testing.T) {
			top, err := lab.NewPMTUTopology(t, lab.PMTUOptions{Side: side, MTU: mtu})
			if err != nil {
				t.Fatal(err)
			}
			infos := infoEchoServer(t, top.Backend, 64<<20)
			g := startSyngate(t, top.Topology, labOptions{})
			for _, vip := range []netip.Addr{top.VIP4, top.VIP6} {
				c, err := dial(top.Client, netip.AddrPortFrom(vip, servicePort), 5*time.Second)
				if err != nil {
					t.Fatalf("%v: connect: %v", vip, err)
				}
				start := time.Now()
				err = echoOver(c, 64<<20, 7, 2*time.Minute)
				el := time.Since(start)
				ci, ierr := tcpInfo(c)
				c.Close()
				if err != nil {
					t.Fatalf("%v: %v", vip, err)
				}
				if ierr != nil {
					t.Fatal(ierr)
				}
				var bi *unix.TCPInfo
				select {
				case bi = <-infos:
				case <-time.After(10 * time.Second):
					t.Fatalf("%v: the backend did not finish its echo", vip)
				}
				t.Logf("%v: 64 MiB each way in %v (%.0f MB/s per direction); path MTU client %d, backend %d; retransmits client %d, backend %d",
					vip, el.Round(time.Millisecond), 64*1.048576/el.Seconds(), ci.Pmtu, bi.Pmtu, ci.Total_retrans, bi.Total_retrans)
				want := uint32(mtu)
				if vip.Is6() {
					want = 1280 // IPv6's minimum link MTU: the lab's narrow link for IPv6
				}
				if ci.Pmtu != want || bi.Pmtu != want {
					t.Errorf("%v: path MTU learned by the client %d, by the backend %d; want %d for both", vip, ci.Pmtu, bi.Pmtu, want)
				}
			}
			m := g.metrics()
			redirected := m[`syngate_xdp_packets_total{reason="fast_icmp_redirect",verdict="redirect"}`]
			t.Logf("ICMP errors translated and redirected: %v; rate-limited %v", redirected,
				m[`syngate_xdp_packets_total{reason="drop_icmp_ratelimit",verdict="drop"}`])
			if redirected < 2 {
				t.Errorf("%v ICMP errors translated, want at least one per family", redirected)
			}
			// Segments resent smaller after an ICMP error stay inside the
			// tracked window.
			g.checkInWindow()
		})
	}
}

// TestMSSClamp gives the gateway's client-side interface a smaller MTU
// (1400) than the client's and the backend's (1500). The fast path cannot
// fragment and nobody sends an ICMP error for what does not fit (the
// client's larger frames die on the veth, the backend's at the redirect),
// so syngate must announce an MSS that fits: 1360 to the client in its
// SYN-ACK and to the backend in its SYN.
func TestMSSClamp(t *testing.T) {
	top := newFeatureLab(t)
	if err := top.Gateway.SetMTU(top.GatewayClient.Name, 1400); err != nil {
		t.Fatal(err)
	}
	infos := infoEchoServer(t, top.Backend, 16<<20)
	g := startSyngate(t, top, labOptions{cookies: "never"})
	for _, vip := range []netip.Addr{top.VIP4, top.VIP6} {
		c, err := dial(top.Client, netip.AddrPortFrom(vip, servicePort), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		err = echoOver(c, 16<<20, 9, time.Minute)
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
		// snd_mss is the MSS minus the timestamps option.
		t.Logf("%v: send MSS client %d, backend %d", vip, ci.Snd_mss, bi.Snd_mss)
		want := uint32(1400 - 40 - 12)
		if vip.Is6() {
			want = 1400 - 60 - 12
		}
		if ci.Snd_mss != want || bi.Snd_mss != want {
			t.Errorf("%v: send MSS client %d, backend %d; want %d", vip, ci.Snd_mss, bi.Snd_mss, want)
		}
	}
	m := g.metrics()
	if got := m[`syngate_mss_clamped_total{leg="backend",service="web"}`]; got != 1 {
		t.Errorf("mss_clamped_total{leg=backend,service=web} = %v, want 1", got)
	}
	g.checkInWindow()
}
