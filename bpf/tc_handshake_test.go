package bpf

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/spec"
)

const tcActShot = 2

// tcEngine stands for a running engine of the TC program: the ring of lo
// and the mark in tc_engine. close is what the process's exit does.
type tcEngine struct {
	rd   *ringbuf.Reader
	mark int
}

func startTCEngine(tb testing.TB, d *Dataplane) *tcEngine {
	tb.Helper()
	ring, err := d.OpenTCRing("lo")
	if err != nil {
		tb.Fatal(err)
	}
	rd, err := ringbuf.NewReader(ring)
	ring.Close()
	if err != nil {
		tb.Fatal(err)
	}
	e := &tcEngine{rd: rd, mark: engineMark(tb, d)}
	tb.Cleanup(func() { e.rd.Close(); e.close() })
	return e
}

// engineMark registers a socket the way the gateway does and returns it.
func engineMark(tb testing.TB, d *Dataplane) int {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	unix.Close(fds[1])
	if err := d.RegisterEngine(fds[0]); err != nil {
		unix.Close(fds[0])
		tb.Fatal(err)
	}
	return fds[0]
}

func (e *tcEngine) close() {
	if e.mark >= 0 {
		unix.Close(e.mark)
		e.mark = -1
	}
}

// next returns the next record's frame, or fails.
func (e *tcEngine) next(tb testing.TB) (RingHeader, []byte) {
	tb.Helper()
	e.rd.SetDeadline(time.Now().Add(time.Second))
	rec, err := e.rd.Read()
	if err != nil {
		tb.Fatalf("read the ring: %v", err)
	}
	h, f, err := ParseRingRecord(rec.RawSample)
	if err != nil {
		tb.Fatal(err)
	}
	return h, f
}

// empty fails if the ring holds a record.
func (e *tcEngine) empty(tb testing.TB) {
	tb.Helper()
	e.rd.SetDeadline(time.Unix(1, 0))
	if _, err := e.rd.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		tb.Fatalf("ring not empty: %v", err)
	}
}

// tcRun runs the TC program once on data and checks its return value and
// the one verdict that moved.
func tcRun(tb testing.TB, d *Dataplane, data []byte, segs uint32, ret uint32, want Verdict) []byte {
	tb.Helper()
	got, out, moved := runTC(tb, d, append([]byte(nil), data...), segs)
	if got != ret {
		tb.Fatalf("tc returned %d, want %d (moved %v)", int32(got), int32(ret), moved)
	}
	onlyMoved(tb, moved, want, uint64(max(segs, 1)))
	return out
}

// TestTCHandshake walks the TC program's handshake path on an interface
// without XDP: standby cookies and kept ACKs while no engine runs, the
// engine's packets through the ring while one does, standby again when its
// socket closes or its ring is full.
func TestTCHandshake(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	d := testDataplane(t, Config{})
	jar := testJar(t)
	now := time.Now()
	if err := d.SetCookieKey(jar.DataplaneKey(now)); err != nil {
		t.Fatal(err)
	}
	ann := spec.Offer{Window: 1000, WScale: 7, SACK: true, Timestamps: true, MSS: 1460}
	if err := d.SetService(spec.Entry{Listen: svc4, ID: 1, Standby: true, Offer: ann}); err != nil {
		t.Fatal(err)
	}
	synOpts := []layers.TCPOption{optMSS, {OptionType: layers.TCPOptionKindSACKPermitted}, optTS(1, 0), optNOP, {OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{7}}}
	syn := frame(t, pkt{src: client4, dst: svc4, flags: "S", seq: 77, opts: synOpts})
	var s packet.Segment
	if err := packet.Parse(syn, &s); err != nil {
		t.Fatal(err)
	}
	cookieReply := func() uint32 {
		t.Helper()
		msBefore := uint32(time.Now().UnixMilli())
		out := tcRun(t, d, syn, 0, tcActRedirect, VerdictTXSynAckCookie)
		checkCookieReply(t, jar, ann, &s, out, now, msBefore, uint32(time.Now().UnixMilli()))
		var sa packet.Segment
		packet.Parse(out, &sa)
		return sa.Seq
	}

	// No engine: a standby cookie, sent back out (redirect), complete
	// checksums (a test run's skb has no checksum offload).
	isn := cookieReply()
	tcRun(t, d, frame(t, pkt{src: client6, dst: svc6, flags: "S", seq: 77}), 0, tcActShot, VerdictDropNoSocket)
	ack := frame(t, pkt{src: client4, dst: svc4, flags: "A", seq: 78, ack: isn + 1, opts: []layers.TCPOption{optTS(5, 6)}, payload: []byte("GET /")})
	tcRun(t, d, ack, 0, tcActShot, VerdictDropNoSocket)
	kept, err := d.TakeStandbyACKs()
	if err != nil || len(kept) != 1 {
		t.Fatalf("kept ACKs %d, %v; want 1", len(kept), err)
	}
	var ks packet.Segment
	if err := packet.Parse(kept[0].Frame, &ks); err != nil || ks.Seq != 78 || ks.Ack != isn+1 || len(ks.Payload) != 0 || kept[0].Ifindex != loIfindex {
		t.Fatalf("kept ACK: %v seq %d ack %d payload %d ifindex %d", err, ks.Seq, ks.Ack, len(ks.Payload), kept[0].Ifindex)
	}

	// An engine: its packets through the ring, whole, the skb dropped.
	e := startTCEngine(t, d)
	for _, c := range []struct {
		name string
		data []byte
		want Verdict
	}{
		{"syn", syn, VerdictXSKSyn},
		{"handshake ack with data", ack, VerdictXSKHandshake},
		{"backend syn-ack", frame(t, pkt{src: back4, dst: netip.AddrPortFrom(local4, 40001), flags: "SA", seq: 5, ack: 6}), VerdictXSKBackend},
		{"v6 syn", frame(t, pkt{src: client6, dst: svc6, flags: "S", seq: 1, opts: synOpts}), VerdictXSKSyn},
	} {
		tcRun(t, d, c.data, 0, tcActShot, c.want)
		h, f := e.next(t)
		if !bytes.Equal(f, c.data) || h.Ifindex != loIfindex || h.Flags != 0 {
			t.Errorf("%s: ring record %+v\n% x\nwant\n% x", c.name, h, f, c.data)
		}
	}
	tcRun(t, d, frame(t, pkt{src: client4, dst: svc4, flags: "R", seq: 1}), 0, tcActShot, VerdictDropRstFinUnknown)
	e.empty(t)

	// An aggregate (two segments) of data before the splice: copied whole,
	// for the engine to hold and cut to the leg's MSS.
	agg := frame(t, pkt{src: client4, dst: svc4, flags: "A", seq: 78, ack: isn + 1, opts: []layers.TCPOption{optNOP, optNOP, optTS(5, 6)}, payload: bytes.Repeat([]byte{1}, 1000)})
	// Counted once: the engine gets one record.
	if ret, _, moved := runTC(t, d, append([]byte(nil), agg...), 2); ret != tcActShot {
		t.Fatalf("aggregate to the engine: tc returned %d", int32(ret))
	} else {
		onlyMoved(t, moved, VerdictXSKHandshake, 1)
	}
	h, f := e.next(t)
	var as packet.Segment
	if err := packet.Parse(f, &as); err != nil || h.Flags != 0 || len(as.Payload) != 1000 || as.Seq != 78 || !bytes.Equal(f, agg) {
		t.Fatalf("aggregate's record: %v %+v, %d bytes, payload %d", err, h, len(f), len(as.Payload))
	}

	// Cookies in the data plane (a flood) go out with an engine too.
	if err := d.SetService(spec.Entry{Listen: svc4, ID: 1, Standby: true, Offload: true, Offer: ann}); err != nil {
		t.Fatal(err)
	}
	cookieReply()
	if err := d.SetService(spec.Entry{Listen: svc4, ID: 1, Standby: true, Offer: ann}); err != nil {
		t.Fatal(err)
	}

	// A full ring: the engine is stuck or gone; standby answers.
	fill := ringFill(t, d, syn)
	t.Logf("the ring took %d SYNs", fill)
	cookieReply()
	tcRun(t, d, ack, 0, tcActShot, VerdictDropNoSocket)
	if kept, _ := d.TakeStandbyACKs(); len(kept) != 1 {
		t.Fatalf("ACK with the ring full: %d kept, want 1", len(kept))
	}

	// The engine's process ends: its socket leaves tc_engine.
	e.close()
	cookieReply()
}

// ringFill runs syn through the program until the ring takes no more, and
// returns how many it took.
func ringFill(tb testing.TB, d *Dataplane, syn []byte) int {
	tb.Helper()
	n := 0
	for ; n < 2*TCRingSize/64; n += 1000 {
		before, _ := d.Counters()
		var md skbMD
		md[skbIngressIfindex] = loIfindex
		if _, err := d.objs.SyngateTc.Run(&ebpf.RunOptions{Data: syn, Context: md, Repeat: 1000}); err != nil {
			tb.Fatal(err)
		}
		after, _ := d.Counters()
		if after[VerdictXSKSyn].Packets-before[VerdictXSKSyn].Packets < 1000 {
			return n + int(after[VerdictXSKSyn].Packets-before[VerdictXSKSyn].Packets)
		}
	}
	tb.Fatalf("the ring took %d SYNs and was not full", n)
	return n
}

// TestTCCookieSynAck: the TC program's cookie SYN-ACKs are the XDP
// program's (and the engine's): random SYNs, every option layout.
func TestTCCookieSynAck(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	d := testDataplane(t, Config{DropBadFlags: true})
	jar := testJar(t)
	now := time.Now()
	if err := d.SetCookieKey(jar.DataplaneKey(now)); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(43, 8))
	n := 600
	if testing.Short() {
		n = 200
	}
	seen := map[string]int{}
	for i := range n {
		ann := randAnnounce(rng)
		setCookieServices(t, d, ann)
		in := randSYN(t, rng, i%2 == 1)
		var syn packet.Segment
		if err := packet.Parse(in, &syn); err != nil {
			t.Fatal(err)
		}
		if len(syn.Payload) > 0 {
			continue // dropped by the payload filter only with DropSYNPayload
		}
		msBefore := uint32(time.Now().UnixMilli())
		out := tcRun(t, d, in, 0, tcActRedirect, VerdictTXSynAckCookie)
		seen[checkCookieReply(t, jar, ann, &syn, out, now, msBefore, uint32(time.Now().UnixMilli()))]++
	}
	t.Logf("%d SYNs, %d option/layout combinations", n, len(seen))
	if len(seen) < 24 {
		t.Errorf("only %d combinations covered", len(seen))
	}
}
