package proxy

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/spec"
)

// PROXY protocol (haproxy.org/download/2.9/doc/proxy-protocol.txt).
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

const (
	proxyV2Cmd     = 0x21 // version 2, PROXY command
	proxyV2TCP4    = 0x11 // AF_INET, STREAM
	proxyV2TCP6    = 0x21 // AF_INET6, STREAM
	pp2TypeUniqID  = 0x05 // PP2_TYPE_UNIQUE_ID
	uniqueIDLength = 16
)

// proxyHeader is the PROXY protocol header (version 1 or 2) that tells a
// backend who connected: client, to the service address dst. Version 2
// carries a PP2_TYPE_UNIQUE_ID TLV with id, the connection's identifier.
func proxyHeader(version int, client, dst netip.AddrPort, id []byte) []byte {
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if version == 1 {
		fam := "TCP4"
		if client.Addr().Is6() {
			fam = "TCP6"
		}
		b := make([]byte, 0, 108) // the spec's maximum
		b = append(b, "PROXY "+fam+" "...)
		b = append(b, client.Addr().String()+" "+dst.Addr().String()+" "...)
		b = strconv.AppendUint(b, uint64(client.Port()), 10)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(dst.Port()), 10)
		return append(b, "\r\n"...)
	}
	fam, alen := byte(proxyV2TCP4), 12
	if client.Addr().Is6() {
		fam, alen = proxyV2TCP6, 36
	}
	tlv := 3 + len(id)
	b := make([]byte, 0, 16+alen+tlv)
	b = append(b, proxyV2Sig...)
	b = append(b, proxyV2Cmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(alen+tlv))
	b = append(b, client.Addr().AsSlice()...)
	b = append(b, dst.Addr().AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, client.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	b = append(b, pp2TypeUniqID)
	b = binary.BigEndian.AppendUint16(b, uint16(len(id)))
	return append(b, id...)
}

// newHeader builds c's header for its service's version; nil when off.
func (c *conn) newHeader() []byte {
	v := c.svc.ProxyProtocol.Version()
	if v == 0 {
		return nil
	}
	var id []byte
	if v == 2 {
		id = make([]byte, uniqueIDLength)
		binary.BigEndian.PutUint64(id, rand.Uint64())
		binary.BigEndian.PutUint64(id[8:], rand.Uint64())
	}
	return proxyHeader(v, c.client.Client, c.client.Service, id)
}

// The header's retransmission: first after headerRTO (Linux's minimum
// RTO; the engine's 250 ms tick rounds it up), doubling up to
// maxHeaderRTO, given up (both sides reset) after headerTries sends.
const (
	headerRTO    = 200 * time.Millisecond
	maxHeaderRTO = 8 * time.Second
	headerTries  = 12
)

// headerEnd is the backend-leg sequence number right after the header.
func (c *conn) headerEnd() uint32 { return c.legISN() + 1 + uint32(len(c.header)) }

// seqBefore is TCP's before(): a is earlier than b in sequence space.
func seqBefore(a, b uint32) bool { return int32(a-b) < 0 }

// sendHeader sends the PROXY header as the first bytes of the backend
// stream, right after the handshake's ACK and without waiting for the
// client: a server that speaks first gets it at once. c.mu is held.
func (e *Engine) sendHeader(c *conn) {
	f := packet.Fields{
		Src: c.source, Dst: c.be.addr, Seq: c.legISN() + 1, Ack: c.backendISN + 1,
		Flags: packet.ACK | packet.PSH, Window: c.toBackendWindow(c.window), Payload: c.header,
	}
	if c.ts && c.backendOpts.Timestamps {
		f.Options = flow.SynOptions{Timestamps: true, TSval: tsClock(e.now()), TSecr: c.backendTS0}
	}
	e.send(c.svc, packet.Build, &f)
}

// retransmitHeader resends a header the backend has not acknowledged, and
// gives the connection up when the backend never does. c.mu is held.
func (e *Engine) retransmitHeader(c *conn, now time.Time) {
	if now.Before(c.headerNext) {
		return
	}
	c.headerTries++
	if c.headerTries >= headerTries {
		e.abortLocked(c, "timeout", true)
		return
	}
	c.svc.st.headerRetrans.Add(1)
	c.headerNext = now.Add(min(headerRTO<<c.headerTries, maxHeaderRTO))
	e.sendHeader(c)
}

// headerSegment handles a backend segment while its header is not
// acknowledged: it goes to the client through the engine, and the first
// one that acknowledges the whole header hands the backend's direction to
// the fast path, its tracked state seeded with what the backend sent and
// acknowledged so far. c.mu is held.
func (e *Engine) headerSegment(c *conn, seg *packet.Segment) {
	c.svc.st.slowPath.Add(1)
	if seg.Flags&packet.RST != 0 {
		e.forwardToClient(c, seg)
		e.abortLocked(c, "reset", false)
		return
	}
	end := seg.Seq + uint32(len(seg.Payload))
	if seg.Flags&packet.FIN != 0 {
		end++
		if !c.backendFIN {
			// Expiry must know: the fast path did not see it.
			c.backendFIN, c.backendFinEnd = true, end
		}
	}
	if seqBefore(c.backendNxt, end) {
		c.backendNxt = end
	}
	if seg.Flags&(packet.ACK|packet.SYN) == packet.ACK && !seqBefore(seg.Ack, c.headerEnd()) {
		tr := c.trBackend
		tr.SeqEnd = c.backendNxt
		tr.AckMax = seg.Ack - c.seqDelta - uint32(len(c.header)) // in the client's space, as the fast path keeps it
		win := uint32(seg.Window) << tr.WScale
		tr.WinEnd, tr.WinMax = tr.AckMax+win, max(tr.WinMax, win)
		e.catchUpClient(c, tr.AckMax)
		if err := e.cfg.Datapath.InstallTrackedFlow(c.backendKey(), c.toClient, tr); err != nil {
			e.abortLocked(c, installFailure(err), true)
			return
		}
		c.headerPending = false
		e.conns.opened(c)
	}
	e.forwardToClient(c, seg)
}

// catchUpClient brings the client direction's tracked seq_end up to what
// the backend acknowledged (acked, in the client's space) and to the data
// the engine forwarded, before the backend's direction is installed. The
// client's segments went through the fast path while the header was
// pending, but a direction learns only once the reverse one is installed:
// its seq_end still stands where the splice seeded it. Left there, the
// backend's segments that ack the client's data are out of window unless
// at exactly the backend's seq_end, and once one of them takes the slow
// path (it raced the install) both directions lag each other and every
// later segment is judged out of window: forwarded, but never learned
// from, FINs included. Nothing learns from the entry until the backend's
// direction exists, so the read and write back lose nothing to the
// program but its counters' increments in between. c.mu is held.
func (e *Engine) catchUpClient(c *conn, acked uint32) {
	nxt := acked
	if c.slowSent && seqBefore(nxt, c.slowEnd) {
		nxt = c.slowEnd
	}
	if err := e.cfg.Datapath.RaiseSeqEnd(flow.ClientKey(c.client), nxt); err != nil {
		// Not fatal: the segments are forwarded all the same.
		e.log.Debug("raise the client direction's seq_end", "client", c.client.Client, "err", err)
	}
}

// maxLegTries bounds the backends one connection tries: a backend leg
// that is refused or not answered by the connect timeout is opened again
// toward another member (the client, whose handshake is done, waits a
// round trip, or a connect timeout, longer instead of being reset).
const maxLegTries = 3

// redispatch handles a backend that refused c's leg or did not answer it
// in time: counted against it (a passive check), the leg is opened again
// toward another usable member of the pool, or the client is reset when
// there is none. c.mu is held.
func (e *Engine) redispatch(c *conn, reason string) {
	now := e.now()
	s := c.svc
	c.be.legFailed(reason, now)
	c.tried = append(c.tried, c.be)
	next := s.pickOther(c.client.Client, c.tried)
	if next == nil || len(c.tried) >= maxLegTries {
		c.failRecorded = true
		e.abortLocked(c, reason, true)
		return
	}
	s.st.backendFailure(reason)
	s.st.redispatched.Add(1)
	if reason != "refused" {
		// A backend that answers late must not keep a half-open
		// connection for a leg that moved on.
		e.send(s, packet.Build, &packet.Fields{Src: c.source, Dst: c.be.addr, Seq: c.legISN() + 1, Flags: packet.RST})
	}
	// The leg's port goes back; the backend saw at most our SYN.
	if c.pool != nil {
		c.pool.put(c.source.Port(), now, c.legISN()+1, true)
	}
	e.conns.removeSource(c, legKey{source: c.source, backend: c.be.addr})
	c.be, c.pool, c.source = next, nil, netip.AddrPort{}
	c.synSent, c.synTries, c.twResets = false, 0, 0
	e.startBackend(c, now)
}

// pickOther returns a usable backend for client that is none of tried: the
// next one along the lookup table from the client's own entry, so two
// gateways redispatch a client alike.
func (s *service) pickOther(client netip.AddrPort, tried []*member) *member {
	p := s.pool.Load()
	if p.table == nil {
		return nil
	}
	h := clientHash(client, s.Hash != spec.HashAddress)
	for i := range uint64(256) {
		b := p.usable[p.table.lookup(h+i)]
		if !containsBackend(tried, b) {
			return b
		}
	}
	for _, b := range p.usable {
		if !containsBackend(tried, b) {
			return b
		}
	}
	return nil
}

func containsBackend(l []*member, b *member) bool {
	for _, x := range l {
		if x == b {
			return true
		}
	}
	return false
}
