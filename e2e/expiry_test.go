package e2e

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestIdleExpiryResetsBothEnds: when syngate gives up an idle connection,
// both ends hear of it at once (a RST each, at their next expected
// sequence number) instead of at their next write.
func TestIdleExpiryResetsBothEnds(t *testing.T) {
	o := labOptions{prefix: "sga-", top: "flows:\n  established_timeout: 2s\n"}
	top := newLab(t, o)
	srv := startAttackBackend(t, top)
	g := startSyngate(t, top, o)
	c := dialCmd(t, top, netip.AddrPortFrom(top.VIP4, servicePort), 'W')
	if _, err := c.Write([]byte("then silence")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Idle 2s, then the engine's 5s flow scan: the RSTs come within ~7s.
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client after the idle timeout: %v, want ECONNRESET", err)
	}
	t.Logf("client reset after %v idle", time.Since(start).Round(100*time.Millisecond))
	select {
	case err := <-srv.resets:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("backend after the idle timeout: %v, want ECONNRESET", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the backend did not hear of the idle expiry")
	}
	// The engine counts the expiry just after sending the RSTs.
	if got := g.waitMetric(`syngate_flows_expired_total{reason="idle"}`, 1, 2*time.Second); got != 1 {
		t.Errorf("flows_expired_total{reason=idle} = %v, want 1", got)
	}
	if got := g.metrics()[`syngate_flow_resets_sent_total{service="web"}`]; got != 2 {
		t.Errorf("flow_resets_sent_total = %v, want 2", got)
	}
}

// TestPortReuseAfterClose: a client that closed a connection and connects
// again from the same port (tcp_tw_reuse) gets a new connection at once:
// both FINs were acked and Linux starts the new ISN above the old
// connection's sequence numbers, as TIME_WAIT asks. No challenge ACK, no
// retry.
func TestPortReuseAfterClose(t *testing.T) {
	o := labOptions{prefix: "sga-"}
	top := newLab(t, o)
	startAttackBackend(t, top)
	g := startSyngate(t, top, o)
	if err := top.Client.Sysctl("net.ipv4.tcp_tw_reuse", "1"); err != nil {
		t.Fatal(err)
	}
	vip := netip.AddrPortFrom(top.VIP4, servicePort)
	local := netip.AddrPortFrom(top.ClientIf.V4.Addr(), 45678)
	dialFrom := func() (net.Conn, error) {
		var c net.Conn
		err := top.Client.Run(func() (err error) {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(local), Timeout: 5 * time.Second,
				Control: func(_, _ string, rc syscall.RawConn) error {
					var serr error
					rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
					return serr
				}}
			c, err = d.Dial("tcp", vip.String())
			return err
		})
		return c, err
	}
	for i := range 2 {
		if i > 0 {
			// tcp_tw_reuse takes a TIME_WAIT port over after a second.
			time.Sleep(1100 * time.Millisecond)
		}
		start := time.Now()
		c, err := dialFrom()
		if err != nil {
			t.Fatalf("connection %d from %v: %v", i, local, err)
		}
		if _, err := c.Write([]byte{'E'}); err != nil {
			t.Fatal(err)
		}
		if err := exchange(c, 32<<10, uint64(i)); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Logf("connection %d from %v: connected and echoed in %v", i, local, time.Since(start).Round(time.Millisecond))
		// The client closes first (it keeps the TIME_WAIT), the backend
		// follows; both FINs are acked.
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("connection %d after close: %d bytes, %v; want EOF", i, n, err)
		}
		c.Close()
	}
	m := g.metrics()
	if got := m[`syngate_flows_expired_total{reason="reused"}`]; got != 1 {
		t.Errorf("flows_expired_total{reason=reused} = %v, want 1", got)
	}
	if got := m.Sum("syngate_challenge_acks_total"); got != 0 {
		t.Errorf("challenge_acks_total = %v, want 0: the new SYN was a legitimate reuse", got)
	}
	if got := m[`syngate_connections_spliced_total{service="web"}`]; got != 2 {
		t.Errorf("spliced %v connections, want 2", got)
	}
}
