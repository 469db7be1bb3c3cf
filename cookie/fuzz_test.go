package cookie

import (
	"net/netip"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
)

// fuzzTuple builds a tuple from fuzzer bytes: 4 bytes per address give
// IPv4, anything else is padded or cut to IPv6.
func fuzzTuple(caddr, saddr []byte, cport, sport uint16) flow.Tuple {
	addr := func(b []byte) netip.Addr {
		if len(b) == 4 {
			return netip.AddrFrom4([4]byte(b))
		}
		var a [16]byte
		copy(a[:], b)
		return netip.AddrFrom16(a)
	}
	return flow.Tuple{
		Client:  netip.AddrPortFrom(addr(caddr), cport),
		Service: netip.AddrPortFrom(addr(saddr), sport),
	}
}

// FuzzCheck asserts that Check never panics and that whatever it accepts
// is exactly what Make mints for the recovered inputs.
func FuzzCheck(f *testing.F) {
	// One key epoch (24 h) around base; nowOff moves within a few ticks.
	j := mustJar(f, testSecret, longKeys)
	seed := func(tu flow.Tuple, cISN uint32, syn flow.SynOptions, clock uint32, off int64, hasTS bool, want Reason) {
		isn, tsval, _ := j.Make(tu, cISN, syn, clock, base)
		// Make sure the seeds reach both the accept and the reject branches.
		if _, r := j.Check(tu, cISN+1, isn+1, hasTS, tsval, base.Add(time.Duration(off))); r != want {
			f.Fatalf("seed %v: %v, want %v", tu, r, want)
		}
		c, s := tu.Client.Addr().AsSlice(), tu.Service.Addr().AsSlice()
		f.Add(c, s, tu.Client.Port(), tu.Service.Port(), cISN+1, isn+1, hasTS, tsval, off)
	}
	seed(tuple4, 1, flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true}, 99999, 0, true, ReasonOK)
	seed(tuple4, 0xffffffff, flow.SynOptions{MSS: 536, WScale: flow.NoWScale}, 0, int64(DefaultTick), false, ReasonOK)
	seed(tuple6, 12345, flow.SynOptions{MSS: 8940, WScale: 14, ECN: true, Timestamps: true}, 7, 5, true, ReasonOK)
	seed(tuple6, 12345, flow.SynOptions{MSS: 1420, WScale: 2, Timestamps: true}, 7, int64(3*DefaultTick), true, ReasonExpired)
	seed(tuple6, 12345, flow.SynOptions{MSS: 1420, WScale: 2, Timestamps: true}, 7, -1, false, ReasonAckMismatch)

	f.Fuzz(func(t *testing.T, caddr, saddr []byte, cport, sport uint16, seq, ack uint32, hasTS bool, tsecr uint32, nowOff int64) {
		tu := fuzzTuple(caddr, saddr, cport, sport)
		nowOff %= int64(8 * DefaultTick)
		now := base.Add(time.Duration(nowOff))
		opts, reason := j.Check(tu, seq, ack, hasTS, tsecr, now)
		if reason >= numReasons {
			t.Fatalf("reason %d out of range", reason)
		}
		if reason != ReasonOK {
			if opts != (flow.SynOptions{}) {
				t.Fatalf("%v with options %+v", reason, opts)
			}
			return
		}
		// Accepted: re-mint at the start of the tick the cookie names.
		nowTick := floorDiv(now.UnixNano(), int64(DefaultTick))
		age := (uint32(nowTick) - (ack-1)>>tickShift) & tickMask
		made := time.Unix(0, (nowTick-int64(age))*int64(DefaultTick))
		syn := opts
		syn.Timestamps = hasTS
		isn, tsval, mss := j.Make(tu, seq-1, syn, tsecr, made)
		if isn != ack-1 {
			t.Fatalf("accepted ack %#x but Make gives isn %#x for %+v", ack, isn, syn)
		}
		if mss != opts.MSS {
			t.Fatalf("recovered MSS %d, Make encodes %d", opts.MSS, mss)
		}
		if hasTS && tsval&tsOptMask != tsecr&tsOptMask {
			t.Fatalf("recovered options from tsecr %#x, Make puts %#x", tsecr, tsval)
		}
		if !hasTS && (opts.WScale != flow.NoWScale || opts.SACK || opts.ECN || opts.Timestamps) {
			t.Fatalf("options %+v recovered without timestamps", opts)
		}
	})
}
