package proxy

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

// maxAddedServices is the room Reconfigure has for services beyond those
// New got, in the offload request channel (see New).
const maxAddedServices = 256

// serviceSet is the services the engine runs at one moment. It is never
// changed once published (Adopt, before Run, excepted): Reconfigure builds
// the next one and swaps it in whole.
type serviceSet struct {
	services map[netip.AddrPort]*service
	order    []*service
	// locals are the backend-side source addresses: a packet to one of
	// them is a backend's. They only grow while the process runs: a
	// retired service's connections still get their backend's packets
	// there.
	locals map[netip.Addr]bool
	// retiring are the services a reload removed or replaced that still
	// hold half-open entries or accepted connections, by listener: their
	// handshakes finish with them.
	retiring map[netip.AddrPort][]*service
}

func (set *serviceSet) add(s *service) {
	set.services[s.Listen] = s
	set.order = append(set.order, s)
	for _, a := range s.Sources {
		set.locals[a] = true
	}
}

// Timeouts are the engine's timeouts a reload may change.
type Timeouts struct {
	// Connect bounds a backend handshake.
	Connect time.Duration
	// Established, Close and Reset expire spliced flows (see Config).
	Established, Close, Reset time.Duration
}

// ReconfigureStats says what Reconfigure did.
type ReconfigureStats struct {
	// Added, Changed and Removed name the services by name; Repooled
	// those kept whose pool was swapped (see SetBackends).
	Added, Changed, Removed, Repooled []string
	// Unchanged services keep their state (queues, counters, offer).
	Unchanged int
}

// Reconfigure makes svcs the engine's services, atomically for the
// receive loops: a service whose listener and settings are as before keeps
// its state; one whose only change is its pool (backends, weights) keeps
// its state too and gets the new pool as SetBackends gives it (members
// that stay keep their health and live connections their backend); a
// changed one (source addresses, queue bounds, cookie policy, overflow
// policy, announce values, hashing, PROXY protocol, no-backend policy) is
// replaced by a new one; a removed one is gone. Replaced and removed
// services are retired: they take no new connection, but the handshakes
// they hold end with them as they began (half-open entries complete into
// their accept queue, accepted connections open their backend leg in the
// retired service's pool), and their spliced connections run on until
// they end, like the draining connections Adopt finds. A retired service's
// backend-leg loop stops once its queues are empty. Zero timeouts are left
// as they are. learned holds, by service name and backend, backend options
// already probed for the members of added, changed and repooled services:
// they announce them from their first SYN-ACK (a member whose backend the
// service had before keeps what was learned of it; others count for the
// offer from their probe on, see SetMemberOptions).
//
// Nothing changes when it returns an error.
func (e *Engine) Reconfigure(svcs []spec.Service, t Timeouts, learned map[string]map[netip.AddrPort]flow.SynOptions) (ReconfigureStats, error) {
	var st ReconfigureStats
	if len(svcs) == 0 {
		return st, fmt.Errorf("%w: no services", ErrConfig)
	}
	e.reconfMu.Lock()
	defer e.reconfMu.Unlock()
	e.poolsMu.Lock() // released before the pools swap (SetBackends' order)
	cur := e.set.Load()
	next := &serviceSet{
		services: make(map[netip.AddrPort]*service, len(svcs)),
		locals:   maps.Clone(cur.locals),
		retiring: make(map[netip.AddrPort][]*service),
	}
	for l, rs := range cur.retiring {
		next.retiring[l] = slices.Clone(rs)
	}
	pools := maps.Clone(e.pools) // restored on failure
	fail := func(err error) (ReconfigureStats, error) {
		e.pools = pools
		e.poolsMu.Unlock()
		return ReconfigureStats{}, err
	}
	type repool struct {
		s       *service
		members []spec.Backend
		next    []*member
	}
	var (
		added    []*service
		repooled []repool
	)
	for _, s := range svcs {
		if _, dup := next.services[s.Listen]; dup {
			return fail(fmt.Errorf("%w: service %s: listener %v used twice", ErrConfig, s.Name, s.Listen))
		}
		if old := cur.services[s.Listen]; old != nil && samePoolless(old.Service, s) {
			next.add(old)
			if old.samePool(s.Backends) {
				st.Unchanged++
				continue
			}
			if len(s.Backends) > maxMembers {
				return fail(fmt.Errorf("%w: service %s: %d backends, at most %d", ErrConfig, s.Name, len(s.Backends), maxMembers))
			}
			members, err := e.newMembers(old, old.pool.Load().members, s.Backends)
			if err != nil {
				return fail(err)
			}
			repooled = append(repooled, repool{old, s.Backends, members})
			st.Repooled = append(st.Repooled, s.Name)
			continue
		}
		svc, err := e.newService(s, e.nextID+uint32(len(added)))
		if err != nil {
			return fail(err)
		}
		next.add(svc)
		added = append(added, svc)
		if cur.services[s.Listen] != nil {
			st.Changed = append(st.Changed, s.Name)
		} else {
			st.Added = append(st.Added, s.Name)
		}
	}
	var retired []*service
	for _, old := range cur.order {
		if next.services[old.Listen] != old {
			retired = append(retired, old)
			if next.services[old.Listen] == nil {
				st.Removed = append(st.Removed, old.Name)
			}
		}
	}
	e.poolsMu.Unlock()
	e.nextID += uint32(len(added))
	// From here on nothing fails.
	for _, s := range added {
		// Until its probe answers, a member announces what was learned of
		// its backend, or what the service's predecessor learned of it.
		var prev map[netip.AddrPort]*member
		if old := cur.services[s.Listen]; old != nil {
			prev = make(map[netip.AddrPort]*member)
			for _, m := range old.pool.Load().members {
				prev[m.addr] = m
			}
		}
		members := s.pool.Load().members
		for _, m := range members {
			p := prev[m.addr]
			if o, ok := learned[s.Name][m.addr]; ok {
				m.opts.Store(&o)
			} else if p != nil && p.opts.Load() != nil {
				m.opts.Store(p.opts.Load())
			}
			if p != nil {
				// The backend's check runs on (it is the service's by
				// name): the replacement starts from its verdict.
				m.activeUp.Store(p.activeUp.Load())
			}
		}
		s.poolMu.Lock()
		s.storePool(members, e.now(), true)
		s.poolMu.Unlock()
		s.refreshOffer()
	}
	for _, r := range repooled {
		for _, m := range r.next {
			if o, ok := learned[r.s.Name][m.addr]; ok && m.opts.Load() == nil {
				m.opts.Store(&o)
			}
		}
		r.s.poolMu.Lock()
		r.s.commitPool(r.next, r.members, e.now())
		r.s.poolMu.Unlock()
	}
	for _, s := range retired {
		s.retired.Store(true)
		next.retiring[s.Listen] = append(next.retiring[s.Listen], s)
		if e.draining == nil {
			e.draining = make(map[drainKey]*service)
		}
		for _, m := range s.pool.Load().members {
			e.draining[drainKey{s.Listen, m.addr, s.Sources[0]}] = s
		}
	}
	if t.Connect > 0 || t.Established > 0 || t.Close > 0 || t.Reset > 0 {
		nt := *e.timeouts.Load()
		setNonZero(&nt.Connect, t.Connect)
		setNonZero(&nt.Established, t.Established)
		setNonZero(&nt.Close, t.Close)
		setNonZero(&nt.Reset, t.Reset)
		e.timeouts.Store(&nt)
	}
	e.set.Store(next)
	// The data path follows. These writes do not fail on a working map; a
	// failed one is logged, and Run's next pass writes it again.
	for _, s := range added {
		if err := e.syncEntry(s); err != nil {
			e.log.Warn("reload: write the service to the data path", "service", s.Name, "err", err)
		}
		for _, a := range s.Sources {
			if err := e.cfg.Datapath.AddLocal(a); err != nil {
				e.log.Warn("reload: add a source address to the data path", "addr", a, "err", err)
			}
		}
	}
	for _, name := range st.Removed {
		for _, s := range retired {
			if s.Name == name && next.services[s.Listen] == nil {
				e.quietEntry(s.Listen)
			}
		}
	}
	if e.runCtx != nil {
		for _, s := range added {
			e.startLegs(s)
		}
	}
	for _, s := range retired {
		e.log.Info("service retired by a reload: its handshakes finish, its connections run until they end",
			"service", s.Name, "listen", s.Listen, "half_open", s.l.SynQueueLen(), "accept_queue", s.l.AcceptQueueLen())
	}
	for _, r := range repooled {
		e.log.Info("service pool swapped by a reload: live connections keep their backend",
			"service", r.s.Name, "backends", len(r.members))
	}
	return st, nil
}

func setNonZero(p *time.Duration, v time.Duration) {
	if v > 0 {
		*p = v
	}
}

// samePoolless reports whether a and b run the same way but for their
// pools (Backends) and health checks (the gateway runs those): then a
// reload keeps the running service, and swaps its pool if that changed.
func samePoolless(a, b spec.Service) bool {
	a.Backends, b.Backends = nil, nil
	a.HealthCheck, b.HealthCheck = spec.HealthCheck{}, spec.HealthCheck{}
	return reflect.DeepEqual(a, b)
}

// startLegs runs s's backend-leg loop until Run's context ends or s is
// retired and drained. reconfMu is held and Run has started.
func (e *Engine) startLegs(s *service) {
	if e.runCtx.Err() != nil {
		return // Run is ending: its wait for the loops may be under way
	}
	ctx, cancel := context.WithCancel(e.runCtx)
	s.stopLegs = cancel
	e.legs.Add(1)
	go func() {
		defer e.legs.Done()
		defer cancel()
		e.openBackendLegs(ctx, s)
	}()
}

// tendRetired retransmits the SYN-ACKs of retired services' half-open
// entries, ends a retired service's backend-leg loop once both its queues
// are empty (no new entry can reach it then: it answers no SYN and
// accepts no cookie), and lets it go once its last connection ended too.
// Run calls it every second.
func (e *Engine) tendRetired(set *serviceSet, now time.Time) {
	if len(set.retiring) == 0 {
		return
	}
	var done []*service
	for _, rs := range set.retiring {
		for _, s := range rs {
			if s.l != nil { // an adopted connection's stand-in has no queues
				e.expireHalfOpen(s, now)
				if s.l.SynQueueLen() != 0 || s.l.AcceptQueueLen() != 0 {
					continue
				}
			}
			if s.stopLegs != nil {
				s.stopLegs()
			}
			if s.live.Load() == 0 {
				done = append(done, s)
			}
		}
	}
	if len(done) == 0 {
		return
	}
	e.reconfMu.Lock()
	defer e.reconfMu.Unlock()
	cur := e.set.Load()
	next := *cur
	next.retiring = make(map[netip.AddrPort][]*service, len(cur.retiring))
	for l, rs := range cur.retiring {
		var keep []*service
		for _, s := range rs {
			if !slices.Contains(done, s) {
				keep = append(keep, s)
			}
		}
		if len(keep) > 0 {
			next.retiring[l] = keep
		}
	}
	e.set.Store(&next)
	for _, s := range done {
		e.log.Info("retired service done: its handshakes and connections ended", "service", s.Name, "listen", s.Listen)
		// The last of a listener no service runs any more leaves the
		// data path (removeEntry checks).
		if err := e.removeEntry(s.Listen); err != nil {
			e.log.Warn("remove a retired service from the data path", "listen", s.Listen, "err", err)
		}
	}
}

// RetiredLive is how many half-open entries, accepted and live
// connections the retired services at listen still hold. The engine
// keeps a removed service's data-path entry until none is left: the
// client segments of its spliced connections that XDP does not forward
// itself, and the ACKs of its half-open entries, still reach the engine
// instead of the kernel.
func (e *Engine) RetiredLive(listen netip.AddrPort) int {
	n := 0
	for _, s := range e.set.Load().retiring[listen] {
		n += int(s.live.Load())
		if s.l != nil {
			n += s.l.SynQueueLen() + s.l.AcceptQueueLen()
		}
	}
	return n
}

// Timeouts returns the timeouts in force.
func (e *Engine) Timeouts() Timeouts { return *e.timeouts.Load() }
