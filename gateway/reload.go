package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/syngate/syngate/bgp"
	"github.com/syngate/syngate/bpf"
	"github.com/syngate/syngate/config"
	"github.com/syngate/syngate/control"
	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/metrics"
	"github.com/syngate/syngate/proxy"
	"github.com/syngate/syngate/spec"
)

// restartKey is a config key a running syngate cannot change; a reload
// that changes one is refused, naming it.
type restartKey struct {
	name string
	get  func(*config.Config) any
}

// restartKeys are the keys only a restart applies, and why:
//   - interfaces: the AF_XDP sockets, their receive loops and the XDP
//     attachments are set up once, with the flow table's redirect ports;
//   - secret_file, syn.key_rotation: the cookie keys; a new secret would
//     invalidate the cookies in flight;
//   - bpffs: where the data path is pinned and locked;
//   - metrics.listen, control.*: the listeners (a reload request itself
//     arrives on the control socket);
//   - backend.ports, backend.port_quiet_time: the source port pools that
//     live connections hold ports of, and the XDP program's local range;
//   - backend.max_pending: the window every SYN-ACK announces and the
//     bound of data held per connection, shared by every service;
//   - flows.max: the flow table's size (a restart migrates the table);
//   - bgp.local_asn, bgp.router_id, bgp.listen_port, bgp.restart_time:
//     GoBGP takes its global settings once (StartBgp), and the restart
//     time is announced in every session's OPEN; with peers only;
//   - bgp.peers from none to some or back: the speaker (and the VIPs'
//     announcer) starts once, at start, when there are peers;
//   - peers: the peer links of the hand-off.
var restartKeys = []restartKey{
	{"interfaces", func(c *config.Config) any { return c.Interfaces }},
	{"secret_file", func(c *config.Config) any { return c.SecretFile }},
	{"bpffs", func(c *config.Config) any { return c.BPFFS }},
	{"metrics.listen", func(c *config.Config) any { return c.Metrics.Listen }},
	{"control.socket", func(c *config.Config) any { return c.Control.Socket }},
	{"control.mode", func(c *config.Config) any { return c.Control.Mode }},
	{"syn.key_rotation", func(c *config.Config) any { return c.SYN.KeyRotation }},
	{"backend.ports", func(c *config.Config) any { return [2]uint16{c.Backend.PortMin, c.Backend.PortMax} }},
	{"backend.port_quiet_time", func(c *config.Config) any { return c.Backend.PortQuietTime }},
	{"backend.max_pending", func(c *config.Config) any { return c.Backend.MaxPending }},
	{"flows.max", func(c *config.Config) any { return c.Flows.Max }},
	// The BGP speaker's globals and the peer links are set up once at
	// start; its peers are reloaded (see reloadBGP).
	{"bgp.local_asn", bgpGlobal(func(b config.BGP) any { return b.LocalASN })},
	{"bgp.router_id", bgpGlobal(func(b config.BGP) any { return b.RouterID })},
	{"bgp.listen_port", bgpGlobal(func(b config.BGP) any { return b.ListenPort })},
	{"bgp.restart_time", bgpGlobal(func(b config.BGP) any { return b.RestartTime })},
	{bgpOnOff, func(c *config.Config) any { return len(c.BGP.Peers) > 0 }},
	{"peers", func(c *config.Config) any { return c.Peers }},
}

// bgpOnOff names the restart key of turning BGP on or off.
const bgpOnOff = "bgp.peers (turning BGP on or off)"

// bgpGlobal reads a bgp global setting, which matters only with peers
// (no peers, no speaker).
func bgpGlobal(get func(config.BGP) any) func(*config.Config) any {
	return func(c *config.Config) any {
		if len(c.BGP.Peers) == 0 {
			return nil
		}
		return get(c.BGP)
	}
}

// reloadable is c without what a reload applies (the services and the
// syn.* values they are built from, filters, timeouts, probe interval,
// the bgp peers; the bgp globals are restart keys, compared there):
// what is left must not differ between two configs, or the reload is
// refused. It catches keys neither applied nor listed in restartKeys.
func reloadable(c *config.Config) config.Config {
	x := *c
	x.Services = nil
	x.SYN = config.SYN{KeyRotation: c.SYN.KeyRotation}
	x.Filters = config.Filters{}
	x.Flows = config.Flows{Max: c.Flows.Max}
	x.Backend.ConnectTimeout, x.Backend.ProbeInterval = 0, 0
	x.BGP = config.BGP{}
	return x
}

// changedRestartKeys names the restart-only keys whose values differ.
func changedRestartKeys(cur, next *config.Config) []string {
	// Turning BGP on or off names only that: the globals matter only to a
	// running speaker.
	onOff := (len(cur.BGP.Peers) > 0) != (len(next.BGP.Peers) > 0)
	var out []string
	for _, k := range restartKeys {
		if onOff && strings.HasPrefix(k.name, "bgp.") && k.name != bgpOnOff {
			continue
		}
		if !reflect.DeepEqual(k.get(cur), k.get(next)) {
			out = append(out, k.name)
		}
	}
	return out
}

// ErrRestartRequired is wrapped by a reload refused for a key only a
// restart applies.
var ErrRestartRequired = errors.New("restart required")

// liveKeys are the other top-level values a reload applies, besides the
// services and the syn.* settings they are built from; reported by name.
var liveKeys = []restartKey{
	{"filters", func(c *config.Config) any { return c.Filters }},
	{"flows.established_timeout", func(c *config.Config) any { return c.Flows.EstablishedTimeout }},
	{"flows.close_timeout", func(c *config.Config) any { return c.Flows.CloseTimeout }},
	{"flows.reset_timeout", func(c *config.Config) any { return c.Flows.ResetTimeout }},
	{"backend.connect_timeout", func(c *config.Config) any { return c.Backend.ConnectTimeout }},
	{"backend.probe_interval", func(c *config.Config) any { return c.Backend.ProbeInterval }},
	{"bgp.peers", func(c *config.Config) any { return c.BGP.Peers }},
}

// reloader applies config files to the running gateway, one at a time.
// It owns the running config and service list after start.
type reloader struct {
	mu     sync.Mutex
	path   string
	cfg    *config.Config
	svcs   []spec.Service
	dp     *bpf.Dataplane
	e      *proxy.Engine
	reg    *metrics.Registry
	health *backendHealth
	// checks runs the backends' active checks; a reload syncs them to
	// the new pools.
	checks *checks
	// ann, with BGP, announces the services' VIPs; speaker is the BGP
	// speaker (nil without peers).
	ann     *announcer
	speaker bgpUpdater
	log     *slog.Logger
	// ctx bounds the probes of a reload.
	ctx context.Context
}

// current returns the running config and services.
func (r *reloader) current() (*config.Config, []spec.Service) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg, r.svcs
}

// reload re-reads the config file and applies it, or nothing of it.
// trigger names what asked (SIGHUP, the control socket) for the log.
func (r *reloader) reload(trigger string) (control.ReloadResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var res control.ReloadResult
	next, err := config.Load(r.path)
	if err == nil {
		res, err = r.apply(next)
	}
	if err != nil {
		r.reg.ReloadFailed()
		r.log.Error("reload refused: the running configuration stays", "trigger", trigger, "file", r.path, "err", err)
		res.Error = err.Error()
		return res, err
	}
	r.reg.ReloadSucceeded(time.Now())
	r.log.Info("configuration reloaded", "trigger", trigger, "file", r.path,
		"added", res.Added, "changed", res.Changed, "repooled", res.Repooled, "removed", res.Removed, "unchanged", res.Unchanged, "applied", res.Applied)
	return res, nil
}

// apply makes next the running config. Everything that can refuse it is
// checked, and the backends of added and changed services probed, before
// anything changes; the only steps that can still fail (a new XDP program,
// the engine's own checks) are undone if a later one fails. r.mu is held.
func (r *reloader) apply(next *config.Config) (control.ReloadResult, error) {
	var res control.ReloadResult
	if keys := changedRestartKeys(r.cfg, next); len(keys) > 0 {
		why := ""
		if slices.ContainsFunc(keys, func(k string) bool { return strings.HasPrefix(k, "bgp.") }) {
			why = " (the BGP speaker takes its local ASN, router ID, listen port and restart time only when it starts, and starts only with peers; its peers reload)"
		}
		return res, fmt.Errorf("%w: %s cannot change while syngate runs%s (the running values stay); restart syngate to apply %s (a restart is hitless: spliced connections survive it and new ones are answered throughout)",
			ErrRestartRequired, strings.Join(keys, ", "), why, pronoun(len(keys)))
	}
	if !reflect.DeepEqual(reloadable(r.cfg), reloadable(next)) {
		return res, fmt.Errorf("%w: a key this syngate cannot reload changed; restart syngate to apply it", ErrRestartRequired)
	}
	svcs, err := resolveSources(next.Services)
	if err != nil {
		return res, err
	}
	learned := r.probeNew(next, svcs)

	if err := reloadBGP(r.speaker, r.cfg.BGP, next.BGP); err != nil {
		return res, err
	}
	undoBGP := func(err error) error {
		return errors.Join(err, reloadBGP(r.speaker, next.BGP, r.cfg.BGP))
	}
	oldFilters := r.dp.Filters()
	filters := dataplaneFilters(next)
	if filters != oldFilters {
		if err := r.dp.SetFilters(filters); err != nil {
			return res, undoBGP(err)
		}
	}
	// The engine writes the data path's side of its services (entries,
	// source addresses, removed listeners once their connections end).
	st, err := r.e.Reconfigure(svcs, proxy.Timeouts{
		Connect: next.Backend.ConnectTimeout, Established: next.Flows.EstablishedTimeout,
		Close: next.Flows.CloseTimeout, Reset: next.Flows.ResetTimeout,
	}, learned)
	if err != nil {
		if filters != oldFilters {
			if ferr := r.dp.SetFilters(oldFilters); ferr != nil {
				err = errors.Join(err, fmt.Errorf("restore the filters: %w", ferr))
			}
		}
		return res, undoBGP(err)
	}
	r.reg.SetServices(r.e.Services())
	if r.ann != nil {
		r.ann.setServices(next.Services) // the VIPs announced follow
	}
	for _, k := range liveKeys {
		if !reflect.DeepEqual(k.get(r.cfg), k.get(next)) {
			res.Applied = append(res.Applied, k.name)
		}
	}
	if r.checks != nil {
		// Checks of new members start, those of members gone stop, those
		// whose check changed restart from the engine's verdict.
		r.checks.sync(svcs)
	}
	r.cfg, r.svcs = next, svcs
	res.Added, res.Changed, res.Repooled, res.Removed, res.Unchanged = st.Added, st.Changed, st.Repooled, st.Removed, st.Unchanged
	return res, nil
}

// bgpUpdater is what a reload needs of the BGP speaker (*bgp.Speaker).
type bgpUpdater interface {
	Update(bgp.Config) error
}

// reloadBGP gives the speaker the bgp section's peers (added, removed,
// changed: timers, password, port, ASN; an unchanged peer keeps its
// session). The globals and turning BGP on or off are restart keys,
// refused before. If the speaker cannot take the new peers, it is given
// the old ones back and the reload is refused.
func reloadBGP(sp bgpUpdater, cur, next config.BGP) error {
	if sp == nil || reflect.DeepEqual(cur, next) {
		return nil
	}
	if err := sp.Update(bgpConfig(next)); err != nil {
		if rerr := sp.Update(bgpConfig(cur)); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restore the running peers: %w", rerr))
		}
		return fmt.Errorf("reload the bgp peers: %w", err)
	}
	return nil
}

func pronoun(n int) string {
	if n == 1 {
		return "it"
	}
	return "them"
}

// dataplaneFilters is the config's XDP filters.
func dataplaneFilters(cfg *config.Config) bpf.Filters {
	return bpf.Filters{
		DropSYNPayload: cfg.Filters.DropSynPayload, DropBadFlags: cfg.Filters.DropBadFlags,
		SYNRateLimit: bpf.RateLimit{
			PerSecond: uint64(cfg.Filters.RateLimit), Burst: uint64(cfg.Filters.RateBurst),
			Prefix4: cfg.Filters.PrefixLenV4, Prefix6: cfg.Filters.PrefixLenV6,
		},
	}
}

// probeNew learns the options of the backends next adds to a service
// (new services, new members of a pool, a service moved to other
// backends), all at once, before they take a connection: a connection's
// announced window scale must not change under it. A failed probe leaves
// a member to the defaults (or, for a backend the service had before, to
// what was learned of it) until the next probe.
func (r *reloader) probeNew(next *config.Config, svcs []spec.Service) map[string]map[netip.AddrPort]flow.SynOptions {
	type target struct {
		s    spec.Service
		addr netip.AddrPort
	}
	var probe []target
	for _, s := range svcs {
		i := slices.IndexFunc(r.svcs, func(o spec.Service) bool { return o.Listen == s.Listen })
		for _, m := range s.Backends {
			if i < 0 || !slices.ContainsFunc(r.svcs[i].Backends, func(o spec.Backend) bool { return o.Addr == m.Addr }) {
				probe = append(probe, target{s, m.Addr})
			}
		}
	}
	var (
		mu  sync.Mutex
		out = make(map[string]map[netip.AddrPort]flow.SynOptions)
		wg  sync.WaitGroup
	)
	for _, t := range probe {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if o, ok := probeMember(r.ctx, next, t.s, t.addr, r.log, r.health); ok {
				mu.Lock()
				if out[t.s.Name] == nil {
					out[t.s.Name] = make(map[netip.AddrPort]flow.SynOptions)
				}
				out[t.s.Name][t.addr] = o
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// serveReload answers POST /v1/reload on the control socket.
func (r *reloader) serveReload(w http.ResponseWriter, _ *http.Request) {
	res, _ := r.reload("control socket")
	control.ServeReload(w, res)
}
