package packet

import (
	"encoding/binary"
	"net/netip"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

// DefaultTTL is the IPv4 TTL and IPv6 hop limit of built frames, Linux's
// default.
const DefaultTTL = 64

// Fields describe a frame to build. The zero value of each optional field
// is the common choice.
type Fields struct {
	SrcMAC, DstMAC [6]byte

	// HasVLAN adds an 802.1Q tag with TCI VLAN.
	HasVLAN bool
	VLAN    uint16

	// Src and Dst must both be IPv4 (IPv4-mapped IPv6 counts as IPv4) or
	// both IPv6.
	Src, Dst netip.AddrPort

	TTL  uint8  // zero means DefaultTTL
	IPID uint16 // IPv4 only; zero like Linux for DF segments

	Seq, Ack uint32
	Flags    Flags
	Window   uint16

	// Options: MSS (if non-zero), window scale (unless NoWScale) and
	// SACK-permitted are written only on SYN segments; timestamps on any
	// segment when Timestamps is set. ECN is ignored by Build; BuildSyn and
	// BuildSynAck turn it into ECE/CWR.
	Options flow.SynOptions

	// Payload is copied after the TCP header; it must not overlap dst.
	Payload []byte
}

// Build writes the frame f describes into dst[:cap(dst)] and returns its
// length. The flags are f.Flags exactly. It never allocates.
func Build(dst []byte, f *Fields) (int, error) {
	src, dstAddr := f.Src.Addr().Unmap(), f.Dst.Addr().Unmap()
	v4 := src.Is4()
	if !src.IsValid() || !dstAddr.IsValid() || v4 != dstAddr.Is4() {
		return 0, ErrAddrFamily
	}
	optLen := optionsLen(f)
	tcpTotal := tcpLen + optLen + len(f.Payload)
	ipHdr := ip6Len
	if v4 {
		ipHdr = ip4Len
	}
	// IPv4 total length and IPv6 payload length are both 16 bits.
	if (v4 && ipHdr+tcpTotal > 0xffff) || (!v4 && tcpTotal > 0xffff) {
		return 0, ErrTooLarge
	}
	l2 := ethLen
	if f.HasVLAN {
		l2 += vlanLen
	}
	n := l2 + ipHdr + tcpTotal
	if cap(dst) < n {
		return 0, ErrShortBuffer
	}
	b := dst[:n]

	copy(b[0:6], f.DstMAC[:])
	copy(b[6:12], f.SrcMAC[:])
	et := uint16(etherTypeIPv4)
	if !v4 {
		et = etherTypeIPv6
	}
	if f.HasVLAN {
		binary.BigEndian.PutUint16(b[12:], etherTypeVLAN)
		binary.BigEndian.PutUint16(b[14:], f.VLAN)
		binary.BigEndian.PutUint16(b[16:], et)
	} else {
		binary.BigEndian.PutUint16(b[12:], et)
	}

	ttl := f.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	ip := b[l2 : l2+ipHdr]
	if v4 {
		ip[0] = 0x45
		ip[1] = 0
		binary.BigEndian.PutUint16(ip[2:], uint16(ipHdr+tcpTotal))
		binary.BigEndian.PutUint16(ip[4:], f.IPID)
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
		ip[8] = ttl
		ip[9] = protoTCP
		a, d := src.As4(), dstAddr.As4()
		copy(ip[12:16], a[:])
		copy(ip[16:20], d[:])
		binary.BigEndian.PutUint16(ip[10:], IPv4HeaderChecksum(ip))
	} else {
		binary.BigEndian.PutUint32(ip[0:], 6<<28) // traffic class and flow label 0
		binary.BigEndian.PutUint16(ip[4:], uint16(tcpTotal))
		ip[6] = protoTCP
		ip[7] = ttl
		a, d := src.As16(), dstAddr.As16()
		copy(ip[8:24], a[:])
		copy(ip[24:40], d[:])
	}

	t := b[l2+ipHdr:]
	binary.BigEndian.PutUint16(t[0:], f.Src.Port())
	binary.BigEndian.PutUint16(t[2:], f.Dst.Port())
	binary.BigEndian.PutUint32(t[4:], f.Seq)
	binary.BigEndian.PutUint32(t[8:], f.Ack)
	t[12] = uint8((tcpLen+optLen)/4) << 4
	t[13] = uint8(f.Flags)
	binary.BigEndian.PutUint16(t[14:], f.Window)
	t[16], t[17], t[18], t[19] = 0, 0, 0, 0 // checksum, urgent pointer
	writeOptions(t[tcpLen:tcpLen+optLen], f)
	copy(t[tcpLen+optLen:], f.Payload)
	// The pseudo-header's addresses are already in the IP header, adjacent.
	addrs := ip[12:20]
	if !v4 {
		addrs = ip[8:40]
	}
	ph := Sum(addrs, 0)
	ph = fold64(uint64(ph) + protoTCP + uint64(len(t)))
	binary.BigEndian.PutUint16(t[16:], Checksum(t, ph))
	return n, nil
}

// optionsLen is the size of the options writeOptions emits, a multiple of 4.
func optionsLen(f *Fields) int {
	o := &f.Options
	n := 0
	if o.Timestamps {
		n += 12
	}
	if f.Flags&SYN == 0 {
		return n
	}
	if o.MSS != 0 {
		n += 4
	}
	if o.SACK && !o.Timestamps {
		n += 4
	}
	if o.HasWScale() {
		n += 4
	}
	return n
}

// writeOptions lays the options out in Linux's order and packing: MSS;
// SACK-permitted sharing a word with the timestamp option (or NOP, NOP);
// NOP and window scale. Every option stays 4-byte aligned, which is what
// fast paths like the XDP splice rely on.
func writeOptions(b []byte, f *Fields) {
	o := &f.Options
	syn := f.Flags&SYN != 0
	i := 0
	if syn && o.MSS != 0 {
		b[i], b[i+1] = optMSS, 4
		binary.BigEndian.PutUint16(b[i+2:], o.MSS)
		i += 4
	}
	if o.Timestamps {
		if syn && o.SACK {
			b[i], b[i+1] = optSACKPerm, 2
		} else {
			b[i], b[i+1] = optNOP, optNOP
		}
		b[i+2], b[i+3] = optTimestamp, 10
		binary.BigEndian.PutUint32(b[i+4:], o.TSval)
		binary.BigEndian.PutUint32(b[i+8:], o.TSecr)
		i += 12
	} else if syn && o.SACK {
		b[i], b[i+1], b[i+2], b[i+3] = optNOP, optNOP, optSACKPerm, 2
		i += 4
	}
	if syn && o.HasWScale() {
		b[i], b[i+1], b[i+2], b[i+3] = optNOP, optWScale, 3, min(o.WScale, flow.MaxWScale)
	}
}

// BuildSyn builds the backend-leg SYN replaying the client's options:
// flags SYN, plus ECE and CWR when f.Options.ECN (f.Flags is ignored).
func BuildSyn(dst []byte, f *Fields) (int, error) {
	g := *f
	g.Flags = SYN
	if f.Options.ECN {
		g.Flags |= ECE | CWR
	}
	return Build(dst, &g)
}

// BuildSynAck builds a SYN-ACK: flags SYN and ACK, plus ECE when
// f.Options.ECN (f.Flags is ignored). ReplySynAck is the shortcut for
// answering a parsed SYN.
func BuildSynAck(dst []byte, f *Fields) (int, error) {
	g := *f
	g.Flags = SYN | ACK
	if f.Options.ECN {
		g.Flags |= ECE
	}
	return Build(dst, &g)
}

// BuildAck builds an ACK: f.Flags with ACK added and SYN and RST removed,
// so PSH or FIN can ride along with a payload. Only the timestamp option is
// written.
func BuildAck(dst []byte, f *Fields) (int, error) {
	g := *f
	g.Flags = f.Flags&^(SYN|RST) | ACK
	return Build(dst, &g)
}

// BuildRST builds the reset that answers seg, from seg's destination to its
// source, by the rules of RFC 793 (page 36, kept by RFC 9293 section
// 3.10.7.1): if seg has ACK the reset is <SEQ=SEG.ACK><CTL=RST>, otherwise
// <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>. It carries no options and a
// zero window, and it refuses to answer a reset with ErrResetForReset.
// dst may be the frame seg was parsed from.
func BuildRST(dst []byte, seg *Segment) (int, error) {
	if seg.Flags&RST != 0 {
		return 0, ErrResetForReset
	}
	f := Fields{
		SrcMAC:  seg.DstMAC,
		DstMAC:  seg.SrcMAC,
		HasVLAN: seg.HasVLAN,
		VLAN:    seg.VLAN,
		Src:     seg.Dst,
		Dst:     seg.Src,
		Options: flow.SynOptions{WScale: flow.NoWScale},
	}
	if seg.Flags&ACK != 0 {
		f.Seq = seg.Ack
		f.Flags = RST
	} else {
		f.Ack = seg.Seq + seg.SeqLen()
		f.Flags = RST | ACK
	}
	return Build(dst, &f)
}

// ReplySynAck writes into dst[:cap(dst)] the SYN-ACK answering syn, with
// sequence number ourISN, and returns the frame length, or 0 when dst is
// too small. MACs, addresses and ports are swapped, the VLAN tag is kept,
// and the SYN's payload (TCP Fast Open data) is not acknowledged. It
// sends each option of o only where RFC 7323 and RFC 2018 allow it: window
// scale, SACK-permitted and timestamps (with tsval, echoing the SYN's) only
// if the SYN carried them too, ECN only in answer to an ECN-setup SYN; MSS
// whenever non-zero.
//
// dst may be the very frame syn was parsed from: everything needed is read
// from syn before writing, so an AF_XDP receive frame can be turned around
// in place.
func ReplySynAck(dst []byte, syn *Segment, ourISN uint32, opts spec.Offer, tsval uint32) int {
	in := &syn.Options
	f := Fields{
		SrcMAC:  syn.DstMAC,
		DstMAC:  syn.SrcMAC,
		HasVLAN: syn.HasVLAN,
		VLAN:    syn.VLAN,
		Src:     syn.Dst,
		Dst:     syn.Src,
		Seq:     ourISN,
		Ack:     syn.Seq + 1,
		Flags:   SYN | ACK,
		Window:  opts.Window,
		Options: flow.SynOptions{
			MSS:    opts.MSS,
			WScale: flow.NoWScale,
			SACK:   opts.SACK && in.SACK,
		},
	}
	if opts.WScale != flow.NoWScale && in.HasWScale() {
		f.Options.WScale = opts.WScale
	}
	if opts.Timestamps && in.Timestamps {
		f.Options.Timestamps = true
		f.Options.TSval = tsval
		f.Options.TSecr = in.TSval
	}
	if opts.ECN && in.ECN && syn.Flags&ACK == 0 {
		f.Flags |= ECE
	}
	n, err := Build(dst, &f)
	if err != nil {
		return 0
	}
	return n
}
