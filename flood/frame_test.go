package flood

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	testSrcMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	testDstMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
)

// naiveChecksum is the RFC 1071 sum written the slow, obvious way, to check
// the generator's incremental sums against.
func naiveChecksum(parts ...[]byte) uint16 {
	var s uint64
	for _, b := range parts {
		for i := 0; i < len(b); i += 2 {
			w := uint64(b[i]) << 8
			if i+1 < len(b) {
				w |= uint64(b[i+1])
			}
			s += w
		}
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func pseudoHeader(src, dst netip.Addr, n int) []byte {
	var p []byte
	p = append(p, src.AsSlice()...)
	p = append(p, dst.AsSlice()...)
	if src.Is4() {
		return append(p, 0, 6, byte(n>>8), byte(n))
	}
	return append(p, 0, 0, byte(n>>8), byte(n), 0, 0, 0, 6)
}

func TestFramesAreValidSYNs(t *testing.T) {
	for _, tc := range []struct {
		spoof  netip.Prefix
		target netip.AddrPort
	}{
		{spoofV4, netip.MustParseAddrPort("203.0.113.1:80")},
		{netip.MustParsePrefix("198.19.7.0/24"), netip.MustParseAddrPort("203.0.113.1:8443")},
		{spoofV6, netip.MustParseAddrPort("[2001:db8:3::1]:80")},
		{netip.MustParsePrefix("2001:db8:ff42:1::/64"), netip.MustParseAddrPort("[2001:db8:3::1]:443")},
	} {
		t.Run(tc.spoof.String(), func(t *testing.T) {
			g := newFrameGen(testSrcMAC, testDstMAC, tc.spoof, tc.target, 1, 2)
			slot := make([]byte, slotSize)
			g.init(slot)
			frame := slot[:g.frameLen()]
			srcs := map[netip.Addr]bool{}
			ports := map[uint16]bool{}
			seqs := map[uint32]bool{}
			const n = 5000
			for i := range n {
				g.fill(slot)
				pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
				if el := pkt.ErrorLayer(); el != nil {
					t.Fatalf("frame %d does not decode: %v", i, el.Error())
				}
				eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
				if eth.SrcMAC.String() != testSrcMAC.String() || eth.DstMAC.String() != testDstMAC.String() {
					t.Fatalf("MACs %v -> %v", eth.SrcMAC, eth.DstMAC)
				}
				tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
				if !ok {
					t.Fatalf("frame %d: no TCP layer", i)
				}
				var src, dst netip.Addr
				if ip4, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
					src, _ = netip.AddrFromSlice(ip4.SrcIP)
					dst, _ = netip.AddrFromSlice(ip4.DstIP)
					if ip4.TTL != 64 || ip4.Protocol != layers.IPProtocolTCP || int(ip4.Length) != len(frame)-ethLen {
						t.Fatalf("IPv4 header %+v", ip4)
					}
					if c := naiveChecksum(frame[ethLen : ethLen+ipv4Len]); c != 0 {
						t.Fatalf("frame %d: IPv4 header checksum off (residue %#x)", i, c)
					}
				} else if ip6, ok := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
					src, _ = netip.AddrFromSlice(ip6.SrcIP)
					dst, _ = netip.AddrFromSlice(ip6.DstIP)
					if ip6.HopLimit != 64 || ip6.NextHeader != layers.IPProtocolTCP || int(ip6.Length) != tcpLen {
						t.Fatalf("IPv6 header %+v", ip6)
					}
				} else {
					t.Fatalf("frame %d: no IP layer", i)
				}
				if dst != tc.target.Addr() || uint16(tcp.DstPort) != tc.target.Port() {
					t.Fatalf("frame %d goes to %v:%d", i, dst, tcp.DstPort)
				}
				if !tc.spoof.Contains(src) {
					t.Fatalf("frame %d: source %v outside %v", i, src, tc.spoof)
				}
				if !tcp.SYN || tcp.ACK || tcp.RST || tcp.FIN || tcp.Ack != 0 || tcp.SrcPort < 1024 {
					t.Fatalf("frame %d: not a plain SYN from a high port: %+v", i, tcp)
				}
				if len(tcp.Options) != 6 || tcp.Options[0].OptionType != layers.TCPOptionKindMSS {
					t.Fatalf("frame %d: options %v", i, tcp.Options)
				}
				seg := frame[len(frame)-tcpLen:]
				if c := naiveChecksum(pseudoHeader(src, dst, len(seg)), seg); c != 0 {
					t.Fatalf("frame %d: TCP checksum off (residue %#x)", i, c)
				}
				srcs[src] = true
				ports[uint16(tcp.SrcPort)] = true
				seqs[tcp.Seq] = true
			}
			// Random fields: collisions are rare; a stuck field shows as one value.
			wantDistinct := n * 9 / 10
			if hostBits := src128Bits(tc.spoof); hostBits <= 16 {
				wantDistinct = 1 << hostBits * 9 / 10
			}
			if len(srcs) < wantDistinct || len(seqs) < n*99/100 || len(ports) < 4000 {
				t.Fatalf("not random enough: %d sources (want %d), %d ISNs, %d ports in %d frames", len(srcs), wantDistinct, len(seqs), len(ports), n)
			}
		})
	}
}

func src128Bits(p netip.Prefix) int { return p.Addr().BitLen() - p.Bits() }

func TestFramesDifferPerSeed(t *testing.T) {
	target := netip.MustParseAddrPort("203.0.113.1:80")
	a := newFrameGen(testSrcMAC, testDstMAC, spoofV4, target, 1, 2)
	b := newFrameGen(testSrcMAC, testDstMAC, spoofV4, target, 3, 4)
	sa, sb := make([]byte, slotSize), make([]byte, slotSize)
	a.init(sa)
	b.init(sb)
	a.fill(sa)
	b.fill(sb)
	if binary.BigEndian.Uint32(sa[ethLen+ipv4Len+4:]) == binary.BigEndian.Uint32(sb[ethLen+ipv4Len+4:]) {
		t.Fatal("two seeds gave the same ISN")
	}
}

func BenchmarkFill(b *testing.B) {
	for _, target := range []netip.AddrPort{
		netip.MustParseAddrPort("203.0.113.1:80"),
		netip.MustParseAddrPort("[2001:db8:3::1]:80"),
	} {
		b.Run(map[bool]string{false: "v4", true: "v6"}[target.Addr().Is6()], func(b *testing.B) {
			spoof := spoofV4
			if target.Addr().Is6() {
				spoof = spoofV6
			}
			g := newFrameGen(testSrcMAC, testDstMAC, spoof, target, 1, 2)
			slot := make([]byte, slotSize)
			g.init(slot)
			b.ReportAllocs()
			for b.Loop() {
				g.fill(slot)
			}
		})
	}
}
