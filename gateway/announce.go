package gateway

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/syngate/syngate/bgp"
	"github.com/syngate/syngate/config"
)

// Health says whether a service can take new connections. Today the
// backend probe answers it; health checks proper will implement it later.
type Health interface {
	Healthy(service string) bool
}

// probeHealth is Health from the backend probes: a service is healthy
// while its last probe succeeded.
type probeHealth struct {
	mu sync.Mutex
	ok map[string]bool
}

func newProbeHealth() *probeHealth { return &probeHealth{ok: map[string]bool{}} }

func (h *probeHealth) set(service string, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ok[service] = ok
}

// Healthy implements Health.
func (h *probeHealth) Healthy(service string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ok[service]
}

// announcer decides which VIPs the BGP speaker announces: a VIP while at
// least one service on it is healthy, none while draining.
type announcer struct {
	sp       *bgp.Speaker
	services []config.Service
	health   Health
	log      *slog.Logger
	draining atomic.Bool
	kick     chan struct{}
}

func newAnnouncer(sp *bgp.Speaker, services []config.Service, h Health, log *slog.Logger) *announcer {
	return &announcer{sp: sp, services: services, health: h, log: log, kick: make(chan struct{}, 1)}
}

// want is the set to announce now.
func (a *announcer) want() []netip.Prefix {
	if a.draining.Load() {
		return nil
	}
	seen := map[netip.Prefix]bool{}
	var out []netip.Prefix
	for _, s := range a.services {
		p := netip.PrefixFrom(s.Listen.Addr(), s.Listen.Addr().BitLen())
		if seen[p] || !a.health.Healthy(s.Name) {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out
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

// scaleoutCollector exports the speaker's sessions and prefixes, and the
// drain state with the connections still open.
type scaleoutCollector struct {
	sp       *bgp.Speaker // nil without BGP
	draining *atomic.Bool
	open     func() int
}

var (
	dBGPSession   = prometheus.NewDesc("syngate_bgp_session_established", "1 while the BGP session with the peer is established.", []string{"peer", "state"}, nil)
	dBGPAnnounced = prometheus.NewDesc("syngate_bgp_announced", "1 for every prefix the BGP speaker announces.", []string{"prefix"}, nil)
	dBGPPrefixes  = prometheus.NewDesc("syngate_bgp_announced_prefixes", "Prefixes the BGP speaker announces.", nil, nil)
	dDraining     = prometheus.NewDesc("syngate_draining", "1 after `syngate drain`: VIPs withdrawn, existing connections still served.", nil, nil)
	dConnsOpen    = prometheus.NewDesc("syngate_connections_open", "Connections the engine tracks (opening and spliced); what a drain waits for.", nil, nil)
)

func (c *scaleoutCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dBGPSession, dBGPAnnounced, dBGPPrefixes, dDraining, dConnsOpen} {
		ch <- d
	}
}

func (c *scaleoutCollector) Collect(ch chan<- prometheus.Metric) {
	d := 0.0
	if c.draining.Load() {
		d = 1
	}
	ch <- prometheus.MustNewConstMetric(dDraining, prometheus.GaugeValue, d)
	ch <- prometheus.MustNewConstMetric(dConnsOpen, prometheus.GaugeValue, float64(c.open()))
	if c.sp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st := c.sp.Status(ctx)
	for _, p := range st.Peers {
		v := 0.0
		if p.Established {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(dBGPSession, prometheus.GaugeValue, v, p.Address.String(), p.State)
	}
	for _, p := range st.Announced {
		ch <- prometheus.MustNewConstMetric(dBGPAnnounced, prometheus.GaugeValue, 1, p.String())
	}
	ch <- prometheus.MustNewConstMetric(dBGPPrefixes, prometheus.GaugeValue, float64(len(st.Announced)))
}
