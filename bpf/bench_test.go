package bpf

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"

	"github.com/gopacket/gopacket/layers"
)

// BenchmarkXDP reports the program's cost per packet as measured by the
// A client's SYN options as Linux sends them (MSS, timestamps, window scale
// 7) and the offer the benchmarks' cookie services answer them with.
var (
	benchSynOpts = []layers.TCPOption{optMSS, optNOP, optNOP, optTS(1, 0), optNOP, {OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{7}}}
	benchOffer   = spec.Offer{Window: 65535, MSS: 1460, WScale: 7, SACK: true, Timestamps: true}
)

// kernel (BPF_PROG_TEST_RUN with Repeat), as the custom metric ns/packet.
func BenchmarkXDP(b *testing.B) {
	requireRoot(b)
	opts := []layers.TCPOption{optNOP, optNOP, optTS(1, 2)}
	cases := []struct {
		name string
		pkt  pkt
		want Verdict
	}{
		{"pass_not_service", pkt{src: client4, dst: other4, flags: "A", opts: opts, payload: make([]byte, 1000)}, VerdictPassNotService},
		{"pass_not_tcp_arp", pkt{}, VerdictPassNotIP},
		{"syn_to_xsk", pkt{src: client4, dst: svc4, flags: "S", opts: []layers.TCPOption{optMSS, optNOP, optNOP, optTS(1, 0)}}, VerdictXSKSyn},
		{"syn_to_xsk_v6", pkt{src: client6, dst: svc6, flags: "S", opts: []layers.TCPOption{optMSS, optNOP, optNOP, optTS(1, 0)}}, VerdictXSKSyn},
		{"fastpath", pkt{src: client4, dst: svc4, flags: "PA", opts: opts, payload: make([]byte, 1000)}, VerdictFastTX},
		{"fastpath_v6_sack", pkt{src: client6, dst: svc6, flags: "A", opts: []layers.TCPOption{optNOP, optNOP, optTS(1, 2), optNOP, optNOP, optSACK(1, 2, 3, 4)}}, VerdictFastTX},
		// The same with sequence tracking (a reverse lookup and the window
		// checks); the tracked pair's flows replace the untracked ones.
		{"fastpath_tracked", pkt{src: client4, dst: svc4, flags: "PA", seq: tClientISN + 1, ack: tOurISN + 1, window: tWindow, opts: opts, payload: make([]byte, 1000)}, VerdictFastTX},
		{"fastpath_tracked_v6", pkt{src: client6, dst: svc6, flags: "PA", seq: tClientISN + 1, ack: tOurISN + 1, window: tWindow, opts: opts, payload: make([]byte, 1000)}, VerdictFastTX},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			inNewNetns(b)
			d := testDataplane(b, Config{DropBadFlags: true})
			withSocket(b, d)
			for _, k := range []flow.Key{{Src: client4, Dst: svc4}, {Src: client6, Dst: svc6}} {
				local := netip.AddrPortFrom(local4, 40000)
				if k.Src.Addr().Is6() {
					local = netip.AddrPortFrom(local6, 40000)
				}
				back := back4
				if k.Src.Addr().Is6() {
					back = back6
				}
				if err := d.InstallFlow(k, flow.NAT{Src: local, Dst: back, SeqDelta: 1, AckDelta: 2, TSvalDelta: 3, TSecrDelta: 4, InShift: 7, OutShift: 7, Ifindex: 1}); err != nil {
					b.Fatal(err)
				}
			}
			if strings.HasPrefix(bc.name, "fastpath_tracked") {
				installTrackedPair(b, d, trackFamilies[map[bool]int{false: 0, true: 1}[bc.pkt.src.Addr().Is6()]])
			}
			data := benchFrame(b, d, bc.pkt, bc.want)
			const repeat = 10000
			b.ReportAllocs()
			var total time.Duration
			for b.Loop() {
				// The kernel times the repetitions itself: no syscall
				// overhead in the figure.
				_, perRun, err := d.objs.SyngateXdp.Benchmark(data, repeat, nil)
				if err != nil {
					b.Fatal(err)
				}
				total += perRun
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/packet")
		})
	}
}

// BenchmarkXDPSynCookie reports the cost of answering a SYN in XDP with a
// cookie SYN-ACK, as ns/packet measured by the kernel. The program turns
// the frame into a SYN-ACK, and BPF_PROG_TEST_RUN does not restore it
// between repetitions, so every run is a single repetition of a fresh
// copy; the figure then includes the kernel's timer reads, which the
// floor case (the cheapest verdict, measured the same way) shows.
func BenchmarkXDPSynCookie(b *testing.B) {
	requireRoot(b)
	cases := []struct {
		name    string
		pkt     pkt
		cookies bool
		want    Verdict
	}{
		{"floor_pass_not_ip", pkt{}, false, VerdictPassNotIP},
		{"syn_to_xsk", pkt{src: client4, dst: svc4, flags: "S", opts: benchSynOpts}, false, VerdictXSKSyn},
		{"cookie_v4", pkt{src: client4, dst: svc4, flags: "S", opts: benchSynOpts}, true, VerdictTXSynAckCookie},
		{"cookie_v4_mss_only", pkt{src: client4, dst: svc4, flags: "S", opts: []layers.TCPOption{optMSS}}, true, VerdictTXSynAckCookie},
		{"cookie_v6", pkt{src: client6, dst: svc6, flags: "S", opts: benchSynOpts}, true, VerdictTXSynAckCookie},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			d := testDataplane(b, Config{DropBadFlags: true})
			withSocket(b, d)
			if bc.cookies {
				setCookieServices(b, d, benchOffer)
			}
			if err := d.SetCookieKey(testJar(b).DataplaneKey(time.Now())); err != nil {
				b.Fatal(err)
			}
			data := benchFrame(b, d, bc.pkt, bc.want)
			b.ReportAllocs()
			var total time.Duration
			for b.Loop() {
				_, perRun, err := d.objs.SyngateXdp.Benchmark(data, 1, nil)
				if err != nil {
					b.Fatal(err)
				}
				total += perRun
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/packet")
		})
	}
}

// benchFrame builds a benchmark case's frame (an ARP-typed one when pkt has
// no source) and checks the program gives it the expected verdict.
func benchFrame(b *testing.B, d *Dataplane, pkt pkt, want Verdict) []byte {
	b.Helper()
	var data []byte
	if pkt.src.IsValid() {
		data = frame(b, pkt)
	} else {
		data = make([]byte, 60)
		data[12], data[13] = 0x08, 0x06
	}
	if r := mustRun(b, d, append([]byte(nil), data...)); r.verdict != want {
		b.Fatalf("verdict %v, want %v", r.verdict, want)
	}
	return data
}

// BenchmarkXDPSynCookieFlood is BenchmarkXDPSynCookie's cookie_v4 with a
// flood's sources: every run a SYN from another random address and port,
// as a spoofed flood sends them, so the program's map lookups miss the CPU
// caches as they do in production; for a flow table of the default size
// (2M entries) and a small one, which shows what the flow table's miss
// lookup costs a flood SYN. The TC program answers the same SYNs on a
// TC-datapath interface (sub-benchmarks tc/).
func BenchmarkXDPSynCookieFlood(b *testing.B) {
	requireRoot(b)
	for _, prog := range []string{"xdp", "tc"} {
		for _, bc := range []struct {
			name     string
			maxFlows int
		}{{"flows_2M", 0}, {"flows_4k", 4096}} {
			b.Run(prog+"/"+bc.name, func(b *testing.B) {
				d := testDataplane(b, Config{DropBadFlags: true, MaxFlows: bc.maxFlows})
				withSocket(b, d)
				setCookieServices(b, d, benchOffer)
				if err := d.SetCookieKey(testJar(b).DataplaneKey(time.Now())); err != nil {
					b.Fatal(err)
				}
				p := d.objs.SyngateXdp
				if prog == "tc" {
					p = d.objs.SyngateTc
				}
				rng := rand.New(rand.NewPCG(1, 2))
				frames := make([][]byte, 4096)
				for i := range frames {
					src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(rng.Uint32()), byte(rng.Uint32())}), uint16(1024+rng.Uint32N(60000)))
					frames[i] = benchFrame(b, d, pkt{src: src, dst: svc4, flags: "S", opts: benchSynOpts}, VerdictTXSynAckCookie)
				}
				before, _ := d.Counters()
				var total time.Duration
				i := 0
				for b.Loop() {
					_, perRun, err := p.Benchmark(frames[i%len(frames)], 1, nil)
					if err != nil {
						b.Fatal(err)
					}
					total += perRun
					i++
				}
				after, _ := d.Counters()
				if n := after[VerdictTXSynAckCookie].Packets - before[VerdictTXSynAckCookie].Packets; n != uint64(i) {
					b.Fatalf("%d of %d SYNs answered with a cookie", n, i)
				}
				b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/packet")
			})
		}
	}
}
