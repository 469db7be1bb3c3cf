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

	"github.com/syngate/syngate/bpf"
	"github.com/syngate/syngate/cookie"
	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/metrics"
	"github.com/syngate/syngate/pktio"
	"github.com/syngate/syngate/queue"
)

// Service is one protected listener as the engine runs it.
type Service struct {
	Name    string
	Listen  netip.AddrPort
	Backend netip.AddrPort
	// Source is the address the backend leg comes from; it must be valid
	// (the caller resolves "from the route" before New).
	Source netip.Addr
	Queue  queue.Config
	// Announce holds what the SYN-ACK offers. Fields left nil are taken
	// from the backend's options, set with SetBackendOptions.
	Announce Announce
}

// Announce is a service's configured SYN-ACK options; nil means learned.
type Announce struct {
	MSS         *uint16
	WindowScale *uint8
	SACK        *bool
	Timestamps  *bool
}

// Sender sends IP packets (no link-layer header) that the engine originates
// outside a receive loop. The kernel routes them.
type Sender interface {
	SendIP(pkt []byte) error
}

// Config configures an Engine.
type Config struct {
	Services []Service
	Jar      *cookie.Jar
	Flows    FlowTable
	Sender   Sender
	// PortMin-PortMax are the backend-leg source ports, PortQuiet their rest
	// between two connections.
	PortMin, PortMax uint16
	PortQuiet        time.Duration
	// ConnectTimeout bounds the backend handshake. Default 3s.
	ConnectTimeout time.Duration
	// MaxPending bounds the bytes held per connection before its splice is
	// in place; it is also the window the SYN-ACK announces. Default 64 KiB.
	MaxPending int
	// MaxConns bounds the connections the engine tracks (opening and
	// spliced). Default 131072.
	MaxConns int
	// Flow expiry, conntrack-like. Defaults 2h, 10s, 10s.
	EstablishedTimeout, CloseTimeout, ResetTimeout time.Duration
	// Offload, if set, lets the data plane answer SYNs with cookies (see
	// CookieOffload); nil keeps every SYN in the engine.
	Offload CookieOffload
	// Handoff, if set, passes segments of connections the engine does not
	// know to peer gateways on the same link (see Handoff); nil drops them.
	Handoff Handoff
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Monotonic is the clock of the flow table's last-seen times; default
	// bpf.Monotonic.
	Monotonic func() time.Duration
	Logger    *slog.Logger
}

// Engine is the handshake engine. Create it with New.
type Engine struct {
	cfg      Config
	now      func() time.Time
	log      *slog.Logger
	services map[netip.AddrPort]*service
	order    []*service
	// sources maps each backend-side source address to its port pool, so a
	// packet to one of them is recognised as the backend's.
	sources map[netip.Addr]*portPool
	conns   *connTable
	started atomic.Bool
	// offloadReqs carries receive loops' requests to turn on a service's
	// cookie offload to Run.
	offloadReqs chan *service
	handoffs    handoffBudget
}

// service is the engine's state of one Service.
type service struct {
	Service
	l     *queue.Listener
	offer atomic.Pointer[Offer]
	st    serviceCounters
	// slots bounds the backend handshakes in flight; while they are all
	// taken, validated connections wait in the accept queue.
	slots      chan struct{}
	maxPending int
	// Cookie offload state: offloaded is what the data plane does now,
	// wantOffload a receive loop's request, offloadedOffer what it
	// announces (only Run touches it).
	offloaded, wantOffload atomic.Bool
	offloadReqs            chan<- *service // the engine's, shared
	offloadedOffer         *Offer
}

// Offer is what a service's SYN-ACKs announce: the backend's options with
// the configured announce values laid over them.
type Offer struct {
	MSS        uint16
	WScale     uint8 // flow.NoWScale: no window scaling
	SACK       bool
	Timestamps bool
}

// ErrConfig wraps every configuration error of New.
var ErrConfig = errors.New("invalid engine config")

// New checks cfg and builds an engine; nothing runs until Run and Serve.
func New(cfg Config) (*Engine, error) {
	if cfg.Jar == nil || cfg.Flows == nil || cfg.Sender == nil {
		return nil, fmt.Errorf("%w: Jar, Flows and Sender are required", ErrConfig)
	}
	if len(cfg.Services) == 0 {
		return nil, fmt.Errorf("%w: no services", ErrConfig)
	}
	setDefault(&cfg.ConnectTimeout, 3*time.Second)
	setDefault(&cfg.MaxPending, 64<<10)
	setDefault(&cfg.MaxConns, 131072)
	setDefault(&cfg.EstablishedTimeout, 2*time.Hour)
	setDefault(&cfg.CloseTimeout, 10*time.Second)
	setDefault(&cfg.ResetTimeout, 10*time.Second)
	if cfg.PortMin == 0 {
		cfg.PortMin, cfg.PortMax = 16384, 32767
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Monotonic == nil {
		cfg.Monotonic = bpf.Monotonic
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		cfg: cfg, now: cfg.Now, log: cfg.Logger,
		services: make(map[netip.AddrPort]*service),
		sources:  make(map[netip.Addr]*portPool),
		conns:    newConnTable(cfg.MaxConns),
		// One request per service can be pending: requestOffload sends
		// only when it flipped wantOffload.
		offloadReqs: make(chan *service, len(cfg.Services)),
	}
	for _, s := range cfg.Services {
		if !s.Source.IsValid() || s.Source.Is4() != s.Backend.Addr().Is4() {
			return nil, fmt.Errorf("%w: service %s: source %v does not fit backend %v", ErrConfig, s.Name, s.Source, s.Backend)
		}
		if _, dup := e.services[s.Listen]; dup {
			return nil, fmt.Errorf("%w: service %s: listener %v used twice", ErrConfig, s.Name, s.Listen)
		}
		l, err := queue.NewListener(s.Queue)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", s.Name, err)
		}
		svc := &service{Service: s, l: l, slots: make(chan struct{}, l.AcceptQueueCap()), maxPending: cfg.MaxPending, offloadReqs: e.offloadReqs}
		svc.st.init()
		svc.offer.Store(svc.mergeOffer(defaultBackendOptions(s.Backend.Addr().Is6())))
		e.services[s.Listen] = svc
		e.order = append(e.order, svc)
		if _, ok := e.sources[s.Source]; !ok {
			p, err := newPortPool(cfg.PortMin, cfg.PortMax, cfg.PortQuiet)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrConfig, err)
			}
			e.sources[s.Source] = p
		}
	}
	return e, nil
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

// mergeOffer lays the configured announce values over the backend's.
func (s *service) mergeOffer(b flow.SynOptions) *Offer {
	o := &Offer{MSS: b.MSS, WScale: b.WScale, SACK: b.SACK, Timestamps: b.Timestamps}
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
	return o
}

// SetBackendOptions records what the named service's backend offers (from
// ProbeBackend); configured announce values still win.
func (e *Engine) SetBackendOptions(name string, b flow.SynOptions) error {
	for _, s := range e.order {
		if s.Name == name {
			s.offer.Store(s.mergeOffer(b))
			return nil
		}
	}
	return fmt.Errorf("no service %q", name)
}

// Services lists the services in configuration order, as metrics sources.
func (e *Engine) Services() []metrics.ServiceSource {
	out := make([]metrics.ServiceSource, len(e.order))
	for i, s := range e.order {
		out[i] = s
	}
	return out
}

// Sources lists the backend-side source addresses with their port range, for
// the data plane's "locals" table.
func (e *Engine) Sources() []netip.Addr {
	out := make([]netip.Addr, 0, len(e.sources))
	for a := range e.sources {
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

// flowScanInterval is how often spliced flows are checked for expiry: each
// check reads two map entries per connection, and expiry timeouts are
// seconds to hours, so a few seconds of lateness costs nothing.
const flowScanInterval = 5 * time.Second

// Run drives the engine's timers until ctx ends: SYN-ACK retransmissions,
// cookie key rotation, backend legs and their timeouts, and flow expiry.
func (e *Engine) Run(ctx context.Context) error {
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("engine already running")
	}
	var wg sync.WaitGroup
	for _, s := range e.order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.openBackendLegs(ctx, s)
		}()
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var lastSecond, lastFlows time.Time
	for _, s := range e.order {
		e.manageOffload(s, e.now())
	}
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case s := <-e.offloadReqs:
			e.manageOffload(s, e.now())
			continue
		case <-tick.C:
		}
		now := e.now()
		e.expireOpening(now)
		if now.Sub(lastSecond) >= time.Second {
			lastSecond = now
			e.cfg.Jar.Rotate(now)
			for _, s := range e.order {
				e.expireHalfOpen(s, now)
				e.manageOffload(s, now)
			}
		}
		if now.Sub(lastFlows) >= flowScanInterval {
			lastFlows = now
			e.expireFlows(now)
		}
	}
}
