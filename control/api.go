// Package control is the daemon's local control endpoint: a JSON API over
// HTTP on a unix socket (by default /run/syngate/control.sock, mode 0600),
// read by `syngate status`, `syngate flows` and `syngate drain`.
//
// The daemon serves it with Serve and a Source; commands use Client. Routes
// are versioned (/v1/...); further endpoints are added with Server.Handle
// without changing the existing ones (the gateway adds /v1/drain: GET reads
// the drain state, POST starts a drain; see Drain).
//
//	srv, err := control.Serve(control.Options{Path: path, Mode: 0o600}, src, log)
//	...
//	st, err := control.NewClient(path).Status(ctx)
package control

import (
	"net/netip"
	"strings"
	"time"
)

// Status is the daemon's state at one time.
type Status struct {
	Version    string      `json:"version"`
	PID        int         `json:"pid"`
	Started    time.Time   `json:"started"`
	Time       time.Time   `json:"time"`
	Interfaces []Interface `json:"interfaces"`
	FlowTable  FlowTable   `json:"flow_table"`
	Services   []Service   `json:"services"`
	// XDP counts the XDP program's packets by verdict reason (xsk_syn,
	// tx_synack_cookie, drop_syn_ratelimit, fast_tx, ...), for all services.
	XDP map[string]uint64 `json:"xdp_packets"`
	// Rates are per-second rates between two Status reads, filled in by
	// the client (Rates); the daemon keeps no history.
	Rates *Rates `json:"rates,omitempty"`
}

// Interface is an ingress interface and its AF_XDP sockets.
type Interface struct {
	Name    string `json:"name"`
	XDPMode string `json:"xdp_mode"` // the mode the program is attached in: native or generic
	// Datapath is where its spliced segments are rewritten: "xdp", or
	// "tc" (the TC program at tcx ingress; see config interfaces[].datapath).
	Datapath string   `json:"datapath"`
	Sockets  []Socket `json:"sockets"`
}

// Socket is one AF_XDP socket's drop counters (XDP_STATISTICS).
type Socket struct {
	Queue         int    `json:"queue"`
	RxDropped     uint64 `json:"rx_dropped"`
	RxRingFull    uint64 `json:"rx_ring_full"`
	FillRingEmpty uint64 `json:"fill_ring_empty"`
}

// FlowTable is the XDP flow table's use.
type FlowTable struct {
	Entries int `json:"entries"` // one per direction
	Limit   int `json:"limit"`
}

// Service is one protected listener.
type Service struct {
	Name   string `json:"name"`
	Listen string `json:"listen"`
	// Backend is the first of Backends (a pool of one before pools).
	Backend string `json:"backend"`
	// CookiePolicy is the configured policy (never, auto, always);
	// CookieMode what happens now: "queue" (half-open queue, no cookies),
	// "cookies" (cookie SYN-ACKs, minted in XDP), or "off" (never).
	CookiePolicy string   `json:"cookie_policy"`
	CookieMode   string   `json:"cookie_mode"`
	Announce     Announce `json:"announce"`
	Queues       Queues   `json:"queues"`
	Counters     Counters `json:"counters"`
	Conns        Conns    `json:"connections"`
	// Backends are the service's pool.
	Backends []Backend `json:"backends"`
}

// Announce is what the service's SYN-ACKs offer now.
type Announce struct {
	MSS        uint16 `json:"mss"`
	WScale     int    `json:"window_scale"` // -1: none
	SACK       bool   `json:"sack"`
	Timestamps bool   `json:"timestamps"`
}

// Queues are the listen queues' depths and bounds.
type Queues struct {
	Syn         int `json:"syn"`
	SynLimit    int `json:"syn_limit"`
	Accept      int `json:"accept"`
	AcceptLimit int `json:"accept_limit"`
}

// Counters are the service's cumulative counters.
type Counters struct {
	SynReceived     uint64            `json:"syn_received"`
	SynAcks         uint64            `json:"synacks"`        // every kind, engine and XDP cookies
	SynAcksCookie   uint64            `json:"synacks_cookie"` // of SynAcks, with a cookie (engine)
	AcksValidated   uint64            `json:"acks_validated"` // handshakes completed: queue entry or cookie
	AcksRejected    uint64            `json:"acks_rejected"`
	Spliced         uint64            `json:"spliced"`
	BackendFailures map[string]uint64 `json:"backend_failures"`
}

// Conns counts the service's tracked connections.
type Conns struct {
	Opening int `json:"opening"`
	Spliced int `json:"spliced"`
}

// Backend is one backend and what syngate knows of its health.
type Backend struct {
	Addr   string `json:"addr"`
	Source string `json:"source"` // syngate's addresses toward it, comma-separated
	Weight int    `json:"weight"`
	// State is whether new connections go to it: "up", "down" (its
	// active checks fail), "ejected" (failed legs, for a while) or
	// "draining" (weight 0).
	State string `json:"state"`
	// Health is "ok" (the last probe connected), "failing" (it did not),
	// or "unknown" (not probed yet).
	Health     string    `json:"health"`
	LastProbe  time.Time `json:"last_probe,omitzero"`
	ProbeError string    `json:"probe_error,omitempty"`
	// LastFailure is the last probe that failed, and its error.
	LastFailure      time.Time `json:"last_failure,omitzero"`
	LastFailureError string    `json:"last_failure_error,omitempty"`
	// Learned are the TCP options the last successful probe saw.
	Learned *Announce `json:"learned,omitempty"`
	// LastLegFailure is the latest backend leg that failed (a client's
	// connection), and its reason: refused, timeout, no_port, ...
	LastLegFailure       time.Time `json:"last_leg_failure,omitzero"`
	LastLegFailureReason string    `json:"last_leg_failure_reason,omitempty"`
	// Connects and ConnectSeconds are the backend legs that opened and
	// their total handshake time (with a pool of one; with more, see the
	// per-backend metrics). So is LastLegFailure.
	Connects       uint64  `json:"connects"`
	ConnectSeconds float64 `json:"connect_seconds"`
}

// Rates are per-second rates over the client's sampling interval.
type Rates struct {
	Interval float64                 `json:"interval_seconds"`
	Services map[string]ServiceRates `json:"services"`
	XDP      map[string]float64      `json:"xdp_packets"` // by verdict reason
}

// ServiceRates are one service's rates.
type ServiceRates struct {
	SYN     float64 `json:"syn"`
	SynAck  float64 `json:"synack"`
	ACK     float64 `json:"ack"` // validated handshake ACKs
	Splices float64 `json:"splice"`
}

// Flow is one client connection through syngate: the client leg and the
// backend leg, and the XDP flow entries' counters of both directions.
type Flow struct {
	Service string `json:"service"`
	Client  string `json:"client"`  // client ip:port
	Listen  string `json:"listen"`  // the VIP:port it connected to
	Source  string `json:"source"`  // syngate's ip:port toward the backend ("" before the backend SYN)
	Backend string `json:"backend"` // backend ip:port
	// State: opening (backend leg not open yet), established, fin_wait
	// (one side sent a FIN), closed (both did), reset.
	State   string    `json:"state"`
	Created time.Time `json:"created"`
	Spliced time.Time `json:"spliced,omitzero"`
	// AgeSeconds is the time since Created, when the daemon answered.
	AgeSeconds float64 `json:"age_seconds"`
	ToBackend  FlowDir `json:"to_backend"` // client -> backend
	ToClient   FlowDir `json:"to_client"`  // backend -> client
}

// FlowList is the answer of GET /v1/flows: the flows (at most the limit
// asked for) and how many the filter selects in all. With more than the
// limit, which ones are listed is not defined: narrow the filter.
type FlowList struct {
	Total int    `json:"total"`
	Flows []Flow `json:"flows"`
}

// FlowDir is one direction's XDP flow entry counters.
type FlowDir struct {
	Packets  uint64    `json:"packets"`
	Bytes    uint64    `json:"bytes"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	FIN      bool      `json:"fin,omitempty"`
	RST      bool      `json:"rst,omitempty"`
}

// Filter selects flows. Empty fields match everything; Client and Backend
// match an address ("10.1.0.2") or an address and port ("10.1.0.2:4000").
type Filter struct {
	Service string
	Client  string
	Backend string
}

// Match reports whether f selects fl.
func (f Filter) Match(fl Flow) bool {
	return (f.Service == "" || f.Service == fl.Service) &&
		matchAddr(f.Client, fl.Client) && matchAddr(f.Backend, fl.Backend)
}

func matchAddr(want, have string) bool {
	if want == "" {
		return true
	}
	if ap, err := netip.ParseAddrPort(have); err == nil {
		if w, err := netip.ParseAddr(strings.Trim(want, "[]")); err == nil {
			return w.Unmap() == ap.Addr().Unmap()
		}
		if w, err := netip.ParseAddrPort(want); err == nil {
			return w.Addr().Unmap() == ap.Addr().Unmap() && w.Port() == ap.Port()
		}
	}
	return want == have
}

// FlowState names a flow's state from its two directions.
func FlowState(spliced bool, toBackend, toClient FlowDir) string {
	switch {
	case !spliced:
		return "opening"
	case toBackend.RST || toClient.RST:
		return "reset"
	case toBackend.FIN && toClient.FIN:
		return "closed"
	case toBackend.FIN || toClient.FIN:
		return "fin_wait"
	}
	return "established"
}

// ComputeRates fills cur.Rates from an earlier Status of the same daemon.
func ComputeRates(prev, cur *Status) {
	dt := cur.Time.Sub(prev.Time).Seconds()
	if dt <= 0 || prev.PID != cur.PID {
		return
	}
	r := &Rates{Interval: dt, Services: map[string]ServiceRates{}, XDP: map[string]float64{}}
	old := map[string]Counters{}
	for _, s := range prev.Services {
		old[s.Name] = s.Counters
	}
	rate := func(a, b uint64) float64 {
		if b < a {
			return 0
		}
		return float64(b-a) / dt
	}
	for _, s := range cur.Services {
		o, ok := old[s.Name]
		if !ok {
			continue
		}
		r.Services[s.Name] = ServiceRates{
			SYN:     rate(o.SynReceived, s.Counters.SynReceived),
			SynAck:  rate(o.SynAcks, s.Counters.SynAcks),
			ACK:     rate(o.AcksValidated, s.Counters.AcksValidated),
			Splices: rate(o.Spliced, s.Counters.Spliced),
		}
	}
	for k, v := range cur.XDP {
		r.XDP[k] = rate(prev.XDP[k], v)
	}
	cur.Rates = r
}

// Drain is the drain state of the daemon (`syngate drain`): whether its
// VIPs are withdrawn, and the connections it still serves.
type Drain struct {
	Draining bool `json:"draining"`
	// Open counts the connections the engine tracks (opening, spliced,
	// and closed ones until close_timeout): what a drain waits for.
	Open int `json:"open"`
}
