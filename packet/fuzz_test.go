package packet

import (
	"bytes"
	"errors"
	"testing"
	"unsafe"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

var sentinels = []error{ErrTruncated, ErrNotIP, ErrBadVersion, ErrBadIHL, ErrBadLength, ErrFragment,
	ErrExtHeader, ErrMappedAddress, ErrNotTCP, ErrBadDataOffset, ErrBadOption}

// FuzzParse checks Parse's invariants on arbitrary bytes: it never panics,
// fails only with a sentinel, is deterministic, keeps every offset and the
// payload inside the frame, and what it parses can be answered and rebuilt.
func FuzzParse(f *testing.F) {
	for _, g := range [][]byte{goldenSyn4, goldenSyn6ECN, goldenSynAckVLAN, goldenDataSACK, goldenSyn6Ext,
		goldenRSTPadded, extChain(MaxExtHeaders), extChain(MaxExtHeaders + 1),
		withOptions(optNOP, optNOP, optSACK, 34, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0, 8),
		withOptions(optMSS, 3, 1, 1)} {
		f.Add(g)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		var s Segment
		err := Parse(frame, &s)
		if err != nil {
			for _, e := range sentinels {
				if err == e {
					return
				}
			}
			t.Fatalf("Parse returned a non-sentinel error %v", err)
		}

		var again Segment
		if err := Parse(frame, &again); err != nil {
			t.Fatalf("second Parse failed: %v", err)
		}
		equalSegment(t, &again, &s)

		if s.IPOffset != 14 && s.IPOffset != 18 {
			t.Fatalf("IPOffset %d", s.IPOffset)
		}
		if s.TCPOffset < s.IPOffset+20 || s.PayloadOffset < s.TCPOffset+20 || s.PayloadOffset > s.TCPOffset+60 || s.IPEnd() > len(frame) {
			t.Fatalf("offsets ip %d tcp %d payload %d end %d outside frame of %d", s.IPOffset, s.TCPOffset, s.PayloadOffset, s.IPEnd(), len(frame))
		}
		if len(s.Payload) > 0 && unsafe.SliceData(s.Payload) != &frame[s.PayloadOffset] {
			t.Fatal("payload is not a sub-slice of the frame at PayloadOffset")
		}
		for _, o := range []struct {
			off, size int
		}{{s.MSSOffset, 2}, {s.WScaleOffset, 1}, {s.TSOffset, 8}, {s.SACKOffset, 8 * s.NumSACK}} {
			if o.off != 0 && (o.off < s.TCPOffset+22 || o.off+o.size > s.PayloadOffset) {
				t.Fatalf("option offset %d+%d outside options [%d,%d)", o.off, o.size, s.TCPOffset+20, s.PayloadOffset)
			}
		}
		if s.NumSACK < 0 || s.NumSACK > MaxSACKBlocks || (s.NumSACK == 0) != (s.SACKOffset == 0) {
			t.Fatalf("NumSACK %d at %d", s.NumSACK, s.SACKOffset)
		}
		if s.Options.WScale != flow.NoWScale && s.Options.WScale > flow.MaxWScale {
			t.Fatalf("WScale %d not clamped", s.Options.WScale)
		}
		if s.Src.Addr().Is4() != !s.Is6() || s.Tuple.Client != s.Src || s.Tuple.Service != s.Dst {
			t.Fatalf("addresses %v %v tuple %v", s.Src, s.Dst, s.Tuple)
		}

		// Whatever parsed can be answered, in place, and the answer parses.
		buf := make([]byte, len(frame), len(frame)+128)
		copy(buf, frame)
		if n := ReplySynAck(buf, &s, 1, spec.Offer{Window: 1, MSS: 1460, WScale: 7, SACK: true, Timestamps: true, ECN: true}, 2); n > 0 {
			var r Segment
			if err := Parse(buf[:n], &r); err != nil {
				t.Fatalf("Parse(ReplySynAck) = %v", err)
			}
			if r.Src != s.Dst || r.Dst != s.Src || r.Ack != s.Seq+1 || r.Flags&(SYN|ACK) != SYN|ACK {
				t.Fatalf("reply %+v to %+v", r, s)
			}
			if err := VerifyChecksums(buf[:n], &r); err != nil {
				t.Fatal(err)
			}
		} else {
			t.Fatal("ReplySynAck failed with room to spare")
		}

		// Rebuilding from the parsed fields gives the same TCP view.
		fl := Fields{SrcMAC: s.SrcMAC, DstMAC: s.DstMAC, HasVLAN: s.HasVLAN, VLAN: s.VLAN, Src: s.Src, Dst: s.Dst,
			TTL: s.TTL, IPID: s.IPID, Seq: s.Seq, Ack: s.Ack, Flags: s.Flags, Window: s.Window, Options: s.Options, Payload: s.Payload}
		out := make([]byte, 0, len(frame)+64)
		n, err := Build(out, &fl)
		if err != nil {
			t.Fatalf("Build from parsed fields: %v", err)
		}
		var b Segment
		if err := Parse(out[:n], &b); err != nil {
			t.Fatalf("Parse(Build) = %v", err)
		}
		want := s.Options
		if s.Flags&SYN == 0 {
			want.MSS, want.WScale, want.SACK = 0, flow.NoWScale, false
		}
		if b.Src != s.Src || b.Dst != s.Dst || b.Seq != s.Seq || b.Ack != s.Ack || b.Flags != s.Flags ||
			b.Window != s.Window || b.Options != want || !bytes.Equal(b.Payload, s.Payload) || b.VLAN != s.VLAN || b.HasVLAN != s.HasVLAN {
			t.Fatalf("rebuilt\n %+v\nfrom\n %+v", b, s)
		}
	})
}

func TestSentinelsDistinct(t *testing.T) {
	for i, a := range sentinels {
		for j, b := range sentinels {
			if i != j && errors.Is(a, b) {
				t.Errorf("%v is %v", a, b)
			}
		}
	}
}
