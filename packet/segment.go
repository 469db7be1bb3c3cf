package packet

import (
	"net/netip"
	"strings"

	"github.com/syngate/syngate/flow"
)

// Flags are the eight TCP control bits of byte 13 of the header.
type Flags uint8

// TCP control bits.
const (
	FIN Flags = 1 << iota
	SYN
	RST
	PSH
	ACK
	URG
	ECE
	CWR
)

var flagNames = [8]string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}

// String renders the set bits as "SYN|ACK", for logs and test failures.
func (f Flags) String() string {
	if f == 0 {
		return "none"
	}
	var b strings.Builder
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte('|')
			}
			b.WriteString(n)
		}
	}
	return b.String()
}

// MaxSACKBlocks is how many SACK blocks fit in 40 bytes of TCP options.
const MaxSACKBlocks = 4

// SACKBlock is one received range [Left, Right) of a SACK option.
type SACKBlock struct {
	Left, Right uint32
}

// Segment is a parsed Ethernet/IP/TCP frame. Parse overwrites every field,
// so one Segment can be reused for every frame of a receive loop.
//
// Offsets count bytes from the start of the frame, so a rewrite (splice,
// MSS clamp, timestamp translation) can patch the frame and fix checksums
// incrementally. An option offset of 0 means the option was absent: no
// option can start at byte 0 of a frame.
type Segment struct {
	DstMAC, SrcMAC [6]byte

	// HasVLAN is set when the frame carried an 802.1Q tag; VLAN is its TCI
	// (priority, DEI and VLAN ID), kept whole so a reply keeps the priority.
	HasVLAN bool
	VLAN    uint16

	// Tuple is the connection as seen by a listener: Client is the source
	// and Service the destination of this segment. That is right for what
	// clients send (SYN, handshake ACK); for a segment travelling the other
	// way use Src and Dst, which are always the raw addresses and ports.
	Tuple    flow.Tuple
	Src, Dst netip.AddrPort

	TTL  uint8  // IPv4 TTL or IPv6 hop limit
	TOS  uint8  // IPv4 TOS or IPv6 traffic class, ECN bits included
	IPID uint16 // IPv4 identification; 0 for IPv6

	Seq, Ack uint32
	Flags    Flags
	Window   uint16 // unscaled, as on the wire
	Urgent   uint16
	Checksum uint16 // the TCP checksum as received; see VerifyChecksums

	// Options holds MSS, window scale, SACK-permitted and timestamps as
	// parsed, WScale NoWScale when absent and clamped to MaxWScale like
	// Linux does. Options.ECN is set for an ECN-setup SYN (ECE and CWR,
	// no ACK) or SYN-ACK (ECE without CWR, RFC 3168 section 6.1.1).
	Options flow.SynOptions

	// SACK holds the first NumSACK blocks of a SACK option.
	SACK    [MaxSACKBlocks]SACKBlock
	NumSACK int

	MSSOffset    int // the 2-byte MSS value
	WScaleOffset int // the shift byte of window scale
	TSOffset     int // TSval; TSecr follows at TSOffset+4
	SACKOffset   int // SACK[0].Left; block i starts at SACKOffset+8*i

	IPOffset      int // first byte of the IP header (14, or 18 with VLAN)
	TCPOffset     int // first byte of the TCP header
	PayloadOffset int // first byte after the TCP options

	// Payload is the TCP payload as a sub-slice of the frame (no copy),
	// bounded by the IP length so Ethernet padding is excluded, and capped
	// so appending to it cannot overwrite the frame.
	Payload []byte
}

// Is6 reports whether the segment came over IPv6.
func (s *Segment) Is6() bool { return s.Src.Addr().Is6() }

// SeqLen is the sequence space the segment occupies (RFC 793 SEG.LEN):
// its payload plus one for SYN and one for FIN.
func (s *Segment) SeqLen() uint32 {
	n := uint32(len(s.Payload))
	if s.Flags&SYN != 0 {
		n++
	}
	if s.Flags&FIN != 0 {
		n++
	}
	return n
}

// IPEnd is the offset just past the IP datagram; any bytes after it are
// link-layer padding.
func (s *Segment) IPEnd() int { return s.PayloadOffset + len(s.Payload) }

// VerifyChecksums checks the IPv4 header checksum and the TCP checksum of
// frame, which s must have been parsed from. Parse does not do it itself
// because frames from a local veth peer or a NIC with checksum offload may
// legitimately carry partial checksums.
func VerifyChecksums(frame []byte, s *Segment) error {
	end := s.IPEnd()
	if s.IPOffset < 14 || s.TCPOffset < s.IPOffset+20 || end > len(frame) || s.TCPOffset+20 > end {
		return ErrTruncated
	}
	if !s.Is6() {
		hdr := frame[s.IPOffset:s.TCPOffset]
		if IPv4HeaderChecksum(hdr) != be16(hdr[10:]) {
			return ErrBadChecksum
		}
	}
	tcp := frame[s.TCPOffset:end]
	if TCPChecksum(s.Src.Addr(), s.Dst.Addr(), tcp) != be16(tcp[16:]) {
		return ErrBadChecksum
	}
	return nil
}
