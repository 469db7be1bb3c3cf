package e2e

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"
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
