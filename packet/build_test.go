package packet

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

// TestBuildGolden rebuilds golden frames captured from gopacket (laid out
// like Linux does) byte for byte.
func TestBuildGolden(t *testing.T) {
	linux := flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true, TSval: 1000000}
	v6 := linux
	v6.MSS, v6.ECN = 1440, true
	tests := []struct {
		name  string
		build func([]byte, *Fields) (int, error)
		f     Fields
		want  []byte
	}{{
		name:  "linux ipv4 syn",
		build: BuildSyn,
		f: Fields{SrcMAC: macClient, DstMAC: macGateway, Src: ap(client4, 40000), Dst: ap(service4, 80),
			IPID: 0x1c46, Seq: 1000, Window: 64240, Options: linux},
		want: goldenSyn4,
	}, {
		name:  "ipv6 ecn syn",
		build: BuildSyn,
		f: Fields{SrcMAC: macClient, DstMAC: macGateway, Src: ap(client6, 40001), Dst: ap(service6, 443),
			Seq: 0xdeadbeef, Window: 64800, Options: v6},
		want: goldenSyn6ECN,
	}, {
		name:  "vlan syn-ack without timestamps",
		build: BuildSynAck,
		f: Fields{SrcMAC: macGateway, DstMAC: macClient, HasVLAN: true, VLAN: 5<<13 | 100,
			Src: ap(service4, 80), Dst: ap(client4, 40000), Seq: 77, Ack: 1001, Window: 65535,
			Options: flow.SynOptions{MSS: 1460, WScale: 9, SACK: true}},
		want: goldenSynAckVLAN,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := make([]byte, 0, 128)
			n, err := tt.build(buf, &tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf[:n], tt.want) {
				t.Errorf("built\n %x\nwant\n %x", buf[:n], tt.want)
			}
		})
	}
}

// TestOptionLayout pins the Linux option layouts byte for byte.
func TestOptionLayout(t *testing.T) {
	ts := []byte{8, 10, 0, 0, 0, 1, 0, 0, 0, 2}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name  string
		flags Flags
		o     flow.SynOptions
		want  []byte
	}{
		{"syn all", SYN, flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true, TSval: 1, TSecr: 2},
			cat([]byte{2, 4, 5, 0xb4, 4, 2}, ts, []byte{1, 3, 3, 7})},
		{"syn without sack", SYN, flow.SynOptions{MSS: 1460, WScale: 7, Timestamps: true, TSval: 1, TSecr: 2},
			cat([]byte{2, 4, 5, 0xb4, 1, 1}, ts, []byte{1, 3, 3, 7})},
		{"syn without timestamps", SYN, flow.SynOptions{MSS: 1460, WScale: 14, SACK: true},
			[]byte{2, 4, 5, 0xb4, 1, 1, 4, 2, 1, 3, 3, 14}},
		{"syn sack only", SYN, flow.SynOptions{WScale: flow.NoWScale, SACK: true}, []byte{1, 1, 4, 2}},
		{"syn window scale 0 is sent", SYN, flow.SynOptions{WScale: 0}, []byte{1, 3, 3, 0}},
		{"syn nothing", SYN, flow.SynOptions{WScale: flow.NoWScale}, nil},
		{"ack drops syn-only options", ACK, flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true, TSval: 1, TSecr: 2},
			cat([]byte{1, 1}, ts)},
		{"ack without timestamps", ACK | PSH, flow.SynOptions{MSS: 1460, WScale: 7}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := make([]byte, 0, 128)
			f := Fields{Src: ap(client4, 1), Dst: ap(service4, 2), Flags: tt.flags, Options: tt.o}
			n, err := Build(buf, &f)
			if err != nil {
				t.Fatal(err)
			}
			got := buf[54:n]
			if !bytes.Equal(got, tt.want) {
				t.Errorf("options %v, want %v", got, tt.want)
			}
			if doff := int(buf[:n][34+12]>>4) * 4; doff != 20+len(tt.want) {
				t.Errorf("data offset %d, want %d", doff, 20+len(tt.want))
			}
		})
	}
}

func TestBuildRST(t *testing.T) {
	syn := goldenSyn4 // SYN, seq 1000, no ACK
	tests := []struct {
		name      string
		frame     []byte
		wantSeq   uint32
		wantAck   uint32
		wantFlags Flags
	}{
		{"syn without ack", syn, 0, 1001, RST | ACK},
		{"segment with ack", goldenDataSACK, 5000, 0, RST},
		{"syn-ack", goldenSynAckVLAN, 1001, 0, RST},
		{"fin with data and no ack", mutate(goldenDataSACK, func(b []byte) []byte { b[38+13] = byte(FIN | PSH); return b }), 0, 1001 + 5 + 1, RST | ACK},
		{"sequence wraps", mutate(syn, func(b []byte) []byte { copy(b[38:42], []byte{0xff, 0xff, 0xff, 0xff}); return b }), 0, 0, RST | ACK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in, out Segment
			if err := Parse(tt.frame, &in); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 0, 128)
			n, err := BuildRST(buf, &in)
			if err != nil {
				t.Fatal(err)
			}
			if err := Parse(buf[:n], &out); err != nil {
				t.Fatal(err)
			}
			if out.Seq != tt.wantSeq || out.Ack != tt.wantAck || out.Flags != tt.wantFlags {
				t.Errorf("reset seq %d ack %d %v, want seq %d ack %d %v", out.Seq, out.Ack, out.Flags, tt.wantSeq, tt.wantAck, tt.wantFlags)
			}
			if out.Src != in.Dst || out.Dst != in.Src || out.SrcMAC != in.DstMAC || out.DstMAC != in.SrcMAC ||
				out.HasVLAN != in.HasVLAN || out.VLAN != in.VLAN {
				t.Errorf("reset not addressed back to the sender: %+v", out)
			}
			if out.Window != 0 || out.PayloadOffset != out.TCPOffset+20 || len(out.Payload) != 0 {
				t.Errorf("reset carries window %d, options or payload", out.Window)
			}
			if err := VerifyChecksums(buf[:n], &out); err != nil {
				t.Error(err)
			}
		})
	}
	t.Run("golden", func(t *testing.T) {
		var in Segment
		if err := Parse(goldenSyn4, &in); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 0, 128)
		n, err := BuildRST(buf, &in)
		if err != nil {
			t.Fatal(err)
		}
		// The golden reset is padded to 60 bytes on the wire.
		if !bytes.Equal(buf[:n], goldenRSTPadded[:54]) {
			t.Errorf("reset\n %x\nwant\n %x", buf[:n], goldenRSTPadded[:54])
		}
	})
	t.Run("never answers a reset", func(t *testing.T) {
		var in Segment
		if err := Parse(goldenRSTPadded, &in); err != nil {
			t.Fatal(err)
		}
		if _, err := BuildRST(make([]byte, 0, 128), &in); !errors.Is(err, ErrResetForReset) {
			t.Errorf("BuildRST(RST) = %v, want ErrResetForReset", err)
		}
	})
}

func TestReplySynAck(t *testing.T) {
	all := spec.Offer{Window: 65535, MSS: 1400, WScale: 9, SACK: true, Timestamps: true, ECN: true}
	tests := []struct {
		name  string
		syn   []byte
		opts  spec.Offer
		want  flow.SynOptions
		flags Flags
	}{
		{"linux syn, offer all", goldenSyn4, all,
			flow.SynOptions{MSS: 1400, WScale: 9, SACK: true, Timestamps: true, TSval: 0xc0ffee, TSecr: 1000000}, SYN | ACK},
		{"ecn syn, offer all", goldenSyn6ECN, all,
			flow.SynOptions{MSS: 1400, WScale: 9, SACK: true, Timestamps: true, TSval: 0xc0ffee, TSecr: 1000000, ECN: true}, SYN | ACK | ECE},
		{"ecn syn, no ecn offered", goldenSyn6ECN, spec.Offer{Window: 1000, MSS: 1400, WScale: flow.NoWScale},
			flow.SynOptions{MSS: 1400, WScale: flow.NoWScale}, SYN | ACK},
		{"mss-only syn gets no wscale, sack, ts", goldenSyn6Ext, all,
			flow.SynOptions{MSS: 1400, WScale: flow.NoWScale}, SYN | ACK},
		{"no timestamps in syn", goldenSynAckVLAN /* parsed as a SYN would be; has MSS, SACK, WS */, all,
			flow.SynOptions{MSS: 1400, WScale: 9, SACK: true}, SYN | ACK},
		{"zero mss omitted", goldenSyn4, spec.Offer{WScale: 0},
			flow.SynOptions{WScale: 0}, SYN | ACK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var syn, out Segment
			if err := Parse(tt.syn, &syn); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 0, 128)
			n := ReplySynAck(buf, &syn, 0x11223344, tt.opts, 0xc0ffee)
			if n == 0 {
				t.Fatal("ReplySynAck wrote nothing")
			}
			if err := Parse(buf[:n], &out); err != nil {
				t.Fatal(err)
			}
			if out.Options != tt.want || out.Flags != tt.flags {
				t.Errorf("options %+v %v\nwant    %+v %v", out.Options, out.Flags, tt.want, tt.flags)
			}
			if out.Seq != 0x11223344 || out.Ack != syn.Seq+1 || out.Window != tt.opts.Window {
				t.Errorf("seq %#x ack %d window %d", out.Seq, out.Ack, out.Window)
			}
			if out.Src != syn.Dst || out.Dst != syn.Src || out.SrcMAC != syn.DstMAC || out.DstMAC != syn.SrcMAC ||
				out.HasVLAN != syn.HasVLAN || out.VLAN != syn.VLAN || out.TTL != DefaultTTL {
				t.Errorf("not a reply: %+v", out)
			}
			if err := VerifyChecksums(buf[:n], &out); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestReplySynAckInPlace turns received frames around in their own buffer
// and compares with a reply written to a separate buffer.
func TestReplySynAckInPlace(t *testing.T) {
	opts := spec.Offer{Window: 65535, MSS: 1460, WScale: 7, SACK: true, Timestamps: true, ECN: true}
	for _, frame := range [][]byte{goldenSyn4, goldenSyn6ECN, goldenSyn6Ext, goldenSynAckVLAN, extChain(MaxExtHeaders)} {
		var syn Segment
		if err := Parse(frame, &syn); err != nil {
			t.Fatal(err)
		}
		sep := make([]byte, 0, 256)
		n1 := ReplySynAck(sep, &syn, 7, opts, 42)

		// An AF_XDP frame: the received bytes at the start of a 2 KiB chunk.
		umem := make([]byte, 2048)
		copy(umem, frame)
		var inPlace Segment
		if err := Parse(umem[:len(frame)], &inPlace); err != nil {
			t.Fatal(err)
		}
		n2 := ReplySynAck(umem[:len(frame)], &inPlace, 7, opts, 42)
		if n1 == 0 || n1 != n2 || !bytes.Equal(sep[:n1], umem[:n2]) {
			t.Errorf("in-place reply differs:\n sep: %x\n in:  %x", sep[:n1], umem[:n2])
		}
	}
}

func TestBuildErrors(t *testing.T) {
	big := make([]byte, 0xffff)
	tests := []struct {
		name string
		cap  int
		f    Fields
		want error
	}{
		{"buffer one byte short", 73, Fields{Src: ap(client4, 1), Dst: ap(service4, 2), Flags: SYN,
			Options: flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true}}, ErrShortBuffer},
		{"nil buffer", 0, Fields{Src: ap(client6, 1), Dst: ap(service6, 2)}, ErrShortBuffer},
		{"mixed families", 128, Fields{Src: ap(client4, 1), Dst: ap(service6, 2)}, ErrAddrFamily},
		{"zero addresses", 128, Fields{}, ErrAddrFamily},
		{"ipv4 datagram over 64 KiB", 1 << 17, Fields{Src: ap(client4, 1), Dst: ap(service4, 2), Payload: big[:0xffff-40+1]}, ErrTooLarge},
		{"ipv6 payload over 64 KiB", 1 << 17, Fields{Src: ap(client6, 1), Dst: ap(service6, 2), Payload: big[:0xffff-20+1]}, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Build(make([]byte, 0, tt.cap), &tt.f); !errors.Is(err, tt.want) {
				t.Errorf("Build = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("largest datagrams fit", func(t *testing.T) {
		for _, f := range []Fields{
			{Src: ap(client4, 1), Dst: ap(service4, 2), Payload: big[:0xffff-40]},
			{Src: ap(client6, 1), Dst: ap(service6, 2), Payload: big[:0xffff-20]},
		} {
			buf := make([]byte, 0, 1<<17)
			n, err := Build(buf, &f)
			if err != nil {
				t.Fatal(err)
			}
			var s Segment
			if err := Parse(buf[:n], &s); err != nil || len(s.Payload) != len(f.Payload) {
				t.Errorf("Parse: %v, payload %d", err, len(s.Payload))
			}
			if err := VerifyChecksums(buf[:n], &s); err != nil {
				t.Error(err)
			}
		}
	})
	t.Run("reply into a short buffer returns 0", func(t *testing.T) {
		var syn Segment
		if err := Parse(goldenSyn4, &syn); err != nil {
			t.Fatal(err)
		}
		if n := ReplySynAck(make([]byte, 0, 60), &syn, 1, spec.Offer{MSS: 1460, WScale: 7, SACK: true, Timestamps: true}, 0); n != 0 {
			t.Errorf("ReplySynAck = %d, want 0", n)
		}
	})
}

func TestBuildAllocs(t *testing.T) {
	var syn Segment
	if err := Parse(goldenSyn6ECN, &syn); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 2048)
	f := Fields{Src: netip.AddrPortFrom(client6, 1), Dst: netip.AddrPortFrom(service6, 2),
		Options: flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true}, Payload: []byte("data")}
	for name, fn := range map[string]func(){
		"ReplySynAck": func() { ReplySynAck(buf, &syn, 1, spec.Offer{MSS: 1460, WScale: 7, SACK: true, Timestamps: true}, 0) },
		"BuildSyn":    func() { _, _ = BuildSyn(buf, &f) },
		"BuildSynAck": func() { _, _ = BuildSynAck(buf, &f) },
		"BuildAck":    func() { _, _ = BuildAck(buf, &f) },
		"BuildRST":    func() { _, _ = BuildRST(buf, &syn) },
		"Verify":      func() { _ = VerifyChecksums(goldenSyn6ECN, &syn) },
	} {
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s allocates %v times", name, n)
		}
	}
}
