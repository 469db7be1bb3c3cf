package proxy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/pktio"
	"github.com/syngate/syngate/spec"
)

// AdoptStats says what Adopt found in the flow table.
type AdoptStats struct {
	// Adopted connections (two entries each), of which Draining belong to
	// a service no longer configured as it was (removed, or with another
	// backend or source address): they run until they expire, and no new
	// connection goes their way.
	Adopted, Draining int
	// Orphans are entries without their other direction (an engine died
	// between installing the two, or the LRU evicted one): the connection
	// cannot work, so they are deleted.
	Orphans int
	// OutOfRange are adopted connections whose source port lies outside
	// the configured port range: they keep running, but the XDP program
	// only recognises the configured range, so their backend's packets no
	// longer reach them.
	OutOfRange int
}

// adopt takes over the spliced connections an earlier engine left in the
// flow table (pinned maps survive a restart): each pair of entries becomes a
// spliced connection of this engine, expired like its own, its source port
// held so that no new backend leg takes it, and counted in Stats. Source
// addresses of draining connections are added to Sources, so Reconcile
// keeps them in the data path's locals. Before Run and Serve (Reconcile).
func (e *Engine) adopt() (AdoptStats, error) {
	var st AdoptStats
	if e.started.Load() {
		return st, fmt.Errorf("adopt flows: engine already running")
	}
	all := make(map[flow.Key]flow.State)
	if err := e.cfg.Datapath.IterateFlows(func(k flow.Key, s flow.State) bool {
		all[k] = s
		return true
	}); err != nil {
		return st, fmt.Errorf("adopt flows: %w", err)
	}
	now := e.now()
	ports := make(map[*portPool][]uint16)
	done := make(map[flow.Key]bool, len(all))
	for k, a := range all {
		if done[k] {
			continue
		}
		done[k] = true
		pk := flow.Key{Src: a.NAT.Dst, Dst: a.NAT.Src}
		b, ok := all[pk]
		if !ok || done[pk] || b.NAT.Src != k.Dst || b.NAT.Dst != k.Src {
			// Alone, or paired with something that does not point back.
			e.cfg.Datapath.DeleteFlow(k)
			e.conns.expired("evicted")
			st.Orphans++
			continue
		}
		done[pk] = true
		// k/a is one direction, pk/b the other; find the client's.
		if !e.clientSide(k, a, pk, b) {
			k, a, pk, b = pk, b, k, a
		}
		c, pool := e.adoptConn(k, a, b, now)
		if c.svc != e.set.Load().services[c.client.Service] {
			st.Draining++
		}
		if p := c.source.Port(); p < e.cfg.PortMin || p > e.cfg.PortMax {
			st.OutOfRange++
			c.pool = nil // nothing to give back
			e.log.Warn("adopted connection's source port is outside backend.ports", "flow", k, "port", p)
		} else {
			ports[pool] = append(ports[pool], p)
		}
		st.Adopted++
	}
	for p, inUse := range ports {
		p.adopt(inUse, now)
	}
	// Stand-ins of services no longer configured at their listener retire
	// as a reload retires a removed service: the caller keeps the
	// listener in the data plane while RetiredLive counts connections,
	// and their SYNs are refused meanwhile.
	set := e.set.Load()
	for _, s := range e.draining {
		if set.services[s.Listen] != nil || slices.Contains(set.retiring[s.Listen], s) {
			continue
		}
		s.retired.Store(true)
		if set.retiring == nil {
			set.retiring = make(map[netip.AddrPort][]*service)
		}
		set.retiring[s.Listen] = append(set.retiring[s.Listen], s) // before Run: the set is not shared yet
	}
	return st, nil
}

// clientSide reports whether k (with its state a) is the client-to-service
// direction of the pair (k, pk): its destination is a configured service,
// or, for a service no longer configured, its translation leaves from a
// port in the source port range while the other's does not.
func (e *Engine) clientSide(k flow.Key, a flow.State, pk flow.Key, b flow.State) bool {
	services := e.set.Load().services
	if services[k.Dst] != nil {
		return true
	}
	if services[pk.Dst] != nil {
		return false
	}
	inRange := func(p uint16) bool { return p >= e.cfg.PortMin && p <= e.cfg.PortMax }
	return inRange(a.NAT.Src.Port()) && !inRange(b.NAT.Src.Port())
}

// adoptConn makes a spliced connection of the pair: toBackend is the
// client direction's state (key kc), toClient the backend direction's.
func (e *Engine) adoptConn(kc flow.Key, toBackend, toClient flow.State, now time.Time) (*conn, *portPool) {
	source, backend := toBackend.NAT.Src, toBackend.NAT.Dst
	set := e.set.Load()
	svc := set.services[kc.Dst]
	var be *member
	if svc != nil && slices.Contains(svc.Sources, source.Addr()) {
		be = svc.memberAt(backend)
	}
	if be == nil {
		svc = e.drainService(kc.Dst, backend, source.Addr())
		if be = svc.memberAt(backend); be == nil {
			be = svc.pool.Load().members[0]
		}
	}
	be.active.Add(1)
	pk := poolKey{source: source.Addr(), backend: backend}
	pool := e.pools[pk]
	if pool == nil {
		// A source address or backend no longer configured: the pool
		// only keeps the books of the draining connections.
		pool, _ = newPortPool(e.cfg.PortMin, e.cfg.PortMax, e.cfg.PortQuiet, now)
		e.pools[pk] = pool
	}
	set.locals[source.Addr()] = true // before Run: the set is not shared yet
	nb, nc := toBackend.NAT, toClient.NAT
	c := &conn{
		svc: svc, be: be, client: flow.Tuple{Client: kc.Src, Service: kc.Dst}, created: now,
		state: stateSpliced, haveClient: true, queued: true, synSent: true,
		source: source, pool: pool, splicedAt: now,
		// What the slow path needs, recovered from the translations: the
		// engine keeps only differences, so one side of each is zero.
		seqDelta: nb.SeqDelta, tsDelta: nb.TSvalDelta,
		ourISN: 0, backendISN: nb.AckDelta,
		ourTS0: 0, backendTS0: nb.TSecrDelta,
		ts: true, backendOpts: flow.SynOptions{Timestamps: true, WScale: flow.NoWScale},
		wscale: flow.NoWScale,
		// The leg's ISN is not known: its port's floor cannot be trusted.
		sentBytes: maxFloorSlack,
	}
	// The window shifts, as windowShifts derives them.
	switch {
	case nc.InShift == 0 && nc.OutShift == 0 && nb.InShift == 0 && nb.OutShift == 0:
	case nb.InShift == 0 && nb.OutShift == 0:
		c.wscale, c.backendOpts.WScale = nc.OutShift, nc.InShift
	default:
		c.wscale, c.opts.WScale = nc.OutShift, nb.InShift
	}
	sh := &e.conns.shards[e.conns.shardOf(c.client.Client)]
	sh.mu.Lock()
	sh.byClient[c.client] = c
	sh.mu.Unlock()
	e.conns.n.Add(1)
	svc.live.Add(1)
	e.conns.setSource(c, legKey{source: source, backend: backend})
	e.conns.spliced.Add(1)
	return c, pool
}

// drainKey names a service as adopted connections knew it.
type drainKey struct {
	listen, backend netip.AddrPort
	source          netip.Addr
}

// drainService returns the stand-in service of adopted connections whose
// service is gone or changed: it carries their addresses for the slow path
// and expiry, and takes no new connection (it is not in the service set).
// A reload retires services into the same map (see Reconfigure).
func (e *Engine) drainService(listen, backend netip.AddrPort, source netip.Addr) *service {
	k := drainKey{listen, backend, source}
	if s := e.draining[k]; s != nil {
		return s
	}
	s := &service{
		Service:    spec.Service{Name: "draining " + listen.String(), Listen: listen, Backends: []spec.Backend{{Addr: backend}}, Sources: []netip.Addr{source}},
		slots:      make(chan struct{}),
		maxPending: e.cfg.MaxPending,
	}
	s.st.init()
	// Its one member has weight 0: it only carries the adopted flows.
	m := &member{addr: backend, failedBy: make(map[string]*atomic.Uint64, len(backendReasons))}
	for _, r := range backendReasons {
		m.failedBy[r] = new(atomic.Uint64)
	}
	s.storePool([]*member{m}, e.now(), true)
	if e.draining == nil {
		e.draining = make(map[drainKey]*service)
	}
	e.draining[k] = s
	return s
}

// adopt rebuilds a fresh pool around the ports of adopted connections:
// those are in use; every other one is free at once, in order from just
// above the highest adopted port (the previous engine handed ports out
// upwards, so those are the ones it used least recently). Their ISN floors
// died with the previous engine; a backend still holding one in TIME_WAIT
// is cleared with a RST as usual. Call it before the pool hands out a port.
func (p *portPool) adopt(inUse []uint16, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.state)
	p.nInUse = 0
	start := 0
	for _, port := range inUse {
		off := int(port) - int(p.min)
		if off < 0 || off >= p.size || p.state[off].inUse {
			continue
		}
		p.state[off].inUse = true
		p.nInUse++
		start = max(start, off+1)
	}
	// Free ports count as freed one quiet time ago: usable at once.
	p.epoch = now.Add(-p.quiet)
	p.next, p.head, p.n = p.size, 0, 0
	for i := range p.size {
		off := (start + i) % p.size
		if !p.state[off].inUse {
			p.freed[p.n], p.freedAt[p.n] = uint16(off), 0
			p.n++
		}
	}
}

// CookiesSentElsewhere opens every service's ACK cookie gate as if its
// queue had just overflowed: after a take-over, the data plane may have
// answered SYNs with standby cookies while no engine ran, and their ACKs
// (or the client's first data, retransmitted) arrive now. Services under
// cookies `never` stay closed.
func (e *Engine) CookiesSentElsewhere() {
	now := e.now()
	for _, s := range e.set.Load().order {
		s.l.CookiesSentElsewhere(now)
	}
}

// ReplayACKs hands the engine the handshake ACKs the data plane kept while
// no engine ran (flow.StandbyACK): each is handled as if it had just
// arrived on its interface, so the ACK of a standby cookie SYN-ACK opens
// its connection now, even if the client has nothing to send (a protocol
// where the server speaks first). Call it after CookiesSentElsewhere, with
// Run and Serve running. It returns how many became connections.
func (e *Engine) ReplayACKs(acks []flow.StandbyACK) int {
	before := e.acceptedCookies()
	for _, a := range acks {
		w := &worker{e: e, ifindex: a.Ifindex, rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
		p := pktio.Packet{Data: a.Frame}
		w.handle(&p) // a reply (a RST for an overflow) is not sent: the client retransmits
	}
	return int(e.acceptedCookies() - before)
}

func (e *Engine) acceptedCookies() uint64 {
	var n uint64
	for _, s := range e.set.Load().order {
		n += s.st.ackCookie.Load()
	}
	return n
}
