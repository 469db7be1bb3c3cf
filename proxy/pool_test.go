package proxy

import (
	"bytes"
	"encoding/binary"
	"maps"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/spec"
)

// parseV2 is an independent reading of a PROXY v2 header (the spec's
// section 2.2) for tests: source and destination, and the TLVs.
func parseV2(t *testing.T, b []byte) (src, dst netip.AddrPort, tlvs map[byte][]byte, n int) {
	t.Helper()
	if len(b) < 16 || !bytes.Equal(b[:12], []byte("\r\n\r\n\x00\r\nQUIT\n")) || b[12] != 0x21 {
		t.Fatalf("not a PROXY v2 header: % x", b)
	}
	l := int(binary.BigEndian.Uint16(b[14:16]))
	body := b[16 : 16+l]
	var alen int
	switch b[13] {
	case 0x11:
		alen = 12
		s, _ := netip.AddrFromSlice(body[0:4])
		d, _ := netip.AddrFromSlice(body[4:8])
		src = netip.AddrPortFrom(s, binary.BigEndian.Uint16(body[8:]))
		dst = netip.AddrPortFrom(d, binary.BigEndian.Uint16(body[10:]))
	case 0x21:
		alen = 36
		s, _ := netip.AddrFromSlice(body[0:16])
		d, _ := netip.AddrFromSlice(body[16:32])
		src = netip.AddrPortFrom(s, binary.BigEndian.Uint16(body[32:]))
		dst = netip.AddrPortFrom(d, binary.BigEndian.Uint16(body[34:]))
	default:
		t.Fatalf("family/protocol byte %#x", b[13])
	}
	tlvs = map[byte][]byte{}
	for r := body[alen:]; len(r) > 0; {
		if len(r) < 3 {
			t.Fatalf("truncated TLV % x", r)
		}
		tl := int(binary.BigEndian.Uint16(r[1:3]))
		tlvs[r[0]] = r[3 : 3+tl]
		r = r[3+tl:]
	}
	return src, dst, tlvs, 16 + l
}

func TestProxyHeaderFormats(t *testing.T) {
	c4, d4 := netip.MustParseAddrPort("192.0.2.2:40000"), netip.MustParseAddrPort("203.0.113.1:80")
	c6, d6 := netip.MustParseAddrPort("[2001:db8:1::2]:40001"), netip.MustParseAddrPort("[2001:db8:3::1]:443")
	if got := string(proxyHeader(1, c4, d4, nil)); got != "PROXY TCP4 192.0.2.2 203.0.113.1 40000 80\r\n" {
		t.Errorf("v1 IPv4 = %q", got)
	}
	if got := string(proxyHeader(1, c6, d6, nil)); got != "PROXY TCP6 2001:db8:1::2 2001:db8:3::1 40001 443\r\n" {
		t.Errorf("v1 IPv6 = %q", got)
	}
	id := bytes.Repeat([]byte{7}, 16)
	for _, tc := range []struct{ c, d netip.AddrPort }{{c4, d4}, {c6, d6}} {
		h := proxyHeader(2, tc.c, tc.d, id)
		src, dst, tlvs, n := parseV2(t, h)
		if src != tc.c || dst != tc.d || n != len(h) || !bytes.Equal(tlvs[pp2TypeUniqID], id) {
			t.Errorf("v2 %v -> %v: parsed %v -> %v, %d of %d bytes, TLVs %x", tc.c, tc.d, src, dst, n, len(h), tlvs)
		}
	}
}

// TestProxyHeaderSplice: with PROXY v2 the backend stream starts with the
// header right after the handshake, before the client's held data, which
// follows shifted by its length; the header is retransmitted until the
// backend acknowledges it; backend segments meanwhile reach the client
// through the engine, acknowledging nothing of the client's; the ACK that
// covers the header installs the backend's flow with the shift.
func TestProxyHeaderSpliceQueuePath(t *testing.T)  { testProxyHeaderSplice(t, spec.CookiesNever) }
func TestProxyHeaderSpliceCookiePath(t *testing.T) { testProxyHeaderSplice(t, spec.CookiesAlways) }

func testProxyHeaderSplice(t *testing.T, policy spec.CookiePolicy) {
	r := newRig(t, policy, func(c *Config) { c.Services[0].ProxyProtocol = spec.ProxyV2 })
	const isn = 2_000_000
	sa := r.handshake(isn, []byte("hello"))
	syn := r.sentIP()
	leg := syn.Seq
	const bisn = 9_000
	r.backendSynAck(syn, bisn, 7)
	if ack := r.sentIP(); ack.Flags != packet.ACK || ack.Seq != leg+1 || len(ack.Payload) != 0 {
		t.Fatalf("handshake ACK = %v seq %d len %d", ack.Flags, ack.Seq, len(ack.Payload))
	}
	hdr := r.sentIP()
	src, dst, tlvs, hl := parseV2(t, hdr.Payload)
	if hdr.Seq != leg+1 || hdr.Ack != bisn+1 || src != r.client || dst != vip || len(tlvs[pp2TypeUniqID]) != 16 || hl != len(hdr.Payload) {
		t.Fatalf("header segment seq %d ack %d: %v -> %v, TLVs %x", hdr.Seq, hdr.Ack, src, dst, tlvs)
	}
	data := r.sentIP()
	if string(data.Payload) != "hello" || data.Seq != leg+1+uint32(hl) {
		t.Fatalf("held data %q at seq %d, want after the header at %d", data.Payload, data.Seq, leg+1+uint32(hl))
	}
	kc := flow.Key{Src: r.client, Dst: vip}
	kb := flow.Key{Src: backend, Dst: syn.Src}
	toBackend, ok := r.flows.get(kc)
	if !ok || toBackend.NAT.SeqDelta != leg-isn+uint32(hl) {
		t.Fatalf("client->backend flow %+v (installed %v), want SeqDelta leg-isn+%d", toBackend.NAT, ok, hl)
	}
	if _, ok := r.flows.get(kb); ok {
		t.Fatal("backend->client flow installed before the header was acknowledged")
	}

	// Not acknowledged: sent again after the retransmission timeout.
	r.e.expireOpening(r.advance(100 * time.Millisecond))
	r.noSentIP()
	r.e.expireOpening(r.advance(200 * time.Millisecond))
	if re := r.sentIP(); re.Seq != leg+1 || !bytes.Equal(re.Payload, hdr.Payload) {
		t.Fatalf("retransmission seq %d %q", re.Seq, re.Payload)
	}

	// A server that speaks first: its banner acknowledges only the
	// handshake. The client gets it, acknowledging nothing of its own.
	r.inject(packet.Build, packet.Fields{
		Src: backend, Dst: syn.Src, Seq: bisn + 1, Ack: leg + 1, Flags: packet.ACK | packet.PSH, Window: 500,
		Options: flow.SynOptions{Timestamps: true, TSval: 777001, TSecr: syn.Options.TSval}, Payload: []byte("220 ready\r\n"),
	})
	fwd := r.sentIP()
	if fwd.Dst != r.client || string(fwd.Payload) != "220 ready\r\n" || fwd.Seq != sa.Seq+1 || fwd.Ack != isn+1 {
		t.Fatalf("banner to client: %v seq %d ack %d %q", fwd.Dst, fwd.Seq, fwd.Ack, fwd.Payload)
	}
	if _, ok := r.flows.get(kb); ok {
		t.Fatal("backend->client flow installed by an ACK short of the header")
	}

	// The client sent 7 more bytes meanwhile, through the fast path (the
	// engine never sees them; XDP forwards them without learning, the
	// backend's direction being absent). The ACK of the header and the
	// client's 12 bytes: the fast path takes over, shifting the backend's
	// ACKs (and SACK blocks) by the header.
	if tc, _ := r.flows.get(kc); tc.Track.SeqEnd != isn+1+5 {
		t.Fatalf("client direction's seq_end %d before the header's ACK, want %d (the held 5 bytes)", tc.Track.SeqEnd, isn+1+5)
	}
	r.inject(packet.Build, packet.Fields{
		Src: backend, Dst: syn.Src, Seq: bisn + 12, Ack: leg + 1 + uint32(hl) + 12, Flags: packet.ACK, Window: 500,
		Options: flow.SynOptions{Timestamps: true, TSval: 777002, TSecr: syn.Options.TSval},
	})
	if fwd := r.sentIP(); fwd.Ack != isn+1+12 {
		t.Errorf("ACK to client %d, want %d (the client's 12 bytes)", fwd.Ack, isn+1+12)
	}
	toClient, ok := r.flows.get(kb)
	if !ok || toClient.NAT.AckDelta != -(leg-isn+uint32(hl)) {
		t.Fatalf("backend->client flow %+v (installed %v)", toClient.NAT, ok)
	}
	// Its tracked state goes on from what the backend sent (the banner)
	// and acknowledged (the header and the client's 12 bytes).
	if tr := toClient.Track; !toClient.Tracked || tr.SeqEnd != bisn+12 || tr.AckMax != isn+1+12 || tr.WinEnd != isn+1+12+500<<7 {
		t.Errorf("backend->client tracked state %+v, want SeqEnd %d AckMax %d WinEnd %d", tr, bisn+12, isn+1+12, isn+1+12+500<<7)
	}
	// The client direction's seq_end caught up with what the backend
	// acknowledged: the backend's next segments, acking those 12 bytes,
	// are inside the window whatever their sequence number.
	if tc, _ := r.flows.get(kc); tc.Track.SeqEnd != isn+1+12 {
		t.Errorf("client direction's seq_end %d after the header's ACK, want %d", tc.Track.SeqEnd, isn+1+12)
	}
	r.e.expireOpening(r.advance(10 * time.Second))
	r.noSentIP()
	if st := r.e.set.Load().order[0].ServiceStats(); st.HeaderRetransmits != 1 || st.Spliced != 1 {
		t.Errorf("header retransmits %d, spliced %d; want 1, 1", st.HeaderRetransmits, st.Spliced)
	}
}

// TestPoolRedispatch: a backend that refuses a leg costs the client
// nothing: the leg opens toward another member, and the refusal counts
// against the first (passive check).
func TestPoolRedispatch(t *testing.T) {
	b2 := netip.MustParseAddrPort("10.0.0.6:8080")
	r := newRig(t, spec.CookiesNever, func(c *Config) {
		c.Services[0].Backends = []spec.Backend{{Addr: backend, Weight: 1}, {Addr: b2, Weight: 1}}
	})
	r.handshake(3_000_000, nil)
	syn := r.sentIP()
	first := syn.Dst
	r.inject(packet.Build, packet.Fields{Src: first, Dst: syn.Src, Seq: 0, Ack: syn.Seq + 1, Flags: packet.RST | packet.ACK})
	syn2 := r.sentIP()
	if syn2.Flags != packet.SYN || syn2.Dst == first || (syn2.Dst != backend && syn2.Dst != b2) {
		t.Fatalf("after the refusal: %v to %v, want a SYN to the other backend", syn2.Flags, syn2.Dst)
	}
	r.inject(packet.BuildSynAck, packet.Fields{
		Src: syn2.Dst, Dst: syn2.Src, Seq: 1234, Ack: syn2.Seq + 1, Flags: packet.SYN | packet.ACK, Window: 65160,
		Options: flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true, TSval: 1, TSecr: syn2.Options.TSval},
	})
	if ack := r.sentIP(); ack.Dst != syn2.Dst || ack.Flags != packet.ACK {
		t.Fatalf("handshake ACK %v to %v", ack.Flags, ack.Dst)
	}
	st := r.e.set.Load().order[0].ServiceStats()
	if st.Spliced != 1 || st.Redispatched != 1 {
		t.Errorf("spliced %d, redispatched %d; want 1, 1", st.Spliced, st.Redispatched)
	}
	for _, b := range st.Backends {
		want := uint64(0)
		if b.Addr == first.String() {
			want = 1
		}
		if b.Failures["refused"] != want {
			t.Errorf("backend %s: %d refusals, want %d", b.Addr, b.Failures["refused"], want)
		}
	}
}

// TestPoolDrainAndDown: weight 0 and a failed active check take a member
// out of new connections, SetBackends swaps the pool whole, and with no
// usable member a SYN gets a RST (or nothing with DropNoBackend).
func TestPoolDrainAndDown(t *testing.T) {
	b2 := netip.MustParseAddrPort("10.0.0.6:8080")
	r := newRig(t, spec.CookiesNever, func(c *Config) {
		c.Services[0].Backends = []spec.Backend{{Addr: backend, Weight: 1}, {Addr: b2, Weight: 1}}
	})
	s := r.e.set.Load().order[0]
	count := func() map[netip.AddrPort]int {
		m := map[netip.AddrPort]int{}
		for i := range 2000 {
			if b := s.pick(netip.AddrPortFrom(netip.MustParseAddr("192.0.2.9"), uint16(1000+i))); b != nil {
				m[b.addr]++
			}
		}
		return m
	}
	if c := count(); c[backend] < 800 || c[b2] < 800 {
		t.Fatalf("two equal backends got %v of 2000 clients", c)
	}
	if err := r.e.SetBackends("web", []spec.Backend{{Addr: backend, Weight: 1}, {Addr: b2, Weight: 0}}); err != nil {
		t.Fatal(err)
	}
	if c := count(); c[b2] != 0 || c[backend] != 2000 {
		t.Fatalf("after draining %v: %v", b2, c)
	}
	if err := r.e.SetBackendUp("web", backend, false); err != nil {
		t.Fatal(err)
	}
	if c := count(); len(c) != 0 {
		t.Fatalf("with one member down and the other drained: %v", c)
	}
	if h := r.e.Health()[0]; h.Usable != 0 || len(h.Backends) != 2 {
		t.Errorf("health %+v", h)
	}
	r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: vip, Seq: 5, Flags: packet.SYN, Window: 64240, Options: clientSynOpts})
	if rst := r.reply(); rst.Flags&packet.RST == 0 || rst.Ack != 6 {
		t.Fatalf("SYN with no usable backend answered %v ack %d, want RST", rst.Flags, rst.Ack)
	}
	if st := s.ServiceStats(); st.NoBackend != 1 {
		t.Errorf("no_backend = %d, want 1", st.NoBackend)
	}
	if err := r.e.SetBackendUp("web", backend, true); err != nil {
		t.Fatal(err)
	}
	if c := count(); c[backend] != 2000 {
		t.Fatalf("back up: %v", c)
	}

	d := newRig(t, spec.CookiesNever, func(c *Config) { c.Services[0].OnNoBackend = spec.NoBackendDrop })
	if err := d.e.SetBackendUp("web", backend, false); err != nil {
		t.Fatal(err)
	}
	d.inject(packet.BuildSyn, packet.Fields{Src: d.client, Dst: vip, Seq: 7, Flags: packet.SYN, Window: 64240, Options: clientSynOpts})
	d.noReply()
	if st := d.e.set.Load().order[0].ServiceStats(); st.NoBackend != 1 {
		t.Errorf("on_no_backend drop: no_backend = %d, want 1", st.NoBackend)
	}
}

// TestPassiveEjection: passiveFall failed legs in a row eject a backend
// for a backoff that doubles while it keeps failing; a leg that opens
// clears it.
func TestPassiveEjection(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := &member{failedBy: map[string]*atomic.Uint64{"timeout": new(atomic.Uint64), "refused": new(atomic.Uint64)}}
	m.weight.Store(1)
	m.activeUp.Store(true)
	for range passiveFall - 1 {
		m.legFailed("timeout", now)
	}
	if !m.usable(now) {
		t.Fatal("ejected before passiveFall failures")
	}
	m.legFailed("timeout", now)
	if m.usable(now) || !m.usable(now.Add(passiveBackoff)) {
		t.Fatalf("after %d failures: ejection until %v", passiveFall, time.Unix(0, m.ejectedUntil.Load()))
	}
	m.legFailed("refused", now.Add(passiveBackoff/2)) // a leg opened before the ejection
	if !m.usable(now.Add(passiveBackoff)) {
		t.Fatal("a failure during an ejection prolonged it")
	}
	later := now.Add(passiveBackoff)
	m.legFailed("refused", later)
	if m.usable(later.Add(passiveBackoff)) || !m.usable(later.Add(2*passiveBackoff)) {
		t.Fatal("a failure right after an ejection should eject for twice as long")
	}
	m.legOK()
	for range passiveFall - 1 {
		m.legFailed("timeout", later)
	}
	if !m.usable(later.Add(2 * passiveBackoff)) {
		t.Fatal("a successful leg did not reset the count")
	}
}

// TestPoolRedispatchOnTimeout: a backend that does not answer by the
// connect timeout is told to forget the leg (RST) and the leg opens toward
// another member.
func TestPoolRedispatchOnTimeout(t *testing.T) {
	b2 := netip.MustParseAddrPort("10.0.0.6:8080")
	r := newRig(t, spec.CookiesNever, func(c *Config) {
		c.Services[0].Backends = []spec.Backend{{Addr: backend, Weight: 1}, {Addr: b2, Weight: 1}}
	})
	r.handshake(4_000_000, nil)
	syn := r.sentIP()
	r.e.expireOpening(r.advance(3 * time.Second))
	var rst, syn2 packet.Segment
	for range 3 { // a SYN retransmission may come first
		p := r.sentIP()
		switch {
		case p.Flags == packet.RST:
			rst = p
		case p.Flags == packet.SYN && p.Dst != syn.Dst:
			syn2 = p
		}
		if syn2.Flags != 0 {
			break
		}
	}
	if rst.Dst != syn.Dst || rst.Seq != syn.Seq+1 || syn2.Flags != packet.SYN {
		t.Fatalf("after the timeout: RST %v to %v seq %d, SYN to %v; want a RST to %v and a SYN to the other", rst.Flags, rst.Dst, rst.Seq, syn2.Dst, syn.Dst)
	}
	if st := r.e.set.Load().order[0].ServiceStats(); st.Redispatched != 1 || st.BackendFailures["timeout"] != 1 {
		t.Errorf("redispatched %d, timeouts %d; want 1, 1", st.Redispatched, st.BackendFailures["timeout"])
	}
}

// TestProxyHeaderBackendFIN: a backend that acknowledges the header with
// its FIN (it read the header and closed) has that FIN go through the
// engine, not the fast path: the flow still expires as closed once the
// client's FIN is through too.
func TestProxyHeaderBackendFIN(t *testing.T) {
	r := newRig(t, spec.CookiesNever, func(c *Config) { c.Services[0].ProxyProtocol = spec.ProxyV1 })
	const isn = 5_000_000
	r.handshake(isn, nil)
	syn := r.sentIP()
	r.backendSynAck(syn, 100, 7)
	r.sentIP() // ACK
	hdr := r.sentIP()
	if !bytes.HasPrefix(hdr.Payload, []byte("PROXY TCP4 198.51.100.7 192.0.2.10 40000 80\r\n")) {
		t.Fatalf("v1 header %q", hdr.Payload)
	}
	r.inject(packet.Build, packet.Fields{
		Src: backend, Dst: syn.Src, Seq: 101, Ack: syn.Seq + 1 + uint32(len(hdr.Payload)), Flags: packet.ACK | packet.FIN, Window: 500,
	})
	if fin := r.sentIP(); fin.Flags&packet.FIN == 0 || fin.Dst != r.client {
		t.Fatalf("backend FIN to client: %v to %v", fin.Flags, fin.Dst)
	}
	kc := flow.Key{Src: r.client, Dst: vip}
	kb := flow.Key{Src: backend, Dst: syn.Src}
	if _, ok := r.flows.get(kb); !ok {
		t.Fatal("the FIN that acknowledged the header did not install the backend's flow")
	}
	if b, _ := r.flows.get(kb); !b.Tracked || b.Track.SeqEnd != 102 || b.FIN {
		t.Fatalf("backend's flow %+v: want tracked from seq 102 (its FIN included), its FIN not seen by XDP", b)
	}
	// The client's FIN, which acks the backend's, and the backend's ACK of
	// it, both through XDP.
	var clientFinEnd uint32
	r.flows.update(kc, func(s *flow.State) {
		s.Track.SeqEnd++
		s.FIN, s.FinEnd, s.Track.AckMax = true, s.Track.SeqEnd, 102
		clientFinEnd = s.FinEnd
	})
	r.flows.update(kb, func(s *flow.State) { s.Track.AckMax = clientFinEnd })
	r.e.expireFlows(r.advance(11 * time.Second))
	if _, ok := r.flows.get(kc); ok {
		t.Error("flow not expired as closed after both FINs")
	}
	if got := r.e.Stats().Expired["closed"]; got != 1 {
		t.Errorf("expired closed = %d, want 1", got)
	}
}

// TestAdoptPoolMember: a restarted engine adopts a connection spliced to a
// member of a pool, with a PROXY header in its deltas: the connection is
// that member's (its active count, its slow path with the header's shift).
func TestAdoptPoolMember(t *testing.T) {
	b2 := netip.MustParseAddrPort("10.0.0.6:8080")
	pool := func(c *Config) {
		c.Services[0].Backends = []spec.Backend{{Addr: backend, Weight: 1}, {Addr: b2, Weight: 1}}
		c.Services[0].ProxyProtocol = spec.ProxyV2
	}
	r1 := newRig(t, spec.CookiesNever, pool)
	const isn = 6_000_000
	r1.handshake(isn, nil)
	syn := r1.sentIP()
	r1.inject(packet.BuildSynAck, packet.Fields{
		Src: syn.Dst, Dst: syn.Src, Seq: 700, Ack: syn.Seq + 1, Flags: packet.SYN | packet.ACK, Window: 65160,
		Options: flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true, TSval: 1, TSecr: syn.Options.TSval},
	})
	r1.sentIP() // ACK
	hdr := r1.sentIP()
	r1.inject(packet.Build, packet.Fields{Src: syn.Dst, Dst: syn.Src, Seq: 701, Ack: syn.Seq + 1 + uint32(len(hdr.Payload)), Flags: packet.ACK, Window: 500})
	r1.sentIP() // the ACK, forwarded to the client

	r2 := newRig(t, spec.CookiesNever, pool)
	r1.flows.mu.Lock()
	r2.flows.flows = maps.Clone(r1.flows.flows)
	r1.flows.mu.Unlock()
	if st, err := r2.e.adopt(); err != nil || st.Adopted != 1 || st.Draining != 0 {
		t.Fatalf("adopt: %+v, %v", st, err)
	}
	for _, b := range r2.e.set.Load().order[0].ServiceStats().Backends {
		want := 0
		if b.Addr == syn.Dst.String() {
			want = 1
		}
		if b.Active != want {
			t.Errorf("backend %s: %d active connections after adoption, want %d", b.Addr, b.Active, want)
		}
	}
	seg := packet.Fields{Src: syn.Dst, Dst: syn.Src, Seq: 701, Ack: syn.Seq + 1 + uint32(len(hdr.Payload)) + 3, Flags: packet.ACK | packet.PSH, Window: 100, Payload: []byte("hi")}
	r1.inject(packet.Build, seg)
	r2.inject(packet.Build, seg)
	a, b := r1.sentIP(), r2.sentIP()
	if a.Ack != isn+1+3 || b.Ack != a.Ack || b.Seq != a.Seq || b.Dst != a.Dst {
		t.Errorf("slow path after adoption: ack %d seq %d to %v; before: ack %d seq %d to %v; want ack %d", b.Ack, b.Seq, b.Dst, a.Ack, a.Seq, a.Dst, isn+1+3)
	}
}

// TestProxyHeaderSynAckRepeat: while the PROXY header waits for its ACK,
// the backend's repeated SYN-ACK gets the handshake's ACK again (counted),
// not a SYN forwarded toward the client.
func TestProxyHeaderSynAckRepeat(t *testing.T) {
	r := newRig(t, spec.CookiesNever, func(c *Config) { c.Services[0].ProxyProtocol = spec.ProxyV1 })
	r.handshake(5_000_000, nil)
	syn := r.sentIP()
	r.backendSynAck(syn, 100, 7)
	r.sentIP() // ACK
	r.sentIP() // header
	r.backendSynAck(syn, 100, 7)
	if ack := r.sentIP(); ack.Flags != packet.ACK || ack.Dst != backend || ack.Seq != syn.Seq+1 || ack.Ack != 101 || len(ack.Payload) != 0 {
		t.Fatalf("answer to the repeated SYN-ACK: %v to %v seq %d ack %d, %d bytes; want the handshake's ACK", ack.Flags, ack.Dst, ack.Seq, ack.Ack, len(ack.Payload))
	}
	r.noSentIP()
	if st := r.e.set.Load().order[0].ServiceStats(); st.BackendSynAckRepeat != 1 {
		t.Errorf("synack repeats %d, want 1", st.BackendSynAckRepeat)
	}
}
