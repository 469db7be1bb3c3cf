// Package flow names the few values that every stage of syngate talks about:
// a TCP connection's 4-tuple, the options a client put in its SYN, and a
// spliced connection's entries in the data path's flow table (Key, NAT,
// Track, State, the table's sentinel errors and its clock).
//
// It has no logic beyond validation, so that cookie, queue, packet and proxy
// can share these types without depending on each other. The flow table's
// values live here rather than in package spec: spec says what is
// protected and how (the configuration's intent), while a flow key and its
// translation are one connection's runtime state, derived from the Tuple
// defined here, written by the engine (proxy), encoded for the kernel by
// the loader (bpf, which alone knows the C layout) and read back by the
// tools. With them here the engine does not depend on the loader.
package flow

import (
	"fmt"
	"net/netip"
)

// Tuple is one TCP connection as the client opened it: Client is the remote
// end that sent the SYN, Service is the protected VIP:port it sent it to.
// Tuple is comparable and can be used as a map key.
type Tuple struct {
	Client  netip.AddrPort
	Service netip.AddrPort
}

// Is6 reports whether the tuple is an IPv6 connection.
func (t Tuple) Is6() bool { return t.Service.Addr().Is6() && !t.Service.Addr().Is4In6() }

// String renders the tuple as "client -> service".
func (t Tuple) String() string { return fmt.Sprintf("%s -> %s", t.Client, t.Service) }

// NoWScale is the WScale value of a SYN without the window scale option.
const NoWScale = 0xff

// MaxWScale is the largest window scale TCP allows (RFC 7323, section 2.3).
const MaxWScale = 14

// SynOptions are the TCP options of a SYN (or SYN-ACK) that matter to the
// handshake. A zero MSS means the option was absent.
type SynOptions struct {
	MSS        uint16 // maximum segment size; 0 when absent
	WScale     uint8  // window scale shift, NoWScale when absent
	SACK       bool   // SACK-permitted
	Timestamps bool   // timestamps option present
	TSval      uint32 // the sender's timestamp value (valid when Timestamps)
	TSecr      uint32 // the echoed timestamp (valid when Timestamps)
	ECN        bool   // ECE and CWR both set on the SYN (RFC 3168 ECN setup)
}

// HasWScale reports whether the window scale option was present.
func (o SynOptions) HasWScale() bool { return o.WScale != NoWScale }
