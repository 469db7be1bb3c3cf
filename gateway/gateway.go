// Package gateway assembles a running syngate from a validated config: it
// loads and attaches the XDP program, opens one AF_XDP socket per receive
// queue, starts the handshake engine on them, learns the backends' TCP
// options, and serves /metrics and /healthz.
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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/syngate/syngate/afxdp"
	"github.com/syngate/syngate/bpf"
	"github.com/syngate/syngate/config"
	"github.com/syngate/syngate/cookie"
	"github.com/syngate/syngate/health"
	"github.com/syngate/syngate/metrics"
	"github.com/syngate/syngate/proxy"
	"github.com/syngate/syngate/queue"
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
	// Reload delivers new configs (cmd/syngate sends one on SIGHUP). Only
	// the services' pools are applied: backends and weights, swapped
	// whole, live connections kept on their backends.
	Reload <-chan *config.Config
}

// Run runs the gateway until ctx ends.
func Run(ctx context.Context, cfg *config.Config, opts Options) (err error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
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
	services, err := engineServices(cfg)
	if err != nil {
		return err
	}

	pin := cfg.BPFFS
	if pin == "off" {
		pin = ""
	} else if err := prepareBPFFS(pin, log); err != nil {
		return err
	}
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
		err = errors.Join(err, dp.Close())
		if opts.Unpin && pin != "" {
			err = errors.Join(err, dp.Unpin())
		}
	}()

	sender, err := newRawSender()
	if err != nil {
		return err
	}
	defer sender.Close()

	offload := &cookieOffload{dp: dp, ids: map[netip.AddrPort]uint32{}}
	for i, s := range services {
		offload.ids[s.Listen] = uint32(i)
	}
	engine, err := proxy.New(proxy.Config{
		Services: services, Jar: jar, Flows: dp, Sender: sender, Offload: offload,
		PortMin: cfg.Backend.PortMin, PortMax: cfg.Backend.PortMax, PortQuiet: cfg.Backend.PortQuietTime,
		ConnectTimeout: cfg.Backend.ConnectTimeout, MaxPending: cfg.Backend.MaxPending,
		MaxConns:           cfg.Flows.Max / 2, // two flow entries per connection
		EstablishedTimeout: cfg.Flows.EstablishedTimeout, CloseTimeout: cfg.Flows.CloseTimeout, ResetTimeout: cfg.Flows.ResetTimeout,
		Logger: log,
	})
	if err != nil {
		return err
	}
	// Learn the backends' options before the first SYN-ACK goes out: a
	// connection's announced window scale must not change under it.
	probeBackends(ctx, engine, cfg, services, log)
	for i, s := range services {
		if err := dp.SetService(bpf.Service{Addr: s.Listen, ID: uint32(i)}); err != nil {
			return err
		}
	}
	for _, a := range engine.Sources() {
		if err := dp.AddLocal(a); err != nil {
			return err
		}
	}

	hs := &healthServer{e: engine}
	reg := metrics.New(opts.Version, opts.Revision)
	for _, s := range engine.Services() {
		reg.AddService(s)
	}
	reg.SetDataplane(&dataplaneMetrics{dp: dp, e: engine, limit: cfg.Flows.Max})

	// On the way out: stop the loops, wait for them, then close the sockets
	// they drive (defers run in reverse).
	var sockets []*afxdp.Socket
	defer func() {
		for _, s := range sockets {
			s.Close()
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 64)

	// Sockets first, then the program: a SYN steered before its socket is
	// registered would be dropped.
	for _, in := range cfg.Interfaces {
		socks, err := afxdp.OpenAll(in.Name, socketConfig)
		if err != nil {
			return fmt.Errorf("open af_xdp sockets on %s: %w", in.Name, err)
		}
		sockets = append(sockets, socks...)
		for _, s := range socks {
			if err := dp.RegisterSocket(s.Ifindex(), s.Queue(), s.FD()); err != nil {
				return err
			}
			log.Info("af_xdp socket", "interface", in.Name, "queue", s.Queue(), "mode", s.Mode())
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := engine.Serve(ctx, s, s.Ifindex()); err != nil {
					errc <- fmt.Errorf("%s queue %d: %w", in.Name, s.Queue(), err)
				}
			}()
		}
	}
	for _, in := range cfg.Interfaces {
		mode, err := bpf.ParseMode(string(in.Mode))
		if err != nil {
			return err
		}
		if err := dp.Attach(in.Name, mode); err != nil {
			return err
		}
	}

	// The key before the engine starts: it may turn the offload on at once.
	if err := dp.SetCookieKey(jar.DataplaneKey(time.Now())); err != nil {
		return err
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		refreshCookieKey(ctx, dp, jar, log)
	}()
	go func() {
		defer wg.Done()
		engine.Run(ctx)
	}()
	hc := &checks{ctx: ctx, wg: &wg, e: engine, log: log, running: map[checkKey]runningCheck{}}
	hc.sync(cfg, services)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(cfg.Backend.ProbeInterval):
			}
			probeBackends(ctx, engine, cfg, services, log)
		}
	}()

	if cfg.Metrics.Listen != "off" {
		srv, err := serveHTTP(cfg.Metrics.Listen, reg, hs)
		if err != nil {
			return err
		}
		defer srv.Close()
		log.Info("metrics", "url", "http://"+cfg.Metrics.Listen+"/metrics")
	}
	if opts.ReadyFile != "" {
		if err := os.WriteFile(opts.ReadyFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return fmt.Errorf("write ready file: %w", err)
		}
	}
	hs.running.Store(true)
	defer hs.running.Store(false)
	log.Info("syngate running", "services", len(services), "interfaces", len(cfg.Interfaces), "sockets", len(sockets))
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping")
			return nil
		case err := <-errc:
			return err
		case next := <-opts.Reload:
			cfg = reloadPools(engine, hc, cfg, next, services, log)
		}
	}
}

// socketConfig sizes each AF_XDP socket: 8192 frames of 2 KiB (16 MiB of
// UMEM) with a 4096-frame receive ring. Under a flood the softirq work can
// keep the engine off the CPU for milliseconds: in the lab demo at ~500k
// flood pps the default 2048-frame ring dropped 21,422 of ~52,000 frames
// redirected to AF_XDP in 8 s (handshake ACKs and SYNs the engine still
// handles); with these sizes a run dropped none.
var socketConfig = afxdp.Config{Frames: 8192, RxSize: 4096, FillSize: 4096}

// engineServices turns config services into engine services, resolving
// "source from the route".
func engineServices(cfg *config.Config) ([]proxy.Service, error) {
	var out []proxy.Service
	for _, s := range cfg.Services {
		srcs := s.Sources
		if len(srcs) == 0 {
			src, err := routeSource(s.Backends[0].Addr)
			if err != nil {
				return nil, fmt.Errorf("service %s: %w", s.Name, err)
			}
			srcs = []netip.Addr{src}
		} else if err := checkLocal(srcs); err != nil {
			return nil, fmt.Errorf("service %s: %w", s.Name, err)
		}
		cookies, err := queue.ParseCookiePolicy(string(s.Cookies))
		if err != nil {
			return nil, err
		}
		overflow, err := queue.ParseOverflowPolicy(string(s.OnOverflow))
		if err != nil {
			return nil, err
		}
		var members []proxy.Backend
		for _, m := range s.Backends {
			members = append(members, proxy.Backend{Addr: m.Addr, Weight: m.Weight})
		}
		out = append(out, proxy.Service{
			Name: s.Name, Listen: s.Listen, Backends: members, Sources: srcs,
			HashAddress:   s.Hash == config.HashAddress,
			ProxyProtocol: proxyVersion(s.ProxyProtocol),
			DropNoBackend: s.OnNoBackend == config.NoBackendDrop,
			Queue: queue.Config{
				MaxSynBacklog: cfg.SYN.MaxSynBacklog, SynAckRetries: cfg.SYN.SynAckRetries, Cookies: cookies,
				Backlog: s.Backlog, Somaxconn: cfg.SYN.Somaxconn, Overflow: overflow,
			},
			Announce: proxy.Announce{MSS: s.Announce.MSS, WindowScale: s.Announce.WindowScale, SACK: s.Announce.SACK, Timestamps: s.Announce.Timestamps},
		})
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

// probeBackends learns each backend's options; a failed probe keeps what
// was known (the defaults, at start).
func probeBackends(ctx context.Context, e *proxy.Engine, cfg *config.Config, svcs []proxy.Service, log *slog.Logger) {
	pools := e.Health() // the pools as they are now: a reload may change them
	for i, s := range svcs {
		for _, m := range pools[i].Backends {
			pctx, cancel := context.WithTimeout(ctx, min(cfg.Backend.ConnectTimeout, maxProbeWait))
			o, err := proxy.ProbeBackend(pctx, m.Addr, s.Sources[0], health.LocalProxyHeader(s.ProxyProtocol))
			cancel()
			if err != nil {
				log.Warn("backend probe failed; announcing defaults", "service", s.Name, "backend", m.Addr, "err", err)
				continue
			}
			e.SetMemberOptions(s.Name, m.Addr, o)
			log.Info("backend options", "service", s.Name, "backend", m.Addr, "mss", o.MSS, "wscale", o.WScale, "sack", o.SACK, "timestamps", o.Timestamps)
		}
	}
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
	fast := c[bpf.VerdictFastTX]
	redir := c[bpf.VerdictFastRedirect]
	return metrics.FlowStats{
		Active: 2 * st.Spliced, Limit: d.limit, Expired: st.Expired,
		FastPackets: fast.Packets + redir.Packets, FastBytes: fast.Bytes + redir.Bytes,
	}, nil
}

// cookieOffload implements proxy.CookieOffload on the data plane's service
// map.
type cookieOffload struct {
	dp  *bpf.Dataplane
	ids map[netip.AddrPort]uint32
}

func (c *cookieOffload) OffloadCookies(s proxy.Service, on bool, o proxy.Offer, window uint16) error {
	return c.dp.SetService(bpf.Service{
		Addr: s.Listen, ID: c.ids[s.Listen], XDPCookies: on,
		Announce: bpf.Announce{Window: window, MSS: o.MSS, WScale: o.WScale, SACK: o.SACK, Timestamps: o.Timestamps},
	})
}

// refreshCookieKey keeps the XDP program's cookie key and tick current: it
// mints only with a key the engine's Check still accepts.
func refreshCookieKey(ctx context.Context, dp *bpf.Dataplane, jar *cookie.Jar, log *slog.Logger) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := dp.SetCookieKey(jar.DataplaneKey(time.Now())); err != nil {
				log.Warn("refresh the XDP cookie key", "err", err)
			}
		}
	}
}
