package bpf

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket/layers"
)

// BenchmarkTC reports the TC program's cost per packet on an interface
// without XDP (BPF_PROG_TEST_RUN with an __sk_buff context, which
// cilium/ebpf's Benchmark cannot pass: so timed around the syscall), in
// ns/packet. Cases that rewrite the packet (a cookie SYN-ACK, a splice)
// change the skb the next repetition would see, so they run one
// repetition of a fresh copy at a time (suffix /1): their figure includes
// the syscall and building the skb, which the floor case, measured the
// same way, shows.
func BenchmarkTC(b *testing.B) {
	requireRoot(b)
	opts := []layers.TCPOption{optNOP, optNOP, optTS(1, 2)}
	cases := []struct {
		name    string
		pkt     pkt
		repeat  int
		cookies bool
		want    Verdict
	}{
		{"floor_pass_not_ip/1", pkt{}, 1, false, VerdictPassNotIP},
		{"pass_not_service", pkt{src: client4, dst: other4, flags: "A", opts: opts, payload: make([]byte, 1000)}, 10000, false, VerdictPassNotService},
		{"syn_to_ring", pkt{src: client4, dst: svc4, flags: "S", opts: benchSynOpts}, 1000, false, VerdictXSKSyn},
		{"syn_to_ring_v6", pkt{src: client6, dst: svc6, flags: "S", opts: benchSynOpts}, 1000, false, VerdictXSKSyn},
		{"cookie_v4/1", pkt{src: client4, dst: svc4, flags: "S", opts: benchSynOpts}, 1, true, VerdictTXSynAckCookie},
		{"cookie_v6/1", pkt{src: client6, dst: svc6, flags: "S", opts: benchSynOpts}, 1, true, VerdictTXSynAckCookie},
		{"splice_tracked/1", pkt{src: client4, dst: svc4, flags: "PA", seq: tClientISN + 1, ack: tOurISN + 1, window: tWindow, opts: opts, payload: make([]byte, 1000)}, 1, false, VerdictTCRedirect},
		{"splice_tracked_v6/1", pkt{src: client6, dst: svc6, flags: "PA", seq: tClientISN + 1, ack: tOurISN + 1, window: tWindow, opts: opts, payload: make([]byte, 1000)}, 1, false, VerdictTCRedirect},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			inNewNetns(b)
			d := testDataplane(b, Config{DropBadFlags: true})
			e := startTCEngine(b, d)
			if bc.cookies {
				setCookieServices(b, d, benchOffer)
			}
			if err := d.SetCookieKey(testJar(b).DataplaneKey(time.Now())); err != nil {
				b.Fatal(err)
			}
			if bc.want == VerdictTCRedirect {
				installTrackedPair(b, d, trackFamilies[map[bool]int{false: 0, true: 1}[bc.pkt.src.Addr().Is6()]])
			}
			var data []byte
			if bc.pkt.src.IsValid() {
				data = frame(b, bc.pkt)
			} else {
				data = make([]byte, 60)
				data[12], data[13] = 0x08, 0x06
			}
			var md skbMD
			md[skbIngressIfindex] = loIfindex
			var total time.Duration
			for b.Loop() {
				before, _ := d.Counters()
				o := ebpf.RunOptions{Data: append([]byte(nil), data...), Context: md, Repeat: uint32(bc.repeat)}
				start := time.Now()
				if _, err := d.objs.SyngateTc.Run(&o); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start) / time.Duration(bc.repeat)
				after, _ := d.Counters()
				if n := after[bc.want].Packets - before[bc.want].Packets; n != uint64(bc.repeat) {
					b.Fatalf("%d of %d runs counted as %v", n, bc.repeat, bc.want)
				}
				drain(b, e)
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/packet")
		})
	}
}

// drain reads every record the ring holds.
func drain(tb testing.TB, e *tcEngine) {
	tb.Helper()
	for {
		e.rd.SetDeadline(time.Unix(1, 0))
		if _, err := e.rd.Read(); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				tb.Fatal(err)
			}
			return
		}
	}
}
