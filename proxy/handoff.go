package proxy

import (
	"sync/atomic"
	"time"

	"github.com/syngate/syngate/pktio"
)

// Handoff names the peer gateways on a link. When the ECMP set in front
// of the gateways changes (a drain), a connection spliced on one gateway
// starts arriving at another, which has no state for it; that gateway
// passes such segments on to its peers over the shared link (a copy for
// each, with the peer's MAC), and the gateway that holds the connection
// splices them as if they had come from the router.
type Handoff interface {
	// Peers lists the MAC addresses of the peer gateways reachable on the
	// interface ifindex (nil: none).
	Peers(ifindex int) [][6]byte
	// IsPeer reports whether mac is a peer gateway's: a frame from a peer
	// was handed off already and is never passed on again (no loops).
	IsPeer(mac [6]byte) bool
}

// DefaultHandoffRate bounds the segments an engine hands off per second:
// each is copied to every peer, so a flood of forged ACKs must not turn
// into a flood between gateways.
const DefaultHandoffRate = 20000

// handoffBudget counts hand-offs in the current second.
type handoffBudget struct {
	second, count atomic.Int64
}

func (b *handoffBudget) take(now time.Time, limit int64) bool {
	sec := now.Unix()
	if cur := b.second.Load(); cur != sec && b.second.CompareAndSwap(cur, sec) {
		b.count.Store(0)
	}
	return b.count.Add(1) <= limit
}

// handoff passes the received frame p, a segment of a connection this
// gateway does not know, to every peer on the worker's link. It reports
// whether it did.
func (w *worker) handoff(p *pktio.Packet) bool {
	h := w.e.cfg.Handoff
	// A replayed segment (ReplayACKs: kept by the data plane while no
	// engine ran) has no socket to go out of; its sender retransmits.
	if h == nil || w.port == nil || h.IsPeer(w.seg.SrcMAC) {
		return false
	}
	peers := h.Peers(w.ifindex)
	if len(peers) == 0 || !w.e.handoffs.take(w.e.now(), DefaultHandoffRate) {
		return false
	}
	own := w.seg.DstMAC
	frame := p.Data
	sent := false
	for _, mac := range peers {
		if mac == own {
			continue
		}
		// The copy goes out of this socket's queue with the peer as
		// destination and this gateway as source, which marks it as
		// handed off.
		copy(frame[0:6], mac[:])
		copy(frame[6:12], own[:])
		if pktio.Send(w.port, frame) == nil {
			sent = true
		}
	}
	return sent
}
