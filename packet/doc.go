// Package packet parses and builds the Ethernet/IP/TCP frames of the
// handshake engine without allocating, straight from and into AF_XDP frames.
//
//	// chunk is a whole UMEM chunk; the SYN occupies chunk[:rxLen].
//	var seg packet.Segment
//	if err := packet.Parse(chunk[:rxLen], &seg); err != nil {
//		return // drop: errors.Is(err, packet.ErrTruncated), ...
//	}
//	if seg.Flags&(packet.SYN|packet.ACK) == packet.SYN {
//		// Answer in place: the SYN's frame becomes our SYN-ACK, which
//		// may be longer, so pass the chunk's full capacity.
//		n := packet.ReplySynAck(chunk[:0], &seg, isn, spec.Offer{
//			Window: 65535, MSS: 1460, WScale: 7, SACK: true, Timestamps: true,
//		}, cookieTS)
//		tx(chunk[:n]) // n == 0: chunk too small
//	}
//
// Parse fills a caller-owned Segment, so a receive loop reuses one value and
// the garbage collector never sees a packet. Everything a segment carries is
// copied into the Segment except the payload, which stays a sub-slice of the
// frame; that is what makes replying into the received frame safe.
//
// The builders (Build, BuildSyn, BuildSynAck, BuildAck, BuildRST,
// ReplySynAck) write a complete frame, checksums included, into the
// capacity of a caller's buffer and return its length. TCP options are laid
// out as Linux lays them out (MSS, SACK-permitted folded into the timestamp
// word, NOP+window scale, every option 4-byte aligned), so the SYN we send a
// backend is laid out like a kernel's.
//
// Only what a SYN-flood gateway needs is supported: Ethernet II with at most
// one 802.1Q tag, IPv4 with any IHL, IPv6 with a few hop-by-hop, routing and
// destination-options headers, and TCP. Fragments, tunnels and other
// transports are reported as errors for the caller to pass on or drop; no
// input makes the parser panic.
//
// The checksum helpers (Sum, Checksum, PseudoHeaderSum, TCPChecksum,
// IPv4HeaderChecksum, Update16, Update32, UpdateAddr) are exported for other
// code that rewrites headers.
package packet
