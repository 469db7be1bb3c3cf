package bpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/syngate/syngate/flow"
)

// icmpConn is one spliced connection as the engine installs it: the client
// talks to the VIP, syngate to the backend from its source address.
type icmpConn struct {
	client, vip, source, backend, router netip.AddrPort
	toBackend, toClient                  flow.NAT
}

func newICMPConn(v6 bool) icmpConn {
	c := icmpConn{
		client:  netip.MustParseAddrPort("198.51.100.7:40000"),
		vip:     netip.MustParseAddrPort("192.0.2.10:80"),
		source:  netip.MustParseAddrPort("10.0.0.1:20001"),
		backend: netip.MustParseAddrPort("10.0.0.5:8080"),
		router:  netip.MustParseAddrPort("203.0.113.1:0"),
	}
	if v6 {
		c.client = netip.MustParseAddrPort("[2001:db8:c::7]:40000")
		c.vip = netip.MustParseAddrPort("[2001:db8:5::10]:80")
		c.source = netip.MustParseAddrPort("[fd00:b::1]:20001")
		c.backend = netip.MustParseAddrPort("[fd00:b::5]:8080")
		c.router = netip.MustParseAddrPort("[2001:db8:ffff::1]:0")
	}
	var ourISN, backendISN uint32 = 3_000_000_000, 123_456
	c.toBackend = flow.NAT{Src: c.source, Dst: c.backend, AckDelta: backendISN - ourISN,
		Ifindex: loIfindex, SrcMAC: learnedSrc, DstMAC: learnedDst}
	c.toClient = flow.NAT{Src: c.vip, Dst: c.client, SeqDelta: ourISN - backendISN,
		Ifindex: loIfindex, SrcMAC: learnedDst, DstMAC: learnedSrc}
	return c
}

func (c icmpConn) install(tb testing.TB, d *Dataplane) {
	tb.Helper()
	if err := d.InstallFlow(flow.Key{Src: c.client, Dst: c.vip}, c.toBackend); err != nil {
		tb.Fatal(err)
	}
	if err := d.InstallFlow(flow.Key{Src: c.backend, Dst: c.source}, c.toClient); err != nil {
		tb.Fatal(err)
	}
}

// ipPacket serializes an IP packet (no Ethernet) carrying one TCP segment,
// checksums computed from scratch.
func ipPacket(tb testing.TB, src, dst netip.AddrPort, seq, ack uint32, payload []byte) []byte {
	tb.Helper()
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()),
		Seq: seq, Ack: ack, ACK: true, PSH: true, Window: 501}
	var ip gopacket.SerializableLayer
	if src.Addr().Is6() {
		l := &layers.IPv6{Version: 6, HopLimit: 63, NextHeader: layers.IPProtocolTCP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		_ = tcp.SetNetworkLayerForChecksum(l)
		ip = l
	} else {
		l := &layers.IPv4{Version: 4, IHL: 5, TTL: 63, Id: 777, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP,
			SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
		_ = tcp.SetNetworkLayerForChecksum(l)
		ip = l
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp, gopacket.Payload(payload)); err != nil {
		tb.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// icmpError serializes an Ethernet frame with the ICMP "fragmentation
// needed" (ICMPv6 "packet too big") error from src to dst quoting quote.
func icmpError(tb testing.TB, src, dst netip.Addr, mtu uint16, quote []byte) []byte {
	return icmpErrorVLAN(tb, src, dst, mtu, quote, false)
}

// icmpErrorVLAN is icmpError, with a VLAN tag when vlan is set.
func icmpErrorVLAN(tb testing.TB, src, dst netip.Addr, mtu uint16, quote []byte, vlan bool) []byte {
	tb.Helper()
	eth := &layers.Ethernet{SrcMAC: macA, DstMAC: macB}
	ls := []gopacket.SerializableLayer{eth}
	etherType := layers.EthernetTypeIPv4
	if src.Is6() {
		etherType = layers.EthernetTypeIPv6
	}
	eth.EthernetType = etherType
	if vlan {
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: 42, Type: etherType})
	}
	if src.Is6() {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypePacketTooBig, 0)}
		_ = ic.SetNetworkLayerForChecksum(ip)
		body := binary.BigEndian.AppendUint32(nil, uint32(mtu))
		ls = append(ls, ip, ic, gopacket.Payload(append(body, quote...)))
	} else {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded), Seq: mtu}
		ls = append(ls, ip, ic, gopacket.Payload(quote))
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// TestICMPErrorTranslated sends errors about a spliced connection's packets
// from a router on either side and checks that what leaves is, byte for
// byte, the error the original sender would get behind a NAT: built from
// scratch by gopacket around the packet as the sender sent it.
func TestICMPErrorTranslated(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	d := loadTest(t, Config{LocalPorts: localPorts})
	payload := bytes.Repeat([]byte("x"), 100)
	for _, v6 := range []bool{false, true} {
		c := newICMPConn(v6)
		c.install(t, d)
		const bseq, cseq = 123_999, 77_000
		// The backend's segment as it sent it, and as the fast path
		// delivered it to the client; the client's likewise.
		fromBackend := ipPacket(t, c.backend, c.source, bseq, cseq, payload)
		toClient := ipPacket(t, c.vip, c.client, bseq+c.toClient.SeqDelta, cseq, payload)
		fromClient := ipPacket(t, c.client, c.vip, cseq, bseq+c.toClient.SeqDelta, payload)
		toBackend := ipPacket(t, c.source, c.backend, cseq, bseq, payload)
		hdrs := 20 + 20
		if v6 {
			hdrs = 40 + 20
		}
		for _, tc := range []struct {
			name           string
			quote, want    []byte
			outSrc, outDst netip.Addr // the translated error's
			to             netip.Addr // the untranslated error's destination
			vlan           bool
			pad            int // bytes after the IP packet (Ethernet padding)
		}{
			{"client side, whole packet", toClient, fromBackend, c.source.Addr(), c.backend.Addr(), c.vip.Addr(), false, 0},
			{"client side, VLAN", toClient, fromBackend, c.source.Addr(), c.backend.Addr(), c.vip.Addr(), true, 0},
			{"client side, headers", toClient[:hdrs], fromBackend[:hdrs], c.source.Addr(), c.backend.Addr(), c.vip.Addr(), false, 0},
			{"client side, 8 bytes of TCP", toClient[:hdrs-12], fromBackend[:hdrs-12], c.source.Addr(), c.backend.Addr(), c.vip.Addr(), false, 0},
			{"client side, 8 bytes of TCP and padding", toClient[:hdrs-12], fromBackend[:hdrs-12], c.source.Addr(), c.backend.Addr(), c.vip.Addr(), false, 24},
			{"backend side, whole packet", toBackend, fromClient, c.vip.Addr(), c.client.Addr(), c.source.Addr(), false, 0},
		} {
			in := icmpErrorVLAN(t, c.router.Addr(), tc.to, 1200, tc.quote, tc.vlan)
			in = append(in, make([]byte, tc.pad)...)
			r := mustRun(t, d, append([]byte(nil), in...))
			if r.verdict != VerdictICMPTX {
				t.Fatalf("v6=%v %s: verdict %v, want %v", v6, tc.name, r.verdict, VerdictICMPTX)
			}
			want := icmpErrorVLAN(t, tc.outSrc, tc.outDst, 1200, tc.want, tc.vlan)
			want = append(want, make([]byte, tc.pad)...)
			copy(want[0:6], learnedDst[:]) // the learned egress: the test namespace has no routes
			copy(want[6:12], learnedSrc[:])
			if tc.outDst == c.client.Addr() {
				copy(want[0:6], learnedSrc[:])
				copy(want[6:12], learnedDst[:])
			}
			if !bytes.Equal(r.out, want) {
				t.Errorf("v6=%v %s:\ngot  % x\nwant % x", v6, tc.name, r.out, want)
			}
		}
	}
}

func TestICMPNotTranslated(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	d := loadTest(t, Config{LocalPorts: localPorts})
	c := newICMPConn(false)
	c.install(t, d)
	other := netip.MustParseAddrPort("198.51.100.8:40000")
	stray := ipPacket(t, c.vip, other, 1, 2, nil)
	toClient := ipPacket(t, c.vip, c.client, 1, 2, nil)
	for _, tc := range []struct {
		name string
		in   []byte
		want Verdict
	}{
		{"no flow", icmpError(t, c.router.Addr(), c.vip.Addr(), 1200, stray), VerdictPassICMPNoFlow},
		{"addressed to someone else than the quoted sender", icmpError(t, c.router.Addr(), c.source.Addr(), 1200, toClient), VerdictPassICMPNoFlow},
		{"quote too short for the ports and sequence", icmpError(t, c.router.Addr(), c.vip.Addr(), 1200, toClient[:27]), VerdictPassNotTCP},
	} {
		if r := mustRun(t, d, tc.in); r.verdict != tc.want {
			t.Errorf("%s: verdict %v, want %v", tc.name, r.verdict, tc.want)
		}
	}
	// An echo request is no error.
	eth := &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: c.client.Addr().AsSlice(), DstIP: c.vip.Addr().AsSlice()}
	echo := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, echo, gopacket.Payload(toClient)); err != nil {
		t.Fatal(err)
	}
	if r := mustRun(t, d, buf.Bytes()); r.verdict != VerdictPassNotTCP {
		t.Errorf("echo request: verdict %v, want %v", r.verdict, VerdictPassNotTCP)
	}
}

// A flood of errors quoting a spliced flow is translated at a bounded
// rate (ICMP_BURST, then ICMP_RATE per second and CPU).
func TestICMPRateLimit(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	d := loadTest(t, Config{LocalPorts: localPorts})
	c := newICMPConn(false)
	c.install(t, d)
	in := icmpError(t, c.router.Addr(), c.vip.Addr(), 1200, ipPacket(t, c.vip, c.client, 1, 2, nil))
	got := map[Verdict]int{}
	for range 400 {
		got[mustRun(t, d, append([]byte(nil), in...)).verdict]++
	}
	if got[VerdictDropICMPRateLimit] == 0 || got[VerdictICMPTX] < 50 || got[VerdictICMPTX]+got[VerdictDropICMPRateLimit] != 400 {
		t.Errorf("400 errors at once: %v; want at least the burst of 50 translated and the rest dropped", got)
	}
}
