package e2e

import (
	"errors"
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

// drop adds an nftables table name to ns that drops what m matches at
// hook; deleting the table lifts the rule.
func drop(t *testing.T, ns *lab.NS, name string, hook lab.FilterHook, m lab.Match) *lab.Filter {
	t.Helper()
	f, err := ns.NewFilter(name, hook)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Drop(m); err != nil {
		t.Fatal(err)
	}
	return f
}

// blackhole drops every TCP segment to the backend's port: a backend that
// never answers.
func blackhole(t *testing.T, top *lab.Topology) {
	drop(t, top.Backend, "blackhole", lab.HookInput, lab.Match{Proto: unix.IPPROTO_TCP, DstPort: backendPort})
}

// pureACK matches the client's pure ACKs to the service: the third packet
// of a handshake.
func pureACK(top *lab.Topology) lab.Match {
	return lab.Match{
		Dst: top.VIP4, Proto: unix.IPPROTO_TCP, DstPort: servicePort,
		TCPFlagsMask: lab.TCPSyn | lab.TCPAck | lab.TCPFin | lab.TCPRst | lab.TCPPsh, TCPFlags: lab.TCPAck,
	}
}

// TestClientOptions varies the client's TCP options with sysctls in its
// namespace: each connection must still carry data both ways, on the queue
// path and on the cookie path, and the backend must have negotiated what the
// client offered (syngate replays the client's SYN options), minus what a
// cookie cannot carry without timestamps.
func TestClientOptions(t *testing.T) {
	const (
		optTS    = 1 // tcpi_options bits
		optSACK  = 2
		optWSCAL = 4
	)
	variants := []struct {
		name   string
		sysctl [][2]string
		mtu    int
		off    uint8 // options the client does not offer
	}{
		{"no-timestamps", [][2]string{{"net.ipv4.tcp_timestamps", "0"}}, 0, optTS},
		{"no-sack", [][2]string{{"net.ipv4.tcp_sack", "0"}}, 0, optSACK},
		{"no-window-scaling", [][2]string{{"net.ipv4.tcp_window_scaling", "0"}}, 0, optWSCAL},
		{"nothing", [][2]string{{"net.ipv4.tcp_timestamps", "0"}, {"net.ipv4.tcp_sack", "0"}, {"net.ipv4.tcp_window_scaling", "0"}}, 0, optTS | optSACK | optWSCAL},
		{"small-mss", nil, 700, 0},
	}
	for _, cookies := range []string{"never", "always"} {
		for _, v := range variants {
			t.Run(cookies+"/"+v.name, func(t *testing.T) {
				o := labOptions{cookies: cookies}
				top := newLab(t, o)
				for _, s := range v.sysctl {
					if err := top.Client.Sysctl(s[0], s[1]); err != nil {
						t.Fatal(err)
					}
				}
				if v.mtu != 0 {
					if err := top.Client.SetMTU(top.ClientIf.Name, v.mtu); err != nil {
						t.Fatal(err)
					}
				}
				accepted := echoServer(t, top)
				g := startSyngate(t, top, o)
				if err := echoBulk(g, 4<<20, 7, time.Minute); err != nil {
					t.Fatal(err)
				}
				info := accepted()
				if info == nil {
					t.Fatal("the backend accepted no connection")
				}
				want := uint8(optTS|optSACK|optWSCAL) &^ v.off
				if cookies == "always" && want&optTS == 0 {
					want &^= optSACK | optWSCAL // a cookie keeps them in the timestamp only
				}
				if got := info.Options & (optTS | optSACK | optWSCAL); got != want {
					t.Errorf("backend negotiated options %03b, want %03b (timestamps, SACK, window scale bits)", got, want)
				}
				if v.mtu != 0 && info.Snd_mss > 660 {
					t.Errorf("backend sends segments of %d bytes to a client whose MTU is %d", info.Snd_mss, v.mtu)
				}
			})
		}
	}
}

// TestBackendWindowScaleDiffers makes syngate announce a window scale (2)
// other than the backend's (10 here), so the fast path must translate every
// window: the client must see the window the backend offers, not a 256th of
// it, and data must still flow.
func TestBackendWindowScaleDiffers(t *testing.T) {
	o := labOptions{extra: "    announce:\n      window_scale: 2\n"}
	top := newLab(t, o)
	echoServer(t, top)
	g := startSyngate(t, top, o)
	if err := echoBulk(g, 32<<20, 3, time.Minute); err != nil {
		t.Fatal(err)
	}
	c, err := dial(top.Client, netip.AddrPortFrom(top.VIP4, servicePort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	raw.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if err != nil {
		t.Fatal(err)
	}
	// The echo backend's receive window is at least 64 KiB; untranslated,
	// its 2^10-scaled field read with our shift of 2 would be 256x smaller.
	if info.Snd_wnd < 60000 {
		t.Errorf("client sees a send window of %d bytes: the backend's window was not translated", info.Snd_wnd)
	}
	t.Logf("client's send window %d bytes", info.Snd_wnd)
}

// TestLoss drops 2% of the TCP packets leaving the client and the backend
// (nftables numgen): transfers still complete and match.
func TestLoss(t *testing.T) {
	forLinkModes(t, testLoss)
}

func testLoss(t *testing.T, mode linkMode) {
	top, g := echoRig(t, mode)
	var losses []*lab.Rule
	for _, ns := range []*lab.NS{top.Client, top.Backend} {
		loss, err := ns.AddLoss(2)
		if err != nil {
			t.Fatal(err)
		}
		losses = append(losses, loss)
	}
	for i := 0; i < 5; i++ {
		if err := echoBulk(g, 8<<20, uint64(i), 2*time.Minute); err != nil {
			t.Fatalf("transfer %d: %v", i, err)
		}
	}
	g.checkInWindow()
	for i, loss := range losses {
		n, err := loss.Packets()
		if err != nil || n == 0 {
			t.Errorf("the loss rule of %s dropped %d packets (%v)", []string{"the client", "the backend"}[i], n, err)
		}
	}
}

// TestSynAckRetransmission loses the client's handshake ACK: syngate's
// SYN-ACK retransmission (1 s later) makes the client ACK again, and the
// connection is spliced before the client sends anything.
func TestSynAckRetransmission(t *testing.T) {
	o := labOptions{cookies: "never"}
	top := newLab(t, o)
	echoServer(t, top)
	g := startSyngate(t, top, o)
	ackloss := drop(t, top.Client, "ackloss", lab.HookOutput, pureACK(top))
	c, err := dial(top.Client, netip.AddrPortFrom(top.VIP4, servicePort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(300 * time.Millisecond) // the client's ACK is gone by now
	if err := ackloss.Delete(); err != nil {
		t.Fatal(err)
	}
	if g.waitMetric(`syngate_connections_spliced_total{service="web"}`, 1, 5*time.Second) < 1 {
		t.Fatal("not spliced 5 s after the ACK was lost")
	}
	m := g.metrics()
	if got := m[`syngate_synack_sent_total{kind="retransmit",service="web"}`]; got < 1 {
		t.Errorf("SYN-ACK retransmissions = %v, want >= 1", got)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo after retransmission: %q %v", buf, err)
	}
}

// TestBackendSynAckRepeat loses the gateway's handshake ACK to the backend
// (the client sends nothing that could complete it instead): the backend
// repeats its SYN-ACK into the spliced leg a second later, the gateway acks
// it again, and the connection works. Both data paths (XDP and TC) steer
// the SYN-ACK to the engine.
func TestBackendSynAckRepeat(t *testing.T) {
	forLinkModes(t, testBackendSynAckRepeat)
}

func testBackendSynAckRepeat(t *testing.T, mode linkMode) {
	top, g := echoRig(t, mode)
	ackloss := drop(t, top.Backend, "ackloss", lab.HookInput, lab.Match{
		Dst: backendAddr(top), Proto: unix.IPPROTO_TCP, DstPort: backendPort,
		TCPFlagsMask: lab.TCPSyn | lab.TCPAck | lab.TCPFin | lab.TCPRst | lab.TCPPsh, TCPFlags: lab.TCPAck,
	})
	c, err := dial(top.Client, netip.AddrPortFrom(top.VIP4, servicePort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if g.waitMetric(`syngate_connections_spliced_total{service="web"}`, 1, 5*time.Second) < 1 {
		t.Fatal("not spliced")
	}
	time.Sleep(300 * time.Millisecond) // the handshake's ACK is gone by now
	if err := ackloss.Delete(); err != nil {
		t.Fatal(err)
	}
	if got := g.waitMetric(`syngate_backend_synack_repeats_total{service="web"}`, 1, 5*time.Second); got != 1 {
		t.Fatalf("backend SYN-ACK repeats = %v 5 s after the ACK was lost, want 1", got)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo after the repeated SYN-ACK: %q %v", buf, err)
	}
	m := g.metrics()
	if got := m.Sum("syngate_challenge_acks_total", `result="sent"`); got != 0 {
		t.Errorf("%v challenge ACKs for the backend's own SYN-ACK", got)
	}
	checkDatapath(t, m, mode)
}

// TestBackendDown: with nothing listening on the backend the client gets a
// reset; with a backend that never answers, a reset after connect_timeout.
func TestBackendDown(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		o := labOptions{}
		top := newLab(t, o)
		g := startSyngate(t, top, o)
		start := time.Now()
		err := readAfterConnect(top)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read: %v, want connection reset", err)
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("reset after %v, want at once", el)
		}
		if got := g.metrics()[`syngate_backend_failures_total{reason="refused",service="web"}`]; got != 1 {
			t.Errorf("backend failures{refused} = %v", got)
		}
	})
	t.Run("silent", func(t *testing.T) {
		o := labOptions{}
		top := newLab(t, o)
		g := startSyngate(t, top, o)
		blackhole(t, top)
		start := time.Now()
		err := readAfterConnect(top)
		el := time.Since(start)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read: %v, want connection reset", err)
		}
		// connect_timeout is 2s in the lab config; the expiry loop runs
		// every 250 ms.
		if el < 1500*time.Millisecond || el > 4*time.Second {
			t.Errorf("reset after %v, want about the 2 s connect timeout", el)
		}
		if got := g.metrics()[`syngate_backend_failures_total{reason="timeout",service="web"}`]; got != 1 {
			t.Errorf("backend failures{timeout} = %v", got)
		}
	})
}

// readAfterConnect connects to the VIP, writes, and waits for data or an
// error.
func readAfterConnect(top *lab.Topology) error {
	c, err := dial(top.Client, netip.AddrPortFrom(top.VIP4, servicePort), 5*time.Second)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// A reset that arrives before the write is reported by the write, once:
	// the read after it then sees EOF.
	if _, err := c.Write([]byte("hello")); err != nil {
		return err
	}
	_, err = c.Read(make([]byte, 16))
	return err
}

// TestOverflowReset fills the accept queue (backlog 1, a backend that never
// answers) and makes a validated ACK find it full: that client is reset, as
// with tcp_abort_on_overflow=1. While the queue is full, SYNs are dropped.
func TestOverflowReset(t *testing.T) {
	o := labOptions{backlog: 1, overflow: "reset", cookies: "never", connectTimeout: "30s"}
	top := newLab(t, o)
	blackhole(t, top)
	g := startSyngate(t, top, o)
	vip := netip.AddrPortFrom(top.VIP4, servicePort)
	// The first connection takes the only backend handshake slot.
	c1, err := dial(top.Client, vip, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	// Two more complete their handshake on the client side only: their
	// pure ACKs are dropped, so syngate keeps them half-open.
	drop(t, top.Client, "ackloss", lab.HookOutput, pureACK(top))
	c2, err := dial(top.Client, vip, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c3, err := dial(top.Client, vip, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	// Their first data segments carry the ACK: the second fills the accept
	// queue, the third overflows it.
	if _, err := c2.Write([]byte("two")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := c3.Write([]byte("three")); err != nil {
		t.Fatal(err)
	}
	c3.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c3.Read(make([]byte, 8)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("third client: %v, want connection reset", err)
	}
	// A new SYN while the accept queue is full is dropped: no connection.
	if c4, err := dial(top.Client, vip, 1500*time.Millisecond); err == nil {
		c4.Close()
		t.Fatal("a fourth connection got through a full accept queue")
	}
	m := g.metrics()
	if got := m[`syngate_accept_queue_overflows_total{action="reset",service="web"}`]; got != 1 {
		t.Errorf("accept queue overflows{reset} = %v, want 1", got)
	}
	if got := m[`syngate_syn_dropped_total{reason="accept_queue_full",service="web"}`]; got < 1 {
		t.Errorf("SYNs dropped for a full accept queue = %v", got)
	}
}
