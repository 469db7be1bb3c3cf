package proxy

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/queue"
)

// backendSynRTO is the backend SYN retransmission timeout; it doubles like
// the kernel's until the connect timeout runs out.
const backendSynRTO = time.Second

// maxHeldSegments bounds the segments held per connection besides their
// bytes, so tiny segments cannot make the held list long.
const maxHeldSegments = 64

// opening records the client's side of a validated connection (called by the
// receive loop that validated its ACK, with seg that ACK).
func (e *Engine) opening(s *service, qc queue.Conn, seg *packet.Segment, ifindex int) {
	now := e.now()
	c, _ := e.conns.getOrCreate(s, qc.Tuple, now)
	if c == nil {
		// The table is full: refuse the connection now rather than let
		// the client wait on a handshake that completed for nothing.
		// (Counted here only: this runs once for every accepted one.)
		s.st.backendFailure("conn_table_full")
		e.resets.add(qc.Tuple, qc.OurISN, now)
		e.send(s, packet.Build, &packet.Fields{
			Src: qc.Tuple.Service, Dst: qc.Tuple.Client, Seq: qc.OurISN + 1, Ack: qc.ClientISN + 1,
			Flags: packet.RST | packet.ACK,
		})
		return
	}
	o := s.offer.Load()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateAccepted || c.haveClient {
		return
	}
	c.haveClient = true
	c.fill(qc)
	c.ts = seg.Options.Timestamps
	c.wscale = flow.NoWScale
	if qc.Options.HasWScale() && o.WScale != flow.NoWScale {
		c.wscale = o.WScale
	}
	c.sack = qc.Options.SACK && o.SACK
	// Our SYN-ACK (either path) agreed to ECN when the service offered
	// it; the cookie keeps the client's request.
	c.ecn = qc.Options.ECN && o.ECN
	c.ourTS0, c.clientTSval = seg.Options.TSecr, seg.Options.TSval
	c.window = seg.Window
	c.clientMAC, c.ourMAC, c.clientIfindex = seg.SrcMAC, seg.DstMAC, ifindex
	if len(qc.Data) > 0 {
		c.hold(seg, qc.Data)
	}
	if c.queued {
		e.startBackend(c, now)
	}
}

// fill copies what the accept queue knows of the connection.
func (c *conn) fill(qc queue.Conn) {
	c.clientISN, c.ourISN, c.opts, c.mss = qc.ClientISN, qc.OurISN, qc.Options, qc.MSS
}

// hold keeps a client segment until the splice is in place. Only new data
// is kept: a retransmission of a held segment adds nothing.
func (c *conn) hold(seg *packet.Segment, data []byte) {
	for _, h := range c.held {
		if h.seq == seg.Seq && len(h.data) >= len(data) {
			return
		}
	}
	if len(c.held) >= maxHeldSegments || c.heldBytes+len(data) > c.svcMaxPending() {
		return // the client retransmits it once the splice is in place
	}
	h := segmentOf(seg, append([]byte(nil), data...))
	c.held = append(c.held, h)
	c.heldBytes += len(data)
}

func (c *conn) svcMaxPending() int { return c.svc.maxPending }

// openBackendLegs takes a service's validated connections off its accept
// queue in order, at most one backend handshake per slot at a time, which
// is what makes a slow backend fill the accept queue as in Linux.
func (e *Engine) openBackendLegs(ctx context.Context, s *service) {
	for {
		select {
		case s.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		qc, err := s.l.Wait(ctx)
		if err != nil {
			<-s.slots
			return
		}
		now := e.now()
		c, _ := e.conns.getOrCreate(s, qc.Tuple, now)
		if c == nil {
			<-s.slots // opening refused and counted it
			continue
		}
		c.mu.Lock()
		if c.state != stateAccepted || c.queued {
			c.mu.Unlock()
			<-s.slots
			continue
		}
		c.queued, c.inflight = true, true
		if !c.haveClient {
			c.fill(qc)
		}
		if c.haveClient {
			e.startBackend(c, now)
		}
		c.mu.Unlock()
	}
}

// startBackend allocates a source port and sends the backend SYN. Without a
// free port the connection waits (expireOpening retries) until its connect
// timeout. c.mu is held.
func (e *Engine) startBackend(c *conn, now time.Time) {
	s := c.svc
	if c.be == nil {
		if c.be = s.pick(c.client.Client); c.be == nil {
			// The pool emptied after the SYN was answered (or XDP
			// answered it): the client's handshake is done, so it is
			// told at once whatever on_no_backend says of SYNs.
			s.noBackend.Add(1)
			e.abortLocked(c, "no_backend", true)
			return
		}
	}
	src, pool, l, err := e.allocPort(c.be, now)
	if err != nil {
		if !c.portWait {
			c.portWait = true
			c.deadline = now.Add(e.timeouts.Load().Connect)
		}
		return
	}
	if c.portWait {
		c.portWait = false
		s.st.portWaits.Add(1)
	}
	c.source, c.pool = netip.AddrPortFrom(src, l.port), pool
	e.conns.setSource(c, legKey{source: c.source, backend: c.be.addr})
	isn := rand.Uint32()
	if l.hasFloor {
		// Above everything the backend saw on this port, by less than
		// half the sequence space: after() in its TIME_WAIT check.
		isn = l.floor + 1 + rand.Uint32N(isnSpread)
	}
	c.seqDelta = isn - c.clientISN
	// Timestamps toward backends come from one clock that only moves
	// forward (a client's timestamps advance at most one per millisecond,
	// RFC 7323), so the backend's PAWS check never rejects a reused port.
	c.tsDelta = tsClock(now) - c.clientTSval
	c.synSent = true
	c.firstSyn = now
	c.deadline = now.Add(e.timeouts.Load().Connect)
	c.nextSyn = now.Add(backendSynRTO)
	e.sendBackendSyn(c)
}

// isnSpread bounds the random part of a backend-leg ISN above a port's
// floor: unpredictable, yet within the backend's after() window whenever
// the floor's own slack (at most maxFloorSlack) is added.
const isnSpread = 1 << 30

// maxFloorSlack bounds the overestimate of the bytes a connection sent that
// still yields a floor (see portFloor): below it, the next ISN lands less
// than 2^31 above the backend's true next sequence number.
const maxFloorSlack = 1 << 30

// allocPort takes a source port toward backend b: from the next source
// address in turn that has one free, else from a closed flow that no
// longer needs it.
func (e *Engine) allocPort(b *member, now time.Time) (netip.Addr, *portPool, lease, error) {
	n := len(b.pools)
	start := int(b.rr.Add(1))
	for i := range n {
		j := (start + i) % n
		if l, ok := e.takePort(b.poolKeys[j], b.pools[j], now); ok {
			return b.poolKeys[j].source, b.pools[j], l, nil
		}
	}
	for i := range n {
		j := (start + i) % n
		if e.reclaim(b.poolKeys[j], b.pools[j]) {
			if l, ok := e.takePort(b.poolKeys[j], b.pools[j], now); ok {
				return b.poolKeys[j].source, b.pools[j], l, nil
			}
		}
	}
	return netip.Addr{}, nil, lease{}, ErrNoPorts
}

// maxOrphanSkips bounds the ports one allocation passes over because a
// flow of an earlier process holds them.
const maxOrphanSkips = 8

// takePort takes a port of pool whose 4-tuple has no flow entry. Pinned
// flows survive a restart, and the connections of the previous process keep
// their ports until they end (see expireOrphans); installing over one would
// break it.
func (e *Engine) takePort(k poolKey, pool *portPool, now time.Time) (lease, bool) {
	for range maxOrphanSkips {
		l, err := pool.get(now)
		if err != nil {
			return lease{}, false
		}
		_, err = e.cfg.Datapath.LookupFlow(flow.Key{Src: k.backend, Dst: netip.AddrPortFrom(k.source, l.port)})
		if errors.Is(err, flow.ErrNotFound) {
			return l, true
		}
		pool.put(l.port, now, l.floor, l.hasFloor) // to the back of the queue
	}
	return lease{}, false
}

// reclaimProbes bounds the ports one reclaim attempt looks at (two flow
// lookups each).
const reclaimProbes = 32

// reclaimIdle is how long a closed flow must have been quiet before its
// port is taken for a new connection: the last ACK of the FIN exchange has
// passed by then.
const reclaimIdle = time.Second

// reclaim ends one closed flow of pool, if it finds one, so its port can be
// reused before the flow's close timeout. It reports whether it did.
func (e *Engine) reclaim(k poolKey, pool *portPool) bool {
	now, mono := e.now(), e.cfg.Monotonic()
	if !pool.sweepDue(now) {
		return false
	}
	for _, port := range pool.sweep(reclaimProbes) {
		c := e.conns.bySource(legKey{source: netip.AddrPortFrom(k.source, port), backend: k.backend})
		if c == nil || !c.mu.TryLock() {
			continue
		}
		done := false
		if c.state == stateSpliced {
			a, errA := e.cfg.Datapath.LookupFlow(flow.ClientKey(c.client))
			b, errB := e.cfg.Datapath.LookupFlow(c.backendKey())
			b = c.backendState(b)
			// Over as expireFlows judges it: an exact RST, or both FINs
			// acknowledged (a half-closed connection still carries data).
			over := closed(a, b) || a.RST || b.RST
			if errA == nil && errB == nil && over && c.idle(a, b, now, mono) >= reclaimIdle {
				e.endFlow(c, "reclaimed")
				done = true
			}
		}
		c.mu.Unlock()
		if done {
			return true
		}
	}
	pool.sweepFailed(now)
	return false
}

// idle is how long c's flows (a and b, its two directions) have been
// quiet: since their last packet, or since the splice if none came yet.
func (c *conn) idle(a, b flow.State, now time.Time, mono time.Duration) time.Duration {
	idle := now.Sub(c.splicedAt)
	if last := max(a.LastSeen, b.LastSeen); last > 0 {
		idle = min(idle, mono-last)
	}
	return idle
}

// backendKey is the flow key of c's backend-to-client direction.
func (c *conn) backendKey() flow.Key { return flow.Key{Src: c.backendAddr(), Dst: c.source} }

// backendAddr is the address of c's backend; invalid before one is picked.
func (c *conn) backendAddr() netip.AddrPort {
	if c.be == nil {
		return netip.AddrPort{}
	}
	return c.be.addr
}

// legISN is the ISN of c's backend leg (its SYN's sequence number).
func (c *conn) legISN() uint32 { return c.clientISN + c.seqDelta }

// sendBackendSyn replays the client's SYN options toward the backend, from
// our source address and port, in the leg's own sequence and timestamp
// spaces.
func (e *Engine) sendBackendSyn(c *conn) {
	o := flow.SynOptions{MSS: clientMSS(c.opts, c.client.Is6()), WScale: c.wscale, SACK: c.sack, ECN: c.ecn}
	if m := c.svc.maxMSS; m != 0 && o.MSS > m {
		o.MSS = m
		if c.synTries == 0 && c.twResets == 0 {
			c.svc.st.mssClamped(legBackend)
		}
	}
	if c.wscale != flow.NoWScale {
		o.WScale = c.opts.WScale
	}
	if c.ts {
		o.Timestamps, o.TSval = true, c.clientTSval+c.tsDelta
	}
	win := uint32(c.window)
	if c.wscale != flow.NoWScale {
		win <<= c.opts.WScale
	}
	e.send(c.svc, packet.BuildSyn, &packet.Fields{
		Src: c.source, Dst: c.be.addr, Seq: c.legISN(), Flags: packet.SYN,
		Window: uint16(min(win, 65535)), Options: o,
	})
}

// send builds an IP packet with build and hands it to the Sender.
func (e *Engine) send(s *service, build func([]byte, *packet.Fields) (int, error), f *packet.Fields) {
	var buf [sendBuf]byte
	n, err := build(buf[:], f)
	if err == nil {
		err = e.cfg.Sender.SendIP(buf[ethHeaderLen:n])
	}
	if err != nil {
		s.st.sendErrors.Add(1)
		e.log.Debug("send", "service", s.Name, "to", f.Dst, "err", err)
	}
}

// ethHeaderLen is the Ethernet header the builders write and the Sender,
// which works at the IP layer, does not want.
const ethHeaderLen = 14

// sendBuf is the longest frame send builds; maxSendPayload the payload
// that always fits in it (Ethernet, IPv6 and the longest TCP header).
const (
	sendBuf        = 2048
	maxSendPayload = sendBuf - ethHeaderLen - 40 - 60
)

// sendCut sends the data segment f cut into segments of at most mss bytes
// of payload, as the sender's segmentation offload would have on the wire:
// the TC program hands a local sender's first flight to the engine as one
// aggregate, which neither the other end's MSS nor send's buffer takes
// whole. Each piece keeps f's ACK, window and timestamps; PSH and FIN go
// with the last. c.mu is held.
func (e *Engine) sendCut(s *service, f *packet.Fields, mss uint16) {
	room := int(mss)
	if f.Options.Timestamps {
		room -= 12 // the option's 10 bytes, padded: Linux's mss_cache does the same
	}
	room = min(max(room, 64), maxSendPayload)
	data, seq, last := f.Payload, f.Seq, f.Flags
	for len(data) > room {
		piece := *f
		piece.Payload, piece.Seq, piece.Flags = data[:room], seq, last&^(packet.PSH|packet.FIN)
		e.send(s, packet.Build, &piece)
		data, seq = data[room:], seq+uint32(room)
	}
	piece := *f
	piece.Payload, piece.Seq = data, seq
	e.send(s, packet.Build, &piece)
}

// legMSS is the largest payload a segment toward the backend may carry:
// the backend's MSS and the one announced to the client (which fits this
// gateway's links). toClientMSS is its mirror toward the client. c.mu is
// held and the backend's SYN-ACK is known.
func (c *conn) legMSS() uint16 { return lowerMSS(mssOr536(c.backendOpts.MSS), c.mss) }

func (c *conn) toClientMSS() uint16 { return lowerMSS(mssOr536(c.opts.MSS), c.mss) }

// mssOr536 is an MSS option's value, or RFC 9293's default without one.
func mssOr536(mss uint16) uint16 {
	if mss == 0 {
		return 536
	}
	return mss
}

// lowerMSS is the lower of an end's MSS and the announced one, where one
// is known (announced is zero before the SYN-ACK).
func lowerMSS(end, announced uint16) uint16 {
	if announced == 0 {
		return end
	}
	return min(end, announced)
}

// fromBackend handles a segment a backend sent to one of our source ports:
// the SYN-ACK of a backend leg, a refusal, or a spliced flow's packet that
// arrived before its flow entry.
func (w *worker) fromBackend(seg *packet.Segment) {
	e := w.e
	c := e.conns.bySource(legKey{source: seg.Dst, backend: seg.Src})
	if c == nil {
		e.conns.stray.Add(1)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.be == nil || seg.Src != c.be.addr || !c.synSent {
		e.conns.stray.Add(1)
		return
	}
	switch {
	case c.state == stateSpliced && seg.Flags&packet.SYN != 0:
		// A SYN into the connection from the backend's side (XDP never
		// forwards one). The backend's own SYN-ACK again means our ACK
		// to it was lost: ack it again, as the client's TCP would.
		if seg.Flags&packet.ACK != 0 && seg.Seq == c.backendISN && seg.Ack == c.legISN()+1 {
			c.svc.st.synAckRepeats.Add(1)
			f := c.handshakeAck()
			e.send(c.svc, packet.BuildAck, &f)
			return
		}
		// Any other: the client would answer with a challenge ACK.
		if a, err := e.cfg.Datapath.LookupFlow(flow.ClientKey(c.client)); err == nil {
			e.challengeACK(c, a, false)
		}
	case c.state == stateSpliced && c.headerPending:
		e.headerSegment(c, seg)
	case c.state == stateSpliced:
		if seg.Flags&packet.RST != 0 {
			// XDP judged it inside the window but not exact: the client
			// decides, with a challenge ACK the backend will see.
			c.svc.st.rstInWindow.Add(1)
		}
		c.svc.st.slowPath.Add(1)
		e.forwardToClient(c, seg)
	case c.state != stateAccepted:
	case seg.Flags&packet.RST != 0:
		if seg.Flags&packet.ACK != 0 && seg.Ack == c.legISN()+1 {
			e.redispatch(c, "refused")
		}
	case seg.Flags&(packet.SYN|packet.ACK) == packet.SYN|packet.ACK && seg.Ack == c.legISN()+1:
		e.splice(c, seg, w.ifindex)
	case seg.Flags&(packet.SYN|packet.ACK|packet.FIN) == packet.ACK && c.twResets < maxTWResets:
		// The backend still holds an older connection on this port and
		// answered our SYN with its ACK: one the engine's ISN and
		// timestamp choice cannot outrun (a previous syngate process's,
		// or a client whose timestamps jumped ahead). Like a client
		// reusing a port, clear it with a RST (accepted in TIME_WAIT
		// unless the backend sets tcp_rfc1337) and ask again; never
		// while a spliced flow holds the 4-tuple.
		if _, err := e.cfg.Datapath.LookupFlow(c.backendKey()); !errors.Is(err, flow.ErrNotFound) {
			return
		}
		c.twResets++
		c.svc.st.twResets.Add(1)
		e.send(c.svc, packet.Build, &packet.Fields{Src: c.source, Dst: c.be.addr, Seq: seg.Ack, Flags: packet.RST})
		e.sendBackendSyn(c)
	}
}

// maxTWResets bounds the TIME_WAIT clearing per connection: a backend that
// keeps answering with ACKs is left to the connect timeout.
const maxTWResets = 2

// splice installs both flow entries, completes the backend handshake and
// delivers the held client data. c.mu is held.
func (e *Engine) splice(c *conn, seg *packet.Segment, ifindex int) {
	s := c.svc
	if c.header == nil {
		c.header = c.newHeader()
	}
	c.backendISN, c.backendTS0, c.backendOpts = seg.Seq, seg.Options.TSval, seg.Options
	switch {
	case c.ecn && seg.Options.ECN:
		s.st.ecn(ecnNegotiated)
	case c.ecn:
		// The probe said the backend does ECN, this SYN-ACK says no: the
		// client believes in ECN the backend will not echo.
		s.st.ecn(ecnBackendRefused)
	case c.opts.ECN:
		s.st.ecn(ecnNotOffered)
	}
	ts := c.ts && seg.Options.Timestamps
	// The PROXY header takes the first bytes of the backend stream: the
	// client's bytes move up by its length, and so do the backend's
	// acknowledgements of them (its ACKs and SACK blocks, which the fast
	// path shifts by the same AckDelta).
	hl := uint32(len(c.header))
	toBackend := flow.NAT{
		Src: c.source, Dst: c.be.addr,
		SeqDelta: c.seqDelta + hl, AckDelta: c.backendISN - c.ourISN,
		Ifindex: ifindex, SrcMAC: seg.DstMAC, DstMAC: seg.SrcMAC,
	}
	toClient := flow.NAT{
		Src: c.client.Service, Dst: c.client.Client,
		SeqDelta: c.ourISN - c.backendISN, AckDelta: -(c.seqDelta + hl),
		Ifindex: c.clientIfindex, SrcMAC: c.ourMAC, DstMAC: c.clientMAC,
	}
	if ts {
		toBackend.TSvalDelta, toBackend.TSecrDelta = c.tsDelta, c.backendTS0-c.ourTS0
		toClient.TSvalDelta, toClient.TSecrDelta = c.ourTS0-c.backendTS0, -c.tsDelta
	}
	toClient.InShift, toClient.OutShift, toBackend.InShift, toBackend.OutShift = c.windowShifts()
	trClient, trBackend := c.tracks(seg, uint32(e.window()))
	kc := flow.ClientKey(c.client)
	kb := c.backendKey()
	// The backend direction first: the backend sends nothing before our
	// ACK, while a client segment that finds its own direction installed
	// is judged against the other one's state.
	// With a PROXY header the backend's direction waits for the header's
	// ACK (see headerSegment): until then the backend's segments reach
	// the client through the engine, which keeps their ACKs from going
	// below the client's first byte (a client's TCP drops such a segment
	// while nothing of its own is acknowledged).
	if hl == 0 {
		if err := e.cfg.Datapath.InstallTrackedFlow(kb, toClient, trBackend); err != nil {
			e.abortLocked(c, installFailure(err), true)
			return
		}
	}
	if err := e.cfg.Datapath.InstallTrackedFlow(kc, toBackend, trClient); err != nil {
		e.cfg.Datapath.DeleteFlow(kb)
		e.abortLocked(c, installFailure(err), true)
		return
	}
	c.state = stateSpliced
	if hl == 0 {
		e.conns.opened(c)
	} else {
		// The connection stays in the opening set, whose scan
		// retransmits the header.
		c.toClient, c.trBackend, c.backendNxt = toClient, trBackend, trBackend.SeqEnd
		c.headerPending = true
		c.headerNext = e.now().Add(headerRTO)
		c.sentBytes += uint64(hl)
	}
	e.conns.spliced.Add(1)
	s.st.spliced.Add(1) // before any packet can make the connection visible
	c.be.legOK()
	c.splicedAt = e.now()
	s.connectTime.Observe(c.splicedAt.Sub(c.firstSyn)) // the first backend SYN
	f := c.handshakeAck()
	if !c.heldAcks(ts) {
		e.send(s, packet.BuildAck, &f)
	}
	if hl > 0 {
		e.sendHeader(c)
	}
	for _, h := range c.held {
		e.toBackend(c, h)
	}
	c.held, c.heldBytes = nil, 0
	e.releaseSlot(c)
}

// handshakeAck is the ACK that completes the backend leg's handshake (sent
// again for a repeated SYN-ACK). c.mu is held and the SYN-ACK is known.
func (c *conn) handshakeAck() packet.Fields {
	f := packet.Fields{
		Src: c.source, Dst: c.be.addr, Seq: c.legISN() + 1, Ack: c.backendISN + 1,
		Flags: packet.ACK, Window: c.toBackendWindow(c.window),
	}
	if c.ts && c.backendOpts.Timestamps {
		f.Options = flow.SynOptions{Timestamps: true, TSval: c.clientTSval + c.tsDelta, TSecr: c.backendTS0}
	}
	return f
}

// tracks seeds the data plane's sequence tracking of both directions from
// the handshake, seg being the backend's SYN-ACK: each side has sent its
// SYN, acked the other's, and announced a window. The client's data held
// until now goes to the backend from the engine, past XDP, so it counts as
// sent. The client may send as much as our SYN-ACK's window, announced,
// before the backend's first ACK reaches it, even where the backend's
// SYN-ACK offered less. Each direction's numbers are in the spaces the data
// plane judges in: sequence numbers as its sender sends them (the client's
// own, the backend's own), acknowledgements after the direction's ack delta,
// i.e. in the space of the other end's sequence numbers as they arrive.
// c.mu is held.
func (c *conn) tracks(seg *packet.Segment, announced uint32) (client, backend flow.Track) {
	cNxt := c.clientISN + 1
	for _, h := range c.held {
		end := h.seq + uint32(len(h.data))
		if packet.Flags(h.flags)&packet.FIN != 0 {
			end++
		}
		if int32(end-cNxt) > 0 {
			cNxt = end
		}
	}
	var cShift, bShift uint8
	if c.wscale != flow.NoWScale {
		// Window scaling is on for the client leg (the client's shift) and
		// was offered to the backend, which uses its own if it answered
		// with one.
		cShift = min(c.opts.WScale, flow.MaxWScale)
		if seg.Options.HasWScale() {
			bShift = min(seg.Options.WScale, flow.MaxWScale)
		}
	}
	cWin := uint32(c.window) << cShift
	bWin := max(uint32(seg.Window), announced) // a SYN-ACK's window is never scaled
	client = flow.Track{
		SeqEnd: cNxt, AckMax: c.backendISN + 1, WinEnd: c.backendISN + 1 + cWin, WinMax: cWin, WScale: cShift,
	}
	backend = flow.Track{
		SeqEnd: c.backendISN + 1, AckMax: c.clientISN + 1, WinEnd: c.clientISN + 1 + bWin, WinMax: bWin, WScale: bShift,
	}
	return client, backend
}

// windowShifts returns how windows are rescaled once the backend's SYN-ACK
// is known: toClient from the backend's shift to the one our SYN-ACK
// announced, toBackend from the client's shift to the backend's reading.
// RFC 7323 scales a direction only when both SYNs carried the option: a
// backend without window scaling reads the client's windows unscaled and
// sends its own unscaled, although the client was promised scaling (by our
// SYN-ACK) and scales its own. c.mu is held and c.backendOpts is set.
func (c *conn) windowShifts() (toClientIn, toClientOut, toBackendIn, toBackendOut uint8) {
	if c.wscale == flow.NoWScale {
		return 0, 0, 0, 0 // no scaling on either leg: the backend SYN offered none
	}
	if c.backendOpts.HasWScale() {
		// The backend reads the client's windows with the client's own
		// shift (replayed in the backend SYN).
		return min(c.backendOpts.WScale, flow.MaxWScale), c.wscale, 0, 0
	}
	return 0, c.wscale, min(c.opts.WScale, flow.MaxWScale), 0
}

// toBackendWindow translates a client's window for the backend, as the
// client->backend flow does. c.mu is held and c.backendOpts is set.
func (c *conn) toBackendWindow(w uint16) uint16 {
	_, _, in, out := c.windowShifts()
	return rescale(w, in, out)
}

// rescale reads w with shift in and writes it with shift out, capped to
// what 16 bits hold, as the fast path does.
func rescale(w uint16, in, out uint8) uint16 {
	return uint16(min((uint32(w)<<(in&15))>>(out&15), 65535))
}

// clientSegment handles a client segment of a connection the engine knows:
// data to hold before the splice, or a spliced flow's packet that took the
// slow path (it arrived before its flow entry was visible).
func (e *Engine) clientSegment(c *conn, seg *packet.Segment, ifindex int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateAccepted:
		if seg.Options.Timestamps {
			c.clientTSval = seg.Options.TSval
		}
		if len(seg.Payload) > 0 || seg.Flags&packet.FIN != 0 {
			c.hold(seg, seg.Payload)
		}
	case stateSpliced:
		c.svc.st.slowPath.Add(1)
		e.forwardToBackend(c, seg)
		// XDP did not see it: remember where the client's data ends, for
		// judging a RST that follows before the backend acked it.
		end := seg.Seq + uint32(len(seg.Payload))
		if seg.Flags&packet.FIN != 0 {
			end++
		}
		if !c.slowSent || int32(end-c.slowEnd) > 0 {
			c.slowEnd, c.slowSent = end, true
		}
	}
}

// forwardToBackend sends a client segment that missed the fast path the way
// XDP would have (SACK blocks are left out: a hint, not data).
func (e *Engine) forwardToBackend(c *conn, seg *packet.Segment) {
	e.toBackend(c, segmentOf(seg, seg.Payload))
}

// segmentOf keeps what a client segment needs to be sent on to the backend.
func segmentOf(seg *packet.Segment, data []byte) heldSegment {
	return heldSegment{
		seq: seg.Seq, ack: seg.Ack, flags: uint8(seg.Flags), window: seg.Window,
		ts: seg.Options.Timestamps, tsval: seg.Options.TSval, tsecr: seg.Options.TSecr, data: data,
	}
}

// toBackend sends a client segment to the backend translated as the fast
// path would: seq and TSval into the leg's spaces, ack and TSecr into the
// backend's. SACK blocks are left out: a hint, not data. c.mu is held and c
// is spliced or splicing.
func (e *Engine) toBackend(c *conn, h heldSegment) {
	f := packet.Fields{
		Src: c.source, Dst: c.be.addr, Seq: h.seq + c.seqDelta + uint32(len(c.header)), Ack: h.ack + c.backendISN - c.ourISN,
		Flags: packet.Flags(h.flags), Window: c.toBackendWindow(h.window), Payload: h.data,
	}
	if h.ts && c.ts && c.backendOpts.Timestamps {
		f.Options = flow.SynOptions{Timestamps: true, TSval: h.tsval + c.tsDelta, TSecr: h.tsecr + c.backendTS0 - c.ourTS0}
	}
	c.sentBytes += uint64(len(h.data))
	e.sendCut(c.svc, &f, c.legMSS())
}

// forwardToClient is forwardToBackend's mirror for the backend's segments
// (never a SYN: fromBackend answers those).
func (e *Engine) forwardToClient(c *conn, seg *packet.Segment) {
	in, out, _, _ := c.windowShifts()
	win := rescale(seg.Window, in, out)
	ack := seg.Ack - c.seqDelta - uint32(len(c.header))
	if c.headerPending && seqBefore(seg.Ack, c.headerEnd()) {
		// The backend has not acknowledged all of the header: nothing of
		// the client's is acknowledged yet.
		ack = c.clientISN + 1
	}
	f := packet.Fields{
		Src: c.client.Service, Dst: c.client.Client, Seq: seg.Seq + c.ourISN - c.backendISN, Ack: ack,
		Flags: seg.Flags, Window: win, Payload: seg.Payload,
	}
	if seg.Options.Timestamps {
		f.Options = flow.SynOptions{Timestamps: true, TSval: seg.Options.TSval + c.ourTS0 - c.backendTS0, TSecr: seg.Options.TSecr - c.tsDelta}
	}
	e.sendCut(c.svc, &f, c.toClientMSS())
}

// clientReset handles a client RST that reached the engine. For a spliced
// connection XDP judged it inside the window but not at the exact sequence
// number: it is forwarded, and the backend answers it with a challenge ACK
// (RFC 5961 3.2) that a real client answers with an exact RST. Exact it is
// if it follows data XDP did not see (segments that raced the flow's
// install, forwarded by the engine): then the connection ends. A
// connection still opening ends if the RST is within the window our SYN-ACK
// announced.
func (e *Engine) clientReset(c *conn, seg *packet.Segment) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateSpliced:
		c.svc.st.slowPath.Add(1)
		e.forwardToBackend(c, seg)
		if c.slowSent && seg.Seq == c.slowEnd {
			// Exact after the data that went past XDP: the connection is
			// over.
			e.endFlow(c, "reset")
			return
		}
		c.svc.st.rstInWindow.Add(1)
	case stateAccepted:
		if seg.Seq-(c.clientISN+1) <= uint32(e.window()) {
			e.abortLocked(c, "client_reset", false)
		}
	}
}

// abort ends a connection that has not been spliced.
func (e *Engine) abort(c *conn, reason string, resetClient bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.abortLocked(c, reason, resetClient)
}

// abortLocked ends c, telling the client with a RST when resetClient, and
// the backend when our SYN may have opened something there. c.mu is held.
func (e *Engine) abortLocked(c *conn, reason string, resetClient bool) {
	if c.state == stateDone {
		return
	}
	wasSpliced := c.state == stateSpliced
	c.state = stateDone
	s := c.svc
	if reason != "client_reset" {
		s.st.backendFailure(reason)
		if c.be != nil && !c.failRecorded {
			c.be.legFailed(reason, e.now())
		}
	}
	if resetClient && c.haveClient {
		e.resets.add(c.client, c.ourISN, e.now())
		e.send(s, packet.Build, &packet.Fields{
			Src: c.client.Service, Dst: c.client.Client, Seq: c.ourISN + 1, Ack: c.clientISN + 1,
			Flags: packet.RST | packet.ACK,
		})
	}
	if c.synSent && reason != "refused" {
		e.send(s, packet.Build, &packet.Fields{Src: c.source, Dst: c.be.addr, Seq: c.legISN() + 1 + uint32(len(c.header)), Flags: packet.RST})
	}
	if wasSpliced {
		e.conns.spliced.Add(-1)
		e.dropFlows(c)
		return
	}
	e.release(c, 0, c.synSent)
}

// dropFlows deletes a spliced connection's flow entries and releases it,
// reading first how much the client sent through the fast path: the floor
// of its port's next ISN. c.mu is held.
func (e *Engine) dropFlows(c *conn) {
	kc := flow.ClientKey(c.client)
	a, err := e.cfg.Datapath.LookupFlow(kc)
	e.cfg.Datapath.DeleteFlow(kc)
	e.cfg.Datapath.DeleteFlow(c.backendKey())
	c.be.active.Add(-1)
	e.release(c, a.Bytes, err == nil)
}

// release frees what c holds: its slot, its port and its table entries.
// fastBytes is what the fast path forwarded from the client (frame bytes,
// more than the payload); known says whether the port's floor can be
// trusted.
func (e *Engine) release(c *conn, fastBytes uint64, known bool) {
	e.releaseSlot(c)
	if c.pool != nil {
		floor, ok := c.portFloor(fastBytes)
		c.pool.put(c.source.Port(), e.now(), floor, ok && known)
	}
	e.conns.remove(c, legKey{source: c.source, backend: c.backendAddr()})
	c.held, c.heldBytes = nil, 0
}

// portFloor bounds the sequence numbers the backend may have received on
// c's leg: its ISN, then at most every payload byte sent (by the engine, or
// counted by the fast path with headers) plus SYN and FIN. An overestimate
// is harmless while the next ISN still lands within half the sequence
// space of the truth, which maxFloorSlack guarantees.
func (c *conn) portFloor(fastBytes uint64) (uint32, bool) {
	sent := c.sentBytes + fastBytes
	if sent >= maxFloorSlack {
		return 0, false
	}
	return c.legISN() + 2 + uint32(sent), true
}

// installFailure names why a flow entry could not be installed.
func installFailure(err error) string {
	if errors.Is(err, flow.ErrTableFull) {
		return "flow_table_full"
	}
	return "flow_install"
}

func (e *Engine) releaseSlot(c *conn) {
	if c.inflight {
		c.inflight = false
		<-c.svc.slots
	}
}

// expireOpening retransmits backend SYNs and gives up on backends that do
// not answer in time; it also reaps connections whose two halves never met.
func (e *Engine) expireOpening(now time.Time) {
	e.conns.each(true, func(c *conn) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.state == stateSpliced && c.headerPending {
			e.retransmitHeader(c, now)
			return
		}
		if c.state != stateAccepted {
			return
		}
		switch {
		case c.portWait && !now.Before(c.deadline):
			c.svc.st.portFails.Add(1)
			e.abortLocked(c, "no_port", true)
		case c.portWait:
			e.startBackend(c, now)
		case c.synSent && !now.Before(c.deadline):
			e.redispatch(c, "timeout")
		case c.synSent && !now.Before(c.nextSyn):
			c.synTries++
			c.nextSyn = now.Add(backendSynRTO << min(c.synTries, 6))
			e.sendBackendSyn(c)
		case !c.synSent && now.Sub(c.created) > 2*e.timeouts.Load().Connect+time.Minute:
			// Still in the accept queue this long, or its other half was
			// lost: the client has long given up.
			e.abortLocked(c, "stale", false)
		}
	})
}

// expireHalfOpen retransmits due SYN-ACKs of s's half-open queue.
func (e *Engine) expireHalfOpen(s *service, now time.Time) {
	o := s.offer.Load()
	s.l.Expire(now, func(t queue.Timeout) {
		if t.Dropped {
			return
		}
		opts := flow.SynOptions{MSS: t.MSS, WScale: flow.NoWScale}
		if t.Options.HasWScale() {
			opts.WScale = o.WScale
		}
		opts.SACK = t.Options.SACK && o.SACK
		opts.ECN = t.Options.ECN && o.ECN
		if t.Options.Timestamps && o.Timestamps {
			opts.Timestamps, opts.TSval, opts.TSecr = true, tsClock(now), t.Options.TSval
		}
		e.send(s, packet.BuildSynAck, &packet.Fields{
			Src: t.Tuple.Service, Dst: t.Tuple.Client, Seq: t.OurISN, Ack: t.ClientISN + 1,
			Flags: packet.SYN | packet.ACK, Window: uint16(min(e.cfg.MaxPending, 65535)), Options: opts,
		})
	})
}

// lastAckTimeout bounds how long a connection whose two FINs were sent but
// not both acknowledged stays (conntrack's LAST_ACK timeout).
const lastAckTimeout = 30 * time.Second

// closed reports whether both directions of a connection, a (client) and b
// (backend), sent a FIN the other acknowledged: a half-closed connection
// (one FIN) goes on carrying data until the other side is done.
func closed(a, b flow.State) bool {
	if !a.Tracked || !b.Tracked {
		return a.FIN && b.FIN
	}
	return a.FINAcked(b) && b.FINAcked(a)
}

// expireFlows removes spliced flows the way conntrack times them out: soon
// after an exact RST, a while after both FINs are acknowledged, and after a
// long idle time.
func (e *Engine) expireFlows(now time.Time) {
	for i := range connShards {
		e.expireShard(i, now)
	}
}

// expireShard is expireFlows for one shard of the table; it returns the
// connections it looked at.
func (e *Engine) expireShard(shard int, now time.Time) int {
	mono := e.cfg.Monotonic()
	to := e.timeouts.Load()
	return e.conns.eachIn(shard, false, func(c *conn) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.state != stateSpliced || c.headerPending {
			return // a pending header has its own timeout
		}
		kc, kb := flow.ClientKey(c.client), c.backendKey()
		a, errA := e.cfg.Datapath.LookupFlow(kc)
		b, errB := e.cfg.Datapath.LookupFlow(kb)
		if errors.Is(errA, flow.ErrNotFound) || errors.Is(errB, flow.ErrNotFound) {
			// One direction is gone from the table (the plain hash evicts
			// nothing, so it was deleted from outside): the connection
			// cannot go on, so both ends learn it now.
			e.resetEnds(c, a, errA == nil, b, errB == nil)
			e.endFlow(c, "evicted")
			return
		}
		if errA != nil || errB != nil {
			return
		}
		b = c.backendState(b)
		idle := c.idle(a, b, now, mono)
		switch {
		case (a.RST || b.RST) && idle >= to.Reset:
			e.endFlow(c, "reset")
		case closed(a, b) && idle >= to.Close:
			e.endFlow(c, "closed")
		case a.FIN && b.FIN && idle >= max(to.Close, lastAckTimeout):
			// Both FINs sent, the last ACK lost (conntrack's LAST_ACK).
			e.endFlow(c, "closed")
		case idle >= to.Established:
			e.resetEnds(c, a, true, b, true)
			e.endFlow(c, "idle")
		}
	})
}

// resetEnds tells both ends of a connection syngate gives up that it is
// gone, so that their applications notice at once instead of at their next
// write: each gets a RST at its own next expected sequence number, as the
// other end would send it. a and b are the client and backend directions'
// state, each valid only if found (a deleted direction is not); the
// other's highest ack stands in for a missing one's next sequence number.
// c.mu is held.
func (e *Engine) resetEnds(c *conn, a flow.State, haveA bool, b flow.State, haveB bool) {
	s := c.svc
	if (haveA && !a.Tracked) || (haveB && !b.Tracked) {
		return
	}
	// The backend's next sequence number in its own space, and the client's
	// in its own (the backend leg's is seqDelta above it).
	var bNxt, cNxt uint32
	switch {
	case haveB:
		bNxt = b.Track.SeqEnd
	case haveA:
		bNxt = a.Track.AckMax
	default:
		return
	}
	switch {
	case haveA:
		cNxt = a.Track.SeqEnd
	default:
		cNxt = b.Track.AckMax
	}
	e.send(s, packet.Build, &packet.Fields{
		Src: c.client.Service, Dst: c.client.Client, Seq: bNxt + c.ourISN - c.backendISN, Flags: packet.RST,
	})
	e.send(s, packet.Build, &packet.Fields{Src: c.source, Dst: c.be.addr, Seq: cNxt + c.seqDelta + uint32(len(c.header)), Flags: packet.RST})
	s.st.resetsSent.Add(2)
}

// endFlow removes a spliced connection's flows. c.mu is held.
func (e *Engine) endFlow(c *conn, reason string) {
	c.state = stateDone
	e.conns.spliced.Add(-1)
	e.dropFlows(c)
	e.conns.expired(reason)
}

// reuse decides whether a SYN may open a new connection on the 4-tuple of c,
// an existing one, and if so ends c. A spliced connection is given up only
// when it is over, as Linux's TIME_WAIT allows: after a RST at the exact
// sequence number, or once both FINs are acknowledged and the SYN's ISN is
// above what the client sent on the old connection or its timestamp newer. Anything else (a live
// or half-closed connection, or a SYN an off-path attacker sent with the
// client's address) gets a challenge ACK (RFC 5961 4.2): a client that
// really lost the old connection answers it with a RST at the exact
// sequence number, which ends the connection, and its next SYN gets the
// new one. A client that gave up on an opening connection and sent a SYN
// with a new ISN gets the new one.
func (e *Engine) reuse(c *conn, seg *packet.Segment) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateDone:
		return true
	case stateAccepted:
		if !c.haveClient || seg.Seq == c.clientISN {
			return false
		}
		e.abortLocked(c, "replaced", false)
		return true
	}
	if c.headerPending {
		return false // its backend direction is not installed yet
	}
	a, errA := e.cfg.Datapath.LookupFlow(flow.ClientKey(c.client))
	b, errB := e.cfg.Datapath.LookupFlow(c.backendKey())
	if errors.Is(errA, flow.ErrNotFound) || errors.Is(errB, flow.ErrNotFound) {
		// Gone from the table (deleted): nothing left to protect.
		e.endFlow(c, "reused")
		return true
	}
	if errA != nil || errB != nil {
		return false // cannot tell: keep the connection, the client retries
	}
	b = c.backendState(b)
	if a.RST || b.RST || (closed(a, b) && (!a.Tracked || newIncarnation(seg, a))) {
		e.endFlow(c, "reused")
		return true
	}
	e.challengeACK(c, b, true)
	return false
}

// newIncarnation reports whether a SYN may open a new connection on the
// 4-tuple of a closed one whose client direction's state is a, as Linux
// lets a SYN into TIME_WAIT: its ISN is above the old connection's
// sequence numbers, or its timestamp is newer than the last one seen.
func newIncarnation(seg *packet.Segment, a flow.State) bool {
	if int32(seg.Seq-a.Track.SeqEnd) > 0 {
		return true
	}
	return seg.Options.Timestamps && a.HasTS && int32(seg.Options.TSval-a.TSRecent) > 0
}

// challengeInterval is the least time between two challenge ACKs of one
// connection (Linux's tcp_invalid_ratelimit, 500 ms); challengeRate caps
// them over all connections per second, as tcp_challenge_ack_limit did.
const (
	challengeInterval = 500 * time.Millisecond
	challengeRate     = 1000
)

// challengeACK answers a SYN for a live connection as the other end would
// (RFC 5961 4.2): an ACK with that end's next sequence number and
// acknowledgement, from st, that end's tracked state, translated into the
// SYN sender's spaces. toClient: the SYN came from the client side and the
// ACK is the backend's; otherwise it is the client's, to the backend.
// Rate-limited per connection and overall. c.mu is held.
func (e *Engine) challengeACK(c *conn, st flow.State, toClient bool) {
	s := c.svc
	if !st.Tracked {
		return // no sequence numbers to answer with
	}
	now := e.now()
	if now.Sub(c.lastChallenge) < challengeInterval || !e.challenges.allow(now) {
		s.st.challengeLimited.Add(1)
		return
	}
	c.lastChallenge = now
	win := st.Track.WinEnd - st.Track.AckMax
	f := packet.Fields{Flags: packet.ACK}
	if toClient {
		if c.wscale != flow.NoWScale {
			win >>= c.wscale
		}
		f.Src, f.Dst = c.client.Service, c.client.Client
		f.Seq, f.Ack = st.Track.SeqEnd+c.ourISN-c.backendISN, st.Track.AckMax
		f.Window = uint16(min(win, 65535))
	} else {
		// The client's window as it would announce it (its own shift),
		// then as the backend reads it, as the fast path rescales it. The
		// client's sequence numbers go into the leg's space (its acks are
		// already in the backend's).
		f.Window = c.toBackendWindow(uint16(min(win>>st.Track.WScale, 65535)))
		f.Src, f.Dst = c.source, c.be.addr
		f.Seq, f.Ack = st.Track.SeqEnd+c.seqDelta+uint32(len(c.header)), st.Track.AckMax
	}
	e.send(s, packet.Build, &f)
	s.st.challengeSent.Add(1)
}

// rateLimit is a token bucket refilled every second.
type rateLimit struct {
	mu     sync.Mutex
	per    int
	tokens int
	second time.Time
}

func (r *rateLimit) allow(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.second) >= time.Second {
		r.second, r.tokens = now, r.per
	}
	if r.tokens <= 0 {
		return false
	}
	r.tokens--
	return true
}

// orphanScanInterval is how often the flow table is read whole for entries
// no connection of this process owns.
const orphanScanInterval = time.Minute

// orphanCloseTimeout expires an orphaned entry that saw a FIN: one direction
// of a connection whose other half this process cannot see, so it waits
// longer than CloseTimeout (conntrack keeps such states minutes).
const orphanCloseTimeout = 2 * time.Minute

// expireOrphans removes flow entries no connection of this engine owns: the
// flows of an earlier process, kept by pinning so its connections survive a
// restart. They are left to run and expire like conntrack's: after
// ResetTimeout once a RST passed, orphanCloseTimeout after a FIN, and after
// EstablishedTimeout idle. Without this a hash table that never evicts would
// fill with them over restarts.
func (e *Engine) expireOrphans() {
	mono := e.cfg.Monotonic()
	to := e.timeouts.Load()
	var stale []flow.Key
	err := e.cfg.Datapath.IterateFlows(func(k flow.Key, st flow.State) bool {
		if e.owned(k) {
			return true
		}
		last := st.LastSeen
		if last == 0 {
			last = e.startMono // no packet since it was installed: count from our start
		}
		idle := mono - last
		if idle >= to.Established || st.RST && idle >= to.Reset || st.FIN && idle >= orphanCloseTimeout {
			stale = append(stale, k)
		}
		return true
	})
	if err != nil {
		e.log.Warn("scan the flow table for orphaned flows", "err", err)
	}
	for _, k := range stale {
		// Owned by now: a new connection took the 4-tuple (it installs
		// its flows only a backend round trip after it is indexed).
		if e.owned(k) {
			continue
		}
		if err := e.cfg.Datapath.DeleteFlow(k); err == nil {
			e.conns.expired("orphaned")
		}
	}
}

// owned reports whether a connection of this engine has the flow key k,
// as its client direction or its backend leg.
func (e *Engine) owned(k flow.Key) bool {
	// A client direction's destination is a service, possibly one a
	// reload removed since: look it up both ways.
	if e.conns.byClient(flow.Tuple{Client: k.Src, Service: k.Dst}) != nil {
		return true
	}
	return e.conns.bySource(legKey{source: k.Dst, backend: k.Src}) != nil
}
