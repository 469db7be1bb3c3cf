package config

import (
	"net/netip"
	"time"

	"github.com/syngate/syngate/spec"
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
	// Services are the protected listeners, in file order, every
	// default applied (syn.* values are copied into each one's Limits and
	// Cookies): what the engine runs.
	Services []spec.Service
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

// SYN holds the global listen-path settings, Linux's net.ipv4.tcp_* knobs.
type SYN struct {
	Cookies       spec.CookiePolicy // tcp_syncookies; default auto
	MaxSynBacklog int               // tcp_max_syn_backlog, per service; default 4096
	SynAckRetries int               // tcp_synack_retries; default 5 (0..10)
	Somaxconn     int               // net.core.somaxconn: caps every backlog; default 4096
	KeyRotation   time.Duration     // cookie key epoch length; default 60s
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
	RateBurst   uint32 // default 2*RateLimit; at least 1 with a rate limit
	PrefixLenV4 int    // default 24
	PrefixLenV6 int    // default 64
}
