package flow

import (
	"errors"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Sentinel errors of the data path's tables; its implementations (package
// bpf, the engine's test fakes) wrap them with context.
var (
	// ErrNotFound: no such flow, service entry, local address or socket.
	ErrNotFound = errors.New("not found")
	// ErrTableFull: an install found the flow table at its bound; nothing
	// was evicted.
	ErrTableFull = errors.New("flow table full")
)

// Key is one direction of a spliced connection as its packets arrive:
// Src is the sender, Dst the receiver (a service VIP or a local address).
type Key struct {
	Src, Dst netip.AddrPort
}

// ClientKey is the client-to-service direction of a connection.
func ClientKey(t Tuple) Key { return Key{Src: t.Client, Dst: t.Service} }

// String renders the key as "src -> dst".
func (k Key) String() string { return k.Src.String() + " -> " + k.Dst.String() }

// NAT is how the fast path rewrites one direction's packets. The
// deltas are added modulo 2^32: sequence numbers, acknowledgement numbers
// and SACK block edges (AckDelta), TSval and TSecr. The window becomes
// min(65535, (win << InShift) >> OutShift), except on SYNs.
type NAT struct {
	Src, Dst   netip.AddrPort // the addresses and ports the packet leaves with
	SeqDelta   uint32
	AckDelta   uint32
	TSvalDelta uint32
	TSecrDelta uint32
	InShift    uint8 // window scale the sender uses towards syngate
	OutShift   uint8 // window scale the receiver expects from syngate
	// Ifindex, SrcMAC and DstMAC are the egress learned from the handshake,
	// used when the kernel's FIB has no neighbour for the next hop. Zero
	// Ifindex: drop instead.
	Ifindex int
	SrcMAC  [6]byte
	DstMAC  [6]byte
}

// Track is the sequence state of one direction's sender, as conntrack
// tracks it: the program judges every segment of a tracked flow against the
// reverse direction's state and moves the state on only with segments inside
// the window, so an off-path attacker can neither end the flow with a RST
// nor shift what an exact RST is. Sequence numbers are in the space the
// sender's segments arrive in; AckMax and WinEnd in the space of the
// receiver's segments (the sender's acknowledgements after AckDelta).
type Track struct {
	SeqEnd uint32 // highest seq + length the sender sent (its SND.NXT)
	AckMax uint32 // highest ack the sender sent (the receiver's SND.UNA)
	WinEnd uint32 // highest ack + window the sender announced: the right edge of what it accepts
	WinMax uint32 // largest window the sender announced, in bytes
	WScale uint8  // the sender's window scale shift, at most 14
}

// State is a flow entry as the program last left it.
type State struct {
	NAT NAT
	// LastSeen is the CLOCK_MONOTONIC time of the last packet; compare with
	// Monotonic. Zero: no packet yet.
	LastSeen time.Duration
	// FIN: a FIN was seen in this direction (on a tracked flow, inside the
	// window; FinEnd is then its sequence number plus one).
	FIN bool
	// RST: a RST was seen in this direction; on a tracked flow only one at
	// exactly the expected sequence number.
	RST     bool
	Tracked bool  // installed with a Track (InstallTrackedFlow)
	Track   Track // the sender's state now (meaningful when Tracked)
	FinEnd  uint32
	// TSRecent is the sender's latest TSval, as it sent it, from a segment
	// inside the window (with HasTS; tracked flows only).
	TSRecent uint32
	HasTS    bool
	// Resync: the tracked state may lag behind the connection (written
	// from a copy a migration took while the previous program ran); the
	// program learns from this direction's next segment without judging it.
	Resync  bool
	Packets uint64
	Bytes   uint64
}

// FINAcked reports whether this direction's FIN was sent and rev, the
// reverse direction's state, acknowledged it.
func (s State) FINAcked(rev State) bool {
	return s.FIN && int32(rev.Track.AckMax-s.FinEnd) >= 0
}

// Monotonic returns CLOCK_MONOTONIC, the clock of State.LastSeen.
func Monotonic() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail for this clock
	return time.Duration(ts.Nano())
}

// StandbyACK is a handshake ACK the program kept while no engine had a
// socket for its queue (spec.Entry.Standby): most likely the ACK of a
// standby cookie SYN-ACK, which the next engine validates as if it had
// just arrived.
type StandbyACK struct {
	// Frame is the Ethernet frame up to the end of its TCP header (any
	// payload is cut off, its IP length fixed to match: the client
	// retransmits the data).
	Frame []byte
	// Ifindex is the interface it came in on; Age how long ago.
	Ifindex int
	Age     time.Duration
}
