// Package metrics exports syngate's state as Prometheus metrics.
//
// Nothing here is incremented on the packet path. The handshake engine and
// the data plane keep their own cheap counters (atomics, per-CPU BPF maps);
// a collector reads them when Prometheus scrapes, through the small Source
// interfaces below. Names carry the syngate_ prefix and are fixed for the
// whole product; README.md maps them onto the kernel's TcpExt counters.
//
//	reg := metrics.New(version, revision)
//	reg.AddService(engineService)       // implements metrics.ServiceSource
//	reg.SetDataplane(dataplane)         // implements metrics.DataplaneSource
//	http.Handle("/metrics", reg.Handler())
package metrics

import (
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ServiceStats is one service's counters and gauges at scrape time. Counters
// only grow; the engine owns them.
type ServiceStats struct {
	Name string

	SynReceived     uint64 // SYNs that reached the engine for this service
	SynAckQueued    uint64 // SYN-ACKs sent for half-open queue entries
	SynAckCookie    uint64 // SYN-ACKs carrying a cookie (Linux SyncookiesSent)
	SynAckResent    uint64 // SYN-ACKs resent for a retransmitted SYN
	SynAckRetrans   uint64 // SYN-ACKs retransmitted by the timer (TCPSynRetrans)
	HalfOpenTimeout uint64 // half-open entries dropped after the last retry

	// SYN queue full: cookies sent instead (TCPReqQFullDoCookies) or the SYN
	// dropped because the policy is never (TCPReqQFullDrop).
	SynQueueFullCookie uint64
	SynQueueFullDrop   uint64
	// SynDropAcceptFull counts SYNs dropped because the accept queue was full
	// (part of ListenDrops).
	SynDropAcceptFull uint64
	// SynDropEstablished counts SYNs for the 4-tuple of a live connection.
	SynDropEstablished uint64

	AckQueue  uint64 // ACKs that completed a half-open entry
	AckCookie uint64 // ACKs validated as cookies (SyncookiesRecv)
	// AckPeerCookie counts ACKs validated as cookies a peer gateway minted
	// (the local cookie gate was closed); not part of AckCookie.
	AckPeerCookie uint64
	// AckRejected counts ACKs refused, by reason (cookie reasons are
	// SyncookiesFailed).
	AckRejected map[string]uint64

	AcceptOverflowDrop  uint64 // ListenOverflows with tcp_abort_on_overflow=0
	AcceptOverflowReset uint64 // ListenOverflows with tcp_abort_on_overflow=1

	Spliced         uint64 // connections handed to the XDP fast path
	SlowPath        uint64 // packets of spliced connections that reached the engine
	BackendTimeWait uint64 // backend legs that found their port in the backend's TIME_WAIT
	// BackendSynAckRepeat counts backend SYN-ACKs repeated into a spliced
	// leg (our handshake ACK was lost), acked again.
	BackendSynAckRepeat uint64
	// Challenge ACKs answering SYNs into live connections (RFC 5961 4.2):
	// sent, or suppressed by the rate limit.
	ChallengeACKSent, ChallengeACKLimited uint64
	RSTInWindow                           uint64            // inexact in-window RSTs the engine forwarded (RFC 5961 3.2)
	ResetsSent                            uint64            // RSTs to the ends of spliced connections syngate gave up (idle, entry deleted)
	HandedOff                             uint64            // segments of unknown connections passed to peer gateways
	BackendFailures                       map[string]uint64 // by reason: refused, timeout, ...
	// Connections that found no free source port toward the backend:
	// waited (got one before the connect timeout) or failed (reset).
	SourcePortWaited, SourcePortFailed uint64
	SynData                            uint64            // SYNs carrying data (TCP Fast Open) the engine answered
	ECN                                map[string]uint64 // clients' ECN requests by outcome: negotiated, not_offered, backend_refused
	MSSClamped                         map[string]uint64 // MSS lowered to the gateway's interface MTU, by leg: client, backend

	HalfOpen, HalfOpenLimit int // SYN queue depth and bound
	Accept, AcceptLimit     int // accept queue depth and bound

	// BackendConnect is the time from the backend SYN to its SYN-ACK of
	// the legs that opened.
	BackendConnect HistogramSnapshot
	// NoBackend counts SYNs (and validated connections) that found no
	// usable backend: every one down, ejected or drained.
	NoBackend uint64
	// Redispatched counts backend legs a backend refused that were opened
	// again toward another member; HeaderRetransmits PROXY protocol
	// headers sent again because the backend had not acknowledged them.
	Redispatched, HeaderRetransmits uint64
	// Backends are the service's pool members.
	Backends []BackendStats
}

// BackendStats is one pool member of a service at scrape time.
type BackendStats struct {
	Addr   string // ip:port
	Weight int
	Up     bool // the active health checks' verdict
	Usable bool // new connections may go to it: up, not ejected, weight > 0
	Active int  // spliced connections now
	Total  uint64
	// Failures counts failed backend legs by reason (refused, timeout,
	// ...), the passive health checks' input.
	Failures         map[string]uint64
	Checks, ChecksOK uint64        // active checks run, and passed
	CheckLatency     time.Duration // the last active check's
}

// ServiceSource reports one service's stats. It is called at scrape time,
// concurrently with the packet path, and must not block for long.
type ServiceSource interface {
	ServiceStats() ServiceStats
}

// VerdictCount is the number of packets the XDP program gave one verdict.
type VerdictCount struct {
	Verdict string // pass, drop, xsk, tx, redirect, ...
	Reason  string // why: not_service, syn, malformed_ip, rate_limited, ...
	Packets uint64
}

// FlowStats describes the XDP flow table.
type FlowStats struct {
	Active      int               // entries now (both directions)
	Limit       int               // table size
	Installed   uint64            // connections spliced into the table
	Expired     map[string]uint64 // by reason: idle, closed, reset, evicted
	FastPackets uint64            // packets the fast path forwarded
	FastBytes   uint64
}

// DataplaneSource reports the XDP program's counters, summed over CPUs.
type DataplaneSource interface {
	Verdicts() ([]VerdictCount, error)
	Flows() (FlowStats, error)
}

// Registry holds syngate's metrics on a private registry.
type Registry struct {
	reg *prometheus.Registry

	mu        sync.Mutex
	services  []ServiceSource
	dataplane DataplaneSource

	// Reloads: counts, and the last successful load in Unix nanoseconds.
	reloadOK, reloadFailed atomic.Uint64
	lastLoad               atomic.Int64
}

// New returns a registry with the build info (version, VCS revision and Go
// version of the binary), Go runtime and process collectors registered.
func New(version, revision string) *Registry {
	r := &Registry{reg: prometheus.NewRegistry()}
	r.lastLoad.Store(time.Now().UnixNano()) // the configuration of the start
	bi := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: ns, Name: "build_info",
		Help:        "Build information; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": runtime.Version()},
	})
	bi.Set(1)
	r.reg.MustRegister(bi,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		(*collector)(r),
	)
	return r
}

// AddService adds a service whose stats are exported from now on.
func (r *Registry) AddService(s ServiceSource) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.services = append(r.services, s)
}

// SetServices replaces the exported services (after a reload): a removed
// service's series end, an added one's begin.
func (r *Registry) SetServices(ss []ServiceSource) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.services = append([]ServiceSource(nil), ss...)
}

// ReloadSucceeded counts an applied reload at t.
func (r *Registry) ReloadSucceeded(t time.Time) {
	r.reloadOK.Add(1)
	r.lastLoad.Store(t.UnixNano())
}

// ReloadFailed counts a refused reload.
func (r *Registry) ReloadFailed() { r.reloadFailed.Add(1) }

// SetDataplane sets the source of XDP counters; nil removes it.
func (r *Registry) SetDataplane(d DataplaneSource) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dataplane = d
}

// Gatherer exposes the registry for tests and embedding.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Register adds an extra collector (for example AF_XDP socket statistics).
func (r *Registry) Register(c prometheus.Collector) error { return r.reg.Register(c) }

// Handler serves the exposition format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg, ErrorHandling: promhttp.ContinueOnError})
}
