// Package gateway assembles a running syngate from a validated config: it
// loads and attaches the XDP program, opens one AF_XDP socket per receive
// queue and runs an engine loop per socket on the queue's CPU, learns the
// backends' TCP options, announces the VIPs over BGP while their backends
// answer, and serves /metrics and /healthz.
//
//	cfg, _ := config.Load(path)
//	err := gateway.Run(ctx, cfg, gateway.Options{Version: version})
//
// Run returns when ctx ends, after detaching everything it attached.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/syngate/syngate/afxdp"
	"github.com/syngate/syngate/bgp"
	"github.com/syngate/syngate/bpf"
	"github.com/syngate/syngate/config"
	"github.com/syngate/syngate/control"
	"github.com/syngate/syngate/cookie"
	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/health"
	"github.com/syngate/syngate/metrics"
	"github.com/syngate/syngate/proxy"
	"github.com/syngate/syngate/spec"
)

// Options are Run's knobs that are not part of the config file.
type Options struct {
	// Version and Revision identify the binary in the build_info metric
	// (see package buildinfo).
	Version, Revision string
	Logger            *slog.Logger
	// ReadyFile, when set, is written once traffic is being handled, so a
	// supervisor or test knows when to start.
	ReadyFile string
	// Unpin removes the pinned maps on exit (for labs: a production restart
	// wants them kept so spliced flows survive).
	Unpin bool
	// Drain, when it receives, starts a drain: the VIPs are withdrawn
	// from the BGP peers and new connections stop coming, while the
	// connections already open keep being served (SIGUSR1, the fallback
	// of `syngate drain`; the control socket's POST /v1/drain does the
	// same). Not the hand-over every stop does (proxy.Engine.HandOver).
	Drain <-chan struct{}
	// Restart, when it receives, ends Run like ctx does but leaves the BGP
	// routes with the peers, which keep them for the graceful-restart time
	// while the next syngate starts (SIGUSR2). Ending ctx does the same
	// when the data path stays attached, else withdraws them (see
	// withdrawOnStop).
	Restart <-chan struct{}
	// Health decides which services can take traffic, so which VIPs are
	// announced; nil means the pools decide (a service is healthy while
	// one of its backends can take new connections).
	Health Health
	// ConfigPath is the file cfg came from: a reload re-reads it. Empty
	// disables reloads.
	ConfigPath string
	// Reload carries reload requests (cmd/syngate sends one on SIGHUP);
	// each gets the outcome on its channel. Reloads also come over the
	// control socket (POST /v1/reload).
	Reload <-chan ReloadRequest
}

// ReloadRequest asks a running gateway to re-read its config file and
// apply it; Done, if set, gets the outcome (nil: applied).
type ReloadRequest struct {
	Trigger string
	Done    chan<- error
}

// Run runs the gateway until ctx ends.
//
// With pinning (config bpffs), Run takes over what an earlier syngate left
// in the pin directory: its maps (spliced connections keep flowing and are
// adopted by the engine), and its XDP links, whose program is replaced
// atomically once this engine is ready. On the way out it leaves the data
// path attached (see bpf.Dataplane.Close) unless Options.Unpin.
func Run(ctx context.Context, cfg *config.Config, opts Options) (err error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	started := time.Now()
	if err := bpf.CheckCapabilities(); err != nil {
		return err
	}
	if err := checkPortRange(cfg.Backend.PortMin, cfg.Backend.PortMax); err != nil {
		return err
	}
	secret, err := cookie.LoadOrCreateSecret(cfg.SecretFile)
	if err != nil {
		return err
	}
	jar, err := cookie.NewJar(secret, cookie.Config{Rotation: cfg.SYN.KeyRotation})
	if err != nil {
		return err
	}
	services, err := resolveSources(cfg.Services)
	if err != nil {
		return err
	}

	pin := cfg.BPFFS
	ephemeral := false // the pins end with this process (ip netns exec)
	if pin == "off" {
		pin = ""
	} else if ephemeral, err = prepareBPFFS(pin, log); err != nil {
		return err
	}
	// Load takes the pin directory's lock before it reads or writes
	// anything there: a second instance fails here, harmlessly.
	dp, err := bpf.Load(bpf.Config{
		PinPath:        pin,
		DropSYNPayload: cfg.Filters.DropSynPayload,
		DropBadFlags:   cfg.Filters.DropBadFlags,
		SYNRateLimit: bpf.RateLimit{
			PerSecond: uint64(cfg.Filters.RateLimit), Burst: uint64(cfg.Filters.RateBurst),
			Prefix4: cfg.Filters.PrefixLenV4, Prefix6: cfg.Filters.PrefixLenV6,
		},
		LocalPorts: bpf.PortRange{First: cfg.Backend.PortMin, Last: cfg.Backend.PortMax},
		MaxFlows:   cfg.Flows.Max,
		Logger:     log,
	})
	if err != nil {
		return fmt.Errorf("load xdp program: %w", err)
	}
	defer func() {
		if opts.Unpin && pin != "" {
			err = errors.Join(err, dp.Unpin())
		}
		err = errors.Join(err, dp.Close())
	}()

	sender, err := newRawSender()
	if err != nil {
		return err
	}
	defer sender.Close()

	var handoff proxy.Handoff
	var peers *peerLinks
	if len(cfg.Peers) > 0 {
		peers = newPeerLinks(cfg.Peers)
		peers.refresh(log)
		handoff = peers
	}
	engine, err := proxy.New(proxy.Config{
		Services: services, Jar: jar, Datapath: dp, Sender: sender, Handoff: handoff,
		PortMin: cfg.Backend.PortMin, PortMax: cfg.Backend.PortMax, PortQuiet: cfg.Backend.PortQuietTime,
		ConnectTimeout: cfg.Backend.ConnectTimeout, MaxPending: cfg.Backend.MaxPending,
		LinkMTU:            linkMTU(cfg, log),
		MaxConns:           cfg.Flows.Max / 2, // two flow entries per connection
		EstablishedTimeout: cfg.Flows.EstablishedTimeout, CloseTimeout: cfg.Flows.CloseTimeout, ResetTimeout: cfg.Flows.ResetTimeout,
		Logger: log,
	})
	if err != nil {
		return err
	}

	health := newBackendHealth()
	// What an earlier syngate left: its services' announced options stand
	// in for the backends' until the probes answer, so taking over waits
	// for no probe.
	unknown, err := engine.RestoreOffers()
	if err != nil {
		return err
	}
	if len(unknown) > 0 {
		// Learn the backends' options before the first SYN-ACK goes out:
		// a connection's announced window scale must not change under it.
		// All at once: the wait is the slowest backend's, at most
		// maxProbeWait.
		probeBackends(ctx, engine, cfg, unknown, log, health)
	}
	// The engine makes the data path its own: services, cookie key,
	// adopted connections, source addresses, stale listeners.
	rec, err := engine.Reconcile()
	if err != nil {
		return err
	}
	if rec.AdoptStats != (proxy.AdoptStats{}) {
		log.Info("adopted spliced connections", "connections", rec.Adopted, "draining", rec.Draining,
			"orphans_deleted", rec.Orphans, "outside_port_range", rec.OutOfRange)
	}
	for _, a := range rec.Retiring {
		log.Info("service removed from the config: kept in the data path until its adopted connections end", "listen", a)
	}

	hs := &healthServer{e: engine}
	reg := metrics.New(opts.Version, opts.Revision)
	reg.SetServices(engine.Services())
	reg.SetDataplane(&dataplaneMetrics{dp: dp, e: engine, limit: cfg.Flows.Max})
	sockStats := &socketStats{}
	if err := reg.Register(metrics.NewSocketCollector(sockStats)); err != nil {
		return err
	}

	// The BGP speaker starts after the first probes, so it never announces
	// a VIP whose backend is known to be down. How it stops depends on
	// why and on what stays behind: see withdrawOnStop.
	drain := &drainer{}
	drainReq := make(chan chan struct{}) // from the control socket
	var speaker *bgp.Speaker
	keepRoutes := false
	if len(cfg.BGP.Peers) > 0 {
		speaker, err = bgp.Start(ctx, bgpConfig(cfg.BGP), keptForwarding(dp, log), log)
		if err != nil {
			return err
		}
		// For a Run that fails before its stop procedure, which decides
		// otherwise (a second Close is a no-op).
		defer func() {
			if keepRoutes {
				return
			}
			if err := speaker.Close(true); err != nil {
				log.Warn("bgp stop", "err", err)
			}
		}()
		var h Health = poolHealth{engine}
		if opts.Health != nil {
			h = opts.Health
		}
		drain.ann = newAnnouncer(speaker, cfg.Services, h, log)
	}
	if err := reg.Register(metrics.NewScaleoutCollector(scaleoutSource{sp: speaker, draining: &drain.on, e: engine})); err != nil {
		return err
	}

	// The engine's loops run on their own context: on the way out they
	// keep running while the engine hands over, then stop, then the sockets
	// they drive close (defers run in reverse).
	var sockets []*afxdp.Socket
	tcp := &tcPorts{dp: dp, log: log}
	if err := reg.Register(metrics.NewRingCollector(tcp)); err != nil {
		return err
	}
	defer func() {
		for _, s := range sockets {
			s.Close()
		}
		tcp.close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	ectx, stopEngine := context.WithCancel(context.Background())
	defer stopEngine()
	errc := make(chan error, 64)
	rl := &reloader{
		path: opts.ConfigPath, cfg: cfg, svcs: services, dp: dp, e: engine, reg: reg,
		health: health, ann: drain.ann, log: log, ctx: ectx,
	}
	if speaker != nil {
		rl.speaker = speaker // an interface: never a nil *bgp.Speaker
	}

	// Sockets first, then the program: a SYN steered before its socket is
	// registered would be dropped. On the TC data path the engine's
	// packets come through a ring buffer instead (see startTCPorts).
	interrupts, _ := os.ReadFile("/proc/interrupts")
	allowed := allowedCPUs()
	paths := map[string]bpf.Datapath{}
	for _, in := range cfg.Interfaces {
		path, why := chooseDatapath(in)
		log.Info("datapath", "interface", in.Name, "datapath", path.String(), "why", why)
		paths[in.Name] = path
	}
	openXSK := func(in config.Interface) error {
		socks, err := afxdp.OpenAll(in.Name, socketConfig)
		if err != nil {
			return fmt.Errorf("open af_xdp sockets on %s: %w%s", in.Name, err, memlockHint(err))
		}
		sockets = append(sockets, socks...)
		sockStats.add(in.Name, socks)
		for _, s := range socks {
			if err := dp.RegisterSocket(s.Ifindex(), s.Queue(), s.FD()); err != nil {
				return err
			}
			cpu, how := queueCPU(in.Name, s.Queue(), in.CPUs, allowed, string(interrupts), irqAffinity)
			log.Info("af_xdp socket", "interface", in.Name, "queue", s.Queue(), "mode", s.Mode(), "cpu", cpu, "cpu_from", how)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if cpu >= 0 {
					if err := pinThread(cpu); err != nil {
						log.Warn("receive loop runs unpinned", "interface", in.Name, "queue", s.Queue(), "err", err)
					}
				}
				if err := engine.Serve(ectx, s, s.Ifindex()); err != nil {
					errc <- fmt.Errorf("%s queue %d: %w", in.Name, s.Queue(), err)
				}
			}()
		}
		return nil
	}
	for _, in := range cfg.Interfaces {
		if paths[in.Name] == bpf.DatapathTC {
			if err := tcp.start(ectx, &wg, engine, in, allowed, errc); err != nil {
				return err
			}
			continue
		}
		if err := openXSK(in); err != nil {
			return err
		}
	}
	// Every interface's redirect port before the first attach: during a
	// take-over the new program runs on the first interface while the
	// others still run the old one, and must already reach them.
	for _, in := range cfg.Interfaces {
		if err := dp.AddRedirectPort(in.Name); err != nil {
			return err
		}
	}
	tookOver := false
	for _, in := range cfg.Interfaces {
		mode, err := bpf.ParseMode(string(in.Mode))
		if err != nil {
			return err
		}
		if paths[in.Name] == bpf.DatapathTC {
			// The TC program alone: no XDP program on the interface (see
			// detachRemovedInterfaces for one an earlier syngate left).
			err := dp.AttachTC(in.Name)
			if err == nil {
				tookOver = tookOver || dp.TookOver(in.Name)
				continue
			}
			if in.Datapath != config.DatapathAuto || !errors.Is(err, bpf.ErrNotSupported) {
				return err
			}
			// A kernel without tcx (before 6.6): auto keeps the XDP
			// data path, which works where checksums are complete.
			log.Warn("tc data path not supported here; splicing in XDP, which breaks on partial checksums (turn tx checksum offload off on the peer)",
				"interface", in.Name, "err", err)
			if err := openXSK(in); err != nil {
				return err
			}
		}
		if err := dp.Attach(in.Name, mode); err != nil {
			return err
		}
		tookOver = tookOver || dp.TookOver(in.Name)
	}
	if err := detachRemovedInterfaces(dp, cfg, log); err != nil {
		return err
	}
	if n, err := dp.MergeMigratedFlows(); err != nil {
		log.Warn("merge the migrated flow table", "err", err)
	} else if n > 0 {
		log.Info("flow state recorded during the migration carried over", "flows", n)
	}
	if tookOver {
		// While no engine ran, the program answered SYNs with standby
		// cookies; their ACKs (or the clients' first data) arrive now.
		engine.CookiesSentElsewhere()
	}

	if peers != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			peers.run(ectx, log)
		}()
	}
	// The announcer stops when the wait below ends, however it ends (a
	// restart request leaves ctx running), before the stop procedure
	// decides what becomes of the routes.
	actx, stopAnnouncing := context.WithCancel(ctx)
	defer stopAnnouncing()
	if drain.ann != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			drain.ann.run(actx)
		}()
	}

	wg.Add(2)
	go func() {
		defer wg.Done()
		engine.Run(ectx)
	}()
	// On the engine's context: a restart request (SIGUSR2) leaves ctx running,
	// and Run's exit waits for every goroutine on wg.
	hc := &checks{ctx: ectx, wg: &wg, e: engine, log: log, running: map[checkKey]runningCheck{}}
	hc.sync(services)
	rl.checks = hc // before anything can ask for a reload
	go func() {
		defer wg.Done()
		if len(unknown) < len(services) {
			// Taken over with the options known before: check them now,
			// in the background.
			probeBackends(ectx, engine, cfg, services, log, health)
		}
		for {
			// The running config's interval and services: a reload
			// changes them.
			cur, svcs := rl.current()
			select {
			case <-ectx.Done():
				return
			case <-time.After(cur.Backend.ProbeInterval):
			}
			cur, svcs = rl.current()
			probeBackends(ectx, engine, cur, svcs, log, health)
		}
	}()
	if tookOver {
		// The ACKs the old program kept while no engine ran: the old
		// program no longer runs, so the map is complete.
		acks, err := dp.TakeStandbyACKs()
		if err != nil {
			log.Warn("standby ACKs", "err", err)
		}
		if len(acks) > 0 {
			n := engine.ReplayACKs(acks)
			log.Info("handshake ACKs kept while no engine ran", "kept", len(acks), "validated", n)
		}
	}

	if cfg.Metrics.Listen != "off" {
		srv, err := serveHTTP(cfg.Metrics.Listen, reg, hs)
		if err != nil {
			return err
		}
		defer srv.Close()
		log.Info("metrics", "url", "http://"+cfg.Metrics.Listen+"/metrics")
	}
	if srv := serveControl(cfg, &controlSource{
		version: opts.Version, started: time.Now(), cfg: cfg, dp: dp, e: engine, socks: sockStats, health: health,
	}, log); srv != nil {
		if opts.ConfigPath != "" {
			srv.Handle("POST "+control.ReloadPath, http.HandlerFunc(rl.serveReload))
		}
		defer srv.Close()
		handleDrain(srv, drainReq, &drain.on, engine)
	}
	if opts.ReadyFile != "" {
		if err := os.WriteFile(opts.ReadyFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return fmt.Errorf("write ready file: %w", err)
		}
	}
	hs.running.Store(true)
	defer hs.running.Store(false)
	log.Info("syngate running", "services", len(services), "interfaces", len(cfg.Interfaces), "sockets", len(sockets),
		"took_over", tookOver, "startup", time.Since(started).Round(time.Millisecond))
	restart := false
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-opts.Restart:
			restart = true
			break wait
		case <-opts.Drain:
			drain.start(engine, log)
		case done := <-drainReq:
			drain.start(engine, log)
			close(done)
		case <-drain.tick():
			drain.report(engine, log)
		case err := <-errc:
			return err
		case req := <-opts.Reload:
			var err error
			if opts.ConfigPath == "" {
				err = errors.New("reload: no config file to re-read")
				log.Error("reload refused", "trigger", req.Trigger, "err", err)
			} else {
				_, err = rl.reload(req.Trigger)
			}
			if req.Done != nil {
				req.Done <- err
			}
		}
	}
	stopAnnouncing()
	stays := pin != "" && !opts.Unpin
	if speaker != nil {
		if withdrawOnStop(restart, stays && !ephemeral) {
			// Withdraw while the data path still serves: the routers move
			// new connections away before the sockets close.
			log.Info("stopping: withdrawing the VIPs (the data path ends with this process)")
			if err := speaker.Close(true); err != nil {
				log.Warn("bgp withdraw", "err", err)
			}
		} else {
			log.Info("stopping: BGP routes stay with the peers for the graceful-restart time", "restart_time", cfg.BGP.RestartTime)
			keepRoutes = true // the sessions die with the process
		}
	}
	if stays {
		// The data path stays: hand new SYNs to the program's cookies and
		// let the handshakes this engine holds finish first.
		opening, halfOpen := engine.HandOver(min(cfg.Backend.ConnectTimeout, maxHandOver))
		log.Info("stopping; the data path stays attached for the next syngate",
			"opening_left", opening, "half_open_left", halfOpen)
		return nil
	}
	log.Info("stopping")
	return nil
}

// withdrawOnStop says whether a stopping gateway withdraws its VIPs from
// the BGP peers. It keeps them (the peers hold them for the
// graceful-restart time, the next syngate announces them again) on a
// restart request (SIGUSR2), and on any stop that leaves the data path
// attached: spliced connections keep flowing and the program answers SYNs
// with standby cookies, so this gateway still serves its VIPs, and
// systemd's restart is a SIGTERM too. It withdraws when the data path
// ends with the process (bpffs off, -unpin, or a bpffs this process
// mounted in a private mount namespace, as under ip netns exec). A final
// stop withdraws with `syngate drain` first (README, "Stopping for
// good").
func withdrawOnStop(restart, dataPathStays bool) bool {
	return !restart && !dataPathStays
}

// maxHandOver bounds the wait for handshakes in flight on the way out.
const maxHandOver = 2 * time.Second

// detachRemovedInterfaces detaches from the interfaces an earlier syngate
// left attached that the config no longer names, and the TC program from
// those no longer on the TC data path.
func detachRemovedInterfaces(dp *bpf.Dataplane, cfg *config.Config, log *slog.Logger) error {
	pinned, err := dp.PinnedInterfaces()
	if err != nil {
		return err
	}
	onTC := dp.AttachedTC()
	for _, name := range pinned {
		if !slices.ContainsFunc(cfg.Interfaces, func(in config.Interface) bool { return in.Name == name }) {
			if err := dp.DetachPinned(name); err != nil {
				return err
			}
			log.Info("interface removed from the config: detached", "interface", name)
		} else if slices.Contains(onTC, name) {
			// An earlier syngate's XDP program (an earlier version, or
			// datapath xdp before): the TC program, attached first, does
			// all of its work there now.
			if err := dp.DetachPinned(name); err != nil {
				return err
			}
			log.Info("interface on the tc data path: xdp detached", "interface", name)
		}
	}
	// TC links an earlier syngate pinned on interfaces no longer on the
	// TC data path: after the XDP take-over, since the earlier XDP
	// program passed their spliced segments to them until then.
	pinnedTC, err := dp.PinnedTCInterfaces()
	if err != nil {
		return err
	}
	for _, name := range pinnedTC {
		if !slices.Contains(onTC, name) {
			if err := dp.DetachPinnedTC(name); err != nil {
				return err
			}
			log.Info("interface no longer on the tc data path: tc detached", "interface", name)
		}
	}
	return nil
}

// socketConfig sizes each AF_XDP socket: 8192 frames of 2 KiB (16 MiB of
// UMEM) with a 4096-frame receive ring. Under a flood the softirq work can
// keep the engine off the CPU for milliseconds: in the lab demo at ~500k
// flood pps the default 2048-frame ring dropped 21,422 of ~52,000 frames
// redirected to AF_XDP in 8 s (handshake ACKs and SYNs the engine still
// handles); with these sizes a run dropped none.
var socketConfig = afxdp.Config{Frames: 8192, RxSize: 4096, FillSize: 4096}

// resolveSources returns the services with their source addresses
// checked, "from the route" (none configured) resolved to the kernel's
// choice toward the first backend.
func resolveSources(svcs []spec.Service) ([]spec.Service, error) {
	out := slices.Clone(svcs)
	for i, s := range out {
		if len(s.Sources) > 0 {
			if err := checkLocal(s.Sources); err != nil {
				return nil, fmt.Errorf("service %s: %w", s.Name, err)
			}
			continue
		}
		src, err := routeSource(s.Backends[0].Addr)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", s.Name, err)
		}
		out[i].Sources = []netip.Addr{src}
	}
	return out, nil
}

// routeSource asks the kernel which source address it would use toward dst:
// connecting a UDP socket picks it without sending anything.
func routeSource(dst netip.AddrPort) (netip.Addr, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("no route to backend %s: %w", dst, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// checkLocal refuses source addresses the gateway does not have: the
// backend sends its answers to them, and only an address of the gateway
// gets them there (answered ARP or neighbour discovery, or a route). An
// address is the gateway's when a socket can bind to it.
func checkLocal(srcs []netip.Addr) error {
	for _, a := range srcs {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
		if err != nil {
			return fmt.Errorf("source %s is not an address of this gateway (assign it to the backend-side interface; the backend must reach it): %w", a, err)
		}
		c.Close()
	}
	return nil
}

// checkPortRange refuses a backend port range overlapping the kernel's
// ephemeral ports: the XDP program takes every segment to those ports on a
// source address, so the gateway's own connections there would break.
func checkPortRange(min, max uint16) error {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return nil // not Linux procfs: nothing to compare with
	}
	return portRangeConflict(min, max, string(b))
}

// portRangeConflict compares [min, max] with ip_local_port_range's text.
func portRangeConflict(min, max uint16, ephemeral string) error {
	f := strings.Fields(ephemeral)
	if len(f) != 2 {
		return nil
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return nil
	}
	if int(min) <= hi && lo <= int(max) {
		return fmt.Errorf("backend.ports %d-%d overlaps net.ipv4.ip_local_port_range %d-%d: choose a range outside it", min, max, lo, hi)
	}
	return nil
}

// maxProbeWait bounds one probe: the first ones hold up the start, and a
// backend that does not answer by then is announced with defaults until the
// next probe.
const maxProbeWait = 3 * time.Second

// probeBackends learns every backend's options (each service's pool from
// the engine: a reload may change it), a service at a time in parallel; a
// failed probe keeps what was known (the defaults, at start).
func probeBackends(ctx context.Context, e *proxy.Engine, cfg *config.Config, svcs []spec.Service, log *slog.Logger, bh *backendHealth) {
	pools := map[string][]proxy.BackendHealth{}
	for _, p := range e.Health() {
		pools[p.Name] = p.Backends
	}
	var wg sync.WaitGroup
	for _, s := range svcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, m := range pools[s.Name] {
				if o, ok := probeMember(ctx, cfg, s, m.Addr, log, bh); ok {
					e.SetMemberOptions(s.Name, m.Addr, o)
				}
			}
		}()
	}
	wg.Wait()
}

// probeMember learns one backend's options, ECN included, and records
// the outcome in bh; false when the backend did not answer.
func probeMember(ctx context.Context, cfg *config.Config, s spec.Service, addr netip.AddrPort, log *slog.Logger, bh *backendHealth) (flow.SynOptions, bool) {
	pctx, cancel := context.WithTimeout(ctx, min(cfg.Backend.ConnectTimeout, maxProbeWait))
	o, err := proxy.ProbeBackend(pctx, addr, s.Sources[0], health.LocalProxyHeader(s.ProxyProtocol.Version()))
	cancel()
	bh.record(s.Name, addr, time.Now(), o, err)
	if err != nil {
		log.Warn("backend probe failed; announcing what was known", "service", s.Name, "backend", addr, "err", err)
		return o, false
	}
	// ECN is offered to clients only when the backends are known to
	// agree: a failed probe means no ECN.
	pctx, cancel = context.WithTimeout(ctx, min(cfg.Backend.ConnectTimeout, maxProbeWait))
	o.ECN, err = proxy.ProbeECN(pctx, addr, s.Sources[0])
	cancel()
	if err != nil {
		log.Warn("backend ECN probe failed; not offering ECN", "service", s.Name, "backend", addr, "err", err)
	}
	log.Info("backend options", "service", s.Name, "backend", addr, "mss", o.MSS, "wscale", o.WScale, "sack", o.SACK, "timestamps", o.Timestamps, "ecn", o.ECN)
	return o, true
}

func serveHTTP(addr string, reg *metrics.Registry, hs *healthServer) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", reg.Handler())
	mux.HandleFunc("/healthz", hs.healthz)
	mux.HandleFunc("/readyz", hs.readyz)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}

// dataplaneMetrics adapts the XDP counters and the engine's flow counters to
// metrics.DataplaneSource.
type dataplaneMetrics struct {
	dp    *bpf.Dataplane
	e     *proxy.Engine
	limit int
}

func (d *dataplaneMetrics) Verdicts() ([]metrics.VerdictCount, error) {
	c, err := d.dp.Counters()
	if err != nil {
		return nil, err
	}
	out := make([]metrics.VerdictCount, 0, len(c))
	for v := bpf.Verdict(0); v < bpf.NumVerdicts; v++ {
		out = append(out, metrics.VerdictCount{Verdict: v.Action().String(), Reason: v.String(), Packets: c[v].Packets})
	}
	return out, nil
}

func (d *dataplaneMetrics) Flows() (metrics.FlowStats, error) {
	c, err := d.dp.Counters()
	if err != nil {
		return metrics.FlowStats{}, err
	}
	st := d.e.Stats()
	var fast bpf.Count
	for _, v := range []bpf.Verdict{bpf.VerdictFastTX, bpf.VerdictFastRedirect, bpf.VerdictFastTXOutOfWindow, bpf.VerdictFastRedirectOutOfWindow,
		bpf.VerdictTCRedirect, bpf.VerdictTCRedirectNeigh} {
		fast.Packets += c[v].Packets
		fast.Bytes += c[v].Bytes
	}
	return metrics.FlowStats{
		Active: 2 * st.Spliced, Limit: d.limit, Expired: st.Expired,
		FastPackets: fast.Packets, FastBytes: fast.Bytes,
	}, nil
}

// linkMTU is the smallest MTU of the interfaces syngate attaches to: the
// fast path forwards frames between them unchanged, so a segment must fit
// the smallest. Zero (no clamp) when none can be read.
func linkMTU(cfg *config.Config, log *slog.Logger) int {
	mtu := 0
	for _, in := range cfg.Interfaces {
		ifc, err := net.InterfaceByName(in.Name)
		if err != nil || ifc.MTU <= 0 {
			continue // Attach reports the missing interface
		}
		if mtu == 0 || ifc.MTU < mtu {
			mtu = ifc.MTU
		}
	}
	if mtu > 0 {
		log.Info("smallest interface MTU: MSS clamped to fit it", "mtu", mtu)
	}
	return mtu
}
