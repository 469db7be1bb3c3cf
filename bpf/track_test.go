package bpf

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/syngate/syngate/flow"
)

// trackFamily is the addresses of a tracked pair in one address family.
type trackFamily struct {
	name                 string
	client, svc, backend netip.AddrPort
	local                netip.AddrPort
}

var trackFamilies = []trackFamily{
	{"ipv4", client4, svc4, back4, netip.AddrPortFrom(local4, 40001)},
	{"ipv6", client6, svc6, back6, netip.AddrPortFrom(local6, 40001)},
}

// trackedPair is one spliced connection installed with sequence tracking:
// client ISN 1000, syngate's ISN toward the client 5000, backend ISN 9000,
// no data yet, 65535-byte windows without scaling.
type trackedPair struct {
	f                   trackFamily
	kc, kb              flow.Key
	toBackend, toClient flow.NAT
}

const (
	tClientISN  = 1000
	tOurISN     = 5000
	tBackendISN = 9000
	tWindow     = 65535
)

func installTrackedPair(t testing.TB, d *Dataplane, f trackFamily) trackedPair {
	t.Helper()
	p := trackedPair{
		f:  f,
		kc: flow.Key{Src: f.client, Dst: f.svc},
		kb: flow.Key{Src: f.backend, Dst: f.local},
		toBackend: flow.NAT{Src: f.local, Dst: f.backend, AckDelta: tBackendISN - tOurISN,
			Ifindex: 1, SrcMAC: learnedSrc, DstMAC: learnedDst},
		toClient: flow.NAT{Src: f.svc, Dst: f.client, SeqDelta: tOurISN + (1<<32 - tBackendISN),
			Ifindex: 1, SrcMAC: learnedDst, DstMAC: learnedSrc},
	}
	tc := flow.Track{SeqEnd: tClientISN + 1, AckMax: tBackendISN + 1, WinEnd: tBackendISN + 1 + tWindow, WinMax: tWindow}
	tb := flow.Track{SeqEnd: tBackendISN + 1, AckMax: tClientISN + 1, WinEnd: tClientISN + 1 + tWindow, WinMax: tWindow}
	if err := d.InstallTrackedFlow(p.kb, p.toClient, tb); err != nil {
		t.Fatal(err)
	}
	if err := d.InstallTrackedFlow(p.kc, p.toBackend, tc); err != nil {
		t.Fatal(err)
	}
	return p
}

// fromClient and fromBackend build segments of the pair as each end sends
// them: the client acks in syngate's space, the backend in the client's.
func (p trackedPair) fromClient(flags string, seq, ack uint32, n int) pkt {
	return pkt{src: p.f.client, dst: p.f.svc, flags: flags, seq: seq, ack: ack, window: tWindow, payload: make([]byte, n)}
}

func (p trackedPair) fromBackend(flags string, seq, ack uint32, n int) pkt {
	return pkt{src: p.f.backend, dst: p.f.local, flags: flags, seq: seq, ack: ack, window: tWindow, payload: make([]byte, n)}
}

func lookup(t *testing.T, d *Dataplane, k flow.Key) flow.State {
	t.Helper()
	st, err := d.LookupFlow(k)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestTrackedVerdicts sends each kind of segment an attacker or an endpoint
// may send into a tracked flow and checks the verdict and what the flow
// learned.
func TestTrackedVerdicts(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	d := testDataplane(t, Config{})
	withSocket(t, d)
	run := func(t *testing.T, p pkt, want Verdict) result {
		t.Helper()
		r := mustRun(t, d, frame(t, p))
		if r.verdict != want {
			t.Fatalf("%v %s seq %d: verdict %v, want %v", p.src, p.flags, p.seq, r.verdict, want)
		}
		return r
	}
	for _, f := range trackFamilies {
		t.Run(f.name, func(t *testing.T) { testTracked(t, d, f, run) })
	}
}

// testTracked is TestTrackedVerdicts in one address family.
func testTracked(t *testing.T, d *Dataplane, f trackFamily, run func(*testing.T, pkt, Verdict) result) {
	const cNxt, bNxt = tClientISN + 1, tBackendISN + 1

	t.Run("data is forwarded and learned", func(t *testing.T) {
		p := installTrackedPair(t, d, f)
		r := run(t, p.fromClient("PA", cNxt, tOurISN+1, 100), VerdictFastTX)
		checkRewrite(t, frame(t, p.fromClient("PA", cNxt, tOurISN+1, 100)), r.out, p.toBackend)
		if st := lookup(t, d, p.kc); st.Track.SeqEnd != cNxt+100 || st.Packets != 1 || !st.Tracked {
			t.Errorf("client state %+v, want SeqEnd %d", st, cNxt+100)
		}
		run(t, p.fromBackend("A", bNxt, cNxt+100, 0), VerdictFastTX)
		if st := lookup(t, d, p.kb); st.Track.AckMax != cNxt+100 || st.Track.WinEnd != cNxt+100+tWindow {
			t.Errorf("backend state %+v", st.Track)
		}
	})
	t.Run("exact RST at the receiver's ack ends the flow", func(t *testing.T) {
		p := installTrackedPair(t, d, f)
		run(t, p.fromClient("R", cNxt, 0, 0), VerdictFastTX)
		if st := lookup(t, d, p.kc); !st.RST {
			t.Errorf("exact RST did not mark the flow: %+v", st)
		}
	})
	t.Run("exact RST at the sender's next sequence (not yet acked) ends the flow", func(t *testing.T) {
		p := installTrackedPair(t, d, f)
		run(t, p.fromClient("PA", cNxt, tOurISN+1, 500), VerdictFastTX)
		run(t, p.fromClient("RA", cNxt+500, tOurISN+1, 0), VerdictFastTX)
		if st := lookup(t, d, p.kc); !st.RST {
			t.Errorf("exact RST did not mark the flow: %+v", st)
		}
	})
	t.Run("exact RST from the backend", func(t *testing.T) {
		p := installTrackedPair(t, d, f)
		r := run(t, p.fromBackend("RA", bNxt, cNxt, 0), VerdictFastTX)
		checkRewrite(t, frame(t, p.fromBackend("RA", bNxt, cNxt, 0)), r.out, p.toClient)
		if st := lookup(t, d, p.kb); !st.RST {
			t.Errorf("exact RST did not mark the flow: %+v", st)
		}
	})
	t.Run("in-window RST goes to the engine and marks nothing", func(t *testing.T) {
		p := installTrackedPair(t, d, f)
		run(t, p.fromClient("R", cNxt+1000, 0, 0), VerdictXSKRstInWindow)
		run(t, p.fromBackend("R", bNxt+tWindow-1, 0, 0), VerdictXSKRstInWindow)
		for _, k := range []flow.Key{p.kc, p.kb} {
			if st := lookup(t, d, k); st.RST || st.Packets != 0 || st.LastSeen != 0 {
				t.Errorf("%v after an in-window RST: %+v", k, st)
			}
		}
	})
	t.Run("out-of-window RSTs are dropped", func(t *testing.T) {
		p := installTrackedPair(t, d, f)
		for _, seq := range []uint32{cNxt + 1<<31, cNxt - 1, cNxt + tWindow + 1, 0xdeadbeef} {
			run(t, p.fromClient("R", seq, 0, 0), VerdictDropRstOutOfWindow)
		}
		run(t, p.fromBackend("RA", bNxt+1<<31, cNxt, 0), VerdictDropRstOutOfWindow)
		for _, k := range []flow.Key{p.kc, p.kb} {
			if st := lookup(t, d, k); st.RST || st.Packets != 0 {
				t.Errorf("%v after out-of-window RSTs: %+v", k, st)
			}
		}
	})
	t.Run("blind data cannot move the state an exact RST needs", func(t *testing.T) {
		p := installTrackedPair(t, d, f)
		far := uint32(cNxt + 1<<31)
		run(t, p.fromClient("PA", far, tOurISN+1, 10), VerdictFastTXOutOfWindow)
		run(t, p.fromClient("PA", cNxt, tOurISN+1+1<<20, 10), VerdictFastTXOutOfWindow) // acks unsent data
		if st := lookup(t, d, p.kc); st.Track.SeqEnd != cNxt || st.Track.AckMax != bNxt {
			t.Errorf("out-of-window segments moved the state: %+v", st.Track)
		}
		run(t, p.fromClient("R", far+10, 0, 0), VerdictDropRstOutOfWindow)
		if st := lookup(t, d, p.kc); st.RST {
			t.Error("RST after blind data marked the flow")
		}
	})
	t.Run("an ack of data XDP did not see is believed only at the exact sequence number", func(t *testing.T) {
		p := installTrackedPair(t, d, f)
		// 500 bytes of the client's went to the backend past XDP.
		run(t, p.fromBackend("A", bNxt+1, cNxt+500, 0), VerdictFastTXOutOfWindow)
		run(t, p.fromBackend("A", bNxt, cNxt+500+1<<17, 0), VerdictFastTXOutOfWindow) // beyond any window
		if c, b := lookup(t, d, p.kc), lookup(t, d, p.kb); c.Track.SeqEnd != cNxt || b.Track.AckMax != cNxt {
			t.Fatalf("inexact acks moved the state: client %+v backend %+v", c.Track, b.Track)
		}
		run(t, p.fromBackend("A", bNxt, cNxt+500, 0), VerdictFastTX)
		if c, b := lookup(t, d, p.kc), lookup(t, d, p.kb); c.Track.SeqEnd != cNxt+500 || b.Track.AckMax != cNxt+500 {
			t.Fatalf("exact ack: client %+v backend %+v", c.Track, b.Track)
		}
		run(t, p.fromClient("R", cNxt+500, 0, 0), VerdictFastTX)
		if st := lookup(t, d, p.kc); !st.RST {
			t.Error("RST at the client's next sequence number did not mark the flow")
		}
	})
	t.Run("FIN per direction: half-closed flow keeps flowing", func(t *testing.T) {
		p := installTrackedPair(t, d, f)
		run(t, p.fromClient("FA", cNxt, tOurISN+1, 0), VerdictFastTX)
		c, b := lookup(t, d, p.kc), lookup(t, d, p.kb)
		if !c.FIN || c.FinEnd != cNxt+1 || b.FIN || c.FINAcked(b) {
			t.Fatalf("after the client's FIN: client %+v backend %+v", c, b)
		}
		// The backend acks the FIN and keeps sending: learned, not out of window.
		seq := uint32(bNxt)
		for range 5 {
			run(t, p.fromBackend("PA", seq, cNxt+1, 1000), VerdictFastTX)
			seq += 1000
		}
		run(t, p.fromClient("A", cNxt+1, tOurISN+1+5000, 0), VerdictFastTX)
		c, b = lookup(t, d, p.kc), lookup(t, d, p.kb)
		if !c.FINAcked(b) || b.FIN || b.Track.SeqEnd != seq {
			t.Fatalf("half-closed: client %+v backend %+v", c, b)
		}
		run(t, p.fromBackend("FA", seq, cNxt+1, 0), VerdictFastTX)
		run(t, p.fromClient("A", cNxt+1, tOurISN+1+5001, 0), VerdictFastTX)
		c, b = lookup(t, d, p.kc), lookup(t, d, p.kb)
		if !b.FIN || !b.FINAcked(c) || !c.FINAcked(b) {
			t.Errorf("both FINs acked: client %+v backend %+v", c, b)
		}
	})
	t.Run("a closed end's RST to a late duplicate is counted apart", func(t *testing.T) {
		p := installTrackedPair(t, d, f)
		run(t, p.fromBackend("PA", bNxt, cNxt, 3000), VerdictFastTX)
		run(t, p.fromBackend("FA", bNxt+3000, cNxt, 0), VerdictFastTX)
		// The backend's FIN is not acked yet: it is not closed, and a RST
		// below the window is a blind one.
		run(t, p.fromClient("A", cNxt, tOurISN+1+2000, 0), VerdictFastTX)
		run(t, p.fromBackend("R", bNxt+1000, 0, 0), VerdictDropRstOutOfWindow)
		run(t, p.fromClient("A", cNxt, tOurISN+1+3001, 0), VerdictFastTX)
		// A late duplicate of the client's ACK of the first 1000 bytes, then
		// the closed backend's answer at that ACK's number.
		run(t, p.fromBackend("R", bNxt+1000, 0, 0), VerdictDropRstClosed)
		run(t, p.fromBackend("R", bNxt+3000, 0, 0), VerdictDropRstClosed)
		// Further below than the client ever let it have in flight: blind.
		below := uint32(bNxt + 3001)
		below -= tWindow + 1
		run(t, p.fromBackend("R", below, 0, 0), VerdictDropRstOutOfWindow)
		// The client has not closed: its own RSTs below the window stay blind.
		run(t, p.fromClient("R", cNxt-1, 0, 0), VerdictDropRstOutOfWindow)
		for _, k := range []flow.Key{p.kc, p.kb} {
			if st := lookup(t, d, k); st.RST {
				t.Errorf("%v marked by a dropped RST: %+v", k, st)
			}
		}
	})
	t.Run("the sender's latest timestamp, from in-window segments", func(t *testing.T) {
		p := installTrackedPair(t, d, f)
		seg := p.fromClient("A", cNxt, tOurISN+1, 0)
		seg.opts = []layers.TCPOption{optNOP, optNOP, optTS(7000, 1)}
		run(t, seg, VerdictFastTX)
		if st := lookup(t, d, p.kc); !st.HasTS || st.TSRecent != 7000 {
			t.Fatalf("after TSval 7000: %+v", st)
		}
		seg.opts = []layers.TCPOption{optNOP, optNOP, optTS(6000, 1)} // older: kept out
		run(t, seg, VerdictFastTX)
		far := p.fromClient("A", cNxt+1<<31, tOurISN+1, 0) // out of window: not learned
		far.opts = []layers.TCPOption{optNOP, optNOP, optTS(9000, 1)}
		run(t, far, VerdictFastTXOutOfWindow)
		if st := lookup(t, d, p.kc); st.TSRecent != 7000 {
			t.Errorf("TSRecent %d, want 7000", st.TSRecent)
		}
	})
	t.Run("an old duplicate delayed past the window is forwarded in window, not learned", func(t *testing.T) {
		// The backend's first segment, retransmitted, reaches the gateway
		// after the client acknowledged 30000 bytes and the backend sent
		// on to 91000: reordering on the way (per-CPU queues under load)
		// delivers it more than the client's window below the newest.
		p := installTrackedPair(t, d, f)
		run(t, p.fromBackend("PA", bNxt, cNxt, 1000), VerdictFastTX)
		run(t, p.fromClient("A", cNxt, tOurISN+1+30000, 0), VerdictFastTX)
		run(t, p.fromBackend("PA", bNxt+90000, cNxt, 1000), VerdictFastTX)
		before := lookup(t, d, p.kb)
		old := p.fromBackend("FPA", bNxt, cNxt, 1000)
		old.window = 1
		old.opts = []layers.TCPOption{optNOP, optNOP, optTS(9000, 1)}
		run(t, old, VerdictFastTX)
		after := lookup(t, d, p.kb)
		if after.Track != before.Track || after.FIN || after.TSRecent != before.TSRecent {
			t.Errorf("an old duplicate moved the state: %+v, was %+v", after, before)
		}
		// An old segment that acks client data XDP never saw is no
		// duplicate, nor is one further below the client's ack than its
		// largest window.
		run(t, p.fromBackend("PA", bNxt+1000, cNxt+1<<20, 1000), VerdictFastTXOutOfWindow)
		run(t, p.fromBackend("PA", bNxt+1<<32-40000, cNxt, 1000), VerdictFastTXOutOfWindow)
	})
	t.Run("out-of-window FIN does not half-close", func(t *testing.T) {
		p := installTrackedPair(t, d, f)
		run(t, p.fromClient("FA", cNxt+1<<30, tOurISN+1, 0), VerdictFastTXOutOfWindow)
		if st := lookup(t, d, p.kc); st.FIN {
			t.Errorf("blind FIN marked the flow: %+v", st)
		}
	})
	t.Run("SYN for a live flow goes to the engine", func(t *testing.T) {
		p := installTrackedPair(t, d, f)
		run(t, pkt{src: f.client, dst: f.svc, flags: "S", seq: 77}, VerdictXSKSyn)
		if st := lookup(t, d, p.kc); st.Packets != 0 {
			t.Errorf("SYN touched the flow: %+v", st)
		}
	})
	t.Run("SYN from the backend side goes to the engine, never on", func(t *testing.T) {
		p := installTrackedPair(t, d, f)
		run(t, p.fromBackend("S", bNxt+100, 0, 0), VerdictXSKSynInFlow)
		run(t, p.fromBackend("SA", tBackendISN, cNxt, 0), VerdictXSKSynInFlow) // a retransmitted SYN-ACK
		if st := lookup(t, d, p.kb); st.Packets != 0 || st.Track.SeqEnd != bNxt {
			t.Errorf("SYNs touched the flow: %+v", st)
		}
	})
	t.Run("window scale of the sender", func(t *testing.T) {
		p := installTrackedPair(t, d, f)
		tr := flow.Track{SeqEnd: bNxt, AckMax: cNxt, WinEnd: cNxt + tWindow, WinMax: tWindow, WScale: 7}
		if err := d.InstallTrackedFlow(p.kb, p.toClient, tr); err != nil {
			t.Fatal(err)
		}
		bp := p.fromBackend("A", bNxt, cNxt, 0)
		bp.window = 1000 // 128000 bytes
		run(t, bp, VerdictFastTX)
		if st := lookup(t, d, p.kb); st.Track.WinMax != 128000 || st.Track.WinEnd != cNxt+128000 {
			t.Errorf("scaled window: %+v", st.Track)
		}
		// The client may now send up to 128000 bytes past the backend's ack.
		run(t, p.fromClient("PA", cNxt+100000, tOurISN+1, 10), VerdictFastTX)
		run(t, p.fromClient("R", cNxt+120000, 0, 0), VerdictXSKRstInWindow)
	})
}

func TestTrackedFlowInstall(t *testing.T) {
	d := testDataplane(t, Config{})
	k := flow.Key{Src: client4, Dst: svc4}
	nat := flow.NAT{Src: netip.AddrPortFrom(local4, 40000), Dst: back4}
	if err := d.InstallTrackedFlow(k, nat, flow.Track{WScale: 15}); err == nil {
		t.Error("window scale 15 accepted")
	}
	tr := flow.Track{SeqEnd: 1, AckMax: 2, WinEnd: 3, WinMax: 4, WScale: 5}
	if err := d.InstallTrackedFlow(k, nat, tr); err != nil {
		t.Fatal(err)
	}
	if st := lookup(t, d, k); !st.Tracked || st.Track != tr || st.NAT != nat || st.FIN || st.RST {
		t.Errorf("installed %+v, read back %+v", tr, st)
	}
	if err := d.InstallFlow(k, nat); err != nil {
		t.Fatal(err)
	}
	if st := lookup(t, d, k); st.Tracked {
		t.Error("InstallFlow left the entry tracked")
	}
}

func TestRaiseSeqEnd(t *testing.T) {
	d := testDataplane(t, Config{})
	k := flow.Key{Src: client4, Dst: svc4}
	nat := flow.NAT{Src: netip.AddrPortFrom(local4, 40000), Dst: back4}
	if err := d.RaiseSeqEnd(k, 5); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing flow: %v, want ErrNotFound", err)
	}
	tr := flow.Track{SeqEnd: 1000, AckMax: 2, WinEnd: 3, WinMax: 4, WScale: 5}
	if err := d.InstallTrackedFlow(k, nat, tr); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ to, want uint32 }{{900, 1000}, {1500, 1500}, {1200, 1500}} {
		if err := d.RaiseSeqEnd(k, c.to); err != nil {
			t.Fatal(err)
		}
		want := tr
		want.SeqEnd = c.want
		if st := lookup(t, d, k); !st.Tracked || st.Track != want || st.NAT != nat {
			t.Errorf("raised to %d: %+v, want %+v", c.to, st.Track, want)
		}
	}
	if err := d.InstallFlow(k, nat); err != nil {
		t.Fatal(err)
	}
	if err := d.RaiseSeqEnd(k, 5000); err != nil {
		t.Fatal(err)
	}
	if st := lookup(t, d, k); st.Tracked || st.Track.SeqEnd != 0 {
		t.Errorf("untracked entry changed: %+v", st)
	}
}

// TestTrackedResync: a tracked state that lags behind both ends (a copy a
// migration took while the previous program still ran) judges every later
// segment of a busy connection out of window, since each acks data the
// other direction's state never saw and none is at exactly its seq_end:
// the FINs are never learned and the flow never expires. Marked for
// resync, each direction's next segment re-seeds it and the close is
// learned as usual.
func TestTrackedResync(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	d := testDataplane(t, Config{})
	withSocket(t, d)
	const cNxt, bNxt, lag = tClientISN + 1, tBackendISN + 1, 3000
	// Both ends sent lag bytes the state did not see; then 100 bytes
	// each way, both FINs and the last ACK.
	closeLagging := func(t *testing.T, p trackedPair, want Verdict) {
		t.Helper()
		for _, s := range []pkt{
			p.fromClient("PA", cNxt+lag, tOurISN+1+lag, 100),
			p.fromBackend("PA", bNxt+lag, cNxt+lag+100, 100),
			p.fromClient("FA", cNxt+lag+100, tOurISN+1+lag+100, 0),
			p.fromBackend("FA", bNxt+lag+100, cNxt+lag+101, 0),
			p.fromClient("A", cNxt+lag+101, tOurISN+1+lag+101, 0),
		} {
			if r := mustRun(t, d, frame(t, s)); r.verdict != want {
				t.Fatalf("%v %s: verdict %v, want %v", s.src, s.flags, r.verdict, want)
			}
		}
	}
	setResync := func(t *testing.T, k flow.Key) {
		t.Helper()
		bk, err := flowKey(k)
		if err != nil {
			t.Fatal(err)
		}
		var v syngateFlowVal
		if err := d.objs.Flows.Lookup(&bk, &v); err != nil {
			t.Fatal(err)
		}
		v.Flags |= flowResync
		if err := d.objs.Flows.Put(&bk, &v); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range trackFamilies {
		t.Run(f.name, func(t *testing.T) {
			p := installTrackedPair(t, d, f)
			closeLagging(t, p, VerdictFastTXOutOfWindow)
			if a, b := lookup(t, d, p.kc), lookup(t, d, p.kb); a.FIN || b.FIN {
				t.Fatalf("without resync a lagging state learned a FIN: client %+v backend %+v", a.Track, b.Track)
			}

			p = installTrackedPair(t, d, f)
			setResync(t, p.kc)
			setResync(t, p.kb)
			closeLagging(t, p, VerdictFastTX)
			a, b := lookup(t, d, p.kc), lookup(t, d, p.kb)
			if !a.FINAcked(b) || !b.FINAcked(a) {
				t.Fatalf("after resync the close was not learned: client %+v fin %v/%d, backend %+v fin %v/%d",
					a.Track, a.FIN, a.FinEnd, b.Track, b.FIN, b.FinEnd)
			}
			if a.Resync || b.Resync {
				t.Errorf("resync flag left after both directions sent: client %v backend %v", a.Resync, b.Resync)
			}
			if a.Track.SeqEnd != cNxt+lag+101 || b.Track.SeqEnd != bNxt+lag+101 {
				t.Errorf("seq_end client %d backend %d, want %d and %d", a.Track.SeqEnd, b.Track.SeqEnd, cNxt+lag+101, bNxt+lag+101)
			}
		})
	}
}

// TestTrackedResyncRST: a RST into a flow whose state may lag is never
// dropped (its window may be stale) and, unless exact, never ends the
// flow: it goes to the engine, which forwards it for the receiver to judge.
func TestTrackedResyncRST(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	d := testDataplane(t, Config{})
	withSocket(t, d)
	for _, f := range trackFamilies {
		t.Run(f.name, func(t *testing.T) {
			p := installTrackedPair(t, d, f)
			bk, _ := flowKey(p.kc)
			var v syngateFlowVal
			if err := d.objs.Flows.Lookup(&bk, &v); err != nil {
				t.Fatal(err)
			}
			v.Flags |= flowResync
			if err := d.objs.Flows.Put(&bk, &v); err != nil {
				t.Fatal(err)
			}
			far := p.fromClient("R", tClientISN+1+1<<20, 0, 0) // beyond the stale window
			if r := mustRun(t, d, frame(t, far)); r.verdict != VerdictXSKRstInWindow {
				t.Fatalf("RST beyond a stale window: verdict %v, want it to the engine", r.verdict)
			}
			if st := lookup(t, d, p.kc); st.RST || !st.Resync {
				t.Fatalf("inexact RST changed the flow: RST %v resync %v", st.RST, st.Resync)
			}
		})
	}
}
