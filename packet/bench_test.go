package packet

import (
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

var benchFrames = []struct {
	name  string
	frame []byte
}{
	{"v4-syn", goldenSyn4},
	{"v6-syn", goldenSyn6ECN},
	{"v6-ext-syn", goldenSyn6Ext},
	{"vlan-synack", goldenSynAckVLAN},
}

func BenchmarkParse(b *testing.B) {
	for _, bf := range benchFrames {
		b.Run(bf.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bf.frame)))
			var s Segment
			for b.Loop() {
				if err := Parse(bf.frame, &s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGopacketParse is the allocation-free gopacket path
// (DecodingLayerParser over preallocated layers) for comparison; it still
// leaves option interpretation to the caller.
func BenchmarkGopacketParse(b *testing.B) {
	for _, bf := range benchFrames[:2] {
		b.Run(bf.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bf.frame)))
			var (
				eth layers.Ethernet
				ip4 layers.IPv4
				ip6 layers.IPv6
				tcp layers.TCP
			)
			p := gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet, &eth, &ip4, &ip6, &tcp)
			decoded := make([]gopacket.LayerType, 0, 4)
			for b.Loop() {
				if err := p.DecodeLayers(bf.frame, &decoded); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var benchSynAck = flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true, TSval: 0x12345678, TSecr: 1000000}

func benchFields(v6 bool) Fields {
	f := Fields{SrcMAC: macGateway, DstMAC: macClient, Src: ap(service4, 80), Dst: ap(client4, 40000),
		Seq: 0xabcdef01, Ack: 1001, Window: 65535, Options: benchSynAck}
	if v6 {
		f.Src, f.Dst = ap(service6, 80), ap(client6, 40000)
	}
	return f
}

func BenchmarkBuildSynAck(b *testing.B) {
	for _, v6 := range []bool{false, true} {
		b.Run(family(v6), func(b *testing.B) {
			b.ReportAllocs()
			f := benchFields(v6)
			buf := make([]byte, 0, 2048)
			for b.Loop() {
				if _, err := BuildSynAck(buf, &f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReplySynAck is the hot path: answer a parsed SYN in its own
// frame.
func BenchmarkReplySynAck(b *testing.B) {
	for _, bf := range benchFrames[:2] {
		b.Run(bf.name, func(b *testing.B) {
			b.ReportAllocs()
			umem := make([]byte, 2048)
			var s Segment
			opts := spec.Offer{Window: 65535, MSS: 1460, WScale: 7, SACK: true, Timestamps: true}
			for b.Loop() {
				copy(umem, bf.frame)
				if err := Parse(umem[:len(bf.frame)], &s); err != nil {
					b.Fatal(err)
				}
				if ReplySynAck(umem[:len(bf.frame)], &s, 0xabcdef01, opts, 0x12345678) == 0 {
					b.Fatal("no reply")
				}
			}
		})
	}
}

// BenchmarkGopacketSynAck builds the same SYN-ACK as BuildSynAck with
// gopacket, reusing the layers and the serialize buffer.
func BenchmarkGopacketSynAck(b *testing.B) {
	for _, v6 := range []bool{false, true} {
		b.Run(family(v6), func(b *testing.B) {
			b.ReportAllocs()
			f := benchFields(v6)
			eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(f.SrcMAC[:]), DstMAC: net.HardwareAddr(f.DstMAC[:])}
			// The same bytes as BuildSynAck: Linux's layout, SACK-permitted
			// sharing a word with the timestamps.
			tcp := &layers.TCP{SrcPort: 80, DstPort: 40000, Seq: f.Seq, Ack: f.Ack, SYN: true, ACK: true, Window: f.Window,
				Options: []layers.TCPOption{mss(1460), sackOK, tstamp(benchSynAck.TSval, benchSynAck.TSecr), nop, wscale(7)}}
			var ip gopacket.SerializableLayer
			if v6 {
				eth.EthernetType = layers.EthernetTypeIPv6
				ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
					SrcIP: asNetIP(f.Src.Addr()), DstIP: asNetIP(f.Dst.Addr())}
				_ = tcp.SetNetworkLayerForChecksum(ip6)
				ip = ip6
			} else {
				eth.EthernetType = layers.EthernetTypeIPv4
				ip4 := &layers.IPv4{Version: 4, TTL: 64, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP,
					SrcIP: asNetIP(f.Src.Addr()), DstIP: asNetIP(f.Dst.Addr())}
				_ = tcp.SetNetworkLayerForChecksum(ip4)
				ip = ip4
			}
			buf := gopacket.NewSerializeBufferExpectedSize(128, 0)
			opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
			for b.Loop() {
				if err := gopacket.SerializeLayers(buf, opts, eth, ip, tcp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{40, 1500} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i * 7)
		}
		b.Run(sizeName(n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				_ = Checksum(data, 0)
			}
		})
		b.Run("gopacket-"+sizeName(n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				_ = gopacket.FoldChecksum(gopacket.ComputeChecksum(data, 0))
			}
		})
	}
}

func family(v6 bool) string {
	if v6 {
		return "v6"
	}
	return "v4"
}

func sizeName(n int) string {
	if n == 40 {
		return "40B"
	}
	return "1500B"
}
