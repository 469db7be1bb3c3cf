package bpf

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/syngate/syngate/flow"
)

var (
	learnedSrc = [6]byte{0x02, 0x5e, 0, 0, 0, 0x01}
	learnedDst = [6]byte{0x02, 0x5e, 0, 0, 0, 0x02}
)

// decoded is a frame split into the layers the rewrite touches.
type decoded struct {
	eth  *layers.Ethernet
	ip4  *layers.IPv4
	ip6  *layers.IPv6
	tcp  *layers.TCP
	l3   []byte // from the IP header to the end of the IP packet
	l4   []byte // TCP header and payload
	src  netip.Addr
	dst  netip.Addr
	opts []layers.TCPOption
}

func decode(tb testing.TB, b []byte) decoded {
	tb.Helper()
	p := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		tb.Fatalf("decode: %v", el.Error())
	}
	var d decoded
	l3off := 14
	if p.Layer(layers.LayerTypeDot1Q) != nil {
		l3off += 4
	}
	d.eth, _ = p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	d.tcp, _ = p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if d.eth == nil || d.tcp == nil {
		tb.Fatalf("decode: no ethernet or tcp layer in % x", b)
	}
	if l, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		d.ip4 = l
		d.l3 = b[l3off : l3off+int(l.Length)]
		d.src, _ = netip.AddrFromSlice(l.SrcIP.To4())
		d.dst, _ = netip.AddrFromSlice(l.DstIP.To4())
	} else if l, ok := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		d.ip6 = l
		d.l3 = b[l3off : l3off+40+int(l.Length)]
		d.src, _ = netip.AddrFromSlice(l.SrcIP)
		d.dst, _ = netip.AddrFromSlice(l.DstIP)
	} else {
		tb.Fatal("decode: no IP layer")
	}
	d.l4 = append(append([]byte(nil), d.tcp.Contents...), d.tcp.Payload...)
	for _, o := range d.tcp.Options {
		if o.OptionType != layers.TCPOptionKindEndList {
			d.opts = append(d.opts, o)
		}
	}
	return d
}

// onesSum is the RFC 1071 sum of b, not yet complemented.
func onesSum(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum
}

// checksumsVerify checks the IPv4 header and TCP checksums of a frame from
// scratch: each sum over the covered bytes, checksum included, is 0xffff.
func checksumsVerify(tb testing.TB, d decoded) {
	tb.Helper()
	var pseudo []byte
	if d.ip4 != nil {
		hl := int(d.ip4.IHL) * 4
		if s := onesSum(0, d.l3[:hl]); s != 0xffff {
			tb.Errorf("ipv4 header checksum does not verify (sum %#04x)", s)
		}
		pseudo = append(append(pseudo, d.l3[12:20]...), 0, 6)
		pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(len(d.l3)-hl))
		if s := onesSum(onesSum(0, pseudo), d.l3[hl:]); s != 0xffff {
			tb.Errorf("tcp checksum does not verify (sum %#04x)", s)
		}
		return
	}
	pseudo = append(pseudo, d.l3[8:40]...)
	pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(d.l3)-40))
	pseudo = append(pseudo, 0, 0, 0, 6)
	if s := onesSum(onesSum(0, pseudo), d.l3[40:]); s != 0xffff {
		tb.Errorf("tcp checksum does not verify (sum %#04x)", s)
	}
}

// recomputed serializes the decoded layers again with gopacket computing
// the checksums, and returns its IPv4 and TCP checksum fields.
func recomputed(tb testing.TB, d decoded) (ipSum, tcpSum uint16) {
	tb.Helper()
	tcp := *d.tcp
	buf := gopacket.NewSerializeBuffer()
	var err error
	if d.ip4 != nil {
		ip := *d.ip4
		_ = tcp.SetNetworkLayerForChecksum(&ip)
		err = gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, &ip, &tcp, gopacket.Payload(d.tcp.Payload))
		ipSum = binary.BigEndian.Uint16(buf.Bytes()[10:])
		tcpSum = binary.BigEndian.Uint16(buf.Bytes()[int(ip.IHL)*4+16:])
	} else {
		ip := *d.ip6
		_ = tcp.SetNetworkLayerForChecksum(&ip)
		err = gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, &ip, &tcp, gopacket.Payload(d.tcp.Payload))
		tcpSum = binary.BigEndian.Uint16(buf.Bytes()[40+16:])
	}
	if err != nil {
		tb.Fatalf("re-serialize: %v", err)
	}
	return ipSum, tcpSum
}

// sameChecksum accepts the two one's-complement zeros as equal.
func sameChecksum(a, b uint16) bool {
	return a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

// checkRewrite asserts that out is in rewritten exactly as nat says, with
// nothing else changed and checksums that verify.
func checkRewrite(tb testing.TB, in, out []byte, nat flow.NAT) {
	tb.Helper()
	a, b := decode(tb, in), decode(tb, out)
	if got := [6]byte(b.eth.SrcMAC); got != nat.SrcMAC {
		tb.Errorf("src mac %x, want %x", got, nat.SrcMAC)
	}
	if got := [6]byte(b.eth.DstMAC); got != nat.DstMAC {
		tb.Errorf("dst mac %x, want %x", got, nat.DstMAC)
	}
	if b.src != nat.Src.Addr() || b.dst != nat.Dst.Addr() {
		tb.Errorf("addresses %v -> %v, want %v -> %v", b.src, b.dst, nat.Src.Addr(), nat.Dst.Addr())
	}
	if uint16(b.tcp.SrcPort) != nat.Src.Port() || uint16(b.tcp.DstPort) != nat.Dst.Port() {
		tb.Errorf("ports %d -> %d, want %d -> %d", b.tcp.SrcPort, b.tcp.DstPort, nat.Src.Port(), nat.Dst.Port())
	}
	if want := a.tcp.Seq + nat.SeqDelta; b.tcp.Seq != want {
		tb.Errorf("seq %#x, want %#x", b.tcp.Seq, want)
	}
	wantAck := a.tcp.Ack
	if a.tcp.ACK {
		wantAck += nat.AckDelta
	}
	if b.tcp.Ack != wantAck {
		tb.Errorf("ack %#x, want %#x", b.tcp.Ack, wantAck)
	}
	wantWin := a.tcp.Window
	if !a.tcp.SYN {
		w := uint32(a.tcp.Window) << nat.InShift >> nat.OutShift
		wantWin = uint16(min(w, 65535))
	}
	if b.tcp.Window != wantWin {
		tb.Errorf("window %d, want %d (in %d, shifts %d/%d)", b.tcp.Window, wantWin, a.tcp.Window, nat.InShift, nat.OutShift)
	}
	if len(a.opts) != len(b.opts) {
		tb.Fatalf("options %v, want the same count as %v", b.opts, a.opts)
	}
	for i, oa := range a.opts {
		ob := b.opts[i]
		want := append([]byte(nil), oa.OptionData...)
		switch oa.OptionType {
		case layers.TCPOptionKindTimestamps:
			binary.BigEndian.PutUint32(want, binary.BigEndian.Uint32(want)+nat.TSvalDelta)
			binary.BigEndian.PutUint32(want[4:], binary.BigEndian.Uint32(want[4:])+nat.TSecrDelta)
		case layers.TCPOptionKindSACK:
			if a.tcp.ACK {
				for j := 0; j+4 <= len(want); j += 4 {
					binary.BigEndian.PutUint32(want[j:], binary.BigEndian.Uint32(want[j:])+nat.AckDelta)
				}
			}
		}
		if ob.OptionType != oa.OptionType || ob.OptionLength != oa.OptionLength || !bytes.Equal(ob.OptionData, want) {
			tb.Errorf("option %d: %v, want %v with data % x", i, ob, oa, want)
		}
	}
	if !bytes.Equal(a.tcp.Payload, b.tcp.Payload) || len(in) != len(out) {
		tb.Errorf("payload or frame length changed")
	}
	if (a.ip4 == nil) != (b.ip4 == nil) {
		tb.Fatal("address family changed")
	}
	if a.ip4 != nil {
		if a.ip4.TTL != b.ip4.TTL || a.ip4.Id != b.ip4.Id || a.ip4.TOS != b.ip4.TOS || a.ip4.Length != b.ip4.Length {
			tb.Errorf("ipv4 header fields changed: %+v -> %+v", a.ip4, b.ip4)
		}
	} else if a.ip6.HopLimit != b.ip6.HopLimit || a.ip6.FlowLabel != b.ip6.FlowLabel || a.ip6.Length != b.ip6.Length {
		tb.Errorf("ipv6 header fields changed")
	}
	checksumsVerify(tb, b)
	ipSum, tcpSum := recomputed(tb, b)
	if b.ip4 != nil && !sameChecksum(ipSum, b.ip4.Checksum) {
		tb.Errorf("ipv4 checksum %#04x, gopacket computes %#04x", b.ip4.Checksum, ipSum)
	}
	if !sameChecksum(tcpSum, b.tcp.Checksum) {
		tb.Errorf("tcp checksum %#04x, gopacket computes %#04x", b.tcp.Checksum, tcpSum)
	}
}

// runFast installs nat under key, runs in and checks the rewrite.
func runFast(tb testing.TB, d *Dataplane, key flow.Key, nat flow.NAT, in pkt) []byte {
	tb.Helper()
	if err := d.InstallFlow(key, nat); err != nil {
		tb.Fatal(err)
	}
	data := frame(tb, in)
	r := mustRun(tb, d, append([]byte(nil), data...))
	if r.verdict != VerdictFastTX {
		tb.Fatalf("verdict %v, want %v", r.verdict, VerdictFastTX)
	}
	checkRewrite(tb, data, r.out, nat)
	return r.out
}

func TestFastPathRewrite(t *testing.T) {
	requireRoot(t)
	inNewNetns(t) // no routes: the learned MACs and ifindex (1, lo) are used
	d := testDataplane(t, Config{})

	for _, fam := range rewriteFamilies() {
		localAP, toBackend, toClient := fam.localAP, fam.toBackend, fam.toClient
		t.Run(fam.name+"/client to backend", func(t *testing.T) {
			runFast(t, d, flow.Key{Src: fam.client, Dst: fam.svc}, toBackend, pkt{
				src: fam.client, dst: fam.svc, flags: "PA", seq: 0xffff_fff8, ack: 0x7000_0001, window: 1000,
				opts:    []layers.TCPOption{optNOP, optNOP, optTS(0xffff_fffe, 12345), optNOP, optNOP, optSACK(0x7000_1000, 0x7000_2000, 0x7000_3000, 0x7000_4000)},
				payload: []byte("GET / HTTP/1.1\r\nHost: example\r\n\r\n"),
			})
		})
		t.Run(fam.name+"/backend to client", func(t *testing.T) {
			runFast(t, d, flow.Key{Src: fam.backend, Dst: localAP}, toClient, pkt{
				src: fam.backend, dst: localAP, flags: "A", seq: 0x9000_0010, ack: 8, window: 60000,
				opts:    []layers.TCPOption{optNOP, optTS(99, 0xffff_ffff), optSACK(1, 2, 3, 4, 5, 6), optNOP},
				payload: bytes.Repeat([]byte{0xab}, 1001),
			})
		})
		t.Run(fam.name+"/backend syn-ack keeps window", func(t *testing.T) {
			runFast(t, d, flow.Key{Src: fam.backend, Dst: localAP}, toClient, pkt{
				src: fam.backend, dst: localAP, flags: "SA", seq: 5, ack: 6, window: 64240,
				opts: []layers.TCPOption{optMSS, optNOP, optNOP, optTS(1, 2)},
			})
		})
		t.Run(fam.name+"/vlan fin", func(t *testing.T) {
			key := flow.Key{Src: fam.client, Dst: fam.svc}
			runFast(t, d, key, toBackend, pkt{src: fam.client, dst: fam.svc, vlan: true, flags: "FA", seq: 1, ack: 2, window: 3})
			st, err := d.LookupFlow(key)
			if err != nil {
				t.Fatal(err)
			}
			if !st.FIN || st.RST || st.Packets != 1 || st.NAT != toBackend {
				t.Errorf("flow state after FIN: %+v", st)
			}
		})
	}
}

// TestFastPathRewriteRandom rewrites packets with random deltas, shifts,
// option layouts (odd and even offsets) and payloads.
func TestFastPathRewriteRandom(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	d := testDataplane(t, Config{})
	rng := rand.New(rand.NewPCG(1, 2))
	n := 3000
	if testing.Short() {
		n = 300
	}
	for i := range n {
		v6 := rng.IntN(2) == 0
		client, svc, backend, local := client4, svc4, back4, local4
		if v6 {
			client, svc, backend, local = client6, svc6, back6, local6
		}
		nat := flow.NAT{
			Src: netip.AddrPortFrom(local, uint16(40000+rng.IntN(10000))), Dst: backend,
			SeqDelta: rng.Uint32(), AckDelta: rng.Uint32(), TSvalDelta: rng.Uint32(), TSecrDelta: rng.Uint32(),
			InShift: uint8(rng.IntN(15)), OutShift: uint8(rng.IntN(15)), Ifindex: 1, SrcMAC: learnedSrc, DstMAC: learnedDst,
		}
		flags := []string{"A", "PA", "FA", "RA", "UA", "R"}[rng.IntN(6)]
		p := pkt{src: client, dst: svc, flags: flags, seq: rng.Uint32(), ack: rng.Uint32(), window: uint16(rng.Uint32()), payload: make([]byte, rng.IntN(1400))}
		for j := range p.payload {
			p.payload[j] = byte(rng.Uint32())
		}
		// Options: NOP padding in random places, timestamps, SACK with 1-3 blocks.
		room := 40
		for room > 0 {
			switch k := rng.IntN(5); {
			case k == 0 && room >= 1:
				p.opts = append(p.opts, optNOP)
				room--
			case k == 1 && room >= 10:
				p.opts = append(p.opts, optTS(rng.Uint32(), rng.Uint32()))
				room -= 10
			case k == 2 && room >= 10:
				blocks := 1 + rng.IntN(min(3, (room-2)/8))
				edges := make([]uint32, 2*blocks)
				for e := range edges {
					edges[e] = rng.Uint32()
				}
				p.opts = append(p.opts, optSACK(edges...))
				room -= 2 + 8*blocks
			case k == 3 && room >= 4:
				p.opts = append(p.opts, optMSS)
				room -= 4
			default:
				room = 0
			}
		}
		var opts int
		for _, o := range p.opts {
			if o.OptionType == layers.TCPOptionKindNop {
				opts++
			} else {
				opts += len(o.OptionData) + 2
			}
		}
		if opts > 40 {
			t.Fatalf("test bug: %d bytes of options", opts)
		}
		key := flow.Key{Src: client, Dst: svc}
		runFast(t, d, key, nat, p)
		if t.Failed() {
			t.Fatalf("packet %d failed: %+v nat %+v", i, p, nat)
		}
	}
}

func TestFlowTable(t *testing.T) {
	d := testDataplane(t, Config{})
	k4 := flow.Key{Src: client4, Dst: svc4}
	k6 := flow.Key{Src: back6, Dst: netip.AddrPortFrom(local6, 40000)}
	n4 := flow.NAT{Src: netip.AddrPortFrom(local4, 40000), Dst: back4, SeqDelta: 1, InShift: 14, Ifindex: 3, DstMAC: learnedDst}
	n6 := flow.NAT{Src: svc6, Dst: client6, AckDelta: 2, OutShift: 3}
	for k, n := range map[flow.Key]flow.NAT{k4: n4, k6: n6} {
		if err := d.InstallFlow(k, n); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[flow.Key]flow.NAT{}
	if err := d.IterateFlows(func(k flow.Key, s flow.State) bool { seen[k] = s.NAT; return true }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen[k4] != n4 || seen[k6] != n6 {
		t.Fatalf("iterated %v", seen)
	}
	st, err := d.LookupFlow(k4)
	if err != nil || st.NAT != n4 || st.Packets != 0 || st.LastSeen != 0 {
		t.Fatalf("lookup: %+v, %v", st, err)
	}
	if err := d.DeleteFlow(k4); err != nil {
		t.Fatal(err)
	}
	if _, err := d.LookupFlow(k4); err == nil {
		t.Fatal("lookup after delete succeeded")
	}
	for _, tc := range []struct {
		k flow.Key
		n flow.NAT
	}{
		{flow.Key{Src: client4, Dst: svc6}, n6}, // mixed key
		{k6, n4},                                // family change
		{k6, flow.NAT{Src: svc6, Dst: client6, InShift: 15}}, // shift too large
		{flow.Key{Dst: svc4}, n4},                            // invalid address
	} {
		if err := d.InstallFlow(tc.k, tc.n); err == nil {
			t.Errorf("InstallFlow(%v, %+v) succeeded", tc.k, tc.n)
		}
	}
}

func TestFlowStateCounts(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	d := testDataplane(t, Config{})
	key := flow.Key{Src: client4, Dst: svc4}
	nat := flow.NAT{Src: netip.AddrPortFrom(local4, 40000), Dst: back4, Ifindex: 1}
	if err := d.InstallFlow(key, nat); err != nil {
		t.Fatal(err)
	}
	start := flow.Monotonic()
	var total uint64
	for _, f := range []string{"A", "PA", "RA"} {
		data := frame(t, pkt{src: client4, dst: svc4, flags: f, payload: []byte("abc")})
		total += uint64(len(data))
		mustRun(t, d, data)
	}
	st, err := d.LookupFlow(key)
	if err != nil {
		t.Fatal(err)
	}
	if st.Packets != 3 || st.Bytes != total || !st.RST || st.FIN {
		t.Errorf("state %+v, want 3 packets, %d bytes, RST only", st, total)
	}
	if st.LastSeen < start || st.LastSeen > flow.Monotonic() {
		t.Errorf("last seen %v outside [%v, now]", st.LastSeen, start)
	}
}

// rewriteFamily is one address family's spliced connection, with
// translations whose deltas and shifts exercise wraparound both ways.
type rewriteFamily struct {
	name                 string
	client, svc, backend netip.AddrPort
	localAP              netip.AddrPort
	toBackend, toClient  flow.NAT
}

// rewriteFamilies are the IPv4 and IPv6 connections the rewrite tests of
// the XDP fast path and the TC program share.
func rewriteFamilies() []rewriteFamily {
	var out []rewriteFamily
	for _, f := range []struct {
		name                 string
		client, svc, backend netip.AddrPort
		local                netip.Addr
	}{
		{"ipv4", client4, svc4, back4, local4},
		{"ipv6", client6, svc6, back6, local6},
	} {
		localAP := netip.AddrPortFrom(f.local, 40001)
		out = append(out, rewriteFamily{
			name: f.name, client: f.client, svc: f.svc, backend: f.backend, localAP: localAP,
			toBackend: flow.NAT{
				Src: localAP, Dst: f.backend,
				SeqDelta: 0x10, AckDelta: 0x9000_0000, TSvalDelta: 7, TSecrDelta: 0xffff_fff0,
				InShift: 7, OutShift: 2, Ifindex: 1, SrcMAC: learnedSrc, DstMAC: learnedDst,
			},
			toClient: flow.NAT{
				Src: f.svc, Dst: f.client,
				SeqDelta: 0x7000_0000, AckDelta: 0xffff_fff0, TSvalDelta: 0xffff_fff9, TSecrDelta: 0x10,
				InShift: 2, OutShift: 7, Ifindex: 1, SrcMAC: learnedDst, DstMAC: learnedSrc,
			},
		})
	}
	return out
}
