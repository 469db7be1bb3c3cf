package packet

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// Sum adds b to the Internet checksum running sum initial (RFC 1071) and
// returns the new sum folded to 16 bits, not complemented. Words are
// big-endian; an odd final byte is padded with zero, so when chaining
// (Sum(b2, Sum(b1, 0))) every chunk but the last must have even length.
//
// It adds eight bytes at a time with carry: because 2^16 ≡ 1 modulo 0xffff,
// a 64-bit word sums to the same one's-complement value as its four 16-bit
// words, and the end-around carry is the same.
func Sum(b []byte, initial uint16) uint16 {
	acc := uint64(initial)
	var c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[8:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[16:]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b)), c)
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b)), c)
		b = b[2:]
	}
	if len(b) == 1 {
		acc, c = bits.Add64(acc, uint64(b[0])<<8, c)
	}
	// Fold the last carry in; a second carry cannot follow because the
	// first one leaves acc at most 2^64-2.
	acc, c = bits.Add64(acc, 0, c)
	acc += c
	return fold64(acc)
}

// fold64 reduces a 64-bit one's-complement sum to 16 bits.
func fold64(acc uint64) uint16 {
	acc = acc>>32 + acc&0xffffffff
	acc = acc>>32 + acc&0xffffffff
	acc = acc>>16 + acc&0xffff
	acc = acc>>16 + acc&0xffff
	return uint16(acc)
}

// Checksum returns the Internet checksum of b on top of the running sum
// initial: the complement of Sum, ready to store in a header.
func Checksum(b []byte, initial uint16) uint16 { return ^Sum(b, initial) }

// PseudoHeaderSum is the running sum of the TCP/UDP pseudo-header (RFC 793
// for IPv4, RFC 8200 section 8.1 for IPv6) for a transport segment of length
// bytes. IPv4-mapped IPv6 addresses count as IPv4.
func PseudoHeaderSum(src, dst netip.Addr, proto uint8, length int) uint16 {
	var acc uint64
	src, dst = src.Unmap(), dst.Unmap()
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		acc = uint64(binary.BigEndian.Uint32(s[:])) + uint64(binary.BigEndian.Uint32(d[:]))
	} else {
		s, d := src.As16(), dst.As16()
		acc = uint64(Sum(s[:], 0)) + uint64(Sum(d[:], 0))
	}
	acc += uint64(proto) + uint64(uint32(length))
	return fold64(acc)
}

// TCPChecksum returns the checksum of the TCP segment seg (header, options
// and payload) sent from src to dst. It skips the checksum field itself, so
// it serves both to fill that field and to verify it by comparison.
func TCPChecksum(src, dst netip.Addr, seg []byte) uint16 {
	if len(seg) < 18 {
		return ^Sum(seg, PseudoHeaderSum(src, dst, protoTCP, len(seg)))
	}
	s := Sum(seg[:16], PseudoHeaderSum(src, dst, protoTCP, len(seg)))
	return ^Sum(seg[18:], s)
}

// IPv4HeaderChecksum returns the checksum of the IPv4 header hdr (all IHL
// words). Like TCPChecksum it skips the checksum field, so the result is
// what belongs there.
func IPv4HeaderChecksum(hdr []byte) uint16 {
	if len(hdr) < 12 {
		return ^Sum(hdr, 0)
	}
	return ^Sum(hdr[12:], Sum(hdr[:10], 0))
}

// Update16 returns the checksum check after a 16-bit word of the covered
// data changed from old to new, without touching the rest (RFC 1624,
// equation 3: HC' = ~(~HC + ~m + m')).
func Update16(check, old, new uint16) uint16 {
	acc := uint32(^check) + uint32(^old) + uint32(new)
	acc = acc>>16 + acc&0xffff
	acc = acc>>16 + acc&0xffff
	return ^uint16(acc)
}

// Update32 is Update16 for an aligned 32-bit field such as a sequence
// number or a timestamp.
func Update32(check uint16, old, new uint32) uint16 {
	acc := uint64(^check) + uint64(^uint16(old>>16)) + uint64(^uint16(old)) +
		uint64(uint16(new>>16)) + uint64(uint16(new))
	return ^fold64(acc)
}

// UpdateAddr is Update16 for an address change, as when a splice rewrites
// the source or destination: the IPv4 header checksum and, through the
// pseudo-header, the TCP checksum both need it. old and new must be the
// same family.
func UpdateAddr(check uint16, old, new netip.Addr) uint16 {
	old, new = old.Unmap(), new.Unmap()
	acc := uint64(^check)
	if old.Is4() {
		o, n := old.As4(), new.As4()
		acc += uint64(^Sum(o[:], 0)) + uint64(Sum(n[:], 0))
	} else {
		o, n := old.As16(), new.As16()
		acc += uint64(^Sum(o[:], 0)) + uint64(Sum(n[:], 0))
	}
	return ^fold64(acc)
}
