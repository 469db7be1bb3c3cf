// Package spec holds the values that describe what syngate protects and
// how: a service, its pool, its listen-path limits and policies, what its
// SYN-ACKs announce, and a service as the data path holds it.
//
// Each concept has exactly one type here. The config package produces
// them (with every default applied, in one place), the engine (proxy,
// queue) runs them, and the bpf package encodes them into its maps. spec
// depends on nothing of syngate's, so every package can import it.
//
// A new per-service option is a field of Service, its parsing and
// validation in config, and its use where it acts (the engine, or bpf's
// encoding of the service map's value).
package spec

import (
	"net/netip"
	"time"
)

// Service is one protected listener, validated, defaults applied.
type Service struct {
	Name   string
	Listen netip.AddrPort // the VIP:port clients connect to
	// Backends are where connections are spliced to, at least one. A new
	// connection picks one by consistent hashing (see Hash); a live one
	// keeps its backend.
	Backends []Backend
	// Hash is what picks a new connection's backend.
	Hash HashKey
	// ProxyProtocol is the PROXY protocol header the backend leg starts
	// with.
	ProxyProtocol ProxyProtocol
	// OnNoBackend is what a new SYN gets while every backend is down or
	// drained.
	OnNoBackend NoBackendPolicy
	// HealthCheck configures the active checks of every backend.
	HealthCheck HealthCheck
	// Sources are the gateway's addresses toward the backends. Each has
	// its own source ports toward each backend. Empty in a config means
	// "from the route to the first backend"; the gateway resolves it
	// before the engine runs the service.
	Sources []netip.Addr
	// Cookies is when SYNs are answered with SYN cookies.
	Cookies CookiePolicy
	// OnOverflow is what a valid handshake ACK gets while the accept
	// queue is full.
	OnOverflow OverflowPolicy
	// Limits bound the listen queues.
	Limits Limits
	// Announce holds the configured SYN-ACK options; unset ones are
	// learned from the backends.
	Announce Announce
	// RateLimitExempt exempts the service's SYNs from the per-source SYN
	// rate limit (filters.rate_limit): for clients behind shared addresses
	// (carrier-grade NAT, a corporate proxy), whose SYNs would all spend
	// one prefix's budget.
	RateLimitExempt bool
}

// Backend is one member of a service's pool.
type Backend struct {
	Addr netip.AddrPort
	// Weight is the backend's share of new connections relative to the
	// others; 0 drains it: no new connections, the live ones continue.
	Weight int
}

// MaxWeight bounds a backend's weight: the Maglev table gives each backend
// turns in proportion to its weight, and its 65537 entries resolve ratios
// this fine.
const MaxWeight = 1000

// MaxBackends bounds a service's pool: the Maglev table (65537 entries)
// keeps every backend within about 1% of its share up to about 650
// backends (the paper's M >= 100 N).
const MaxBackends = 512

// Limits bound a service's listen queues, as Linux's net.ipv4.tcp_* and
// net.core.somaxconn knobs bound a listening socket's.
type Limits struct {
	// Backlog is the listen backlog; the accept queue holds
	// min(Backlog, Somaxconn) connections.
	Backlog   int
	Somaxconn int
	// MaxSynBacklog caps the half-open queue (tcp_max_syn_backlog).
	MaxSynBacklog int
	// SynAckRetries is how often an unanswered SYN-ACK is retransmitted
	// (tcp_synack_retries), 0..MaxSynAckRetries.
	SynAckRetries int
	// PeerCookieChecks bounds, per second, the ACKs checked as cookies
	// minted by a peer gateway sharing the secret while this gateway's own
	// cookie gate is closed; 0 checks none, as Linux does.
	PeerCookieChecks int
}

// Defaults and bounds of Limits, Linux's where it has one.
const (
	DefaultBacklog       = 1024
	DefaultSomaxconn     = 4096
	DefaultMaxSynBacklog = 4096
	// DefaultSynAckRetries is tcp_synack_retries' default.
	DefaultSynAckRetries = 5
	// MaxSynAckRetries is the largest sane tcp_synack_retries: with the
	// backoff doubling from 1 s, 10 retries already hold an entry for 34
	// minutes.
	MaxSynAckRetries = 10
	// DefaultPeerCookieChecks: each check accepts a forged ACK with
	// probability 2^-26, so a blind-ACK attack wins at most
	// 10^4 * 2^-26 = 1.5e-4 connections per second (one per 1.9 hours).
	DefaultPeerCookieChecks = 10000
)

// DefaultLimits are Linux's defaults for a listener with a 1024 backlog.
func DefaultLimits() Limits {
	return Limits{
		Backlog: DefaultBacklog, Somaxconn: DefaultSomaxconn, MaxSynBacklog: DefaultMaxSynBacklog,
		SynAckRetries: DefaultSynAckRetries, PeerCookieChecks: DefaultPeerCookieChecks,
	}
}

// AcceptQueue is the accept queue's bound: min(Backlog, Somaxconn), as
// Linux caps listen()'s backlog.
func (l Limits) AcceptQueue() int { return min(l.Backlog, l.Somaxconn) }

// CookiePolicy mirrors Linux's net.ipv4.tcp_syncookies.
type CookiePolicy string

// Cookie policies: never (0: drop SYNs when the SYN queue is full), auto
// (1: queue until full, then cookies), always (2: cookies for every SYN).
const (
	CookiesNever  CookiePolicy = "never"
	CookiesAuto   CookiePolicy = "auto"
	CookiesAlways CookiePolicy = "always"
)

// Valid reports whether p is one of the policies.
func (p CookiePolicy) Valid() bool {
	return p == CookiesNever || p == CookiesAuto || p == CookiesAlways
}

// OverflowPolicy mirrors Linux's net.ipv4.tcp_abort_on_overflow.
type OverflowPolicy string

// Overflow policies: drop (0: ignore the ACK, the client retries) and reset
// (1: answer with RST).
const (
	OverflowDrop  OverflowPolicy = "drop"
	OverflowReset OverflowPolicy = "reset"
)

// Valid reports whether p is one of the policies.
func (p OverflowPolicy) Valid() bool { return p == OverflowDrop || p == OverflowReset }

// HashKey is what consistent hashing reads of a new connection.
type HashKey string

// Hash keys: the client's address (every connection of a client goes to
// the same backend) or its address and port (connections spread).
const (
	HashAddress HashKey = "address"
	HashTuple   HashKey = "tuple"
)

// ProxyProtocol selects the PROXY protocol header sent to the backend.
type ProxyProtocol string

// PROXY protocol versions: off, v1 (text), v2 (binary).
const (
	ProxyOff ProxyProtocol = "off"
	ProxyV1  ProxyProtocol = "v1"
	ProxyV2  ProxyProtocol = "v2"
)

// Version is the header's version number: 1 or 2, 0 when off.
func (p ProxyProtocol) Version() int {
	switch p {
	case ProxyV1:
		return 1
	case ProxyV2:
		return 2
	}
	return 0
}

// NoBackendPolicy is what a SYN gets when its service has no usable
// backend.
type NoBackendPolicy string

// No-backend policies: reset (answer the SYN with a RST, as the backend's
// own kernel would with nothing listening) or drop (no answer; the client
// retries its SYN and gets through once a backend is back).
const (
	NoBackendReset NoBackendPolicy = "reset"
	NoBackendDrop  NoBackendPolicy = "drop"
)

// HealthCheckType is how a backend is checked actively.
type HealthCheckType string

// Active check types: a TCP connect, an HTTP request whose response status
// must match, or none (only the passive checks of the backend legs).
const (
	CheckTCP  HealthCheckType = "tcp"
	CheckHTTP HealthCheckType = "http"
	CheckOff  HealthCheckType = "off"
)

// HealthCheck configures active checks, run from the service's first
// source address.
type HealthCheck struct {
	Type     HealthCheckType
	Interval time.Duration
	Timeout  time.Duration
	Rise     int // consecutive successes that bring a down backend up
	Fall     int // consecutive failures that take an up backend down
	Path     string
	Host     string // HTTP Host header; empty: the backend's address
	Status   int
}

// Announce is what the SYN-ACK offers as configured. Each field is
// optional: an unset one is learned from the backend's own SYN-ACK.
type Announce struct {
	MSS         *uint16
	WindowScale *uint8
	SACK        *bool
	Timestamps  *bool
}

// Offer is what a service's SYN-ACKs offer: the backends' options with
// the configured Announce laid over them, and the window the engine holds
// before the splice. Each option goes only into a SYN-ACK whose SYN
// carried it (RFC 7323, RFC 2018); ECN only in answer to an ECN-setup SYN.
// The engine's SYN-ACKs and the data path's cookie SYN-ACKs offer the
// same.
type Offer struct {
	Window     uint16 // unscaled: a SYN-ACK's window is never scaled
	MSS        uint16 // zero omits the option
	WScale     uint8  // 0xff (flow.NoWScale) omits the option
	SACK       bool
	Timestamps bool
	// ECN: the backends answer an ECN-setup SYN with ECE, so a client
	// asking for ECN gets it.
	ECN bool
}

// Entry is a service as the data path holds it: the engine's handle for
// it and what the data path does with its SYNs. Read back from a pinned
// map, only Listen, ID, Offload, Standby and Offer are known.
type Entry struct {
	Listen netip.AddrPort
	ID     uint32
	// Offload makes the data path answer every SYN with a cookie SYN-ACK
	// itself (the engine still validates the ACKs).
	Offload bool
	// Standby makes it do so only while no engine receives the SYN's
	// queue (between one syngate's exit and the next one's take-over).
	Standby bool
	// Offer is what those SYN-ACKs offer (with Offload or Standby).
	Offer Offer
	// NoRateLimit exempts the service's SYNs from the per-source SYN rate
	// limit (Service.RateLimitExempt).
	NoRateLimit bool
}

// Defaults of the settings every service shares, for config and for the
// engine's zero values alike.
const (
	// DefaultConnectTimeout bounds a backend handshake.
	DefaultConnectTimeout = 3 * time.Second
	// DefaultMaxPending is the bytes held per connection before its splice,
	// and so the window every SYN-ACK offers.
	DefaultMaxPending = 64 << 10
	// DefaultFlowsMax sizes the flow table for a million connections (two
	// entries each), allocated on demand.
	DefaultFlowsMax = 2 << 20
	// DefaultEstablishedTimeout is conntrack's established timeout.
	DefaultEstablishedTimeout = 5 * 24 * time.Hour
	// DefaultCloseTimeout and DefaultResetTimeout expire flows after both
	// FINs were acknowledged, or after an exact RST.
	DefaultCloseTimeout = 10 * time.Second
	DefaultResetTimeout = 10 * time.Second
	// DefaultPortMin and DefaultPortMax bound the backend-leg source ports:
	// just below Linux's ephemeral range (32768-60999), which the gateway's
	// own kernel connections (backend probes among them) use.
	DefaultPortMin = 16384
	DefaultPortMax = 32767
)
