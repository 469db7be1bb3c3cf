package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syngate/syngate/bgp"
	"github.com/syngate/syngate/bpf"
	"github.com/syngate/syngate/config"
	"github.com/syngate/syngate/metrics"
	"github.com/syngate/syngate/proxy"
	"github.com/syngate/syngate/spec"
)

// Health says whether a service can take new connections. Today the
// backend probes answer it (backendHealth); health checks proper will
// implement it later.
type Health interface {
	Healthy(service string) bool
}

// announcer decides which VIPs the BGP speaker announces: a VIP while at
// least one service on it is healthy, none while draining.
type announcer struct {
	sp       *bgp.Speaker
	mu       sync.Mutex // guards services, which a reload replaces
	services []spec.Service
	health   Health
	log      *slog.Logger
	draining atomic.Bool
	kick     chan struct{}
}

func newAnnouncer(sp *bgp.Speaker, services []spec.Service, h Health, log *slog.Logger) *announcer {
	return &announcer{sp: sp, services: services, health: h, log: log, kick: make(chan struct{}, 1)}
}

// want is the set to announce now.
func (a *announcer) want() []netip.Prefix {
	if a.draining.Load() {
		return nil
	}
	a.mu.Lock()
	services := a.services
	a.mu.Unlock()
	seen := map[netip.Prefix]bool{}
	var out []netip.Prefix
	for _, s := range services {
		p := netip.PrefixFrom(s.Listen.Addr(), s.Listen.Addr().BitLen())
		if seen[p] || !a.health.Healthy(s.Name) {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out
}

// setServices replaces the services whose VIPs are announced (a reload)
// and announces the new set at once.
func (a *announcer) setServices(svcs []spec.Service) {
	a.mu.Lock()
	a.services = svcs
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// drain withdraws every VIP from now on.
func (a *announcer) drain() {
	a.draining.Store(true)
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// run keeps the announced set equal to want until ctx ends: at once when
// kicked (drain), else every second (health changes).
func (a *announcer) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if err := a.sp.Announce(a.want()); err != nil {
			a.log.Warn("bgp announce", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-t.C:
		}
	}
}

// keptForwarding reports whether an earlier syngate left its data path
// attached (a pinned XDP or TC link), so that it forwarded the spliced
// flows while no speaker ran: the BGP speaker then restarts as RFC 4724's
// restarting speaker, and routers keep this gateway's routes meanwhile.
func keptForwarding(dp *bpf.Dataplane, log *slog.Logger) bool {
	xdp, errX := dp.PinnedInterfaces()
	tc, errT := dp.PinnedTCInterfaces()
	if err := errors.Join(errX, errT); err != nil {
		log.Warn("list pinned links: BGP sessions open as after a cold start", "err", err)
		return false
	}
	return len(xdp)+len(tc) > 0
}

// bgpConfig turns the file's bgp section into the speaker's config.
func bgpConfig(c config.BGP) bgp.Config {
	out := bgp.Config{LocalASN: c.LocalASN, RouterID: c.RouterID, ListenPort: c.ListenPort, RestartTime: c.RestartTime}
	for _, p := range c.Peers {
		out.Peers = append(out.Peers, bgp.Peer{
			Address: p.Address, ASN: p.ASN, Port: p.Port, Password: p.Password,
			HoldTime: p.HoldTime, Keepalive: p.Keepalive, ConnectRetry: p.ConnectRetry,
		})
	}
	return out
}

// scaleoutSource is metrics.ScaleoutSource for a running gateway.
type scaleoutSource struct {
	sp       *bgp.Speaker // nil without BGP
	draining *atomic.Bool
	e        *proxy.Engine
}

func (s scaleoutSource) Draining() bool       { return s.draining.Load() }
func (s scaleoutSource) ConnectionsOpen() int { return s.e.Stats().Conns }

func (s scaleoutSource) BGP() ([]metrics.BGPPeer, []netip.Prefix) {
	if s.sp == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st := s.sp.Status(ctx)
	peers := make([]metrics.BGPPeer, 0, len(st.Peers))
	for _, p := range st.Peers {
		peers = append(peers, metrics.BGPPeer{Address: p.Address, State: p.State, Established: p.Established})
	}
	return peers, st.Announced
}

// poolHealth is the default Health: a service can take traffic while one
// of its backends can take new connections (up by the active checks, not
// ejected by the passive ones, weight above 0).
type poolHealth struct{ e *proxy.Engine }

// Healthy implements Health.
func (p poolHealth) Healthy(service string) bool {
	for _, s := range p.e.Health() {
		if s.Name == service {
			return s.Usable > 0
		}
	}
	return false
}
