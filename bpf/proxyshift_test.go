package bpf

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/syngate/syngate/flow"
)

// spliceNAT builds a connection's two flow entries the way the engine's
// splice does when the backend stream starts with a header of hl bytes
// (PROXY protocol): client ISN c0, the SYN-ACK's o0, the backend leg's l0,
// the backend's b0.
func spliceNAT(c0, o0, l0, b0, hl uint32, local, back, svc, client netip.AddrPort) (toBackend, toClient flow.NAT) {
	toBackend = flow.NAT{Src: local, Dst: back, SeqDelta: l0 - c0 + hl, AckDelta: b0 - o0, Ifindex: 1, SrcMAC: learnedSrc, DstMAC: learnedDst}
	toClient = flow.NAT{Src: svc, Dst: client, SeqDelta: o0 - b0, AckDelta: -(l0 - c0 + hl), Ifindex: 1, SrcMAC: learnedDst, DstMAC: learnedSrc}
	return toBackend, toClient
}

// sackEdges reads the SACK blocks of a rewritten frame.
func sackEdges(tb testing.TB, out []byte) []uint32 {
	tb.Helper()
	for _, o := range decode(tb, out).opts {
		if o.OptionType == layers.TCPOptionKindSACK {
			var e []uint32
			for i := 0; i+4 <= len(o.OptionData); i += 4 {
				e = append(e, binary.BigEndian.Uint32(o.OptionData[i:]))
			}
			return e
		}
	}
	tb.Fatal("no SACK option in the rewritten frame")
	return nil
}

// TestProxyHeaderShift checks, on the real program, what a PROXY header of
// hl bytes at the start of the backend stream asks of the fast path, in
// terms of stream offsets rather than deltas: client byte k is backend-leg
// byte hl+k; the backend's ACK and SACK blocks for leg byte hl+k reach the
// client as client byte k; the client's ACK and SACK blocks (for backend
// data) are not shifted. It holds with the header folded into the existing
// seq and ack deltas: no change to the program.
func TestProxyHeaderShift(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	d := testDataplane(t, Config{})
	// Typed, so sums wrap as sequence numbers do (c0 and b0 wrap here).
	var (
		c0 uint32 = 0xffff_ff00
		o0 uint32 = 0x1234_5678
		l0 uint32 = 0x8000_0000
		b0 uint32 = 0xffff_fff0
	)
	for _, fam := range []struct {
		name                 string
		client, svc, backend netip.AddrPort
		local                netip.Addr
		hl                   uint32
	}{
		{"ipv4/v2", client4, svc4, back4, local4, 16 + 12 + 19}, // v2 header, TCP4, 16-byte unique ID TLV
		{"ipv6/v2", client6, svc6, back6, local6, 16 + 36 + 19}, // TCP6
		{"ipv4/v1", client4, svc4, back4, local4, 46},           // "PROXY TCP4 ..." of this length
		{"ipv4/off", client4, svc4, back4, local4, 0},           // no header: the deltas as before
	} {
		local := netip.AddrPortFrom(fam.local, 40002)
		toBackend, toClient := spliceNAT(c0, o0, l0, b0, fam.hl, local, fam.backend, fam.svc, fam.client)
		t.Run(fam.name+"/client to backend", func(t *testing.T) {
			// Client byte 1000 onward; it acknowledges backend byte 500
			// and SACKs backend bytes 700-900 and 1000-1100.
			out := runFast(t, d, flow.Key{Src: fam.client, Dst: fam.svc}, toBackend, pkt{
				src: fam.client, dst: fam.svc, flags: "PA", seq: c0 + 1 + 1000, ack: o0 + 1 + 500, window: 1000,
				opts:    []layers.TCPOption{optNOP, optNOP, optSACK(o0+1+700, o0+1+900, o0+1+1000, o0+1+1100)},
				payload: []byte("data"),
			})
			p := decode(t, out)
			if want := l0 + 1 + fam.hl + 1000; p.tcp.Seq != want {
				t.Errorf("seq %#x, want leg byte hl+1000 = %#x", p.tcp.Seq, want)
			}
			if want := b0 + 1 + 500; p.tcp.Ack != want {
				t.Errorf("ack %#x, want backend byte 500 = %#x", p.tcp.Ack, want)
			}
			want := []uint32{b0 + 1 + 700, b0 + 1 + 900, b0 + 1 + 1000, b0 + 1 + 1100}
			if got := sackEdges(t, out); !equalU32(got, want) {
				t.Errorf("SACK %x, want %x (backend bytes, unshifted by the header)", got, want)
			}
		})
		t.Run(fam.name+"/backend to client", func(t *testing.T) {
			// The backend sends its byte 500 and acknowledges leg byte
			// hl+1000 (the header and client bytes 0-999), SACKing leg
			// bytes hl+1200 to hl+1300.
			out := runFast(t, d, flow.Key{Src: fam.backend, Dst: local}, toClient, pkt{
				src: fam.backend, dst: local, flags: "PA", seq: b0 + 1 + 500, ack: l0 + 1 + fam.hl + 1000, window: 1000,
				opts:    []layers.TCPOption{optNOP, optNOP, optSACK(l0+1+fam.hl+1200, l0+1+fam.hl+1300)},
				payload: []byte("banner"),
			})
			p := decode(t, out)
			if want := o0 + 1 + 500; p.tcp.Seq != want {
				t.Errorf("seq %#x, want client-side byte 500 = %#x", p.tcp.Seq, want)
			}
			if want := c0 + 1 + 1000; p.tcp.Ack != want {
				t.Errorf("ack %#x, want client byte 1000 = %#x", p.tcp.Ack, want)
			}
			want := []uint32{c0 + 1 + 1200, c0 + 1 + 1300}
			if got := sackEdges(t, out); !equalU32(got, want) {
				t.Errorf("SACK %x, want client bytes %x", got, want)
			}
		})
	}
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestProxyHeaderShiftCost times the fast path (BPF_PROG_TEST_RUN, the
// kernel's own timing over 10,000 repetitions) for a SACK-carrying ACK of
// a flow without a header and of one shifted by a v2 header. The shift is
// part of deltas the program adds anyway, so the figures must be alike;
// the test logs them and asserts nothing about time (shared machine).
func TestProxyHeaderShiftCost(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	d := testDataplane(t, Config{})
	local := netip.AddrPortFrom(local4, 40003)
	in := pkt{src: back4, dst: local, flags: "A", seq: 5, ack: 6, window: 1000,
		opts: []layers.TCPOption{optNOP, optNOP, optTS(1, 2), optNOP, optNOP, optSACK(10, 20, 30, 40, 50, 60)}}
	data := frame(t, in)
	const repeat = 10000
	for round := range 3 {
		for _, hl := range []uint32{0, 47} {
			_, toClient := spliceNAT(100, 200, 300, 400, hl, local, back4, svc4, client4)
			if err := d.InstallFlow(flow.Key{Src: back4, Dst: local}, toClient); err != nil {
				t.Fatal(err)
			}
			var best time.Duration
			for range 5 {
				_, per, err := d.objs.SyngateXdp.Benchmark(data, repeat, nil)
				if err != nil {
					t.Fatal(err)
				}
				if best == 0 || per < best {
					best = per
				}
			}
			t.Logf("round %d, header %d bytes: %d ns/packet (best of 5 x %d repetitions)", round, hl, best.Nanoseconds(), repeat)
		}
	}
}
