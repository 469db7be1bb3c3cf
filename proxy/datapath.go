package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/syngate/syngate/cookie"
	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

// Datapath is the engine's one interface to the data path: the XDP and TC
// programs' maps (*bpf.Dataplane implements it; tests use an in-memory
// fake). The engine is the only writer of its state: the spliced flows,
// the service entries (their IDs, cookie offload and standby flags and
// offers), the cookie key, and the backend-side source addresses.
type Datapath interface {
	// The flow table.
	InstallTrackedFlow(flow.Key, flow.NAT, flow.Track) error
	RaiseSeqEnd(flow.Key, uint32) error
	DeleteFlow(flow.Key) error
	LookupFlow(flow.Key) (flow.State, error)
	IterateFlows(func(flow.Key, flow.State) bool) error
	// The services map.
	SetService(spec.Entry) error
	DeleteService(netip.AddrPort) error
	Services() ([]spec.Entry, error)
	// The source addresses whose packets in the port range are the
	// backend legs'.
	AddLocal(netip.Addr) error
	DeleteLocal(netip.Addr) error
	Locals() ([]netip.Addr, error)
	// SetCookieKey gives the data path the key and clock its cookie
	// SYN-ACKs are minted with.
	SetCookieKey(cookie.DataplaneKey) error
}

// entry is s's data-path entry as the engine runs it now: SYNs answered
// with cookies in the data path while offloaded, or while no engine runs
// (standby) unless the service never takes cookies, with what its own
// SYN-ACKs offer.
func (s *service) entry() spec.Entry {
	ent := spec.Entry{Listen: s.Listen, ID: s.id, Offload: s.offloaded.Load(), Standby: s.Cookies != spec.CookiesNever,
		NoRateLimit: s.RateLimitExempt}
	if ent.Offload || ent.Standby {
		ent.Offer = s.offer.Load().Offer
	}
	return ent
}

// syncEntry brings s's entry in the data path up to s's state (offload,
// offer); a write that failed is tried again the next time.
func (e *Engine) syncEntry(s *service) error {
	e.dpMu.Lock()
	defer e.dpMu.Unlock()
	return e.writeEntryLocked(s.entry())
}

// writeEntryLocked writes ent unless the data path holds it already.
// e.dpMu is held.
func (e *Engine) writeEntryLocked(ent spec.Entry) error {
	if cur, ok := e.entries[ent.Listen]; ok && cur == ent {
		return nil
	}
	if err := e.cfg.Datapath.SetService(ent); err != nil {
		return err
	}
	e.entries[ent.Listen] = ent
	return nil
}

// quietEntry leaves a retired listener in the data path without cookies:
// its SYNs reach the engine (which refuses them with a RST, as the kernel
// would), while the client segments of its spliced connections and the
// ACKs of its half-open entries still reach the engine instead of the
// kernel, which has no socket for them and would reset them.
func (e *Engine) quietEntry(listen netip.AddrPort) {
	e.dpMu.Lock()
	defer e.dpMu.Unlock()
	ent := spec.Entry{Listen: listen, ID: e.entries[listen].ID}
	if err := e.writeEntryLocked(ent); err != nil {
		e.log.Warn("data path: stop the cookies of a removed service", "listen", listen, "err", err)
	}
}

// removeEntry takes a listener no service runs any more out of the data
// path: its SYNs pass to the kernel again. Unless a service runs it again
// meanwhile.
func (e *Engine) removeEntry(listen netip.AddrPort) error {
	e.dpMu.Lock()
	defer e.dpMu.Unlock()
	set := e.set.Load()
	if set.services[listen] != nil || len(set.retiring[listen]) > 0 {
		return nil
	}
	if err := e.cfg.Datapath.DeleteService(listen); err != nil && !errors.Is(err, flow.ErrNotFound) {
		return err
	}
	delete(e.entries, listen)
	e.log.Info("service removed from the data path", "listen", listen)
	return nil
}

// refreshCookieKey keeps the data path's cookie key and tick current: it
// mints only with a key the engine's Check still accepts.
func (e *Engine) refreshCookieKey(now time.Time) {
	if err := e.cfg.Datapath.SetCookieKey(e.cfg.Jar.DataplaneKey(now)); err != nil {
		e.log.Warn("refresh the data path's cookie key", "err", err)
	}
}

// RestoreOffers lets the services an earlier engine left in the data path
// at the same listener announce what it announced (the pinned entries'
// offers) until their probes answer, so taking over waits for no probe.
// It returns the services with nothing to restore: their backends must
// be probed before the first SYN-ACK (a connection's announced window
// scale must not change under it). Call it before Reconcile.
func (e *Engine) RestoreOffers() ([]spec.Service, error) {
	pinned, err := e.cfg.Datapath.Services()
	if err != nil {
		return nil, fmt.Errorf("restore offers: %w", err)
	}
	known := make(map[netip.AddrPort]spec.Offer, len(pinned))
	for _, p := range pinned {
		if p.Offer.Window != 0 {
			known[p.Listen] = p.Offer
		}
	}
	var unknown []spec.Service
	for _, s := range e.set.Load().order {
		o, ok := known[s.Listen]
		if !ok {
			unknown = append(unknown, s.Service)
			continue
		}
		if err := e.SetBackendOptions(s.Name, flow.SynOptions{MSS: o.MSS, WScale: o.WScale, SACK: o.SACK, Timestamps: o.Timestamps, ECN: o.ECN}); err != nil {
			return nil, err
		}
	}
	return unknown, nil
}

// ReconcileStats says what Reconcile found in the data path.
type ReconcileStats struct {
	AdoptStats
	// Removed are listeners of services no longer configured, taken out
	// of the data path; Retiring those kept until their adopted
	// connections end.
	Removed, Retiring []netip.AddrPort
}

// Reconcile makes the data path hold exactly what this engine runs, at
// start, before Run and Serve: the cookie key, every service's entry, the
// spliced connections an earlier engine left (adopted, see adopt), the
// source addresses, and no listener of a service no longer configured (at
// once when none of its connections was adopted, else once the last one
// ended).
func (e *Engine) Reconcile() (ReconcileStats, error) {
	var st ReconcileStats
	pinned, err := e.cfg.Datapath.Services()
	if err != nil {
		return st, fmt.Errorf("reconcile: %w", err)
	}
	// The key before any entry that mints cookies.
	if err := e.cfg.Datapath.SetCookieKey(e.cfg.Jar.DataplaneKey(e.now())); err != nil {
		return st, fmt.Errorf("reconcile: %w", err)
	}
	e.dpMu.Lock()
	for _, p := range pinned {
		e.entries[p.Listen] = p
	}
	e.dpMu.Unlock()
	for _, s := range e.set.Load().order {
		// Cookies always: the data path mints from the first SYN after
		// start, not from Run's first pass, which may come after it.
		if s.Cookies == spec.CookiesAlways && s.hasBackend() {
			s.offloaded.Store(true)
		}
		if err := e.syncEntry(s); err != nil {
			return st, fmt.Errorf("reconcile: %w", err)
		}
	}
	if st.AdoptStats, err = e.adopt(); err != nil {
		return st, err
	}
	if err := e.reconcileLocals(); err != nil {
		return st, err
	}
	set := e.set.Load()
	for _, p := range pinned {
		switch {
		case set.services[p.Listen] != nil:
		case len(set.retiring[p.Listen]) > 0:
			e.quietEntry(p.Listen)
			st.Retiring = append(st.Retiring, p.Listen)
		default:
			if err := e.removeEntry(p.Listen); err != nil {
				return st, fmt.Errorf("reconcile: %w", err)
			}
			st.Removed = append(st.Removed, p.Listen)
		}
	}
	return st, nil
}

// reconcileLocals makes the locals hold exactly the engine's source
// addresses (those of draining connections included).
func (e *Engine) reconcileLocals() error {
	have, err := e.cfg.Datapath.Locals()
	if err != nil {
		return fmt.Errorf("reconcile source addresses: %w", err)
	}
	want := make(map[netip.Addr]bool)
	for _, a := range e.Sources() {
		want[a] = true
		if err := e.cfg.Datapath.AddLocal(a); err != nil {
			return fmt.Errorf("reconcile source addresses: %w", err)
		}
	}
	for _, a := range have {
		if !want[a] {
			if err := e.cfg.Datapath.DeleteLocal(a); err != nil && !errors.Is(err, flow.ErrNotFound) {
				return fmt.Errorf("reconcile source addresses: %w", err)
			}
			e.log.Info("source address removed from the data path", "addr", a)
		}
	}
	return nil
}
