package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/syngate/syngate/health"
	"github.com/syngate/syngate/proxy"
	"github.com/syngate/syngate/spec"
)

// checks runs the active checks of every backend of every service, from
// the service's first source address. A check result is counted; a change
// of state (after rise or fall results in a row) moves the backend in or
// out of its service's lookup table.
type checks struct {
	ctx     context.Context
	wg      *sync.WaitGroup
	e       *proxy.Engine
	log     *slog.Logger
	running map[checkKey]runningCheck
}

// runningCheck is one backend's checker and the config it runs with.
type runningCheck struct {
	cancel context.CancelFunc
	cfg    health.Config
}

type checkKey struct {
	service string
	backend netip.AddrPort
}

// sync starts the checks of members that have none, restarts those whose
// check changed and stops those of members no longer in any pool.
func (c *checks) sync(svcs []spec.Service) {
	want := map[checkKey]bool{}
	down := map[checkKey]bool{} // a restarted check goes on from the engine's verdict
	for _, sh := range c.e.Health() {
		for _, b := range sh.Backends {
			down[checkKey{sh.Name, b.Addr}] = !b.Up
		}
	}
	for _, s := range svcs {
		if s.HealthCheck.Type == spec.CheckOff {
			continue
		}
		hcfg := health.Config{HealthCheck: s.HealthCheck, Preamble: health.LocalProxyHeader(s.ProxyProtocol.Version())}
		for _, m := range s.Backends {
			k := checkKey{s.Name, m.Addr}
			want[k] = true
			if r, ok := c.running[k]; ok {
				if reflect.DeepEqual(r.cfg, hcfg) {
					continue
				}
				r.cancel()
			}
			ctx, cancel := context.WithCancel(c.ctx)
			c.running[k] = runningCheck{cancel, hcfg}
			c.start(ctx, s, m.Addr, hcfg, down[k])
		}
	}
	for k, r := range c.running {
		if !want[k] {
			r.cancel()
			delete(c.running, k)
		}
	}
}

func (c *checks) start(ctx context.Context, s spec.Service, addr netip.AddrPort, hcfg health.Config, down bool) {
	e, log := c.e, c.log
	ch := &health.Checker{Target: addr, Source: s.Sources[0], Config: hcfg, StartDown: down}
	ch.Report = func(r health.Result) {
		e.RecordCheck(s.Name, addr, r.OK, r.Latency)
		if r.Changed {
			log.Warn("backend health changed", "service", s.Name, "backend", addr, "up", r.Up, "err", r.Err)
			e.SetBackendUp(s.Name, addr, r.Up)
		} else if !r.OK {
			log.Debug("backend check failed", "service", s.Name, "backend", addr, "err", r.Err)
		}
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ch.Run(ctx)
	}()
}

// healthServer answers /healthz and /readyz from the engine's pools.
type healthServer struct {
	e       *proxy.Engine
	running atomic.Bool // the data plane is attached and the engine runs
}

// healthz reports the gateway's own health and every backend's state:
// 200 while the gateway runs, whatever its backends do (a gateway whose
// backends are down is not helped by a restart), 503 otherwise.
func (h *healthServer) healthz(w http.ResponseWriter, _ *http.Request) {
	body := h.report()
	if !h.running.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, "not running\n"+body)
		return
	}
	fmt.Fprint(w, "ok\n"+body)
}

// readyz is 200 when every service has a usable backend, else 503 with the
// services that have none: what a load balancer in front of several
// gateways should route by.
func (h *healthServer) readyz(w http.ResponseWriter, _ *http.Request) {
	var missing []string
	for _, s := range h.e.Health() {
		if s.Usable == 0 {
			missing = append(missing, s.Name)
		}
	}
	body := h.report()
	if !h.running.Load() || len(missing) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: no usable backend for %s\n%s", strings.Join(missing, ", "), body)
		return
	}
	fmt.Fprint(w, "ready\n"+body)
}

// report lists every service and backend, one line each.
func (h *healthServer) report() string {
	var b strings.Builder
	for _, s := range h.e.Health() {
		fmt.Fprintf(&b, "service %s: %d of %d backends usable\n", s.Name, s.Usable, len(s.Backends))
		for _, m := range s.Backends {
			fmt.Fprintf(&b, "  backend %s weight %d: %s\n", m.Addr, m.Weight, m.State())
		}
	}
	return b.String()
}
