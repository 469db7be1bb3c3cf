package bpf

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/spec"
)

// refEnv is the Go reference of the program's decision table (syngate.c's
// header comment), written from the specification rather than the C, for
// checking the program on packets no one wrote a test for.
type refEnv struct {
	services   map[refSvc]bool
	locals     map[refAddr]bool
	ports      PortRange
	flows      map[flow.Key]bool
	socket     bool
	badFlags   bool
	synPayload bool
	cookies    map[refSvc]bool // services with Offload
	cookieKey  bool            // a fresh key was set
}

type refAddr struct {
	v6   bool
	addr netip.Addr
}

type refSvc struct {
	refAddr
	port uint16
}

func be16(b []byte) int { return int(binary.BigEndian.Uint16(b)) }

func isExt(nh byte) bool { return nh == 0 || nh == 43 || nh == 60 || nh == 44 }

func (e *refEnv) classify(b []byte) Verdict {
	if len(b) < 14 {
		return VerdictPassMalformedEth
	}
	proto, off := be16(b[12:]), 14
	if proto == 0x8100 {
		if len(b) < 18 {
			return VerdictPassMalformedEth
		}
		proto, off = be16(b[16:]), 18
	}
	var (
		v6              bool
		src, dst        netip.Addr
		l4, l4end       int
		frag, firstFrag bool
	)
	switch proto {
	case 0x0800:
		if len(b) < off+20 {
			return VerdictPassMalformedIP
		}
		ihl := int(b[off]&0x0f) * 4
		if b[off]>>4 != 4 || ihl < 20 {
			return VerdictPassMalformedIP
		}
		tot := be16(b[off+2:])
		if tot < ihl || off+tot > len(b) {
			return VerdictPassMalformedIP
		}
		if b[off+9] == 1 && be16(b[off+6:])&0x3fff == 0 {
			return e.icmp(b, off, off+ihl, off+tot, false)
		}
		if b[off+9] != 6 {
			return VerdictPassNotTCP
		}
		if fo := be16(b[off+6:]); fo&0x3fff != 0 {
			frag, firstFrag = true, fo&0x1fff == 0
		}
		l4, l4end = off+ihl, off+tot
		src = netip.AddrFrom4([4]byte(b[off+12 : off+16]))
		dst = netip.AddrFrom4([4]byte(b[off+16 : off+20]))
	case 0x86dd:
		if len(b) < off+40 {
			return VerdictPassMalformedIP
		}
		if b[off]>>4 != 6 {
			return VerdictPassMalformedIP
		}
		l4end = off + 40 + be16(b[off+4:])
		if l4end > len(b) {
			return VerdictPassMalformedIP
		}
		nh, p := b[off+6], off+40
		for range 4 {
			if !isExt(nh) {
				break
			}
			if p+8 > l4end {
				return VerdictPassMalformedIP
			}
			np := p + (int(b[p+1])+1)*8
			if nh == 44 {
				frag, firstFrag = true, be16(b[p+2:])&0xfff8 == 0
				np = p + 8
			}
			nh, p = b[p], np
		}
		if isExt(nh) {
			return VerdictPassIPv6ExtLimit
		}
		if p > l4end {
			return VerdictPassMalformedIP
		}
		if nh == 58 && !frag {
			return e.icmp(b, off, p, l4end, true)
		}
		if nh != 6 {
			return VerdictPassNotTCP
		}
		v6, l4 = true, p
		src = netip.AddrFrom16([16]byte(b[off+8 : off+24]))
		dst = netip.AddrFrom16([16]byte(b[off+24 : off+40]))
	default:
		return VerdictPassNotIP
	}
	if frag && !firstFrag {
		return VerdictPassFragment
	}
	if l4+4 > l4end {
		return VerdictPassMalformedTCP
	}
	sport, dport := uint16(be16(b[l4:])), uint16(be16(b[l4+2:]))
	_, isSvc := e.services[refSvc{refAddr{v6, dst}, dport}]
	if !isSvc && (dport < e.ports.First || dport > e.ports.Last || !e.locals[refAddr{v6, dst}]) {
		if frag {
			return VerdictPassFragment
		}
		return VerdictPassNotService
	}
	if frag {
		return VerdictDropFragment
	}
	if l4+20 > l4end {
		return VerdictDropTCPTruncated
	}
	doff := int(b[l4+12]>>4) * 4
	if doff < 20 {
		return VerdictDropTCPDoffShort
	}
	if l4+doff > l4end {
		return VerdictDropTCPDoffLong
	}
	if !refOptionsValid(b[l4:l4+doff]) || l4 > 1024 {
		return VerdictDropTCPOptions
	}
	tf := b[l4+13]
	if e.badFlags && refBadFlags(tf) {
		return VerdictDropBadFlags
	}
	xsk := func(v Verdict) Verdict {
		if !e.socket {
			return VerdictDropNoSocket
		}
		return v
	}
	if isSvc && tf&0x12 == 0x02 {
		if e.synPayload && l4+doff < l4end && !refTFO(b[l4:l4+doff]) {
			return VerdictDropSynPayload
		}
		key := flow.Key{Src: netip.AddrPortFrom(src, sport), Dst: netip.AddrPortFrom(dst, dport)}
		plainIP := (!v6 && l4 == off+20) || (v6 && l4 == off+40 && !src.Is4In6())
		if e.cookies[refSvc{refAddr{v6, dst}, dport}] && e.cookieKey && !e.flows[key] && plainIP &&
			refSynOptionsOK(b[l4:l4+doff]) {
			return VerdictTXSynAckCookie
		}
		return xsk(VerdictXSKSyn)
	}
	if e.flows[flow.Key{Src: netip.AddrPortFrom(src, sport), Dst: netip.AddrPortFrom(dst, dport)}] {
		return VerdictFastTX
	}
	if !isSvc {
		return xsk(VerdictXSKBackend)
	}
	if tf&0x04 != 0 { // RST; a FIN goes to the engine, which may hand it to a peer
		return VerdictDropRstFinUnknown
	}
	return xsk(VerdictXSKHandshake)
}

func refOptionsValid(h []byte) bool {
	for off := 20; off < len(h); {
		kind := h[off]
		if kind == 0 {
			return true
		}
		if kind == 1 {
			off++
			continue
		}
		if off+2 > len(h) {
			return false
		}
		l := int(h[off+1])
		if l < 2 || off+l > len(h) {
			return false
		}
		if kind == 8 && l != 10 || kind == 5 && l != 10 && l != 18 && l != 26 && l != 34 {
			return false
		}
		off += l
	}
	return true
}

// refSynOptionsOK: the options the cookie path reads have the lengths the
// engine's parser insists on.
func refSynOptionsOK(h []byte) bool {
	for off := 20; off < len(h); {
		kind := h[off]
		if kind == 0 {
			return true
		}
		if kind == 1 {
			off++
			continue
		}
		l := int(h[off+1])
		if kind == 2 && l != 4 || kind == 3 && l != 3 || kind == 4 && l != 2 {
			return false
		}
		off += l
	}
	return true
}

// refTFO: the SYN's options are ones the engine parses and hold a TCP Fast
// Open option (kind 34, or 254 with magic 0xF989).
func refTFO(h []byte) bool {
	tfo := false
	for off := 20; off < len(h); {
		kind := h[off]
		if kind == 0 {
			break
		}
		if kind == 1 {
			off++
			continue
		}
		l := int(h[off+1])
		if kind == 34 || kind == 254 && l >= 4 && be16(h[off+2:]) == 0xf989 {
			tfo = true
		}
		off += l
	}
	return tfo && refSynOptionsOK(h)
}

// icmp classifies an ICMP message at l4 (the IP header at l3, the packet
// ending at end): an error quoting a TCP packet its destination sent is
// translated when that packet is of a spliced flow (the reference ignores
// the rate limit: its traffic stays far below it).
func (e *refEnv) icmp(b []byte, l3, l4, end int, v6 bool) Verdict {
	if l4+8 > end {
		return VerdictPassNotTCP
	}
	typ := b[l4]
	if v6 && typ != 1 && typ != 2 && typ != 3 || !v6 && typ != 3 && typ != 11 {
		return VerdictPassNotTCP
	}
	in := l4 + 8
	var src, dst, outerDst netip.Addr
	var itcp int
	if v6 {
		if in+40 > end || b[in+6] != 6 {
			return VerdictPassNotTCP
		}
		outerDst = netip.AddrFrom16([16]byte(b[l3+24 : l3+40]))
		src = netip.AddrFrom16([16]byte(b[in+8 : in+24]))
		dst = netip.AddrFrom16([16]byte(b[in+24 : in+40]))
		if outerDst != src {
			return VerdictPassICMPNoFlow
		}
		itcp = in + 40
	} else {
		if in+20 > end || b[in]>>4 != 4 || b[in+9] != 6 || be16(b[in+6:])&0x1fff != 0 {
			return VerdictPassNotTCP
		}
		ihl := int(b[in]&0x0f) * 4
		if ihl < 20 {
			return VerdictPassNotTCP
		}
		outerDst = netip.AddrFrom4([4]byte(b[l3+16 : l3+20]))
		src = netip.AddrFrom4([4]byte(b[in+12 : in+16]))
		dst = netip.AddrFrom4([4]byte(b[in+16 : in+20]))
		if outerDst != src {
			return VerdictPassICMPNoFlow
		}
		itcp = in + ihl
	}
	if itcp+8 > end {
		return VerdictPassNotTCP
	}
	sport, dport := uint16(be16(b[itcp:])), uint16(be16(b[itcp+2:]))
	if e.flows[flow.Key{Src: netip.AddrPortFrom(dst, dport), Dst: netip.AddrPortFrom(src, sport)}] {
		return VerdictICMPTX
	}
	return VerdictPassICMPNoFlow
}

func refBadFlags(f byte) bool {
	const fin, syn, rst, psh, ack, urg = 1, 2, 4, 8, 16, 32
	switch {
	case f&(fin|syn|rst|psh|ack|urg) == 0,
		f&(syn|fin) == syn|fin,
		f&(syn|rst) == syn|rst,
		f&(fin|rst) == fin|rst,
		f&ack == 0 && f&(fin|psh|urg) != 0:
		return true
	}
	return false
}

// basePackets builds well-formed frames of every kind the table knows.
func basePackets(tb testing.TB, rng *rand.Rand, n int) [][]byte {
	srcs := []netip.AddrPort{client4, client6, back4, back6}
	dsts4 := []netip.AddrPort{svc4, netip.AddrPortFrom(svc4.Addr(), 80), netip.AddrPortFrom(local4, 40001), netip.AddrPortFrom(local4, 22), other4}
	dsts6 := []netip.AddrPort{svc6, netip.AddrPortFrom(svc6.Addr(), 80), netip.AddrPortFrom(local6, 40001), netip.AddrPortFrom(local6, 50000), netip.MustParseAddrPort("[2001:db8::99]:443")}
	exts := [][]byte{
		{6, 0, 1, 4, 0, 0, 0, 0},
		{60, 0, 1, 4, 0, 0, 0, 0, 6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		{6, 0, 0, 0, 0, 0, 0, 7},
		{6, 0, 0, 8, 0, 0, 0, 7},
		{60, 0, 1, 4, 0, 0, 0, 0, 60, 0, 1, 4, 0, 0, 0, 0, 60, 0, 1, 4, 0, 0, 0, 0, 6, 0, 1, 4, 0, 0, 0, 0},
	}
	extNext := []layers.IPProtocol{0, 60, 44, 44, 0}
	out := make([][]byte, 0, n)
	for range n {
		src := srcs[rng.IntN(len(srcs))]
		dst := dsts4[rng.IntN(len(dsts4))]
		if src.Addr().Is6() {
			dst = dsts6[rng.IntN(len(dsts6))]
		}
		p := pkt{src: src, dst: dst, vlan: rng.IntN(4) == 0, seq: rng.Uint32(), ack: rng.Uint32(), window: uint16(rng.Uint32())}
		p.flags = []string{"S", "S", "A", "SA", "PA", "FA", "R", "RA", "", "SF", "FPU"}[rng.IntN(11)]
		if rng.IntN(3) == 0 {
			p.payload = make([]byte, rng.IntN(64))
		}
		switch rng.IntN(4) {
		case 1:
			p.opts = []layers.TCPOption{optMSS, optNOP, optNOP, optTS(rng.Uint32(), 0)}
		case 2:
			p.opts = []layers.TCPOption{optNOP, optNOP, optTS(rng.Uint32(), rng.Uint32()), optNOP, optNOP, optSACK(1, 2, 3, 4)}
		case 3:
			p.opts = []layers.TCPOption{optNOP, optTS(1, 2), optSACK(5, 6)}
		}
		if src.Addr().Is6() && rng.IntN(4) == 0 {
			i := rng.IntN(len(exts))
			p.v6ext, p.v6next = exts[i], extNext[i]
		} else if !src.Addr().Is6() && rng.IntN(8) == 0 {
			p.ipFlags = layers.IPv4MoreFragments
			p.fragOff = uint16(rng.IntN(2) * 100)
		}
		if rng.IntN(8) == 0 {
			out = append(out, refICMPFrame(tb, rng, p))
			continue
		}
		out = append(out, frame(tb, p))
	}
	return out
}

// refICMPFrame turns p into an ICMP message to p.dst: an error (or an echo
// request) quoting a TCP packet p.dst sent to a client port no flow has,
// cut at a random length.
func refICMPFrame(tb testing.TB, rng *rand.Rand, p pkt) []byte {
	peer := netip.AddrPortFrom(client4.Addr(), uint16(20000+rng.IntN(10000)))
	if p.dst.Addr().Is6() {
		peer = netip.AddrPortFrom(client6.Addr(), peer.Port())
	}
	quote := ipPacket(tb, p.dst, peer, rng.Uint32(), rng.Uint32(), make([]byte, rng.IntN(40)))
	quote = quote[:rng.IntN(len(quote)+1)]
	eth := &layers.Ethernet{SrcMAC: macA, DstMAC: macB}
	var ls []gopacket.SerializableLayer
	if p.dst.Addr().Is6() {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: p.src.Addr().AsSlice(), DstIP: p.dst.Addr().AsSlice()}
		ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode([]uint8{1, 2, 3, 128}[rng.IntN(4)], 0)}
		_ = ic.SetNetworkLayerForChecksum(ip)
		ls = append(ls, eth, ip, ic, gopacket.Payload(append([]byte{0, 0, 5, 0}, quote...)))
	} else {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: p.src.Addr().AsSlice(), DstIP: p.dst.Addr().AsSlice()}
		ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode([]uint8{3, 11, 8}[rng.IntN(3)], 4), Seq: 1200}
		ls = append(ls, eth, ip, ic, gopacket.Payload(quote))
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// mutateFrame damages a frame the ways real garbage does.
func mutateFrame(rng *rand.Rand, b []byte) []byte {
	for range rng.IntN(4) {
		switch rng.IntN(7) {
		case 0: // truncate
			b = b[:14+rng.IntN(len(b)-13)]
		case 1, 2: // random byte in the headers
			i := rng.IntN(min(len(b), 110))
			b[i] = byte(rng.Uint32())
		case 3: // a nibble that matters: IHL/version or TCP data offset
			if len(b) <= 14 {
				continue
			}
			i := 14 + rng.IntN(min(len(b), 80)-14)
			b[i] = b[i]&0x0f | byte(rng.IntN(16))<<4
			if rng.IntN(2) == 0 {
				b[i] = b[i]&0xf0 | byte(rng.IntN(16))
			}
		case 4: // TCP flags of an untagged IPv4 frame
			if len(b) > 47 {
				b[47] = byte(rng.Uint32())
			}
		case 5: // length fields
			if len(b) > 20 {
				binary.BigEndian.PutUint16(b[16+rng.IntN(3)*1:], uint16(rng.IntN(len(b)+20)))
			}
		case 6: // an option byte
			if len(b) > 60 {
				b[54+rng.IntN(6)] = byte(rng.IntN(12))
			}
		}
	}
	return b
}

func TestReferenceClassifier(t *testing.T) {
	requireRoot(t)
	inNewNetns(t) // fast path: no routes, learned ifindex 1 = ingress: XDP_TX
	cfg := Config{DropBadFlags: true, DropSYNPayload: true}
	d := testDataplane(t, cfg)
	env := &refEnv{
		services: map[refSvc]bool{
			{refAddr{false, svc4.Addr()}, svc4.Port()}: true,
			{refAddr{true, svc6.Addr()}, svc6.Port()}:  true,
		},
		locals:     map[refAddr]bool{{false, local4}: true, {true, local6}: true},
		ports:      localPorts,
		flows:      map[flow.Key]bool{},
		badFlags:   cfg.DropBadFlags,
		synPayload: cfg.DropSYNPayload,
		cookies:    map[refSvc]bool{{refAddr{true, svc6.Addr()}, svc6.Port()}: true},
	}
	// svc6 answers SYNs in XDP, once the key is set (below).
	ann := spec.Offer{Window: 1000, MSS: 1400, WScale: 7, SACK: true, Timestamps: true}
	if err := d.SetService(spec.Entry{Listen: svc6, ID: 2, Offload: true, Offer: ann}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []flow.Key{
		{Src: client4, Dst: svc4}, {Src: client6, Dst: svc6},
		{Src: back4, Dst: netip.AddrPortFrom(local4, 40001)}, {Src: back6, Dst: netip.AddrPortFrom(local6, 40001)},
	} {
		nat := flow.NAT{Src: k.Dst, Dst: k.Src, Ifindex: 1}
		if err := d.InstallFlow(k, nat); err != nil {
			t.Fatal(err)
		}
		env.flows[k] = true
	}

	rng := rand.New(rand.NewPCG(7, 11))
	base := basePackets(t, rng, 2000)
	n := 200_000
	if testing.Short() {
		n = 20_000
	}
	before, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	var want Counters
	buf := make([]byte, 0, 2048)
	out := make([]byte, 2048+256)
	for i := range n {
		if i == n/4 { // the first quarter runs without an AF_XDP socket
			withSocket(t, d)
			env.socket = true
		}
		if i == n/8 { // the first eighth without a cookie key
			if err := d.SetCookieKey(testJar(t).DataplaneKey(time.Now())); err != nil {
				t.Fatal(err)
			}
			env.cookieKey = true
		}
		b := append(buf[:0], base[rng.IntN(len(base))]...)
		if rng.IntN(4) != 0 {
			b = mutateFrame(rng, b)
		}
		in := append([]byte(nil), b...)
		v := env.classify(b)
		want[v].Packets++
		want[v].Bytes += uint64(len(b))
		opts := ebpf.RunOptions{Data: b, DataOut: out}
		ret, err := d.objs.SyngateXdp.Run(&opts)
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		if Action(ret) != v.Action() {
			t.Fatalf("packet %d: action %v, reference says %v (%v)\n% x", i, Action(ret), v, v.Action(), in)
		}
		if v.Action() != ActionTX && !bytes.Equal(opts.DataOut, in) {
			t.Fatalf("packet %d: %v modified the packet\n% x\n% x", i, v, in, opts.DataOut)
		}
		if v == VerdictTXSynAckCookie {
			var sa packet.Segment
			if err := packet.Parse(opts.DataOut, &sa); err != nil {
				t.Fatalf("packet %d: cookie SYN-ACK does not parse: %v\n% x\n% x", i, err, in, opts.DataOut)
			}
			if err := packet.VerifyChecksums(opts.DataOut, &sa); err != nil || sa.Flags != packet.SYN|packet.ACK {
				t.Fatalf("packet %d: cookie SYN-ACK %v, checksums: %v\n% x\n% x", i, sa.Flags, err, in, opts.DataOut)
			}
		}
	}
	after, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for v := range NumVerdicts {
		got := Count{after[v].Packets - before[v].Packets, after[v].Bytes - before[v].Bytes}
		if got != want[v] {
			t.Errorf("%v: program counted %+v, reference %+v", Verdict(v), got, want[v])
		}
		if got.Packets > 0 {
			seen++
		}
	}
	if want[VerdictTXSynAckCookie].Packets == 0 || want[VerdictXSKSyn].Packets == 0 {
		t.Errorf("cookie and AF_XDP SYN paths not both exercised: %+v", want)
	}
	if want[VerdictPassICMPNoFlow].Packets == 0 {
		t.Errorf("ICMP errors not exercised: %+v", want)
	}
	t.Logf("%d packets, %d distinct verdicts, %d cookie SYN-ACKs", n, seen, want[VerdictTXSynAckCookie].Packets)
}
