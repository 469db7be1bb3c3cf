package bpf

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/syngate/syngate/cookie"
	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
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

// setCookieServices turns XDP cookies on for svc4 and svc6 with ann.
func setCookieServices(tb testing.TB, d *Dataplane, ann Announce) {
	tb.Helper()
	for i, s := range []netip.AddrPort{svc4, svc6} {
		if err := d.SetService(Service{Addr: s, ID: uint32(i + 1), XDPCookies: true, Announce: ann}); err != nil {
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

func randAnnounce(rng *rand.Rand) Announce {
	a := Announce{
		Window:     uint16(1 + rng.IntN(65535)),
		MSS:        []uint16{0, 536, 1000, 1400, 1440, 1460, 9000}[rng.IntN(7)],
		WScale:     uint8(rng.IntN(15)),
		SACK:       rng.IntN(3) != 0,
		Timestamps: rng.IntN(4) != 0,
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
		var sa packet.Segment
		if err := packet.Parse(r.out, &sa); err != nil {
			t.Fatalf("parse reply: %v\n% x", err, r.out)
		}
		if err := packet.VerifyChecksums(r.out, &sa); err != nil {
			t.Fatalf("reply checksums: %v\n% x", err, r.out)
		}
		if sa.Src != syn.Dst || sa.Dst != syn.Src || sa.SrcMAC != syn.DstMAC || sa.DstMAC != syn.SrcMAC ||
			sa.HasVLAN != syn.HasVLAN || sa.VLAN != syn.VLAN {
			t.Fatalf("reply %v -> %v (%x -> %x), SYN %v -> %v (%x -> %x)", sa.Src, sa.Dst, sa.SrcMAC, sa.DstMAC, syn.Src, syn.Dst, syn.SrcMAC, syn.DstMAC)
		}
		if sa.Flags != packet.SYN|packet.ACK || sa.Ack != syn.Seq+1 || len(sa.Payload) != 0 || sa.Window != ann.Window {
			t.Fatalf("reply flags %v ack %d (isn %d) payload %d window %d (want %d)", sa.Flags, sa.Ack, syn.Seq, len(sa.Payload), sa.Window, ann.Window)
		}

		// The engine's cookie for the same SYN: the options the cookie
		// keeps count only with timestamps on both sides.
		useTS := syn.Options.Timestamps && ann.Timestamps
		synOpts := syn.Options
		synOpts.Timestamps = useTS
		isn, tsval, tableMSS := jar.Make(syn.Tuple, syn.Seq, synOpts, sa.Options.TSval, now)
		if sa.Seq != isn {
			t.Fatalf("SYN %+v ann %+v: XDP cookie %#x, Jar.Make %#x", syn.Options, ann, sa.Seq, isn)
		}
		if sa.Options.Timestamps != useTS {
			t.Fatalf("reply timestamps %v, want %v", sa.Options.Timestamps, useTS)
		}
		if useTS {
			// Make keeps a TSval whose option bits are right as it is.
			if tsval != sa.Options.TSval {
				t.Fatalf("TSval %#x carries other option bits than Make's %#x", sa.Options.TSval, tsval)
			}
			if got := sa.Options.TSval; int32(got-(msBefore-64-1)) < 0 || int32(got-(msAfter+1)) > 0 {
				t.Fatalf("TSval %d outside [%d-65, %d+1]: not the wall clock in ms", got, msBefore, msAfter)
			}
			if sa.Options.TSecr != syn.Options.TSval {
				t.Fatalf("TSecr %d, SYN's TSval %d", sa.Options.TSecr, syn.Options.TSval)
			}
		}

		// Byte for byte what packet.ReplySynAck builds for the engine.
		opts := packet.SynAckOptions{
			Window: ann.Window, MSS: tableMSS, WScale: ann.WScale, SACK: ann.SACK,
			Timestamps: ann.Timestamps, TSval: sa.Options.TSval,
		}
		if ann.MSS != 0 {
			opts.MSS = min(ann.MSS, tableMSS)
		}
		if !useTS {
			opts.WScale, opts.SACK = flow.NoWScale, false
		}
		want := make([]byte, 256)
		wn := packet.ReplySynAck(want, &syn, isn, opts)
		if !bytes.Equal(want[:wn], r.out) {
			t.Fatalf("SYN %+v ann %+v:\nXDP         % x\nReplySynAck % x", syn.Options, ann, r.out, want[:wn])
		}

		// The engine's validator accepts the client's ACK.
		got, reason := jar.Check(syn.Tuple, syn.Seq+1, sa.Seq+1, useTS, sa.Options.TSval, now)
		if reason != cookie.ReasonOK {
			t.Fatalf("SYN %+v ann %+v: Check says %v", syn.Options, ann, reason)
		}
		wantOpts := flow.SynOptions{MSS: tableMSS, WScale: flow.NoWScale}
		if useTS {
			wantOpts.WScale, wantOpts.SACK, wantOpts.ECN = syn.Options.WScale, syn.Options.SACK, syn.Options.ECN
			wantOpts.Timestamps, wantOpts.TSecr = true, sa.Options.TSval
		}
		if got != wantOpts {
			t.Fatalf("SYN %+v: Check recovered %+v, want %+v", syn.Options, got, wantOpts)
		}
		seen[optsKey(syn.Is6(), syn.HasVLAN, useTS, sa.Options.HasWScale(), sa.Options.SACK, syn.Options.ECN, len(syn.Payload) > 0)]++
	}
	t.Logf("%d SYNs, %d option/layout combinations", n, len(seen))
	if len(seen) < 64 {
		t.Errorf("only %d combinations covered", len(seen))
	}
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
