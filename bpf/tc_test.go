package bpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket/layers"

	"github.com/syngate/syngate/flow"
)

// skbMD mirrors struct __sk_buff (192 bytes), the context of a TC test run,
// as 32-bit words: only the words the kernel lets a test set are used.
type skbMD [48]uint32

// Word indexes of the __sk_buff members a TC test run sets.
const (
	skbIngressIfindex = 36 / 4
	skbGSOSegs        = 164 / 4
)

// tcActRedirect and tcActUnspec are the TC program's return values for a
// spliced segment and for one that is not its own.
const (
	tcActRedirect = 7
	tcActUnspec   = 0xffffffff // -1
)

// runTC runs the TC program once on data, as an skb of segs segments
// received on the loopback, and returns what it returned, the frame after
// it, and the counters that moved.
func runTC(tb testing.TB, d *Dataplane, data []byte, segs uint32) (uint32, []byte, Counters) {
	tb.Helper()
	before, err := d.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	var md skbMD
	md[skbIngressIfindex] = loIfindex
	md[skbGSOSegs] = segs
	opts := ebpf.RunOptions{Data: data, DataOut: make([]byte, len(data)+256), Context: md}
	ret, err := d.objs.SyngateTc.Run(&opts)
	if err != nil {
		tb.Fatalf("run tc: %v", err)
	}
	after, err := d.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	var moved Counters
	for v := range after {
		moved[v] = Count{Packets: after[v].Packets - before[v].Packets, Bytes: after[v].Bytes - before[v].Bytes}
	}
	return ret, opts.DataOut, moved
}

// onlyMoved fails unless exactly verdict v moved in c, by packets.
func onlyMoved(tb testing.TB, c Counters, v Verdict, packets uint64) {
	tb.Helper()
	for i, n := range c {
		switch {
		case Verdict(i) == v && n.Packets != packets:
			tb.Errorf("%v moved by %d packets, want %d", v, n.Packets, packets)
		case Verdict(i) != v && n.Packets != 0:
			tb.Errorf("%v moved by %d packets, want only %v", Verdict(i), n.Packets, v)
		}
	}
}

// TestTCRewrite runs the same segments through the XDP fast path and the
// TC program: the TC program must produce the very same bytes (one rewrite
// shared by both), correct by checkRewrite's standard, with checksums that
// verify; and on an interface marked for TC the XDP program must pass the
// segment on untouched.
func TestTCRewrite(t *testing.T) {
	requireRoot(t)
	inNewNetns(t) // no routes: the learned MACs and ifindex (1, lo) are used
	d := testDataplane(t, Config{})

	for _, fam := range rewriteFamilies() {
		localAP, toBackend, toClient := fam.localAP, fam.toBackend, fam.toClient
		for _, tc := range []struct {
			name string
			key  flow.Key
			nat  flow.NAT
			in   pkt
		}{
			{"client to backend", flow.Key{Src: fam.client, Dst: fam.svc}, toBackend, pkt{
				src: fam.client, dst: fam.svc, flags: "PA", seq: 0xffff_fff8, ack: 0x7000_0001, window: 1000,
				opts:    []layers.TCPOption{optNOP, optNOP, optTS(0xffff_fffe, 12345), optNOP, optNOP, optSACK(0x7000_1000, 0x7000_2000, 0x7000_3000, 0x7000_4000)},
				payload: []byte("GET / HTTP/1.1\r\nHost: example\r\n\r\n"),
			}},
			{"backend to client", flow.Key{Src: fam.backend, Dst: localAP}, toClient, pkt{
				src: fam.backend, dst: localAP, flags: "A", seq: 0x9000_0010, ack: 8, window: 60000,
				opts:    []layers.TCPOption{optNOP, optTS(99, 0xffff_ffff), optSACK(1, 2, 3, 4, 5, 6), optNOP},
				payload: bytes.Repeat([]byte{0xab}, 1001),
			}},
			{"vlan fin", flow.Key{Src: fam.client, Dst: fam.svc}, toBackend, pkt{
				src: fam.client, dst: fam.svc, vlan: true, flags: "FA", seq: 1, ack: 2, window: 3,
			}},
		} {
			t.Run(fam.name+"/"+tc.name, func(t *testing.T) {
				if err := d.InstallFlow(tc.key, tc.nat); err != nil {
					t.Fatal(err)
				}
				data := frame(t, tc.in)
				x := mustRun(t, d, append([]byte(nil), data...))
				if x.verdict != VerdictFastTX {
					t.Fatalf("xdp verdict %v, want %v", x.verdict, VerdictFastTX)
				}
				ret, out, moved := runTC(t, d, append([]byte(nil), data...), 0)
				if ret != tcActRedirect {
					t.Fatalf("tc returned %d, want TC_ACT_REDIRECT", int32(ret))
				}
				onlyMoved(t, moved, VerdictTCRedirect, 1)
				if moved[VerdictTCRedirect].Bytes != uint64(len(data)) {
					t.Errorf("counted %d bytes, frame has %d", moved[VerdictTCRedirect].Bytes, len(data))
				}
				checkRewrite(t, data, out, tc.nat)
				if !bytes.Equal(out, x.out) {
					t.Errorf("tc and xdp rewrites differ:\ntc  % x\nxdp % x", out, x.out)
				}
				st, err := d.LookupFlow(tc.key)
				if err != nil {
					t.Fatal(err)
				}
				if st.Packets != 2 || st.FIN != (tc.in.flags == "FA") {
					t.Errorf("flow state after one xdp and one tc segment: %+v", st)
				}

				// On a TC interface the XDP program leaves it alone.
				if err := d.objs.TcIfaces.Put(uint32(loIfindex), uint32(1)); err != nil {
					t.Fatal(err)
				}
				defer d.objs.TcIfaces.Delete(uint32(loIfindex))
				p := mustRunOn(t, d, append([]byte(nil), data...), loIfindex, 0)
				if p.verdict != VerdictPassTCFlow || !bytes.Equal(p.out, data) {
					t.Errorf("xdp on a tc interface: %v, frame changed %v; want %v, unchanged", p.verdict, !bytes.Equal(p.out, data), VerdictPassTCFlow)
				}
			})
		}
	}
}

// TestTCAggregate runs a GRO aggregate (gso_segs 4) through the TC
// program: the head is rewritten like any segment, and the flow and the
// verdict count four segments, each with its own headers.
func TestTCAggregate(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	d := testDataplane(t, Config{})
	key := flow.Key{Src: client4, Dst: svc4}
	nat := flow.NAT{
		Src: netip.AddrPortFrom(local4, 40001), Dst: back4, SeqDelta: 12345, AckDelta: 99,
		Ifindex: 1, SrcMAC: learnedSrc, DstMAC: learnedDst,
	}
	if err := d.InstallFlow(key, nat); err != nil {
		t.Fatal(err)
	}
	data := frame(t, pkt{src: client4, dst: svc4, flags: "A", seq: 1, ack: 1, window: 500,
		opts: []layers.TCPOption{optNOP, optNOP, optTS(5, 6)}, payload: bytes.Repeat([]byte{7}, 4*300)}) // a test run takes at most a page
	ret, out, moved := runTC(t, d, append([]byte(nil), data...), 4)
	if ret != tcActRedirect {
		t.Fatalf("tc returned %d, want TC_ACT_REDIRECT", int32(ret))
	}
	checkRewrite(t, data, out, nat)
	onlyMoved(t, moved, VerdictTCRedirect, 4)
	hdr := uint64(14 + 20 + 32) // Ethernet, IPv4, TCP with 12 bytes of options
	if want := uint64(len(data)) + 3*hdr; moved[VerdictTCRedirect].Bytes != want {
		t.Errorf("counted %d bytes, want %d (the frame and three more headers)", moved[VerdictTCRedirect].Bytes, want)
	}
	st, err := d.LookupFlow(key)
	if err != nil {
		t.Fatal(err)
	}
	if st.Packets != 4 || st.Bytes != moved[VerdictTCRedirect].Bytes {
		t.Errorf("flow counted %d packets %d bytes, want 4 and %d", st.Packets, st.Bytes, moved[VerdictTCRedirect].Bytes)
	}
}

// TestTCPassesOthers: what is not for a service or a local port goes on to
// the next program untouched, counted under the XDP program's verdict for
// it.
func TestTCPassesOthers(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	d := testDataplane(t, Config{})
	for name, data := range map[string][]byte{
		"other destination": frame(t, pkt{src: client4, dst: back4, flags: "A", seq: 1, ack: 2}),
		"other v6":          frame(t, pkt{src: client6, dst: back6, flags: "S", seq: 1}),
		"truncated":         frame(t, pkt{src: client4, dst: svc4, flags: "A"})[:14+20+10],
		"arp":               append(binary.BigEndian.AppendUint16(make([]byte, 12), 0x0806), make([]byte, 28)...),
	} {
		t.Run(name, func(t *testing.T) {
			x := mustRunOn(t, d, append([]byte(nil), data...), loIfindex, 0)
			if x.action != ActionPass {
				t.Fatalf("xdp: %v, want a pass", x.verdict)
			}
			ret, out, moved := runTC(t, d, append([]byte(nil), data...), 0)
			if ret != tcActUnspec {
				t.Errorf("tc returned %d, want TC_ACT_UNSPEC", int32(ret))
			}
			if !bytes.Equal(out, data) {
				t.Error("frame changed")
			}
			onlyMoved(t, moved, x.verdict, 1)
		})
	}
}

// TestTCTracked: on a TC-datapath interface the XDP program judges every
// segment of a tracked flow as on any interface (blind RSTs dropped,
// in-window inexact RSTs to the engine, the state learned from in-window
// data) but forwards nothing itself: it passes the segment untouched,
// marked out of the window or not, and the TC program forwards it.
func TestTCTracked(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	d := testDataplane(t, Config{})
	withSocket(t, d)
	if err := d.objs.TcIfaces.Put(uint32(loIfindex), uint32(1)); err != nil {
		t.Fatal(err)
	}
	const cNxt, bNxt = tClientISN + 1, tBackendISN + 1
	for _, f := range trackFamilies {
		t.Run(f.name, func(t *testing.T) {
			p := installTrackedPair(t, d, f)
			xdp := func(in pkt, want Verdict) {
				t.Helper()
				data := frame(t, in)
				r := mustRunOn(t, d, append([]byte(nil), data...), loIfindex, 0)
				if r.verdict != want {
					t.Fatalf("%s seq %d: verdict %v, want %v", in.flags, in.seq, r.verdict, want)
				}
				if r.action == ActionPass && !bytes.Equal(r.out[:len(data)], data) {
					t.Errorf("%s seq %d: passed to TC changed", in.flags, in.seq)
				}
			}
			data := p.fromClient("PA", cNxt, tOurISN+1, 100)
			xdp(data, VerdictPassTCFlow)
			if st := lookup(t, d, p.kc); st.Track.SeqEnd != cNxt+100 || st.Packets != 0 {
				t.Errorf("after an in-window segment judged in XDP: %+v; want SeqEnd %d and no packet counted yet", st, cNxt+100)
			}
			ret, out, moved := runTC(t, d, frame(t, data), 0)
			if ret != tcActRedirect {
				t.Fatalf("tc returned %d, want TC_ACT_REDIRECT", int32(ret))
			}
			onlyMoved(t, moved, VerdictTCRedirect, 1)
			checkRewrite(t, frame(t, data), out, p.toBackend)
			if st := lookup(t, d, p.kc); st.Packets != 1 {
				t.Errorf("after the TC program forwarded it: %+v, want one packet", st)
			}

			xdp(p.fromClient("PA", cNxt+1<<30, tOurISN+1, 100), VerdictPassTCOutOfWindow)
			if st := lookup(t, d, p.kc); st.Track.SeqEnd != cNxt+100 {
				t.Errorf("learned from an out-of-window segment: SeqEnd %d", st.Track.SeqEnd)
			}
			xdp(p.fromClient("R", cNxt+1<<31, 0, 0), VerdictDropRstOutOfWindow)
			xdp(p.fromClient("R", cNxt+1000, 0, 0), VerdictXSKRstInWindow)
			if st := lookup(t, d, p.kc); st.RST {
				t.Errorf("inexact RST marked the flow: %+v", st)
			}

			// The TC program judges with the same rules: the backend closes,
			// the client acks its FIN, and the closed backend answers a late
			// duplicate ACK with a RST below the window.
			tcRun(t, d, frame(t, p.fromBackend("FA", bNxt, cNxt+100, 0)), 0, tcActRedirect, VerdictTCRedirect)
			tcRun(t, d, frame(t, p.fromClient("A", cNxt+100, tOurISN+2, 0)), 0, tcActRedirect, VerdictTCRedirect)
			tcRun(t, d, frame(t, p.fromBackend("R", bNxt-1, 0, 0)), 0, tcActShot, VerdictDropRstClosed)
		})
	}
}
