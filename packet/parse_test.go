package packet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/syngate/syngate/flow"
)

// mutate returns a copy of frame changed by f.
func mutate(frame []byte, f func(b []byte) []byte) []byte {
	return f(bytes.Clone(frame))
}

// withOptions returns goldenSyn4 with its 20 bytes of TCP options replaced
// by opts, padded with EOL to a multiple of 4, lengths fixed up.
func withOptions(opts ...byte) []byte {
	for len(opts)%4 != 0 {
		opts = append(opts, 0)
	}
	b := bytes.Clone(goldenSyn4[:54])
	b = append(b, opts...)
	binary.BigEndian.PutUint16(b[16:], uint16(len(b)-14))
	b[34+12] = byte((20+len(opts))/4) << 4
	return b
}

func TestParseErrors(t *testing.T) {
	v4, v6, v6ext := goldenSyn4, goldenSyn6ECN, goldenSyn6Ext
	tests := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"empty", nil, ErrTruncated},
		{"short ethernet", v4[:13], ErrTruncated},
		{"short vlan tag", goldenSynAckVLAN[:17], ErrTruncated},
		{"short ipv4 header", v4[:33], ErrTruncated},
		{"ipv4 total length past frame", v4[:73], ErrTruncated},
		{"ipv4 options past frame", mutate(v4, func(b []byte) []byte { b[14] = 0x4f; return b[:40] }), ErrTruncated},
		{"short ipv6 header", v6[:53], ErrTruncated},
		{"ipv6 payload length past frame", v6[:93], ErrTruncated},
		{"ipv6 ext header past datagram", mutate(v6ext, func(b []byte) []byte { b[55] = 10; return b }), ErrTruncated},
		{"ipv6 ext header cut short", mutate(v6ext, func(b []byte) []byte { binary.BigEndian.PutUint16(b[18:], 4); return b[:58] }), ErrTruncated},
		{"tcp header past datagram", mutate(v4, func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 20+19); return b }), ErrTruncated},

		{"arp", mutate(v4, func(b []byte) []byte { b[12], b[13] = 0x08, 0x06; return b }), ErrNotIP},
		{"qinq outer tag", mutate(goldenSynAckVLAN, func(b []byte) []byte { b[12], b[13] = 0x88, 0xa8; return b }), ErrNotIP},
		{"two 802.1q tags", mutate(goldenSynAckVLAN, func(b []byte) []byte { b[16], b[17] = 0x81, 0x00; return b }), ErrNotIP},

		{"ipv4 ethertype, version 6", mutate(v4, func(b []byte) []byte { b[14] = 0x65; return b }), ErrBadVersion},
		{"ipv6 ethertype, version 4", mutate(v6, func(b []byte) []byte { b[14] = 0x40; return b }), ErrBadVersion},

		{"ihl 4", mutate(v4, func(b []byte) []byte { b[14] = 0x44; return b }), ErrBadIHL},
		{"ihl 0", mutate(v4, func(b []byte) []byte { b[14] = 0x40; return b }), ErrBadIHL},

		{"ipv4 total length below ihl", mutate(v4, func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 19); return b }), ErrBadLength},
		{"ipv6 payload length zero (jumbogram)", mutate(v6, func(b []byte) []byte { b[18], b[19] = 0, 0; return b }), ErrBadLength},

		{"ipv4 more fragments", mutate(v4, func(b []byte) []byte { b[20] = 0x20; return b }), ErrFragment},
		{"ipv4 fragment offset", mutate(v4, func(b []byte) []byte { b[20], b[21] = 0x40, 0x01; return b }), ErrFragment},
		{"ipv6 fragment header", mutate(v6, func(b []byte) []byte { b[20] = 44; return b }), ErrFragment},
		{"ipv6 fragment header after dest opts", mutate(v6ext, func(b []byte) []byte { b[62] = 44; return b }), ErrFragment},

		{"hop-by-hop second", mutate(v6ext, func(b []byte) []byte { b[54] = 0; return b }), ErrExtHeader},
		{"too many ext headers", extChain(MaxExtHeaders + 1), ErrExtHeader},

		{"ipv6 v4-mapped source", mutate(v6, func(b []byte) []byte { copy(b[22:34], []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}); return b }), ErrMappedAddress},
		{"ipv6 v4-mapped destination", mutate(v6, func(b []byte) []byte { copy(b[38:50], []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}); return b }), ErrMappedAddress},

		{"udp", mutate(v4, func(b []byte) []byte { b[23] = 17; return b }), ErrNotTCP},
		{"ipv6 udp", mutate(v6, func(b []byte) []byte { b[20] = 17; return b }), ErrNotTCP},
		{"ipv6 no next header", mutate(v6ext, func(b []byte) []byte { b[62] = 59; return b }), ErrNotTCP},
		{"ipv6 esp", mutate(v6ext, func(b []byte) []byte { b[54] = 50; return b }), ErrNotTCP},

		{"data offset 4", mutate(v4, func(b []byte) []byte { b[46] = 0x40; return b }), ErrBadDataOffset},
		{"data offset past segment", mutate(v4, func(b []byte) []byte { b[46] = 0xf0; return b }), ErrBadDataOffset},

		{"option length 0", withOptions(optMSS, 0, 5, 0xb4), ErrBadOption},
		{"option length 1", withOptions(30, 1, 0, 0), ErrBadOption},
		{"option past header", withOptions(optNOP, optNOP, 30, 5), ErrBadOption},
		{"option kind in last byte", withOptions(optNOP, optNOP, optNOP, 34), ErrBadOption},
		{"mss length 3", withOptions(optMSS, 3, 5, optNOP), ErrBadOption},
		{"window scale length 4", withOptions(optWScale, 4, 7, 0), ErrBadOption},
		{"sack-permitted length 3", withOptions(optSACKPerm, 3, 0, 0), ErrBadOption},
		{"sack length 9", withOptions(optSACK, 9, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0), ErrBadOption},
		{"sack without blocks", withOptions(optSACK, 2, 0, 0), ErrBadOption},
		{"timestamp length 8", withOptions(optTimestamp, 8, 0, 0, 0, 1, 0, 0), ErrBadOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Segment
			err := Parse(tt.frame, &s)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %v, want %v", err, tt.want)
			}
		})
	}
}

// extChain is an IPv6 SYN behind n destination-options headers.
func extChain(n int) []byte {
	b := bytes.Clone(goldenSyn6ECN[:54])
	b[20] = protoDestOpts
	for i := 0; i < n; i++ {
		next := byte(protoDestOpts)
		if i == n-1 {
			next = protoTCP
		}
		b = append(b, next, 0, 1, 4, 0, 0, 0, 0)
	}
	b = append(b, goldenSyn6ECN[54:]...)
	binary.BigEndian.PutUint16(b[18:], uint16(len(b)-54))
	return b
}

func TestParseExtChainAtLimit(t *testing.T) {
	var s Segment
	f := extChain(MaxExtHeaders)
	if err := Parse(f, &s); err != nil {
		t.Fatalf("Parse of %d ext headers: %v", MaxExtHeaders, err)
	}
	if want := 54 + 8*MaxExtHeaders; s.TCPOffset != want {
		t.Errorf("TCPOffset = %d, want %d", s.TCPOffset, want)
	}
	if s.Seq != 0xdeadbeef || s.Options.MSS != 1440 {
		t.Errorf("seq %#x mss %d after ext headers", s.Seq, s.Options.MSS)
	}
}

// TestParseLenient covers inputs that look odd but are valid TCP.
func TestParseLenient(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
		check func(t *testing.T, s *Segment)
	}{
		{"unknown options are skipped", withOptions(34, 10, 1, 2, 3, 4, 5, 6, 7, 8, optMSS, 4, 0x05, 0xb4, 253, 2), func(t *testing.T, s *Segment) {
			if s.Options.MSS != 1460 || s.MSSOffset != 54+12 {
				t.Errorf("MSS %d at %d, want 1460 at 66", s.Options.MSS, s.MSSOffset)
			}
		}},
		{"EOL ends options, garbage after it ignored", withOptions(optMSS, 4, 0x05, 0xb4, optEOL, 99, 1), func(t *testing.T, s *Segment) {
			if s.Options.MSS != 1460 || s.Options.Timestamps {
				t.Errorf("options %+v", s.Options)
			}
		}},
		{"window scale 15 clamped to 14", withOptions(optNOP, optWScale, 3, 15), func(t *testing.T, s *Segment) {
			if s.Options.WScale != flow.MaxWScale {
				t.Errorf("WScale = %d, want %d", s.Options.WScale, flow.MaxWScale)
			}
		}},
		{"window scale 255 is not absence", withOptions(optNOP, optWScale, 3, 255), func(t *testing.T, s *Segment) {
			if !s.Options.HasWScale() || s.Options.WScale != flow.MaxWScale {
				t.Errorf("WScale = %d", s.Options.WScale)
			}
		}},
		{"repeated option: last wins", withOptions(optMSS, 4, 0x05, 0xb4, optMSS, 4, 0x02, 0x18), func(t *testing.T, s *Segment) {
			if s.Options.MSS != 536 || s.MSSOffset != 60 {
				t.Errorf("MSS %d at %d, want 536 at 60", s.Options.MSS, s.MSSOffset)
			}
		}},
		{"four sack blocks", withOptions(optNOP, optNOP, optSACK, 34,
			0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0, 8), func(t *testing.T, s *Segment) {
			want := [4]SACKBlock{{1, 2}, {3, 4}, {5, 6}, {7, 8}}
			if s.NumSACK != 4 || s.SACK != want || s.SACKOffset != 58 {
				t.Errorf("SACK %d %v at %d", s.NumSACK, s.SACK, s.SACKOffset)
			}
		}},
		{"no options at all", withOptions(), func(t *testing.T, s *Segment) {
			if s.Options != (flow.SynOptions{WScale: flow.NoWScale}) || s.PayloadOffset != 54 {
				t.Errorf("options %+v payload at %d", s.Options, s.PayloadOffset)
			}
		}},
		{"ipv4 reserved flag bit and DF", mutate(goldenSyn4, func(b []byte) []byte { b[20] = 0xc0; return b }), func(t *testing.T, s *Segment) {
			if s.Seq != 1000 {
				t.Errorf("seq %d", s.Seq)
			}
		}},
		{"syn with ECE only is not ECN setup", mutate(goldenSyn6ECN, func(b []byte) []byte { b[67] = byte(SYN | ECE); return b }), func(t *testing.T, s *Segment) {
			if s.Options.ECN {
				t.Error("ECN set")
			}
		}},
		{"syn-ack with ECE is ECN setup", mutate(goldenSyn6ECN, func(b []byte) []byte { b[67] = byte(SYN | ACK | ECE); return b }), func(t *testing.T, s *Segment) {
			if !s.Options.ECN {
				t.Error("ECN not set")
			}
		}},
		{"syn-ack with ECE and CWR is not", mutate(goldenSyn6ECN, func(b []byte) []byte { b[67] = byte(SYN | ACK | ECE | CWR); return b }), func(t *testing.T, s *Segment) {
			if s.Options.ECN {
				t.Error("ECN set")
			}
		}},
		{"payload bounded by ip length, not frame", append(bytes.Clone(goldenDataSACK), "trailer"...), func(t *testing.T, s *Segment) {
			if string(s.Payload) != "hello" {
				t.Errorf("payload %q", s.Payload)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Segment
			if err := Parse(tt.frame, &s); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.check(t, &s)
		})
	}
}

func TestParseReusesSegment(t *testing.T) {
	var s Segment
	if err := Parse(goldenDataSACK, &s); err != nil {
		t.Fatal(err)
	}
	if err := Parse(goldenSyn6Ext, &s); err != nil {
		t.Fatal(err)
	}
	if s.NumSACK != 0 || s.SACKOffset != 0 || s.TSOffset != 0 || s.Options.Timestamps || len(s.Payload) != 0 {
		t.Errorf("state from the previous frame leaked: %+v", s)
	}
}

func TestParseAllocs(t *testing.T) {
	var s Segment
	for _, f := range [][]byte{goldenSyn4, goldenSyn6ECN, goldenSyn6Ext, goldenDataSACK, goldenSynAckVLAN} {
		if n := testing.AllocsPerRun(100, func() { _ = Parse(f, &s) }); n != 0 {
			t.Errorf("Parse allocates %v times per frame", n)
		}
	}
	bad := mutate(goldenSyn4, func(b []byte) []byte { b[14] = 0x44; return b })
	if n := testing.AllocsPerRun(100, func() { _ = Parse(bad, &s) }); n != 0 {
		t.Errorf("Parse error path allocates %v times", n)
	}
}

func TestFlagsString(t *testing.T) {
	for f, want := range map[Flags]string{0: "none", SYN: "SYN", SYN | ACK: "SYN|ACK", FIN | PSH | ACK | CWR: "FIN|PSH|ACK|CWR"} {
		if got := f.String(); got != want {
			t.Errorf("%#x.String() = %q, want %q", uint8(f), got, want)
		}
	}
}
