package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/syngate/syngate/cookie"
	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/spec"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func testJar(tb testing.TB) *cookie.Jar {
	tb.Helper()
	j, err := cookie.NewJar(testSecret, cookie.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	return j
}

// coarseLagMs bounds how far the program's coarse clock
// (bpf_ktime_get_coarse_ns, the time of the last timekeeping update) may
// lag in a test: a tick at HZ=100, more when ticks come late (a VM, idle
// CPUs). Only the engine's clock must never be behind the cookie's TSval.
const coarseLagMs = 100

// setCookieServices turns XDP cookies on for svc4 and svc6 with ann.
func setCookieServices(tb testing.TB, d *Dataplane, ann spec.Offer) {
	tb.Helper()
	for i, s := range []netip.AddrPort{svc4, svc6} {
		if err := d.SetService(spec.Entry{Listen: s, ID: uint32(i + 1), Offload: true, Offer: ann}); err != nil {
			tb.Fatal(err)
		}
	}
}

// randSYN builds a SYN from a random client with a random selection, order
// and padding of the options a SYN carries. ECN-setup flags are set on
// about a third (the program does not check the TCP checksum).
func randSYN(tb testing.TB, rng *rand.Rand, v6 bool) []byte {
	p := pkt{src: client4, dst: svc4, flags: "S", seq: rng.Uint32(), window: uint16(rng.Uint32()), vlan: rng.IntN(4) == 0}
	if v6 {
		p.src, p.dst = client6, svc6
	}
	a := p.src.Addr().As16()
	a[15], a[14] = byte(rng.Uint32()), byte(rng.Uint32())
	p.src = netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), uint16(rng.Uint32()))
	if !v6 {
		p.src = netip.AddrPortFrom(p.src.Addr().Unmap(), p.src.Port())
	}
	var opts []layers.TCPOption
	if rng.IntN(5) != 0 {
		mss := []uint16{0, 88, 535, 536, 1219, 1220, 1299, 1300, 1400, 1420, 1439, 1440, 1459, 1460, 1500, 8940, 9000, 65535}[rng.IntN(18)]
		opts = append(opts, layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionData: binary.BigEndian.AppendUint16(nil, mss)})
	}
	if rng.IntN(3) != 0 {
		opts = append(opts, layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{byte(rng.IntN(17))}})
	}
	if rng.IntN(2) == 0 {
		opts = append(opts, layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted})
	}
	if rng.IntN(3) != 0 {
		opts = append(opts, optTS(rng.Uint32(), 0))
	}
	rng.Shuffle(len(opts), func(i, j int) { opts[i], opts[j] = opts[j], opts[i] })
	for i := rng.IntN(3); i > 0; i-- {
		at := rng.IntN(len(opts) + 1)
		opts = append(opts[:at], append([]layers.TCPOption{optNOP}, opts[at:]...)...)
	}
	p.opts = opts
	if rng.IntN(6) == 0 {
		p.payload = make([]byte, rng.IntN(100))
	}
	b := frame(tb, p)
	if rng.IntN(3) == 0 {
		l4 := 14 + 20
		if v6 {
			l4 = 14 + 40
		}
		if p.vlan {
			l4 += 4
		}
		b[l4+13] |= 0xc0 // ECE, CWR
	}
	return b
}

func randAnnounce(rng *rand.Rand) spec.Offer {
	a := spec.Offer{
		Window:     uint16(1 + rng.IntN(65535)),
		MSS:        []uint16{0, 536, 1000, 1400, 1440, 1460, 9000}[rng.IntN(7)],
		WScale:     uint8(rng.IntN(15)),
		SACK:       rng.IntN(3) != 0,
		Timestamps: rng.IntN(4) != 0,
		ECN:        rng.IntN(2) == 0,
	}
	if rng.IntN(4) == 0 {
		a.WScale = flow.NoWScale
	}
	return a
}

func TestXDPCookieSynAck(t *testing.T) {
	d := testDataplane(t, Config{DropBadFlags: true})
	jar := testJar(t)
	now := time.Now()
	if err := d.SetCookieKey(jar.DataplaneKey(now)); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(42, 7))
	n := 3000
	if testing.Short() {
		n = 500
	}
	seen := map[string]int{}
	for i := range n {
		ann := randAnnounce(rng)
		setCookieServices(t, d, ann)
		in := randSYN(t, rng, i%2 == 1)
		var syn packet.Segment
		if err := packet.Parse(in, &syn); err != nil {
			t.Fatalf("parse syn: %v\n% x", err, in)
		}
		msBefore := uint32(time.Now().UnixMilli())
		r := mustRun(t, d, append([]byte(nil), in...))
		msAfter := uint32(time.Now().UnixMilli())
		if r.verdict != VerdictTXSynAckCookie || r.action != ActionTX {
			t.Fatalf("SYN %+v: verdict %v action %v", syn.Options, r.verdict, r.action)
		}
		seen[checkCookieReply(t, jar, ann, &syn, r.out, now, msBefore, msAfter)]++
	}
	t.Logf("%d SYNs, %d option/layout combinations", n, len(seen))
	if minSeen := map[bool]int{false: 64, true: 40}[testing.Short()]; len(seen) < minSeen {
		t.Errorf("only %d combinations covered", len(seen))
	}
}

// checkCookieReply checks out, the program's reply to the SYN syn under
// ann, against the engine's cookie and packet.ReplySynAck, and returns the
// combination of options it covers. The reply was made between msBefore
// and msAfter (wall clock, ms).
func checkCookieReply(tb testing.TB, jar *cookie.Jar, ann spec.Offer, syn *packet.Segment, out []byte, now time.Time, msBefore, msAfter uint32) string {
	tb.Helper()
	var sa packet.Segment
	if err := packet.Parse(out, &sa); err != nil {
		tb.Fatalf("parse reply: %v\n% x", err, out)
	}
	if err := packet.VerifyChecksums(out, &sa); err != nil {
		tb.Fatalf("reply checksums: %v\n% x", err, out)
	}
	if sa.Src != syn.Dst || sa.Dst != syn.Src || sa.SrcMAC != syn.DstMAC || sa.DstMAC != syn.SrcMAC ||
		sa.HasVLAN != syn.HasVLAN || sa.VLAN != syn.VLAN {
		tb.Fatalf("reply %v -> %v (%x -> %x), SYN %v -> %v (%x -> %x)", sa.Src, sa.Dst, sa.SrcMAC, sa.DstMAC, syn.Src, syn.Dst, syn.SrcMAC, syn.DstMAC)
	}
	wantFlags := packet.SYN | packet.ACK
	if syn.Options.ECN && ann.ECN && syn.Options.Timestamps && ann.Timestamps {
		wantFlags |= packet.ECE
	}
	if sa.Flags != wantFlags || sa.Ack != syn.Seq+1 || len(sa.Payload) != 0 || sa.Window != ann.Window {
		tb.Fatalf("reply flags %v ack %d (isn %d) payload %d window %d (want %d)", sa.Flags, sa.Ack, syn.Seq, len(sa.Payload), sa.Window, ann.Window)
	}

	// The engine's cookie for the same SYN: the options the cookie
	// keeps count only with timestamps on both sides.
	useTS := syn.Options.Timestamps && ann.Timestamps
	synOpts := syn.Options
	synOpts.Timestamps = useTS
	isn, tsval, tableMSS := jar.Make(syn.Tuple, syn.Seq, synOpts, sa.Options.TSval, now)
	if sa.Seq != isn {
		tb.Fatalf("SYN %+v ann %+v: XDP cookie %#x, Jar.Make %#x", syn.Options, ann, sa.Seq, isn)
	}
	if sa.Options.Timestamps != useTS {
		tb.Fatalf("reply timestamps %v, want %v", sa.Options.Timestamps, useTS)
	}
	if useTS {
		// Make keeps a TSval whose option bits are right as it is.
		if tsval != sa.Options.TSval {
			tb.Fatalf("TSval %#x carries other option bits than Make's %#x", sa.Options.TSval, tsval)
		}
		// The program reads the coarse clock, which lags (see
		// coarseLagMs); the option bits take the low 6 bits.
		if got := sa.Options.TSval; int32(got-(msBefore-64-coarseLagMs-1)) < 0 || int32(got-(msAfter+1)) > 0 {
			tb.Fatalf("TSval %d outside [%d-%d, %d+1]: not the wall clock in ms", got, msBefore, 64+coarseLagMs+1, msAfter)
		}
		if sa.Options.TSecr != syn.Options.TSval {
			tb.Fatalf("TSecr %d, SYN's TSval %d", sa.Options.TSecr, syn.Options.TSval)
		}
	}

	// Byte for byte what packet.ReplySynAck builds for the engine.
	opts := spec.Offer{
		Window: ann.Window, MSS: tableMSS, WScale: ann.WScale, SACK: ann.SACK,
		Timestamps: ann.Timestamps, ECN: ann.ECN && useTS,
	}
	if ann.MSS != 0 {
		opts.MSS = min(ann.MSS, tableMSS)
	}
	if !useTS {
		opts.WScale, opts.SACK = flow.NoWScale, false
	}
	want := make([]byte, 256)
	wn := packet.ReplySynAck(want, syn, isn, opts, sa.Options.TSval)
	if !bytes.Equal(want[:wn], out) {
		tb.Fatalf("SYN %+v ann %+v:\nXDP         % x\nReplySynAck % x", syn.Options, ann, out, want[:wn])
	}

	// The engine's validator accepts the client's ACK.
	got, reason := jar.Check(syn.Tuple, syn.Seq+1, sa.Seq+1, useTS, sa.Options.TSval, now)
	if reason != cookie.ReasonOK {
		tb.Fatalf("SYN %+v ann %+v: Check says %v", syn.Options, ann, reason)
	}
	wantOpts := flow.SynOptions{MSS: tableMSS, WScale: flow.NoWScale}
	if useTS {
		wantOpts.WScale, wantOpts.SACK, wantOpts.ECN = syn.Options.WScale, syn.Options.SACK, syn.Options.ECN
		wantOpts.Timestamps, wantOpts.TSecr = true, sa.Options.TSval
	}
	if got != wantOpts {
		tb.Fatalf("SYN %+v: Check recovered %+v, want %+v", syn.Options, got, wantOpts)
	}
	return optsKey(syn.Is6(), syn.HasVLAN, useTS, sa.Options.HasWScale(), sa.Options.SACK, syn.Options.ECN, len(syn.Payload) > 0)
}

func optsKey(bs ...bool) string {
	b := make([]byte, len(bs))
	for i, v := range bs {
		b[i] = '0'
		if v {
			b[i] = '1'
		}
	}
	return string(b)
}

// SYNs the program must leave to the engine, and the states in which it
// must not mint at all.
func TestXDPCookieFallbacks(t *testing.T) {
	d := testDataplane(t, Config{})
	withSocket(t, d)
	ann := spec.Offer{Window: 4096, MSS: 1460, WScale: 7, SACK: true, Timestamps: true}
	setCookieServices(t, d, ann)
	jar := testJar(t)
	synOpts := []layers.TCPOption{optMSS, {OptionType: layers.TCPOptionKindSACKPermitted}, optTS(1, 0), optNOP, {OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{7}}}
	syn4 := frame(t, pkt{src: client4, dst: svc4, flags: "S", seq: 1, opts: synOpts})
	syn6 := frame(t, pkt{src: client6, dst: svc6, flags: "S", seq: 1, opts: synOpts})
	run := func(name string, data []byte, want Verdict) {
		t.Helper()
		if r := mustRun(t, d, append([]byte(nil), data...)); r.verdict != want {
			t.Errorf("%s: verdict %v, want %v", name, r.verdict, want)
		}
	}

	run("no key yet", syn4, VerdictXSKSyn)
	stale := time.Now().Add(-cookie.DefaultTick - CookieKeyGrace - time.Second)
	if err := d.SetCookieKey(jar.DataplaneKey(stale)); err != nil {
		t.Fatal(err)
	}
	run("stale key", syn4, VerdictXSKSyn)
	if err := d.SetCookieKey(jar.DataplaneKey(time.Now())); err != nil {
		t.Fatal(err)
	}
	run("fresh key v4", syn4, VerdictTXSynAckCookie)
	run("fresh key v6", syn6, VerdictTXSynAckCookie)

	// IPv4 options: IHL 6 with four NOPs.
	ipopt := append(append(append([]byte(nil), syn4[:34]...), 1, 1, 1, 1), syn4[34:]...)
	ipopt[14] = 0x46
	binary.BigEndian.PutUint16(ipopt[16:], binary.BigEndian.Uint16(ipopt[16:])+4)
	run("ipv4 options", ipopt, VerdictXSKSyn)
	run("ipv6 extension header", frame(t, pkt{src: client6, dst: svc6, flags: "S", opts: synOpts,
		v6ext: []byte{6, 0, 1, 4, 0, 0, 0, 0}, v6next: layers.IPProtocolIPv6Destination}), VerdictXSKSyn)
	run("ipv4-mapped source", frame(t, pkt{src: netip.MustParseAddrPort("[::ffff:203.0.113.5]:1000"), dst: svc6, flags: "S", opts: synOpts}), VerdictXSKSyn)
	bad := []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionData: []byte{5, 0xb4, 0, 0}}}
	run("mss option of length 6", frame(t, pkt{src: client4, dst: svc4, flags: "S", opts: bad}), VerdictXSKSyn)
	bad = []layers.TCPOption{{OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{7, 0}}, optNOP, optNOP, optNOP}
	run("window scale option of length 4", frame(t, pkt{src: client4, dst: svc4, flags: "S", opts: bad}), VerdictXSKSyn)
	run("syn-ack", frame(t, pkt{src: client4, dst: svc4, flags: "SA", opts: synOpts}), VerdictXSKHandshake)

	if err := d.InstallFlow(flow.Key{Src: client4, Dst: svc4}, flow.NAT{Src: svc4, Dst: client4, Ifindex: 1}); err != nil {
		t.Fatal(err)
	}
	run("spliced 4-tuple", syn4, VerdictXSKSyn)
	run("other 4-tuple", frame(t, pkt{src: netip.AddrPortFrom(client4.Addr(), 999), dst: svc4, flags: "S", opts: synOpts}), VerdictTXSynAckCookie)

	if err := d.SetService(spec.Entry{Listen: svc4, ID: 1, Offer: ann}); err != nil {
		t.Fatal(err)
	}
	run("cookies off for the service", frame(t, pkt{src: netip.AddrPortFrom(client4.Addr(), 999), dst: svc4, flags: "S", opts: synOpts}), VerdictXSKSyn)
	run("cookies still on for the other", syn6, VerdictTXSynAckCookie)

	if err := d.SetCookieKey(cookie.DataplaneKey{}); err != nil {
		t.Fatal(err)
	}
	run("zero key", syn6, VerdictXSKSyn)
}

// Every SetCookieKey takes effect at once, whichever slot it lands in.
func TestSetCookieKeySwitches(t *testing.T) {
	d := testDataplane(t, Config{})
	setCookieServices(t, d, spec.Offer{Window: 1000})
	syn := frame(t, pkt{src: client4, dst: svc4, flags: "S", seq: 77})
	var s packet.Segment
	if err := packet.Parse(syn, &s); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		secret := append([]byte(nil), testSecret...)
		secret[0] = byte(i)
		jar, err := cookie.NewJar(secret, cookie.Config{})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		if err := d.SetCookieKey(jar.DataplaneKey(now)); err != nil {
			t.Fatal(err)
		}
		r := mustRun(t, d, append([]byte(nil), syn...))
		if r.verdict != VerdictTXSynAckCookie {
			t.Fatalf("key %d: verdict %v", i, r.verdict)
		}
		seq := binary.BigEndian.Uint32(r.out[tcp4Off+4:])
		if _, reason := jar.Check(s.Tuple, 78, seq+1, false, 0, now); reason != cookie.ReasonOK {
			t.Fatalf("key %d: cookie %#x not from the latest key: %v", i, seq, reason)
		}
	}
}

func TestServiceAnnounce(t *testing.T) {
	d := testDataplane(t, Config{})
	ok := spec.Entry{Listen: svc4, ID: 9, NoRateLimit: true, Offload: true,
		Offer: spec.Offer{Window: 65535, MSS: 1400, WScale: flow.NoWScale, SACK: true}}
	if err := d.SetService(ok); err != nil {
		t.Fatal(err)
	}
	svcs, err := d.Services()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range svcs {
		if s.Listen == svc4 {
			found = true
			if s != ok {
				t.Errorf("read back %+v, set %+v", s, ok)
			}
		}
	}
	if !found {
		t.Fatal("service missing")
	}
	for _, bad := range []spec.Entry{
		{Listen: svc4, Offload: true},                                           // zero window
		{Listen: svc4, Offload: true, Offer: spec.Offer{Window: 1, WScale: 15}}, // shift above 14
	} {
		if err := d.SetService(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetService(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
}
