package proxy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
)

func resetTuple(i int) flow.Tuple {
	return flow.Tuple{
		Client:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 16), byte(i >> 8)}), uint16(i)),
		Service: vip,
	}
}

// TestRecentResetsBounds: a record matches only its own ISN, lapses after
// recentResetTTL, and past recentResetMax the oldest goes first.
func TestRecentResetsBounds(t *testing.T) {
	var r recentResets
	now := time.Unix(1_700_000_000, 0)
	r.add(resetTuple(0), 1000, now)
	if !r.match(resetTuple(0), 1001, now) {
		t.Error("the reset connection's ACK does not match")
	}
	if r.match(resetTuple(0), 5001, now) || r.match(resetTuple(1), 1001, now) {
		t.Error("another ISN or tuple matches")
	}
	if r.match(resetTuple(0), 1001, now.Add(recentResetTTL)) {
		t.Error("matches after recentResetTTL")
	}
	for i := 1; i <= recentResetMax; i++ {
		r.add(resetTuple(i), uint32(i), now.Add(time.Second))
	}
	if len(r.by) != recentResetMax || len(r.fifo)-r.head != recentResetMax {
		t.Errorf("%d records, %d queued; want %d", len(r.by), len(r.fifo)-r.head, recentResetMax)
	}
	if r.match(resetTuple(0), 1001, now.Add(time.Second)) {
		t.Error("the oldest record survived the bound")
	}
	if !r.match(resetTuple(recentResetMax), recentResetMax+1, now.Add(time.Second)) {
		t.Error("the newest record is gone")
	}
	// A later add expires everything older than the TTL.
	r.add(resetTuple(0), 7, now.Add(time.Second+recentResetTTL))
	if len(r.by) != 1 || r.n.Load() != 1 {
		t.Errorf("%d records (n %d) after the TTL, want 1", len(r.by), r.n.Load())
	}
}
