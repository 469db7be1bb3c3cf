package config

import (
	"net/netip"
	"time"
)

// Config is a validated configuration. Zero values never reach callers:
// Parse fills every default.
type Config struct {
	Interfaces []Interface
	// SecretFile holds the master secret SYN cookie keys derive from. It is
	// created (mode 0600, random bytes) by `syngate run` when missing; share
	// it between gateways that must validate each other's cookies.
	SecretFile string
	// BPFFS is the bpffs directory the data plane pins its maps, XDP links
	// and program under, so the data path outlives the process and the
	// next one takes it over. Default /sys/fs/bpf/syngate; "off" disables
	// pinning.
	BPFFS   string
	Metrics Metrics
	Control Control
	SYN     SYN
	Backend Backend
	Flows   Flows
	Filters Filters
	// Services are the protected listeners, in file order.
	Services []Service
	// BGP announces the services' VIPs to routers; no peers, no speaker.
	BGP BGP
	// Peers are the other gateways on the ingress link (their addresses
	// there). Segments of connections this gateway does not know are
	// passed to them, so a connection spliced on a peer survives an ECMP
	// change (a drain). Empty: none are.
	Peers []netip.Addr
}

// XDPMode says how the XDP program is attached to an interface.
type XDPMode string

// XDP attach modes. Auto tries native (driver) mode and falls back to
// generic (skb) mode when the driver cannot.
const (
	XDPNative  XDPMode = "native"
	XDPGeneric XDPMode = "generic"
	XDPAuto    XDPMode = "auto"
)

// Datapath says where an interface's spliced segments are rewritten.
type Datapath string

// Data paths. XDP splices before the kernel builds an skb; TC splices at
// tcx ingress after GRO, with the skb's checksum state, for links that
// deliver partial checksums (veth, tun/tap: containers and VMs on the same
// host). Auto picks tc for those drivers, xdp otherwise.
const (
	DatapathXDP  Datapath = "xdp"
	DatapathTC   Datapath = "tc"
	DatapathAuto Datapath = "auto"
)

// Interface is one ingress interface syngate attaches to.
type Interface struct {
	Name     string
	Mode     XDPMode  // default auto
	Datapath Datapath // default auto
	// CPUs pins the engine shard of receive queue i to CPUs[i mod len]:
	// for interfaces whose queues have no IRQ of their own (veth) or to
	// override it. Empty: the CPU in the queue's IRQ affinity, else queue
	// index mod the CPU count.
	CPUs []int
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Listen is the address /metrics and /healthz are served on. Default
	// 127.0.0.1:9420; "off" disables the endpoint.
	Listen string
}

// Control configures the local control socket `syngate status` and
// `syngate flows` read.
type Control struct {
	// Socket is the unix socket's path. Default /run/syngate/control.sock;
	// "off" disables it.
	Socket string
	// Mode is the socket's permission: 0600 (default; root, or the
	// daemon's user) or 0660 (and the daemon's group).
	Mode uint32
}

// CookiePolicy mirrors Linux's net.ipv4.tcp_syncookies.
type CookiePolicy string

// Cookie policies: never (0: drop SYNs when the SYN queue is full), auto (1:
// queue until full, then cookies), always (2: cookies for every SYN).
const (
	CookiesNever  CookiePolicy = "never"
	CookiesAuto   CookiePolicy = "auto"
	CookiesAlways CookiePolicy = "always"
)

// SYN holds the global listen-path settings, Linux's net.ipv4.tcp_* knobs.
type SYN struct {
	Cookies       CookiePolicy  // tcp_syncookies; default auto
	MaxSynBacklog int           // tcp_max_syn_backlog, per service; default 4096
	SynAckRetries int           // tcp_synack_retries; default 5 (0..10)
	Somaxconn     int           // net.core.somaxconn: caps every backlog; default 4096
	KeyRotation   time.Duration // cookie key epoch length; default 60s
	// PeerCookieChecks bounds, per second and service, the ACKs checked as
	// cookies minted by a peer gateway sharing the secret while this
	// gateway's own cookie gate is closed (an ECMP change moved a
	// handshake). Default 10000; 0 checks none, as Linux does.
	PeerCookieChecks int
}

// Backend holds how syngate opens the backend leg.
type Backend struct {
	// ConnectTimeout bounds the backend handshake; past it the client gets
	// an RST. Default 3s.
	ConnectTimeout time.Duration
	// ProbeInterval is how often each backend's TCP options (MSS, window
	// scale, SACK, timestamps) are learned again. Default 60s; 0 in the file
	// is rejected, use a large value to probe rarely.
	ProbeInterval time.Duration
	// PortMin and PortMax bound the source ports syngate allocates toward
	// backends. Default 16384-32767. The range must not overlap the kernel's
	// net.ipv4.ip_local_port_range: segments to these ports on a source
	// address are syngate's, never the kernel's (run checks it).
	PortMin, PortMax uint16
	// PortQuietTime is an extra rest of a freed source port before reuse.
	// Default 0: a port is unique per source address and backend, and the
	// engine picks the next connection's ISN above everything the backend
	// saw on the port and its timestamps from a clock that only moves
	// forward, so a backend still in TIME_WAIT accepts the new SYN (RFC
	// 6191). A closed flow gives its port up early (after 1 s of quiet)
	// when the port is needed. Sustained connections per second to one
	// backend from one source address are about
	// (PortMax-PortMin+1) / (connection lifetime + 1s + PortQuietTime).
	PortQuietTime time.Duration
	// MaxPending bounds the bytes held per connection while its backend leg
	// opens (data sent with or right after the handshake ACK). Default 64 KiB.
	MaxPending int
}

// Flows holds conntrack-like expiry of spliced flows.
type Flows struct {
	// Max bounds the XDP flow table (entries, one per direction; a
	// connection takes two) and, at Max/2, the engine's connections. Entries
	// are allocated on demand, so memory follows the connections up to the
	// bound. Past it new connections are refused with a RST; an
	// established flow is never evicted. Default 2097152 (a million
	// connections).
	Max int
	// EstablishedTimeout expires idle established flows; both ends get a
	// RST. Default 5 days, conntrack's nf_conntrack_tcp_timeout_established:
	// longer than any keepalive interval, and every packet (keepalive probes
	// too) renews it.
	EstablishedTimeout time.Duration
	// CloseTimeout expires flows once both sides' FINs are acknowledged,
	// long enough for retransmitted FINs and last ACKs to get through.
	// Default 10s (conntrack keeps 120s, but it does not hold a source port
	// meanwhile). One FIN (a half-closed connection) does not start it.
	CloseTimeout time.Duration
	// ResetTimeout expires flows after a RST at exactly the expected
	// sequence number (conntrack's close); RSTs merely in the window or
	// outside it do not count. Default 10s.
	ResetTimeout time.Duration
}

// Filters are the cheap early defenses of the XDP program.
type Filters struct {
	DropSynPayload bool // drop SYNs carrying data; default true
	DropBadFlags   bool // drop impossible flag combinations; default true
	// RateLimit is SYNs per second per source prefix; 0 disables it (default).
	RateLimit   uint32
	RateBurst   uint32 // default 2*RateLimit
	PrefixLenV4 int    // default 24
	PrefixLenV6 int    // default 64
}

// OverflowPolicy mirrors Linux's net.ipv4.tcp_abort_on_overflow.
type OverflowPolicy string

// Overflow policies: drop (0: ignore the ACK, the client retries) and reset
// (1: answer with RST).
const (
	OverflowDrop  OverflowPolicy = "drop"
	OverflowReset OverflowPolicy = "reset"
)

// Service is one protected listener.
type Service struct {
	Name   string
	Listen netip.AddrPort // the VIP:port clients connect to
	// Backends are where connections are spliced to (the file's
	// "backends", or "backend" as shorthand for a pool of one), in file
	// order, at least one. A new connection picks one by consistent
	// hashing (see Hash); a live one keeps its backend.
	Backends []Member
	// Hash is what picks a new connection's backend. Default HashTuple.
	Hash HashKey
	// ProxyProtocol is the PROXY protocol header the backend leg starts
	// with. Default ProxyOff.
	ProxyProtocol ProxyProtocol
	// OnNoBackend is what a new SYN gets while every backend is down or
	// drained. Default NoBackendReset.
	OnNoBackend NoBackendPolicy
	// HealthCheck configures the active checks of every backend.
	HealthCheck HealthCheck
	// Sources are syngate's addresses toward the backend (the file's
	// "source": one address, a list, or prefixes); empty means the one
	// address "from the route to Backend", resolved at run time. Each
	// address has its own source ports toward the backend, so N addresses
	// carry N times the connections. They must be assigned to the gateway
	// (run checks it): the backend answers them.
	Sources    []netip.Addr
	Backlog    int            // accept queue bound, capped by SYN.Somaxconn; default 1024
	OnOverflow OverflowPolicy // default drop
	Cookies    CookiePolicy   // default SYN.Cookies
	Announce   Announce
}

// Member is one backend of a service's pool.
type Member struct {
	Addr netip.AddrPort
	// Weight is the backend's share of new connections relative to the
	// others. Default 1; 0 drains it: no new connections, the live ones
	// continue.
	Weight int
}

// MaxWeight bounds a backend's weight: the Maglev table gives each
// backend turns in proportion to its weight, and a table of
// DefaultMaglevSize entries resolves ratios this fine.
const MaxWeight = 1000

// MaxBackends bounds a service's pool: the Maglev table (65537 entries)
// keeps every backend within about 1% of its share up to about 650
// backends (the paper's M >= 100 N).
const MaxBackends = 512

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
// source address. Defaults: tcp, every 5s, timeout 2s, rise 2, fall 3
// (HAProxy's rise and fall), HTTP "GET /" expecting 200.
type HealthCheck struct {
	Type     HealthCheckType
	Interval time.Duration
	Timeout  time.Duration
	Rise     int // consecutive successes that bring a down backend up
	Fall     int // consecutive failures that take an up backend down
	Path     string
	Host     string // HTTP Host header; default the backend's address
	Status   int
}

// Announce is what the SYN-ACK offers. Each field is optional: an unset one
// is learned from the backend's own SYN-ACK by the probe handshake.
type Announce struct {
	MSS         *uint16
	WindowScale *uint8
	SACK        *bool
	Timestamps  *bool
}
