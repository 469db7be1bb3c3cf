// Package proxy is syngate's handshake engine. It answers the SYNs the XDP
// program steers to it, validates the returning ACKs (half-open queue or SYN
// cookie), opens the backend leg by replaying the client's SYN options, and
// hands the pair to the XDP fast path, which splices the two legs.
//
//	e, err := proxy.New(proxy.Config{Services: svcs, Jar: jar, Flows: table, Sender: raw})
//	go e.Run(ctx)                 // timers, backend legs, flow expiry
//	go e.Serve(ctx, port, ifindex) // one per AF_XDP receive queue
//
// The engine never touches a socket of the kernel's TCP stack for client
// traffic: packets come and go through pktio.Port (AF_XDP in production, an
// in-memory pipe in tests). Packets it originates outside a receive loop
// (timer retransmissions, the backend leg) go through Sender, an IP-level
// raw socket in production, so the kernel picks routes and resolves
// neighbours for them.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syngate/syngate/cookie"
	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/metrics"
	"github.com/syngate/syngate/pktio"
	"github.com/syngate/syngate/queue"
	"github.com/syngate/syngate/spec"
)

// Sender sends IP packets (no link-layer header) that the engine originates
// outside a receive loop. The kernel routes them.
type Sender interface {
	SendIP(pkt []byte) error
}

// Config configures an Engine.
type Config struct {
	// Services are what the engine runs, each with its Sources resolved.
	Services []spec.Service
	Jar      *cookie.Jar
	// Datapath is the data path's state; the engine is its only writer.
	Datapath Datapath
	Sender   Sender
	// PortMin-PortMax are the backend-leg source ports of each source
	// address toward each backend. PortQuiet is an extra rest between two
	// connections on a port; zero (the default) reuses a port at once,
	// which is safe toward a backend still in TIME_WAIT (see portPool).
	PortMin, PortMax uint16
	PortQuiet        time.Duration
	// ConnectTimeout bounds the backend handshake. Default 3s.
	ConnectTimeout time.Duration
	// MaxPending bounds the bytes held per connection before its splice is
	// in place; it is also the window the SYN-ACK announces. Default 64 KiB.
	MaxPending int
	// MaxConns bounds the connections the engine tracks (opening and
	// spliced); past it new connections are refused with a RST. Default
	// 1048576. Memory grows with the connections, not with the bound.
	MaxConns int
	// Flow expiry, conntrack-like. Defaults 5 days (conntrack's
	// established timeout), 10s, 10s.
	EstablishedTimeout, CloseTimeout, ResetTimeout time.Duration
	// LinkMTU, if non-zero, is the smallest MTU of the gateway's own
	// interfaces: the MSS a SYN-ACK announces and a backend SYN carries is
	// clamped to what fits in it, since the fast path forwards frames
	// between them as they are and cannot fragment.
	LinkMTU int
	// Handoff, if set, passes segments of connections the engine does not
	// know to peer gateways on the same link (see Handoff); nil drops them.
	Handoff Handoff
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Monotonic is the clock of the flow table's last-seen times; default
	// flow.Monotonic.
	Monotonic func() time.Duration
	Logger    *slog.Logger
}

// Engine is the handshake engine. Create it with New.
type Engine struct {
	cfg Config
	now func() time.Time
	log *slog.Logger
	// set is the services the engine runs now; Reconfigure swaps it
	// whole, and a receive loop reads it once per frame.
	set atomic.Pointer[serviceSet]
	// reconfMu serialises Reconfigure and the retirement of drained
	// services (see reload.go); it guards pools after Run started.
	reconfMu sync.Mutex
	// pools holds the source ports of each source address toward each
	// backend; services sharing both share the pool, across reloads too.
	// poolsMu guards it against SetBackends and Reconfigure.
	poolsMu sync.Mutex
	pools   map[poolKey]*portPool
	// timeouts are the expiry and connect timeouts, swapped whole by
	// Reconfigure.
	timeouts atomic.Pointer[Timeouts]
	// runCtx and legs let Reconfigure start the backend-leg loop of an
	// added service once Run runs; set by Run under reconfMu.
	runCtx  context.Context
	legs    *sync.WaitGroup
	conns   *connTable
	scan    flowScan
	started atomic.Bool
	// startMono is the flow clock at New: the age of a flow entry that
	// never saw a packet counts from it.
	startMono time.Duration
	// offloadReqs carries receive loops' requests to turn on a service's
	// cookie offload to Run.
	offloadReqs chan *service
	// draining holds the stand-in services of connections whose service
	// is gone or changed: adopted from an earlier engine (see Adopt) or
	// retired by a reload (see Reconfigure). Guarded by reconfMu.
	draining map[drainKey]*service
	// stopping is set by HandOver (the stop procedure): SYNs go to the data plane's cookies.
	stopping   atomic.Bool
	challenges rateLimit // challenge ACKs over all connections
	resets     recentResets
	handoffs   handoffBudget
	// entries are the service entries the engine wrote to the data path,
	// by listener (see datapath.go); dpMu guards them and orders the
	// writes.
	dpMu    sync.Mutex
	entries map[netip.AddrPort]spec.Entry
	// nextID is the data-path handle of the next service set up; guarded
	// by reconfMu after New.
	nextID uint32
}

// service is the engine's state of one spec.Service.
type service struct {
	spec.Service
	// id is the service's handle in the data path: its place in the
	// configuration when it was set up.
	id    uint32
	l     *queue.Listener
	offer atomic.Pointer[offer]
	st    serviceCounters
	// slots bounds the backend handshakes in flight; while they are all
	// taken, validated connections wait in the accept queue.
	slots      chan struct{}
	maxPending int
	maxMSS     uint16 // from Config.LinkMTU; 0: no clamp
	// pool is the backends and their lookup table, swapped whole under
	// poolMu; builtWeights is what the table was built from.
	pool         atomic.Pointer[pool]
	poolMu       sync.Mutex
	builtWeights []maglevEntry
	noBackend    atomic.Uint64 // SYNs and connections that found no usable backend
	// Cookie offload state: offloaded is what the data path does now
	// (see Engine.entry), wantOffload a receive loop's request.
	offloaded, wantOffload atomic.Bool
	offloadReqs            chan<- *service // the engine's, shared
	// connectTime is the backend handshake time of the legs that opened.
	connectTime metrics.Histogram
	// retired: a reload removed or changed the service; it takes no new
	// connection and finishes the handshakes it holds (see reload.go).
	retired atomic.Bool
	// stopLegs ends the service's backend-leg loop.
	stopLegs context.CancelFunc
	// live counts the connections (opening or spliced) that have this
	// service: a retired one leaves the data plane when none is left.
	live atomic.Int64
}

// offer is what a service's SYN-ACKs announce now (see mergeOffer).
type offer struct {
	spec.Offer
	// clamped: MSS was lowered to Config.LinkMTU.
	clamped bool
}

// ErrConfig wraps every configuration error of New.
var ErrConfig = errors.New("invalid engine config")

// New checks cfg and builds an engine; nothing runs until Run and Serve.
func New(cfg Config) (*Engine, error) {
	if cfg.Jar == nil || cfg.Datapath == nil || cfg.Sender == nil {
		return nil, fmt.Errorf("%w: Jar, Datapath and Sender are required", ErrConfig)
	}
	if len(cfg.Services) == 0 {
		return nil, fmt.Errorf("%w: no services", ErrConfig)
	}
	setDefault(&cfg.ConnectTimeout, spec.DefaultConnectTimeout)
	setDefault(&cfg.MaxPending, spec.DefaultMaxPending)
	setDefault(&cfg.MaxConns, spec.DefaultFlowsMax/2) // two flow entries per connection
	setDefault(&cfg.EstablishedTimeout, spec.DefaultEstablishedTimeout)
	setDefault(&cfg.CloseTimeout, spec.DefaultCloseTimeout)
	setDefault(&cfg.ResetTimeout, spec.DefaultResetTimeout)
	if cfg.PortMin == 0 {
		cfg.PortMin, cfg.PortMax = spec.DefaultPortMin, spec.DefaultPortMax
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Monotonic == nil {
		cfg.Monotonic = flow.Monotonic
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		cfg: cfg, now: cfg.Now, log: cfg.Logger,
		pools: make(map[poolKey]*portPool),
		conns: newConnTable(cfg.MaxConns),
		// One request per service can be pending: requestOffload sends
		// only when it flipped wantOffload. A reload may add services:
		// the slack keeps a full channel unlikely, and Run polls anyway.
		offloadReqs: make(chan *service, len(cfg.Services)+maxAddedServices),
		challenges:  rateLimit{per: challengeRate},
		entries:     make(map[netip.AddrPort]spec.Entry),
		startMono:   cfg.Monotonic(),
	}
	e.timeouts.Store(&Timeouts{
		Connect: cfg.ConnectTimeout, Established: cfg.EstablishedTimeout, Close: cfg.CloseTimeout, Reset: cfg.ResetTimeout,
	})
	set := &serviceSet{services: make(map[netip.AddrPort]*service), locals: make(map[netip.Addr]bool)}
	for i, s := range cfg.Services {
		if _, dup := set.services[s.Listen]; dup {
			return nil, fmt.Errorf("%w: service %s: listener %v used twice", ErrConfig, s.Name, s.Listen)
		}
		e.poolsMu.Lock()
		svc, err := e.newService(s, uint32(i))
		e.poolsMu.Unlock()
		if err != nil {
			return nil, err
		}
		set.add(svc)
	}
	e.nextID = uint32(len(cfg.Services))
	e.set.Store(set)
	return e, nil
}

// newService checks s and builds its engine state, its pool members taking
// their source ports from the engine's pools (shared with any service,
// earlier or retired, of the same source address and backend). e.poolsMu
// is held. id is its handle in the data path.
func (e *Engine) newService(s spec.Service, id uint32) (*service, error) {
	cfg := e.cfg
	if len(s.Sources) == 0 {
		return nil, fmt.Errorf("%w: service %s: no source address", ErrConfig, s.Name)
	}
	if len(s.Backends) == 0 {
		return nil, fmt.Errorf("%w: service %s: no backend", ErrConfig, s.Name)
	}
	if len(s.Backends) > maxMembers {
		return nil, fmt.Errorf("%w: service %s: %d backends, at most %d", ErrConfig, s.Name, len(s.Backends), maxMembers)
	}
	switch s.ProxyProtocol {
	case "", spec.ProxyOff, spec.ProxyV1, spec.ProxyV2:
	default:
		return nil, fmt.Errorf("%w: service %s: PROXY protocol %q", ErrConfig, s.Name, s.ProxyProtocol)
	}
	l, err := queue.NewListener(queue.Config{Limits: s.Limits, Cookies: s.Cookies, Overflow: s.OnOverflow})
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", s.Name, err)
	}
	svc := &service{Service: s, id: id, l: l, slots: make(chan struct{}, l.AcceptQueueCap()), maxPending: cfg.MaxPending, offloadReqs: e.offloadReqs}
	svc.maxMSS = linkMSS(cfg.LinkMTU, s.Listen.Addr().Is6() && !s.Listen.Addr().Is4In6())
	svc.st.init()
	svc.offer.Store(svc.mergeOffer(defaultBackendOptions(s.Backends[0].Addr.Addr().Is6())))
	members, err := e.newMembers(svc, nil, s.Backends)
	if err != nil {
		return nil, err
	}
	svc.storePool(members, e.now(), true)
	return svc, nil
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// defaultBackendOptions is assumed until a probe says otherwise: what a
// Linux backend on Ethernet offers.
func defaultBackendOptions(is6 bool) flow.SynOptions {
	mss := uint16(1460)
	if is6 {
		mss = 1440
	}
	return flow.SynOptions{MSS: mss, WScale: 7, SACK: true, Timestamps: true}
}

// linkMSS is the largest MSS whose segments, with IP and TCP headers
// without options, fit in mtu; zero when mtu is unknown.
func linkMSS(mtu int, is6 bool) uint16 {
	hdr := 40
	if is6 {
		hdr = 60
	}
	if mtu <= hdr {
		return 0
	}
	return uint16(min(mtu-hdr, 65535))
}

// mergeOffer lays the configured announce values over the backend's, and
// clamps the MSS to the gateway's interfaces. The window is what the
// engine holds for a connection before the splice: the client cannot send
// more until the backend's ACKs open the window further.
func (s *service) mergeOffer(b flow.SynOptions) *offer {
	o := &offer{Offer: spec.Offer{
		Window: uint16(min(s.maxPending, 65535)),
		MSS:    b.MSS, WScale: b.WScale, SACK: b.SACK, Timestamps: b.Timestamps, ECN: b.ECN,
	}}
	if a := s.Announce; a.MSS != nil {
		o.MSS = *a.MSS
	}
	if a := s.Announce; a.WindowScale != nil {
		o.WScale = *a.WindowScale
	}
	if a := s.Announce; a.SACK != nil {
		o.SACK = *a.SACK
	}
	if a := s.Announce; a.Timestamps != nil {
		o.Timestamps = *a.Timestamps
	}
	if o.MSS == 0 {
		o.MSS = 536
	}
	if s.maxMSS != 0 && o.MSS > s.maxMSS {
		o.MSS, o.clamped = s.maxMSS, true
	}
	return o
}

// SetBackendOptions records what every backend of the named service
// offers (from ProbeBackend); configured announce values still win. See
// SetMemberOptions for one backend of a pool.
func (e *Engine) SetBackendOptions(name string, b flow.SynOptions) error {
	s := e.service(name)
	if s == nil {
		return fmt.Errorf("no service %q", name)
	}
	for _, m := range s.pool.Load().members {
		m.opts.Store(&b)
	}
	s.refreshOffer()
	return nil
}

// Services lists the services in configuration order, as metrics sources.
func (e *Engine) Services() []metrics.ServiceSource {
	order := e.set.Load().order
	out := make([]metrics.ServiceSource, len(order))
	for i, s := range order {
		out[i] = s
	}
	return out
}

// Sources lists the backend-side source addresses of every service, for the
// data plane's "locals" table.
func (e *Engine) Sources() []netip.Addr {
	locals := e.set.Load().locals
	out := make([]netip.Addr, 0, len(locals))
	for a := range locals {
		out = append(out, a)
	}
	return out
}

// batch is how many frames a receive loop takes at once.
const batch = 64

// Serve runs one receive loop on port until ctx ends or the port fails.
// ifindex is the interface the port's queue belongs to; the fast path sends
// a spliced flow's packets out of it. Run one Serve per receive queue.
func (e *Engine) Serve(ctx context.Context, port pktio.Port, ifindex int) error {
	w := &worker{e: e, port: port, ifindex: ifindex, rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
	pkts := make([]pktio.Packet, batch)
	for ctx.Err() == nil {
		n, err := port.Receive(pkts)
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		if n == 0 {
			if _, err := port.Wait(50 * time.Millisecond); err != nil {
				return fmt.Errorf("wait: %w", err)
			}
			continue
		}
		w.handleBatch(pkts[:n])
	}
	return nil
}

// flowScanInterval is how often, at most, spliced flows are checked for
// expiry: each check reads two map entries per connection, and expiry
// timeouts are seconds to days, so a few seconds of lateness costs nothing.
const flowScanInterval = 5 * time.Second

// flowScanRate bounds the connections checked per second. A check is two
// flow lookups of about 2 µs each (bpf TestMillionFlows), so this keeps the
// scan near a tenth of a core: a million connections take a 40 s pass
// instead of 4 s of CPU every 5 s. Closed flows whose port is needed do not
// wait for the scan (see reclaim).
const flowScanRate = 25_000

// flowScan paces the expiry scan shard by shard; only Run touches it.
type flowScan struct {
	shard     int       // next shard to check
	passStart time.Time // when the current pass began
	tokens    float64   // connections that may be checked now
	last      time.Time
}

// scanFlows checks the next shards for expiry as the rate allows, starting
// a new pass at most every flowScanInterval.
func (e *Engine) scanFlows(now time.Time) {
	sc := &e.scan
	if sc.shard == 0 {
		if now.Sub(sc.passStart) < flowScanInterval {
			return
		}
		sc.passStart = now
	}
	sc.tokens = min(sc.tokens+flowScanRate*now.Sub(sc.last).Seconds(), flowScanRate*flowScanInterval.Seconds())
	sc.last = now
	for sc.tokens > 0 {
		sc.tokens -= float64(e.expireShard(sc.shard, now))
		sc.shard = (sc.shard + 1) % connShards
		if sc.shard == 0 {
			return
		}
	}
}

// Run drives the engine's timers until ctx ends: SYN-ACK retransmissions,
// cookie key rotation, backend legs and their timeouts, and flow expiry.
func (e *Engine) Run(ctx context.Context) error {
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("engine already running")
	}
	var wg sync.WaitGroup
	e.reconfMu.Lock()
	e.runCtx, e.legs = ctx, &wg
	for _, s := range e.set.Load().order {
		e.startLegs(s)
	}
	e.reconfMu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(orphanScanInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				e.expireOrphans()
			}
		}
	}()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var lastSecond time.Time
	for _, s := range e.set.Load().order {
		e.manageOffload(s, e.now())
	}
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case s := <-e.offloadReqs:
			if !s.retired.Load() {
				e.manageOffload(s, e.now())
			}
			continue
		case <-tick.C:
		}
		now := e.now()
		set := e.set.Load()
		for _, s := range set.order {
			s.refreshPool(now) // passive ejections end
		}
		for _, rs := range set.retiring {
			for _, s := range rs {
				s.refreshPool(now) // their accepted connections still open legs
			}
		}
		e.expireOpening(now)
		if now.Sub(lastSecond) >= time.Second {
			lastSecond = now
			e.cfg.Jar.Rotate(now)
			e.refreshCookieKey(now)
			for _, s := range set.order {
				e.expireHalfOpen(s, now)
				e.manageOffload(s, now)
			}
			e.tendRetired(set, now)
		}
		e.scanFlows(now)
	}
}
