package packet

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/syngate/syngate/flow"
)

// tcpOpt is one TCP option for gopacket, with what Parse should make of it.
func tcpOpt(kind layers.TCPOptionKind, data ...byte) layers.TCPOption {
	if kind <= 1 {
		return layers.TCPOption{OptionType: kind, OptionLength: 1}
	}
	return layers.TCPOption{OptionType: kind, OptionLength: uint8(2 + len(data)), OptionData: data}
}

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func u32s(vs ...uint32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return b
}

var (
	nop    = tcpOpt(layers.TCPOptionKindNop)
	eol    = tcpOpt(layers.TCPOptionKindEndList)
	sackOK = tcpOpt(layers.TCPOptionKindSACKPermitted)
	mss    = func(v uint16) layers.TCPOption { return tcpOpt(layers.TCPOptionKindMSS, u16(v)...) }
	wscale = func(v uint8) layers.TCPOption { return tcpOpt(layers.TCPOptionKindWindowScale, v) }
	tstamp = func(val, ecr uint32) layers.TCPOption {
		return tcpOpt(layers.TCPOptionKindTimestamps, u32s(val, ecr)...)
	}
	sackOpt = func(edges ...uint32) layers.TCPOption { return tcpOpt(layers.TCPOptionKindSACK, u32s(edges...)...) }
)

// optionSets are real-world and corner-case option layouts.
var optionSets = []struct {
	name string
	opts []layers.TCPOption
	want flow.SynOptions // ECN left out: it comes from the flags
	sack []SACKBlock
}{
	{"none", nil, flow.SynOptions{WScale: flow.NoWScale}, nil},
	{"linux syn", []layers.TCPOption{mss(1460), sackOK, tstamp(0x01020304, 0), nop, wscale(7)},
		flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true, TSval: 0x01020304}, nil},
	{"windows syn", []layers.TCPOption{mss(1460), nop, wscale(8), nop, nop, sackOK},
		flow.SynOptions{MSS: 1460, WScale: 8, SACK: true}, nil},
	{"macos syn", []layers.TCPOption{mss(1460), nop, wscale(6), nop, nop, tstamp(99, 0), sackOK, eol, eol},
		flow.SynOptions{MSS: 1460, WScale: 6, SACK: true, Timestamps: true, TSval: 99}, nil},
	{"mss only", []layers.TCPOption{mss(536)}, flow.SynOptions{MSS: 536, WScale: flow.NoWScale}, nil},
	{"timestamps on ack", []layers.TCPOption{nop, nop, tstamp(7, 0xfffffffe)},
		flow.SynOptions{WScale: flow.NoWScale, Timestamps: true, TSval: 7, TSecr: 0xfffffffe}, nil},
	{"three sack blocks and timestamps", []layers.TCPOption{nop, nop, tstamp(1, 2), nop, nop, sackOpt(10, 20, 30, 40, 50, 60)},
		flow.SynOptions{WScale: flow.NoWScale, Timestamps: true, TSval: 1, TSecr: 2}, []SACKBlock{{10, 20}, {30, 40}, {50, 60}}},
	{"four sack blocks", []layers.TCPOption{nop, nop, sackOpt(1, 2, 3, 4, 5, 6, 0xfffffff0, 0x10)},
		flow.SynOptions{WScale: flow.NoWScale}, []SACKBlock{{1, 2}, {3, 4}, {5, 6}, {0xfffffff0, 0x10}}},
	{"fast open cookie and unknown kinds", []layers.TCPOption{mss(1400), tcpOpt(34, 1, 2, 3, 4, 5, 6, 7, 8), tcpOpt(253, 0xf9, 0x89)},
		flow.SynOptions{MSS: 1400, WScale: flow.NoWScale}, nil},
}

// optionOffsets walks opts as gopacket serializes them and returns where
// Parse should find each value, relative to the first option byte.
func optionOffsets(opts []layers.TCPOption) (mssOff, wsOff, tsOff, sackOff int) {
	i := 0
	for _, o := range opts {
		switch o.OptionType {
		case layers.TCPOptionKindEndList, layers.TCPOptionKindNop:
			i++
			continue
		case layers.TCPOptionKindMSS:
			mssOff = i + 2
		case layers.TCPOptionKindWindowScale:
			wsOff = i + 2
		case layers.TCPOptionKindTimestamps:
			tsOff = i + 2
		case layers.TCPOptionKindSACK:
			sackOff = i + 2
		}
		i += 2 + len(o.OptionData)
	}
	return
}

func asNetIP(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

// gopacketFrame serializes one Ethernet/[VLAN]/IP/[ext]/TCP frame.
func gopacketFrame(t testing.TB, vlan bool, src, dst netip.AddrPort, ext []byte, tcp *layers.TCP, payload []byte) []byte {
	t.Helper()
	so := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	var ip gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	et := layers.EthernetTypeIPv4
	if src.Addr().Is4() {
		ip4 := &layers.IPv4{Version: 4, TTL: 61, TOS: 0x10, Id: 0xabcd, Flags: layers.IPv4DontFragment,
			Protocol: layers.IPProtocolTCP, SrcIP: asNetIP(src.Addr()), DstIP: asNetIP(dst.Addr())}
		ip, nl = ip4, ip4
	} else {
		et = layers.EthernetTypeIPv6
		nh := layers.IPProtocolTCP
		if len(ext) > 0 {
			nh = layers.IPProtocolIPv6HopByHop
		}
		ip6 := &layers.IPv6{Version: 6, TrafficClass: 0x28, FlowLabel: 0x12345, HopLimit: 61, NextHeader: nh,
			SrcIP: asNetIP(src.Addr()), DstIP: asNetIP(dst.Addr())}
		ip, nl = ip6, ip6
	}
	tcp.SrcPort, tcp.DstPort = layers.TCPPort(src.Port()), layers.TCPPort(dst.Port())
	if err := tcp.SetNetworkLayerForChecksum(nl); err != nil {
		t.Fatal(err)
	}
	seg := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(seg, so, tcp, gopacket.Payload(payload)); err != nil {
		t.Fatalf("serialize tcp: %v", err)
	}
	l3payload := append(bytes.Clone(ext), seg.Bytes()...)
	ls := []gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: net.HardwareAddr(macClient[:]), DstMAC: net.HardwareAddr(macGateway[:]), EthernetType: et}}
	if vlan {
		ls[0].(*layers.Ethernet).EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{Priority: 3, DropEligible: true, VLANIdentifier: 4001, Type: et})
	}
	ls = append(ls, ip, gopacket.Payload(l3payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, so, ls...); err != nil {
		t.Fatalf("serialize frame: %v", err)
	}
	return bytes.Clone(buf.Bytes())
}

// ext headers for IPv6: hop-by-hop with PadN, optionally followed by a
// routing header (type 4, segments left 0) and destination options.
var extChains = []struct {
	name string
	ext  []byte
}{
	{"no ext", nil},
	{"hbh", []byte{protoTCP, 0, 1, 4, 0, 0, 0, 0}},
	{"hbh+rh+dst", []byte{
		protoRouting, 0, 1, 4, 0, 0, 0, 0,
		protoDestOpts, 2, 4, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
		protoTCP, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	}},
}

// TestParseGopacketFrames parses frames built by gopacket over a matrix of
// families, VLAN tags, IPv6 extension headers, option layouts, flags and
// payloads, and checks every field of the Segment.
func TestParseGopacketFrames(t *testing.T) {
	type family struct {
		name     string
		src, dst netip.AddrPort
		exts     int
	}
	families := []family{
		{"v4", ap(client4, 51000), ap(service4, 443), 1},
		{"v6", ap(client6, 51000), ap(service6, 443), len(extChains)},
	}
	flagSets := []Flags{SYN, SYN | ECE | CWR, SYN | ACK | ECE, PSH | ACK, FIN | ACK, RST}
	payloads := [][]byte{nil, {0x42}, bytes.Repeat([]byte("syngate!"), 40)}
	n := 0
	for _, fam := range families {
		for _, vlan := range []bool{false, true} {
			for e := 0; e < fam.exts; e++ {
				for _, os := range optionSets {
					for _, fl := range flagSets {
						for _, pl := range payloads {
							name := fmt.Sprintf("%s vlan=%v %s %s %v len=%d", fam.name, vlan, extChains[e].name, os.name, fl, len(pl))
							n++
							tcp := &layers.TCP{Seq: 0x80000001, Ack: 0x7ffffffe, Window: 29200, Urgent: 0,
								FIN: fl&FIN != 0, SYN: fl&SYN != 0, RST: fl&RST != 0, PSH: fl&PSH != 0, ACK: fl&ACK != 0,
								ECE: fl&ECE != 0, CWR: fl&CWR != 0, Options: os.opts}
							var ext []byte
							if fam.src.Addr().Is6() {
								ext = extChains[e].ext
							}
							frame := gopacketFrame(t, vlan, fam.src, fam.dst, ext, tcp, pl)

							ipOff := 14
							want := Segment{DstMAC: macGateway, SrcMAC: macClient}
							if vlan {
								ipOff = 18
								want.HasVLAN, want.VLAN = true, 3<<13|1<<12|4001
							}
							want.IPOffset = ipOff
							if fam.src.Addr().Is4() {
								want.TCPOffset = ipOff + 20
								want.TOS, want.IPID = 0x10, 0xabcd
							} else {
								want.TCPOffset = ipOff + 40 + len(ext)
								want.TOS = 0x28
							}
							want.TTL = 61
							want.Src, want.Dst = fam.src, fam.dst
							want.Tuple = flow.Tuple{Client: fam.src, Service: fam.dst}
							want.Seq, want.Ack, want.Flags, want.Window = 0x80000001, 0x7ffffffe, fl, 29200
							want.Checksum = tcp.Checksum
							want.Options = os.want
							want.Options.ECN = fl&(SYN|ACK|ECE|CWR) == SYN|ECE|CWR || fl&(SYN|ACK|ECE|CWR) == SYN|ACK|ECE
							optBase := want.TCPOffset + 20
							m, w, ts, sk := optionOffsets(os.opts)
							for _, p := range []struct {
								dst *int
								rel int
							}{{&want.MSSOffset, m}, {&want.WScaleOffset, w}, {&want.TSOffset, ts}, {&want.SACKOffset, sk}} {
								if p.rel != 0 {
									*p.dst = optBase + p.rel
								}
							}
							copy(want.SACK[:], os.sack)
							want.NumSACK = len(os.sack)
							want.PayloadOffset = want.TCPOffset + int(tcp.DataOffset)*4
							want.Payload = pl

							var s Segment
							if err := Parse(frame, &s); err != nil {
								t.Errorf("%s: Parse: %v", name, err)
								continue
							}
							t.Run(name, func(t *testing.T) { equalSegment(t, &s, &want) })
							if err := VerifyChecksums(frame, &s); err != nil {
								t.Errorf("%s: VerifyChecksums on gopacket's frame: %v", name, err)
							}
						}
					}
				}
			}
		}
	}
	t.Logf("%d frames", n)
}

// decoded is a frame as gopacket decodes it.
type decoded struct {
	eth  *layers.Ethernet
	vlan *layers.Dot1Q
	ip4  *layers.IPv4
	ip6  *layers.IPv6
	tcp  *layers.TCP
}

func decode(t *testing.T, frame []byte) decoded {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("gopacket cannot decode: %v", el.Error())
	}
	var d decoded
	d.eth, _ = p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	d.vlan, _ = p.Layer(layers.LayerTypeDot1Q).(*layers.Dot1Q)
	d.ip4, _ = p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	d.ip6, _ = p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	d.tcp, _ = p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if d.eth == nil || d.tcp == nil || (d.ip4 == nil) == (d.ip6 == nil) {
		t.Fatalf("gopacket layers: %v", p.Layers())
	}
	return d
}

// gopacketOptions interprets gopacket's decoded options the way a TCP
// stack would, independent of our parser.
func gopacketOptions(t *testing.T, opts []layers.TCPOption) flow.SynOptions {
	t.Helper()
	o := flow.SynOptions{WScale: flow.NoWScale}
	for _, op := range opts {
		switch op.OptionType {
		case layers.TCPOptionKindMSS:
			o.MSS = binary.BigEndian.Uint16(op.OptionData)
		case layers.TCPOptionKindWindowScale:
			o.WScale = op.OptionData[0]
		case layers.TCPOptionKindSACKPermitted:
			o.SACK = true
		case layers.TCPOptionKindTimestamps:
			o.Timestamps = true
			o.TSval = binary.BigEndian.Uint32(op.OptionData)
			o.TSecr = binary.BigEndian.Uint32(op.OptionData[4:])
		case layers.TCPOptionKindNop, layers.TCPOptionKindEndList:
		default:
			t.Errorf("unexpected option %v", op)
		}
	}
	return o
}

// checkAgainstGopacket decodes frame with gopacket, compares every field
// with f and flags, and re-serializes the decoded layers with gopacket's
// own lengths and checksums: the bytes must be ours exactly.
func checkAgainstGopacket(t *testing.T, frame []byte, f *Fields, flags Flags, wantOpts flow.SynOptions) {
	t.Helper()
	d := decode(t, frame)
	if !bytes.Equal(d.eth.SrcMAC, f.SrcMAC[:]) || !bytes.Equal(d.eth.DstMAC, f.DstMAC[:]) {
		t.Errorf("MACs %v > %v", d.eth.SrcMAC, d.eth.DstMAC)
	}
	if f.HasVLAN != (d.vlan != nil) {
		t.Fatalf("vlan tag present = %v, want %v", d.vlan != nil, f.HasVLAN)
	}
	if d.vlan != nil {
		tci := uint16(d.vlan.Priority)<<13 | d.vlan.VLANIdentifier
		if d.vlan.DropEligible {
			tci |= 1 << 12
		}
		if tci != f.VLAN {
			t.Errorf("vlan TCI %#x, want %#x", tci, f.VLAN)
		}
	}
	ttl := f.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	var nl gopacket.NetworkLayer
	var ipLayer gopacket.SerializableLayer
	src, dst := f.Src.Addr().Unmap(), f.Dst.Addr().Unmap()
	if d.ip4 != nil {
		ip := d.ip4
		if !src.Is4() || ip.IHL != 5 || ip.TOS != 0 || ip.Id != f.IPID || ip.Flags != layers.IPv4DontFragment ||
			ip.FragOffset != 0 || ip.TTL != ttl || ip.Protocol != layers.IPProtocolTCP ||
			!ip.SrcIP.Equal(asNetIP(src)) || !ip.DstIP.Equal(asNetIP(dst)) || int(ip.Length) != len(frame)-len(d.eth.Contents)-vlanBytes(d) {
			t.Errorf("ipv4 header %+v", ip)
		}
		nl, ipLayer = ip, ip
	} else {
		ip := d.ip6
		if src.Is4() || ip.TrafficClass != 0 || ip.FlowLabel != 0 || ip.HopLimit != ttl || ip.NextHeader != layers.IPProtocolTCP ||
			!ip.SrcIP.Equal(asNetIP(src)) || !ip.DstIP.Equal(asNetIP(dst)) || int(ip.Length) != len(frame)-len(d.eth.Contents)-vlanBytes(d)-40 {
			t.Errorf("ipv6 header %+v", ip)
		}
		nl, ipLayer = ip, ip
	}
	tcp := d.tcp
	if uint16(tcp.SrcPort) != f.Src.Port() || uint16(tcp.DstPort) != f.Dst.Port() || tcp.Seq != f.Seq || tcp.Ack != f.Ack ||
		tcp.Window != f.Window || tcp.Urgent != 0 || !bytes.Equal(tcp.Payload, f.Payload) {
		t.Errorf("tcp header %+v", tcp)
	}
	got := Flags(0)
	for _, b := range []struct {
		set bool
		f   Flags
	}{{tcp.FIN, FIN}, {tcp.SYN, SYN}, {tcp.RST, RST}, {tcp.PSH, PSH}, {tcp.ACK, ACK}, {tcp.URG, URG}, {tcp.ECE, ECE}, {tcp.CWR, CWR}} {
		if b.set {
			got |= b.f
		}
	}
	if got != flags {
		t.Errorf("flags %v, want %v", got, flags)
	}
	if o := gopacketOptions(t, tcp.Options); o != wantOpts {
		t.Errorf("options %+v, want %+v", o, wantOpts)
	}
	if (tcp.DataOffset*4-20)%4 != 0 {
		t.Errorf("options not 4-byte aligned: data offset %d", tcp.DataOffset)
	}
	if err := tcp.SetNetworkLayerForChecksum(nl); err != nil {
		t.Fatal(err)
	}
	if c, err := tcp.ComputeChecksum(); err != nil || c != 0 {
		t.Errorf("gopacket: tcp checksum over our frame folds to %#04x, want 0 (err %v)", c, err)
	}

	// Serialize the decoded layers again; gopacket fixes lengths and
	// checksums itself, so identical bytes prove ours right.
	ls := []gopacket.SerializableLayer{d.eth}
	if d.vlan != nil {
		ls = append(ls, d.vlan)
	}
	ls = append(ls, ipLayer, tcp, gopacket.Payload(tcp.Payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("re-serialize: %v", err)
	}
	re := buf.Bytes()
	// gopacket pads Ethernet frames to the 60-byte minimum.
	if len(re) < len(frame) || !bytes.Equal(re[:len(frame)], frame) || (len(re) > len(frame) && (len(re) != 60 || !bytes.Equal(re[len(frame):], make([]byte, 60-len(frame))))) {
		t.Errorf("gopacket re-serialization differs:\n ours: %x\ntheirs: %x", frame, re)
	}
}

func vlanBytes(d decoded) int {
	if d.vlan != nil {
		return 4
	}
	return 0
}

// TestBuildRoundTrip builds frames over a matrix of families, VLAN tags,
// builders, option sets and payloads, and checks them with gopacket.
func TestBuildRoundTrip(t *testing.T) {
	type ends struct {
		name     string
		src, dst netip.AddrPort
	}
	endpoints := []ends{
		{"v4", ap(service4, 443), ap(client4, 51000)},
		{"v4-mapped", ap(netip.AddrFrom16(service4.As16()), 443), ap(netip.AddrFrom16(client4.As16()), 51000)},
		{"v6", ap(service6, 443), ap(client6, 51000)},
	}
	type builder struct {
		name  string
		build func([]byte, *Fields) (int, error)
		flags func(f *Fields) Flags
		syn   bool
	}
	builders := []builder{
		{"BuildSyn", BuildSyn, func(f *Fields) Flags {
			if f.Options.ECN {
				return SYN | ECE | CWR
			}
			return SYN
		}, true},
		{"BuildSynAck", BuildSynAck, func(f *Fields) Flags {
			if f.Options.ECN {
				return SYN | ACK | ECE
			}
			return SYN | ACK
		}, true},
		{"BuildAck", BuildAck, func(f *Fields) Flags { return f.Flags&^(SYN|RST) | ACK }, false},
		{"Build", Build, func(f *Fields) Flags { return f.Flags }, false},
	}
	payloads := [][]byte{nil, []byte("x"), bytes.Repeat([]byte{0xa5}, 1001)}
	buf := make([]byte, 0, 2048)
	for _, e := range endpoints {
		for _, vlan := range []bool{false, true} {
			for _, b := range builders {
				for mask := 0; mask < 32; mask++ {
					for _, pl := range payloads {
						opts := flow.SynOptions{WScale: flow.NoWScale}
						if mask&1 != 0 {
							opts.MSS = 1460
						}
						if mask&2 != 0 {
							opts.WScale = uint8(mask % 15)
						}
						opts.SACK = mask&4 != 0
						if mask&8 != 0 {
							opts.Timestamps, opts.TSval, opts.TSecr = true, 0xa1b2c3d4, 0x01020304
						}
						opts.ECN = mask&16 != 0
						f := Fields{
							SrcMAC: macGateway, DstMAC: macClient, HasVLAN: vlan, VLAN: 0xe00a,
							Src: e.src, Dst: e.dst, Seq: 0xfffffff0, Ack: 12345, Window: 65535,
							Flags: PSH | FIN | SYN, Options: opts, Payload: pl,
						}
						if mask%3 == 0 {
							f.TTL, f.IPID = 255, 0x1234
						}
						name := fmt.Sprintf("%s vlan=%v %s opts=%05b len=%d", e.name, vlan, b.name, mask, len(pl))
						t.Run(name, func(t *testing.T) {
							n, err := b.build(buf, &f)
							if err != nil {
								t.Fatal(err)
							}
							frame := buf[:n]
							flags := b.flags(&f)
							want := flow.SynOptions{WScale: flow.NoWScale}
							if flags&SYN != 0 {
								want.MSS, want.WScale, want.SACK = opts.MSS, opts.WScale, opts.SACK
							}
							if opts.Timestamps {
								want.Timestamps, want.TSval, want.TSecr = true, opts.TSval, opts.TSecr
							}
							checkAgainstGopacket(t, frame, &f, flags, want)

							// And our own parser agrees.
							var s Segment
							if err := Parse(frame, &s); err != nil {
								t.Fatalf("Parse: %v", err)
							}
							if err := VerifyChecksums(frame, &s); err != nil {
								t.Error(err)
							}
							want.ECN = s.Flags&(SYN|ACK|ECE|CWR) == SYN|ECE|CWR || s.Flags&(SYN|ACK|ECE|CWR) == SYN|ACK|ECE
							if s.Options != want || s.Flags != flags || s.Seq != f.Seq || s.Ack != f.Ack || !bytes.Equal(s.Payload, pl) {
								t.Errorf("Parse(Build) = %+v", s)
							}
							// Linux alignment: timestamps start at 4n+2 of the header, so TSval is 4-byte aligned.
							if s.TSOffset != 0 && (s.TSOffset-s.TCPOffset)%4 != 0 {
								t.Errorf("TSval at header offset %d, not 4-byte aligned", s.TSOffset-s.TCPOffset)
							}
						})
					}
				}
			}
		}
	}
}
