package proxy

import (
	"math/rand/v2"
	"time"

	"github.com/syngate/syngate/cookie"
	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/pktio"
	"github.com/syngate/syngate/queue"
	"github.com/syngate/syngate/spec"
)

// worker is one receive loop's state; nothing in it is shared.
type worker struct {
	e       *Engine
	port    pktio.Port
	ifindex int
	rng     *rand.Rand
	seg     packet.Segment
	tx      []pktio.Packet
	free    []pktio.Packet
}

// handleBatch answers what needs an answer in place and transmits the
// replies as one batch.
func (w *worker) handleBatch(pkts []pktio.Packet) {
	w.tx, w.free = w.tx[:0], w.free[:0]
	for i := range pkts {
		if w.handle(&pkts[i]) {
			w.tx = append(w.tx, pkts[i])
		} else {
			w.free = append(w.free, pkts[i])
		}
	}
	if len(w.tx) > 0 {
		sent, err := w.port.Transmit(w.tx)
		if sent < len(w.tx) {
			w.free = append(w.free, w.tx[sent:]...)
		}
		if err != nil {
			w.e.log.Debug("transmit", "err", err)
		}
	}
	if len(w.free) > 0 {
		w.port.Release(w.free)
	}
}

// handle processes one frame and reports whether p now holds a reply to
// transmit.
func (w *worker) handle(p *pktio.Packet) bool {
	seg := &w.seg
	if err := packet.Parse(p.Data, seg); err != nil {
		w.e.conns.malformed.Add(1)
		return false
	}
	set := w.e.set.Load()
	if s := set.services[seg.Dst]; s != nil {
		return w.fromClient(s, p)
	}
	if rs := set.retiring[seg.Dst]; len(rs) > 0 {
		// A service a reload removed, still finishing its handshakes.
		return w.fromClient(rs[len(rs)-1], p)
	}
	if set.locals[seg.Dst.Addr()] {
		w.fromBackend(seg)
		return false
	}
	w.e.conns.stray.Add(1)
	return false
}

// fromClient handles a segment a client sent to a service.
func (w *worker) fromClient(s *service, p *pktio.Packet) bool {
	seg := &w.seg
	f := seg.Flags
	switch {
	case f&(packet.SYN|packet.ACK|packet.RST|packet.FIN) == packet.SYN:
		return w.onSYN(s, p)
	case f&packet.RST != 0:
		if c := w.e.conns.byClient(seg.Tuple); c != nil {
			w.e.clientReset(c, seg)
		}
		return false
	case f&packet.ACK == 0 || f&packet.SYN != 0:
		return false
	}
	if c := w.e.conns.byClient(seg.Tuple); c != nil {
		w.e.clientSegment(c, seg, w.ifindex)
		return false
	}
	return w.onACK(s, p)
}

// tsClock is our TCP timestamp clock: milliseconds, like Linux's.
func tsClock(now time.Time) uint32 { return uint32(now.UnixMilli()) }

// onSYN answers a SYN in place with a SYN-ACK, from the half-open queue or
// as a cookie.
func (w *worker) onSYN(s *service, p *pktio.Packet) bool {
	seg := &w.seg
	if c := w.e.conns.byClient(seg.Tuple); c != nil && !w.e.reuse(c, seg) {
		s.st.synDropped.Add(1)
		return false
	}
	if s.retired.Load() {
		// Removed by a reload (or from the config a restart adopted its
		// connections under): its entry stays in the data plane while its
		// connections live (their client segments must not reach the
		// kernel, which has no socket for them), and its SYNs are refused
		// as the kernel refuses them once it is gone. A SYN on a live
		// connection's 4-tuple was handled above, as for any service.
		s.st.synDropped.Add(1)
		return w.reset(p)
	}
	if !s.hasBackend() {
		// Every backend is down or drained: answering would only make
		// the client wait for a reset after its ACK.
		s.noBackend.Add(1)
		if s.OnNoBackend == spec.NoBackendDrop {
			return false
		}
		return w.reset(p)
	}
	now := w.e.now()
	o := s.offer.Load()
	if len(seg.Payload) > 0 {
		// TCP Fast Open data: the SYN-ACK acknowledges only the SYN
		// (syngate issues no TFO cookies), and the client sends it again
		// at once, as when a Linux server refuses a TFO cookie.
		s.st.synData.Add(1)
	}
	if o.clamped && clientMSS(seg.Options, seg.Is6()) > o.MSS {
		s.st.mssClamped(legClient)
	}
	mss := min(o.MSS, clientMSS(seg.Options, seg.Is6()))
	tsval := tsClock(now)
	// A queued handshake's ISN (and TSval) is a cookie too, unless the
	// service never takes cookies: the half-open entry lives in this
	// process only, and if it exits before the client's ACK arrives (a
	// restart, a crash), the next engine still validates that ACK, or the
	// client's first data, as a cookie. The entry itself keeps the exact
	// MSS and options.
	newISN := w.rng.Uint32
	var cookieTS uint32
	if s.Cookies != spec.CookiesNever {
		newISN = func() uint32 {
			syn := seg.Options
			syn.Timestamps = syn.Timestamps && o.Timestamps
			isn, ts, _ := w.e.cfg.Jar.Make(seg.Tuple, seg.Seq, syn, tsval, now)
			cookieTS = ts
			return isn
		}
	}
	d := s.l.OnSYN(queue.SYN{Tuple: seg.Tuple, ISN: seg.Seq, Options: seg.Options, MSS: mss}, now, newISN)
	var isn uint32
	switch d.Action {
	case queue.SynQueued:
		isn = d.OurISN
		if cookieTS != 0 {
			tsval = cookieTS
		}
		s.st.synAckQueued.Add(1)
	case queue.SynResend:
		isn, mss = d.OurISN, d.MSS
		s.st.synAckResent.Add(1)
	case queue.SynCookie:
		if d.Reason == queue.ReasonSynQueueFull {
			s.requestOffload()
		}
		// The cookie may keep options in the timestamp only if our
		// SYN-ACK carries one: mint for the timestamps the connection
		// will really have.
		syn := seg.Options
		syn.Timestamps = syn.Timestamps && o.Timestamps
		isn, tsval, mss = w.e.cfg.Jar.Make(seg.Tuple, seg.Seq, syn, tsval, now)
		// The cookie carries the client's MSS (rounded down) for the
		// backend leg; the SYN-ACK announces no more than the backend takes.
		mss = min(mss, o.MSS)
		s.st.synAckCookie.Add(1)
	default:
		return false
	}
	// The MSS is this SYN's: no more than the client and the backend take.
	opts := o.Offer
	opts.MSS = mss
	if d.Action == queue.SynCookie && !(seg.Options.Timestamps && o.Timestamps) {
		// Window scale and SACK-permitted live in the cookie's timestamp:
		// without one they cannot be recovered, so they are not offered
		// (Linux does the same).
		opts.WScale, opts.SACK, opts.ECN = flow.NoWScale, false, false
	}
	n := packet.ReplySynAck(p.Data[:cap(p.Data)], seg, isn, opts, tsval)
	if n == 0 {
		return false
	}
	p.Data = p.Data[:n]
	return true
}

// clientMSS is the MSS a client's SYN allows; RFC 9293 says 536 (IPv4) or
// 1220 (IPv6) when absent.
func clientMSS(o flow.SynOptions, is6 bool) uint16 {
	if o.MSS != 0 {
		return o.MSS
	}
	if is6 {
		return 1220
	}
	return 536
}

// onACK validates an ACK for which the engine has no connection: it may
// complete a half-open entry or carry a cookie.
func (w *worker) onACK(s *service, p *pktio.Packet) bool {
	seg := &w.seg
	now := w.e.now()
	if w.e.resets.match(seg.Tuple, seg.Ack, now) {
		// A late segment of a connection the engine reset: its ACK is a
		// valid cookie, but the client's connection is gone.
		s.st.rejected(rejectRecentlyReset)
		return w.reset(p)
	}
	var data []byte
	if len(seg.Payload) > 0 {
		data = append([]byte(nil), seg.Payload[:min(len(seg.Payload), w.e.cfg.MaxPending)]...)
	}
	if s.l == nil {
		// An adopted connection's stand-in: it has no queues.
		s.st.rejected("no_entry")
		return false
	}
	d := s.l.OnACK(seg.Tuple, seg.Seq, seg.Ack, data, now)
	if d.Action == queue.AckNoEntry {
		// The handshake may be a retired service's: a reload replaced or
		// removed it after its SYN-ACK went out. It finishes there.
		for _, r := range w.e.set.Load().retiring[seg.Dst] {
			if r == s || r.l == nil || r.l.SynQueueLen() == 0 {
				continue
			}
			if rd := r.l.OnACK(seg.Tuple, seg.Seq, seg.Ack, data, now); rd.Action != queue.AckNoEntry {
				s, d = r, rd
				break
			}
		}
	}
	switch d.Action {
	case queue.AckQueued:
		s.st.ackQueue.Add(1)
		w.e.opening(s, d.Conn, seg, w.ifindex)
		return false
	case queue.AckDrop:
		return false
	case queue.AckReset:
		s.st.rejected(d.Reason.String())
		if d.Reason == queue.ReasonAcceptQueueFull {
			// Its late segments carry the same cookie ACK (see resets).
			w.e.resets.add(seg.Tuple, seg.Ack-1, now)
		}
		return w.reset(p)
	}
	// A FIN without a half-open entry ends a connection this gateway does
	// not know (a peer's, moved here by ECMP, or one of ours already closed
	// and expired): it reaches the engine to be handed off, and must never
	// open a connection as a cookie. The queue's ISNs are cookies too, so a
	// retransmitted FIN of a connection that never got data back would
	// validate and open a backend leg that nobody closes. A retired service
	// accepts no new connection, cookies included.
	if !d.CookieCheckAllowed || seg.Flags&packet.FIN != 0 || s.retired.Load() {
		w.unknown(s, p, "no_entry")
		return false
	}
	opts, reason := w.e.cfg.Jar.Check(seg.Tuple, seg.Seq, seg.Ack, seg.Options.Timestamps, seg.Options.TSecr, now)
	if reason != cookie.ReasonOK {
		if d.PeerCookie {
			// Checked only in case a peer minted it: for this gateway it
			// is the stray ACK it was before peer cookies.
			w.unknown(s, p, "no_entry")
		} else {
			w.unknown(s, p, reason.String())
		}
		return false
	}
	o := s.offer.Load()
	if !seg.Options.Timestamps {
		// Without timestamps the cookie could not carry these: as in Linux,
		// the connection goes on without them.
		opts.WScale, opts.SACK, opts.ECN = flow.NoWScale, false, false
	}
	c := queue.Conn{
		Tuple: seg.Tuple, ClientISN: seg.Seq - 1, OurISN: seg.Ack - 1, Options: opts,
		MSS: min(opts.MSS, o.MSS), FirstSeen: now, Cookie: true, Data: data,
	}
	switch s.l.Accept(c, now) {
	case queue.AcceptQueued:
		if d.PeerCookie {
			s.st.ackPeerCookie.Add(1)
		} else {
			s.st.ackCookie.Add(1)
		}
		w.e.opening(s, c, seg, w.ifindex)
	case queue.AcceptReset:
		w.e.resets.add(seg.Tuple, seg.Ack-1, now)
		return w.reset(p)
	}
	return false
}

// unknown handles a segment of a connection this gateway has no state for:
// a peer may hold it (handed off), else it is rejected for reason.
func (w *worker) unknown(s *service, p *pktio.Packet, reason string) {
	if w.handoff(p) {
		s.st.handedOff.Add(1)
		return
	}
	s.st.rejected(reason)
}

// reset turns the received segment's frame into a RST answering it.
func (w *worker) reset(p *pktio.Packet) bool {
	seg := w.seg // BuildRST reads the copy while it overwrites the frame
	n, err := packet.BuildRST(p.Data[:cap(p.Data)], &seg)
	if err != nil {
		return false
	}
	p.Data = p.Data[:n]
	return true
}
