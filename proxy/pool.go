package proxy

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/metrics"
	"github.com/syngate/syngate/spec"
)

// member is the engine's state of one backend of a pool. It outlives pool
// swaps that keep its address: health, counters and source ports stay.
type member struct {
	addr   netip.AddrPort
	weight atomic.Int32
	// pools are the source ports toward addr, one pool per source
	// address of the service; rr spreads new connections over them.
	pools    []*portPool
	poolKeys []poolKey
	rr       atomic.Uint32

	// activeUp is what the active checks say (true until they say
	// otherwise); ejectedUntil (unix ns) is the passive checks' verdict.
	activeUp     atomic.Bool
	ejectedUntil atomic.Int64
	mu           sync.Mutex
	legFails     int // consecutive failed backend legs
	ejections    int // consecutive ejections: the backoff's exponent
	opts         atomic.Pointer[flow.SynOptions]

	active, total    atomic.Int64 // connections: spliced now, spliced ever
	failedBy         map[string]*atomic.Uint64
	checksOK, checks atomic.Uint64
	checkLatency     atomic.Int64 // ns, the last active check's
}

// Passive checks: passiveFall consecutive failed backend legs (refused,
// timeout) eject a backend for passiveBackoff, doubling with every
// ejection that follows without a successful leg between, up to
// maxPassiveBackoff. After an ejection the backend gets connections again;
// its first failure ejects it anew.
const (
	passiveFall       = 3
	passiveBackoff    = time.Second
	maxPassiveBackoff = 30 * time.Second
)

// usable reports whether new connections may go to b at now.
func (b *member) usable(now time.Time) bool {
	return b.weight.Load() > 0 && b.activeUp.Load() && now.UnixNano() >= b.ejectedUntil.Load()
}

// legFailed records a failed backend leg (a passive check).
func (b *member) legFailed(reason string, now time.Time) {
	if n := b.failedBy[reason]; n != nil {
		n.Add(1)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.UnixNano() < b.ejectedUntil.Load() {
		return // a leg opened before the ejection: already accounted for
	}
	b.legFails++
	if b.legFails < passiveFall && b.ejections == 0 {
		return
	}
	// Ejected: the first time after passiveFall failures in a row, and at
	// once when it fails again after an ejection.
	d := min(passiveBackoff<<min(b.ejections, 10), maxPassiveBackoff)
	b.ejections++
	b.legFails = 0
	b.ejectedUntil.Store(now.Add(d).UnixNano())
}

// legOK records a backend leg that opened.
func (b *member) legOK() {
	b.mu.Lock()
	b.legFails, b.ejections = 0, 0
	b.mu.Unlock()
	b.active.Add(1)
	b.total.Add(1)
}

// maxMembers bounds a pool: the table holds 16-bit indexes, and its
// balance needs MaglevSize well above 100 x the members.
const maxMembers = 1024

// pool is one immutable state of a service's pool: its members and the
// lookup table over the usable ones. Swapped whole.
type pool struct {
	members []*member
	usable  []*member // the table's indexes
	table   *maglev   // nil: no usable backend
}

// pick returns the backend of a new connection from client, nil when
// none is usable.
func (s *service) pick(client netip.AddrPort) *member {
	p := s.pool.Load()
	if p.table == nil {
		return nil
	}
	return p.usable[p.table.lookup(clientHash(client, s.Hash != spec.HashAddress))]
}

// hasBackend reports whether s has a usable backend.
func (s *service) hasBackend() bool { return s.pool.Load().table != nil }

// refreshPool rebuilds s's table when the usable set changed (health,
// ejection, weight). Only the table's owner (this, under poolMu) stores
// the pool.
func (s *service) refreshPool(now time.Time) {
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	s.storePool(s.pool.Load().members, now, false)
}

// storePool stores a pool of members, rebuilding the table when the usable
// set or a weight changed or force is set. s.poolMu is held.
func (s *service) storePool(members []*member, now time.Time, force bool) {
	var usable []*member
	var entries []maglevEntry
	for _, b := range members {
		if b.usable(now) {
			usable = append(usable, b)
			entries = append(entries, maglevEntry{addr: b.addr, weight: int(b.weight.Load())})
		}
	}
	if !force && slices.Equal(entries, s.builtWeights) {
		return
	}
	p := &pool{members: members, usable: usable}
	if len(entries) > 0 {
		p.table = newMaglev(entries)
	}
	s.builtWeights = entries
	s.pool.Store(p)
}

// newBackend makes the state of a pool member of s, its source ports
// shared with every service that has the same source and backend.
// e.poolsMu is held.
func (e *Engine) newBackend(s *service, m spec.Backend) (*member, error) {
	if m.Weight < 0 {
		return nil, fmt.Errorf("%w: service %s: backend %v: negative weight", ErrConfig, s.Name, m.Addr)
	}
	b := &member{addr: m.Addr, failedBy: make(map[string]*atomic.Uint64, len(backendReasons))}
	for _, r := range backendReasons {
		b.failedBy[r] = new(atomic.Uint64)
	}
	b.weight.Store(int32(m.Weight))
	b.activeUp.Store(true)
	for _, a := range s.Sources {
		if !a.IsValid() || a.Is4() != m.Addr.Addr().Is4() {
			return nil, fmt.Errorf("%w: service %s: source %v does not fit backend %v", ErrConfig, s.Name, a, m.Addr)
		}
		k := poolKey{source: a, backend: m.Addr}
		p := e.pools[k]
		if p == nil {
			var err error
			if p, err = newPortPool(e.cfg.PortMin, e.cfg.PortMax, e.cfg.PortQuiet, e.now()); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrConfig, err)
			}
			e.pools[k] = p
		}
		if !slices.Contains(b.pools, p) {
			b.pools = append(b.pools, p)
			b.poolKeys = append(b.poolKeys, k)
		}
	}
	return b, nil
}

// SetBackends replaces the named service's pool atomically: members whose
// address stays keep their health, counters and source ports (a new
// weight applies), new ones start up, and removed ones get no new
// connections. Live connections keep the backend they have, removed or
// not. New connections see either the old pool or the new one, never a
// mix. A reload (Reconfigure) swaps the pool of a service whose only
// change is its pool the same way.
func (e *Engine) SetBackends(service string, members []spec.Backend) error {
	s := e.service(service)
	if s == nil {
		return fmt.Errorf("no service %q", service)
	}
	if len(members) == 0 || len(members) > maxMembers {
		return fmt.Errorf("%w: service %s: %d backends, want 1-%d", ErrConfig, service, len(members), maxMembers)
	}
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	e.poolsMu.Lock()
	next, err := e.newMembers(s, s.pool.Load().members, members)
	e.poolsMu.Unlock()
	if err != nil {
		return err
	}
	s.commitPool(next, members, e.now())
	return nil
}

// newMembers makes the members of a pool of s: those of old whose address
// stays are kept as they are (health, counters, source ports), others are
// new. Nothing of s changes. e.poolsMu is held.
func (e *Engine) newMembers(s *service, old []*member, members []spec.Backend) ([]*member, error) {
	byAddr := map[netip.AddrPort]*member{}
	for _, b := range old {
		byAddr[b.addr] = b
	}
	var next []*member
	seen := map[netip.AddrPort]bool{}
	for _, m := range members {
		if seen[m.Addr] {
			return nil, fmt.Errorf("%w: service %s: backend %v listed twice", ErrConfig, s.Name, m.Addr)
		}
		seen[m.Addr] = true
		if b := byAddr[m.Addr]; b != nil {
			if m.Weight < 0 {
				return nil, fmt.Errorf("%w: service %s: backend %v: negative weight", ErrConfig, s.Name, m.Addr)
			}
			next = append(next, b)
			continue
		}
		b, err := e.newBackend(s, m)
		if err != nil {
			return nil, err
		}
		next = append(next, b)
	}
	return next, nil
}

// commitPool makes next (from newMembers for members) s's pool. Weights
// are set last, once nothing can fail: the pool changes whole. s.poolMu is
// held.
func (s *service) commitPool(next []*member, members []spec.Backend, now time.Time) {
	for i, m := range members {
		next[i].weight.Store(int32(m.Weight))
	}
	s.storePool(next, now, true)
	s.refreshOffer()
}

// samePool reports whether s's pool has members, in this order and with
// these weights.
func (s *service) samePool(members []spec.Backend) bool {
	cur := s.pool.Load().members
	if len(cur) != len(members) {
		return false
	}
	for i, b := range cur {
		if b.addr != members[i].Addr || int(b.weight.Load()) != members[i].Weight {
			return false
		}
	}
	return true
}

// SetBackendUp records an active check's verdict on one backend of a
// service (after its rise or fall count); the table follows at once.
func (e *Engine) SetBackendUp(service string, addr netip.AddrPort, up bool) error {
	s, b := e.member(service, addr)
	if b == nil {
		return fmt.Errorf("service %q has no backend %v", service, addr)
	}
	if b.activeUp.Swap(up) != up {
		if up {
			// Checks that pass again outweigh what failed legs said
			// before: the backend is back, not on probation.
			b.mu.Lock()
			b.legFails, b.ejections = 0, 0
			b.ejectedUntil.Store(0)
			b.mu.Unlock()
		}
		e.log.Info("backend health", "service", service, "backend", addr, "up", up)
		s.refreshPool(e.now())
	}
	return nil
}

// RecordCheck counts one active check of a backend and its latency.
func (e *Engine) RecordCheck(service string, addr netip.AddrPort, ok bool, latency time.Duration) {
	if _, b := e.member(service, addr); b != nil {
		b.checks.Add(1)
		if ok {
			b.checksOK.Add(1)
		}
		b.checkLatency.Store(int64(latency))
	}
}

// SetMemberOptions records what one backend's SYN-ACK offers (from
// ProbeBackend and ProbeECN). A service's SYN-ACKs offer what every member
// takes: the smallest MSS and window scale, SACK, timestamps and ECN only
// if all have them. Configured announce values still win.
func (e *Engine) SetMemberOptions(service string, addr netip.AddrPort, o flow.SynOptions) error {
	s, b := e.member(service, addr)
	if b == nil {
		return fmt.Errorf("service %q has no backend %v", service, addr)
	}
	b.opts.Store(&o)
	s.refreshOffer()
	return nil
}

// refreshOffer recomputes the offer from the members' options.
func (s *service) refreshOffer() {
	var merged *flow.SynOptions
	for _, b := range s.pool.Load().members {
		o := b.opts.Load()
		if o == nil {
			continue
		}
		if merged == nil {
			m := *o
			merged = &m
			continue
		}
		merged.MSS = min(merged.MSS, o.MSS)
		if merged.WScale == flow.NoWScale || o.WScale == flow.NoWScale {
			merged.WScale = flow.NoWScale
		} else {
			merged.WScale = min(merged.WScale, o.WScale)
		}
		merged.SACK = merged.SACK && o.SACK
		merged.Timestamps = merged.Timestamps && o.Timestamps
		merged.ECN = merged.ECN && o.ECN
	}
	if merged == nil {
		return
	}
	s.offer.Store(s.mergeOffer(*merged))
}

// BackendHealth is one backend's state as /healthz and /readyz show it.
type BackendHealth struct {
	Addr    netip.AddrPort
	Weight  int
	Up      bool // the active checks' verdict
	Ejected bool // out for a while after failed backend legs
}

// State names b's part in new connections: up, down (active checks),
// ejected (passive checks) or draining (weight 0).
func (b BackendHealth) State() string {
	switch {
	case !b.Up:
		return "down"
	case b.Ejected:
		return "ejected"
	case b.Weight == 0:
		return "draining"
	}
	return "up"
}

// ServiceHealth is a service's pool as /healthz and /readyz show it.
type ServiceHealth struct {
	Name     string
	Backends []BackendHealth
	// Usable counts the backends new connections may go to; a service
	// with none cannot take connections.
	Usable int
}

// Health reports every service's pool.
func (e *Engine) Health() []ServiceHealth {
	return e.health(e.set.Load().order)
}

// health is Health of the services in order.
func (e *Engine) health(order []*service) []ServiceHealth {
	now := e.now()
	out := make([]ServiceHealth, 0, len(order))
	for _, s := range order {
		h := ServiceHealth{Name: s.Name}
		for _, b := range s.pool.Load().members {
			bh := BackendHealth{Addr: b.addr, Weight: int(b.weight.Load()), Up: b.activeUp.Load(), Ejected: now.UnixNano() < b.ejectedUntil.Load()}
			if b.usable(now) {
				h.Usable++
			}
			h.Backends = append(h.Backends, bh)
		}
		out = append(out, h)
	}
	return out
}

// backendStats reports s's members for metrics.
func (s *service) backendStats() []metrics.BackendStats {
	now := time.Now()
	members := s.pool.Load().members
	out := make([]metrics.BackendStats, 0, len(members))
	for _, b := range members {
		out = append(out, metrics.BackendStats{
			Addr: b.addr.String(), Weight: int(b.weight.Load()),
			Up: b.activeUp.Load(), Usable: b.usable(now),
			Active: int(b.active.Load()), Total: uint64(b.total.Load()),
			Failures: snapshot(b.failedBy),
			Checks:   b.checks.Load(), ChecksOK: b.checksOK.Load(),
			CheckLatency: time.Duration(b.checkLatency.Load()),
		})
	}
	return out
}

// service returns the named service, nil if there is none.
func (e *Engine) service(name string) *service {
	for _, s := range e.set.Load().order {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// memberAt returns s's member at addr, nil if it has none.
func (s *service) memberAt(addr netip.AddrPort) *member {
	for _, b := range s.pool.Load().members {
		if b.addr == addr {
			return b
		}
	}
	return nil
}

// member returns a service and its member at addr.
func (e *Engine) member(service string, addr netip.AddrPort) (*service, *member) {
	s := e.service(service)
	if s == nil {
		return nil, nil
	}
	for _, b := range s.pool.Load().members {
		if b.addr == addr {
			return s, b
		}
	}
	return s, nil
}
