package packet

import (
	"encoding/binary"
	"net/netip"

	"github.com/syngate/syngate/flow"
)

const (
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100

	ethLen  = 14
	vlanLen = 4
	ip4Len  = 20
	ip6Len  = 40
	tcpLen  = 20

	protoTCP      = 6
	protoHopByHop = 0
	protoRouting  = 43
	protoFragment = 44
	protoDestOpts = 60

	optEOL       = 0
	optNOP       = 1
	optMSS       = 2
	optWScale    = 3
	optSACKPerm  = 4
	optSACK      = 5
	optTimestamp = 8
)

// MaxExtHeaders bounds the IPv6 extension headers Parse skips before TCP.
// Real SYNs carry none; a long chain is an attack on whoever parses it.
const MaxExtHeaders = 4

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

// Parse decodes frame into s without allocating. On error s is partly
// filled and must not be used. frame is not retained except through
// s.Payload.
//
// It checks structure, not checksums (see VerifyChecksums). Unknown TCP
// options are skipped; a known option with a wrong length is an error,
// because only a broken or hostile stack sends one.
func Parse(frame []byte, s *Segment) error {
	*s = Segment{}
	s.Options.WScale = flow.NoWScale
	if len(frame) < ethLen {
		return ErrTruncated
	}
	copy(s.DstMAC[:], frame[0:6])
	copy(s.SrcMAC[:], frame[6:12])
	et := be16(frame[12:])
	off := ethLen
	if et == etherTypeVLAN {
		if len(frame) < ethLen+vlanLen {
			return ErrTruncated
		}
		s.HasVLAN = true
		s.VLAN = be16(frame[14:])
		et = be16(frame[16:])
		off += vlanLen
	}
	s.IPOffset = off

	var tcpOff, end int
	var src, dst netip.Addr
	var err error
	switch et {
	case etherTypeIPv4:
		tcpOff, end, src, dst, err = parseIPv4(frame, off, s)
	case etherTypeIPv6:
		tcpOff, end, src, dst, err = parseIPv6(frame, off, s)
	default:
		return ErrNotIP
	}
	if err != nil {
		return err
	}
	return parseTCP(frame[:end], tcpOff, src, dst, s)
}

// parseIPv4 returns the TCP header offset and the end of the datagram.
func parseIPv4(frame []byte, off int, s *Segment) (int, int, netip.Addr, netip.Addr, error) {
	var none netip.Addr
	if len(frame)-off < ip4Len {
		return 0, 0, none, none, ErrTruncated
	}
	h := frame[off:]
	if h[0]>>4 != 4 {
		return 0, 0, none, none, ErrBadVersion
	}
	ihl := int(h[0]&0x0f) * 4
	if ihl < ip4Len {
		return 0, 0, none, none, ErrBadIHL
	}
	total := int(be16(h[2:]))
	if total < ihl {
		return 0, 0, none, none, ErrBadLength
	}
	if total > len(h) {
		return 0, 0, none, none, ErrTruncated
	}
	// More-fragments or a non-zero offset; DF and the reserved bit are fine.
	if be16(h[6:])&0x3fff != 0 {
		return 0, 0, none, none, ErrFragment
	}
	if h[9] != protoTCP {
		return 0, 0, none, none, ErrNotTCP
	}
	s.TOS = h[1]
	s.IPID = be16(h[4:])
	s.TTL = h[8]
	src := netip.AddrFrom4([4]byte(h[12:16]))
	dst := netip.AddrFrom4([4]byte(h[16:20]))
	return off + ihl, off + total, src, dst, nil
}

// parseIPv6 skips up to MaxExtHeaders extension headers and returns the TCP
// header offset and the end of the datagram.
func parseIPv6(frame []byte, off int, s *Segment) (int, int, netip.Addr, netip.Addr, error) {
	var none netip.Addr
	if len(frame)-off < ip6Len {
		return 0, 0, none, none, ErrTruncated
	}
	h := frame[off:]
	if h[0]>>4 != 6 {
		return 0, 0, none, none, ErrBadVersion
	}
	plen := int(be16(h[4:]))
	if plen == 0 {
		return 0, 0, none, none, ErrBadLength
	}
	end := off + ip6Len + plen
	if end > len(frame) {
		return 0, 0, none, none, ErrTruncated
	}
	src := netip.AddrFrom16([16]byte(h[8:24]))
	dst := netip.AddrFrom16([16]byte(h[24:40]))
	if src.Is4In6() || dst.Is4In6() {
		return 0, 0, none, none, ErrMappedAddress
	}
	s.TOS = h[0]<<4 | h[1]>>4
	s.TTL = h[7]

	next := h[6]
	p := off + ip6Len
	for i := 0; ; i++ {
		switch next {
		case protoTCP:
			return p, end, src, dst, nil
		case protoFragment:
			return 0, 0, none, none, ErrFragment
		case protoHopByHop, protoRouting, protoDestOpts:
			// RFC 8200 section 4.1: hop-by-hop only right after the header.
			if i == MaxExtHeaders || (next == protoHopByHop && i != 0) {
				return 0, 0, none, none, ErrExtHeader
			}
			if end-p < 8 {
				return 0, 0, none, none, ErrTruncated
			}
			l := (int(frame[p+1]) + 1) * 8
			if end-p < l {
				return 0, 0, none, none, ErrTruncated
			}
			next = frame[p]
			p += l
		default:
			return 0, 0, none, none, ErrNotTCP
		}
	}
}

// parseTCP decodes the TCP header at off; frame ends with the datagram.
func parseTCP(frame []byte, off int, src, dst netip.Addr, s *Segment) error {
	if len(frame)-off < tcpLen {
		return ErrTruncated
	}
	t := frame[off:]
	doff := int(t[12]>>4) * 4
	if doff < tcpLen || doff > len(t) {
		return ErrBadDataOffset
	}
	s.TCPOffset = off
	s.PayloadOffset = off + doff
	s.Src = netip.AddrPortFrom(src, be16(t[0:]))
	s.Dst = netip.AddrPortFrom(dst, be16(t[2:]))
	s.Tuple = flow.Tuple{Client: s.Src, Service: s.Dst}
	s.Seq = be32(t[4:])
	s.Ack = be32(t[8:])
	s.Flags = Flags(t[13])
	s.Window = be16(t[14:])
	s.Checksum = be16(t[16:])
	s.Urgent = be16(t[18:])
	switch s.Flags & (SYN | ACK | ECE | CWR) {
	case SYN | ECE | CWR, SYN | ACK | ECE:
		s.Options.ECN = true
	}
	if err := parseOptions(t[tcpLen:doff], off+tcpLen, s); err != nil {
		return err
	}
	s.Payload = frame[s.PayloadOffset:len(frame):len(frame)]
	return nil
}

// parseOptions decodes the TCP options o, which start at frame offset base.
// A repeated option overrides the earlier one, as in Linux.
func parseOptions(o []byte, base int, s *Segment) error {
	for i := 0; i < len(o); {
		kind := o[i]
		if kind == optEOL {
			return nil
		}
		if kind == optNOP {
			i++
			continue
		}
		if len(o)-i < 2 {
			return ErrBadOption
		}
		l := int(o[i+1])
		if l < 2 || l > len(o)-i {
			return ErrBadOption
		}
		v := o[i+2 : i+l]
		switch kind {
		case optMSS:
			if l != 4 {
				return ErrBadOption
			}
			s.Options.MSS = be16(v)
			s.MSSOffset = base + i + 2
		case optWScale:
			if l != 3 {
				return ErrBadOption
			}
			s.Options.WScale = min(v[0], flow.MaxWScale)
			s.WScaleOffset = base + i + 2
		case optSACKPerm:
			if l != 2 {
				return ErrBadOption
			}
			s.Options.SACK = true
		case optSACK:
			if l < 10 || (l-2)%8 != 0 {
				return ErrBadOption
			}
			n := (l - 2) / 8 // at most 4: options are at most 40 bytes
			for j := 0; j < n; j++ {
				s.SACK[j] = SACKBlock{Left: be32(v[8*j:]), Right: be32(v[8*j+4:])}
			}
			s.NumSACK = n
			s.SACKOffset = base + i + 2
		case optTimestamp:
			if l != 10 {
				return ErrBadOption
			}
			s.Options.Timestamps = true
			s.Options.TSval = be32(v)
			s.Options.TSecr = be32(v[4:])
			s.TSOffset = base + i + 2
		}
		i += l
	}
	return nil
}
