package gateway

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/syngate/syngate/afxdp"
	"github.com/syngate/syngate/bpf"
	"github.com/syngate/syngate/config"
	"github.com/syngate/syngate/control"
	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/metrics"
	"github.com/syngate/syngate/proxy"
)

// backendHealth records the probes' outcomes per service and backend, for
// `syngate status`. The probe loop writes it, the control endpoint reads
// it.
type backendHealth struct {
	mu sync.Mutex
	m  map[probeKey]*probeRecord
}

type probeKey struct {
	service string
	backend netip.AddrPort
}

type probeRecord struct {
	last, lastFailure time.Time
	err, failure      string
	learned           *flow.SynOptions
}

func newBackendHealth() *backendHealth { return &backendHealth{m: map[probeKey]*probeRecord{}} }

// record notes one probe of a service's backend.
func (h *backendHealth) record(service string, backend netip.AddrPort, at time.Time, o flow.SynOptions, err error) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	k := probeKey{service, backend}
	r := h.m[k]
	if r == nil {
		r = &probeRecord{}
		h.m[k] = r
	}
	r.last, r.err = at, ""
	if err != nil {
		r.err, r.lastFailure, r.failure = err.Error(), at, err.Error()
		return
	}
	r.learned = &o
}

func (h *backendHealth) get(service string, backend netip.AddrPort) probeRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r := h.m[probeKey{service, backend}]; r != nil {
		return *r
	}
	return probeRecord{}
}

// socketStats reads the AF_XDP sockets' kernel drop counters, for the
// metrics and for status.
type socketStats struct {
	mu    sync.Mutex
	names map[int]string // ifindex -> name
	socks []*afxdp.Socket
}

func (s *socketStats) add(name string, socks []*afxdp.Socket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names == nil {
		s.names = map[int]string{}
	}
	for _, k := range socks {
		s.names[k.Ifindex()] = name
	}
	s.socks = append(s.socks, socks...)
}

// SocketStats implements metrics.SocketSource.
func (s *socketStats) SocketStats() ([]metrics.SocketStats, error) {
	s.mu.Lock()
	socks := append([]*afxdp.Socket(nil), s.socks...)
	names := s.names
	s.mu.Unlock()
	out := make([]metrics.SocketStats, 0, len(socks))
	var errs error
	for _, k := range socks {
		st, err := k.KernelStats()
		if err != nil {
			errs = errors.Join(errs, err)
			continue
		}
		out = append(out, metrics.SocketStats{
			Interface: names[k.Ifindex()], Queue: k.Queue(),
			RxDropped: st.RxDropped, RxRingFull: st.RxRingFull, FillRingEmpty: st.RxFillRingEmptyDescs,
			RxInvalid: st.RxInvalidDescs, TxInvalid: st.TxInvalidDescs,
		})
	}
	return out, errs
}

// controlSource implements control.Source from the running pieces.
type controlSource struct {
	version string
	started time.Time
	cfg     *config.Config
	dp      *bpf.Dataplane
	e       *proxy.Engine
	socks   *socketStats
	health  *backendHealth
}

func (c *controlSource) Status() control.Status {
	st := control.Status{
		Version: c.version, PID: os.Getpid(), Started: c.started, Time: time.Now(),
		FlowTable: control.FlowTable{Limit: c.cfg.Flows.Max},
		XDP:       map[string]uint64{},
	}
	es := c.e.Stats()
	st.FlowTable.Entries = 2 * es.Spliced
	counters, cerr := c.dp.Counters()
	if cerr == nil {
		for v := bpf.Verdict(0); v < bpf.NumVerdicts; v++ {
			st.XDP[v.String()] = counters[v].Packets
		}
	}
	attached := c.dp.Attached()
	onTC := c.dp.AttachedTC()
	sockets, _ := c.socks.SocketStats()
	for _, in := range c.cfg.Interfaces {
		ci := control.Interface{Name: in.Name, XDPMode: "detached", Datapath: bpf.DatapathXDP.String()}
		if slices.Contains(onTC, in.Name) {
			ci.Datapath = bpf.DatapathTC.String()
		}
		if m, ok := attached[in.Name]; ok {
			ci.XDPMode = m.String()
		}
		for _, s := range sockets {
			if s.Interface == in.Name {
				ci.Sockets = append(ci.Sockets, control.Socket{Queue: s.Queue, RxDropped: s.RxDropped, RxRingFull: s.RxRingFull, FillRingEmpty: s.FillRingEmpty})
			}
		}
		st.Interfaces = append(st.Interfaces, ci)
	}
	opening, spliced := c.e.ConnCounts()
	srcs := c.e.Services()
	for i, s := range c.e.ServiceStates() {
		ss := srcs[i].ServiceStats()
		mode := "queue"
		switch {
		case s.Policy == "never":
			mode = "off"
		case s.XDPCookies || s.Policy == "always":
			mode = "cookies"
		}
		svc := control.Service{
			Name: s.Name, Listen: s.Listen.String(), Backend: s.Backends[0].Addr.String(),
			CookiePolicy: s.Policy, CookieMode: mode,
			Announce: announce(s.Offer.MSS, s.Offer.WScale, s.Offer.SACK, s.Offer.Timestamps),
			Queues:   control.Queues{Syn: ss.HalfOpen, SynLimit: ss.HalfOpenLimit, Accept: ss.Accept, AcceptLimit: ss.AcceptLimit},
			Counters: control.Counters{
				SynReceived:     ss.SynReceived,
				SynAcks:         ss.SynAckQueued + ss.SynAckCookie + ss.SynAckResent + ss.SynAckRetrans,
				SynAcksCookie:   ss.SynAckCookie,
				AcksValidated:   ss.AckQueue + ss.AckCookie,
				AcksRejected:    sum(ss.AckRejected),
				Spliced:         ss.Spliced,
				BackendFailures: nonZero(ss.BackendFailures),
			},
			Conns: control.Conns{Opening: opening[s.Name], Spliced: spliced[s.Name]},
		}
		for _, m := range s.Backends {
			pr := c.health.get(s.Name, m.Addr)
			b := control.Backend{
				Addr: m.Addr.String(), Source: joinAddrs(s.Sources), Health: "unknown",
				Weight: m.Weight, State: m.State(),
				LastProbe: pr.last, ProbeError: pr.err, LastFailure: pr.lastFailure, LastFailureError: pr.failure,
			}
			switch {
			case pr.last.IsZero():
			case pr.err != "":
				b.Health = "failing"
			default:
				b.Health = "ok"
			}
			if len(s.Backends) == 1 {
				// The service's own figures are this backend's.
				b.Connects, b.ConnectSeconds = ss.BackendConnect.Count, ss.BackendConnect.Sum
				if f := s.LastFailure; f != nil {
					b.LastLegFailure, b.LastLegFailureReason = f.At, f.Reason
				}
			}
			if pr.learned != nil {
				a := announce(pr.learned.MSS, pr.learned.WScale, pr.learned.SACK, pr.learned.Timestamps)
				b.Learned = &a
			}
			svc.Backends = append(svc.Backends, b)
		}
		st.Services = append(st.Services, svc)
	}
	return st
}

func announce(mss uint16, wscale uint8, sack, ts bool) control.Announce {
	a := control.Announce{MSS: mss, WScale: int(wscale), SACK: sack, Timestamps: ts}
	if wscale == flow.NoWScale {
		a.WScale = -1
	}
	return a
}

func joinAddrs(as []netip.Addr) string {
	out := ""
	for i, a := range as {
		if i > 0 {
			out += ","
		}
		out += a.String()
	}
	return out
}

func sum(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v > 0 {
			out[k] = v
		}
	}
	return out
}

func (c *controlSource) Flows(f control.Filter, limit int, fn func(control.Flow)) (total int) {
	// The filter runs before the flow entries are read: on a busy gateway
	// that is two map lookups saved per connection not asked for.
	c.e.Conns(func(ci *proxy.ConnInfo) bool {
		if !f.Match(connFlow(ci)) {
			return false
		}
		total++
		return limit <= 0 || total <= limit
	}, func(ci proxy.ConnInfo) bool {
		fn(connFlow(&ci))
		return true
	})
	return total
}

// connFlow is a connection as the control API shows it.
func connFlow(ci *proxy.ConnInfo) control.Flow {
	fl := control.Flow{
		Service: ci.Service, Client: ci.Client.Client.String(), Listen: ci.Client.Service.String(),
		Backend: ci.Backend.String(), Created: ci.Created, Spliced: ci.Spliced,
		ToBackend: flowDir(ci.ToBackend), ToClient: flowDir(ci.ToClient),
		AgeSeconds: time.Since(ci.Created).Seconds(),
	}
	if ci.Source.IsValid() {
		fl.Source = ci.Source.String()
	}
	fl.State = control.FlowState(!ci.Spliced.IsZero(), fl.ToBackend, fl.ToClient)
	return fl
}

func flowDir(f proxy.FlowCounters) control.FlowDir {
	return control.FlowDir{Packets: f.Packets, Bytes: f.Bytes, LastSeen: f.LastSeen, FIN: f.FIN, RST: f.RST}
}

// serveControl starts the control endpoint. A failure is logged, not
// fatal: the gateway must not stop protecting services because an
// operator's window onto it could not open.
func serveControl(cfg *config.Config, src control.Source, log *slog.Logger) *control.Server {
	if cfg.Control.Socket == "off" {
		return nil
	}
	srv, err := control.Serve(control.Options{Path: cfg.Control.Socket, Mode: os.FileMode(cfg.Control.Mode)}, src, log)
	if err != nil {
		log.Warn("control socket unavailable; status and flows will not work", "err", err)
		return nil
	}
	log.Info("control", "socket", cfg.Control.Socket)
	return srv
}
