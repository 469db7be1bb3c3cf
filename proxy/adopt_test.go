package proxy

import (
	"maps"
	"net/netip"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/spec"
)

// TestAdopt: a second engine takes over the flow table the first one left:
// it translates the slow path as the first did, counts the connections,
// keeps their source ports out of new backend legs, drains a removed
// service's connection, deletes an entry without its other direction, and
// expires what it adopted.
func TestAdopt(t *testing.T) {
	r1 := newRig(t, spec.CookiesNever, nil)
	const isn, bisn = 1_000_000, 555_000
	sa := r1.handshake(isn, nil)
	syn := r1.sentIP()
	r1.backendSynAck(syn, bisn, 10)
	r1.sentIP() // the backend ACK
	src := syn.Src

	r2 := newRig(t, spec.CookiesNever, func(c *Config) { c.EstablishedTimeout = time.Hour; c.ResetTimeout = 10 * time.Second })
	r1.flows.mu.Lock()
	r2.flows.flows = maps.Clone(r1.flows.flows)
	r1.flows.mu.Unlock()
	// A connection of a service no longer configured, and a lone entry.
	oldVIP := netip.MustParseAddrPort("192.0.2.10:81")
	oldBackend := netip.MustParseAddrPort("10.0.0.6:9090")
	oldSrc := netip.MustParseAddrPort("10.0.0.2:20007")
	oldClient := netip.MustParseAddrPort("198.51.100.9:5555")
	r2.flows.flows[flow.Key{Src: oldClient, Dst: oldVIP}] = flow.State{NAT: flow.NAT{Src: oldSrc, Dst: oldBackend}}
	r2.flows.flows[flow.Key{Src: oldBackend, Dst: oldSrc}] = flow.State{NAT: flow.NAT{Src: oldVIP, Dst: oldClient}}
	lone := flow.Key{Src: netip.MustParseAddrPort("198.51.100.10:6666"), Dst: vip}
	r2.flows.flows[lone] = flow.State{NAT: flow.NAT{Src: netip.AddrPortFrom(source, 20001), Dst: backend}}

	st, err := r2.e.adopt()
	if err != nil {
		t.Fatal(err)
	}
	if st != (AdoptStats{Adopted: 2, Draining: 1, Orphans: 1}) {
		t.Fatalf("adopt stats %+v", st)
	}
	if _, ok := r2.flows.get(lone); ok {
		t.Error("lone entry kept")
	}
	if got, entries := r2.e.Stats().Spliced, len(r2.flows.flows); 2*got != entries {
		t.Errorf("spliced %d (gauge %d) with %d entries in the table", got, 2*got, entries)
	}
	found := false
	for _, a := range r2.e.Sources() {
		found = found || a == oldSrc.Addr()
	}
	if !found {
		t.Errorf("sources %v lack the draining connection's %v", r2.e.Sources(), oldSrc.Addr())
	}
	// The removed service's listener must stay in the data plane while
	// its connection lives; its SYNs are refused meanwhile.
	if n := r2.e.RetiredLive(oldVIP); n != 1 {
		t.Errorf("RetiredLive(removed service) = %d, want its one connection", n)
	}
	r2.inject(packet.BuildSyn, packet.Fields{Src: netip.MustParseAddrPort("198.51.100.9:5556"), Dst: oldVIP, Seq: 1, Flags: packet.SYN, Window: 64240, Options: clientSynOpts})
	if rst := r2.reply(); rst.Flags&packet.RST == 0 {
		t.Errorf("SYN to the removed service: %v, want a RST", rst.Flags)
	}

	// The slow path translates as the first engine would have.
	seg := packet.Fields{
		Src: backend, Dst: src, Seq: bisn + 1, Ack: isn + 1, Flags: packet.ACK | packet.PSH, Window: 100,
		Options: flow.SynOptions{Timestamps: true, TSval: 777010, TSecr: 5001}, Payload: []byte("hello"),
	}
	r1.inject(packet.Build, seg)
	r2.inject(packet.Build, seg)
	a, b := r1.sentIP(), r2.sentIP()
	if a.Src != b.Src || a.Dst != b.Dst || a.Seq != b.Seq || a.Ack != b.Ack || a.Window != b.Window || a.Options.TSval != b.Options.TSval || string(b.Payload) != "hello" {
		t.Errorf("slow path after adoption: %v->%v seq %d ack %d win %d tsval %d; before: %v->%v seq %d ack %d win %d tsval %d",
			b.Src, b.Dst, b.Seq, b.Ack, b.Window, b.Options.TSval, a.Src, a.Dst, a.Seq, a.Ack, a.Window, a.Options.TSval)
	}
	_ = sa

	// New backend legs never take an adopted port.
	if got := r2.e.pools[poolKey{source, backend}].inuse(); got != 1 {
		t.Errorf("ports in use after adoption = %d, want 1", got)
	}
	for i := range 5 {
		r2.client = netip.AddrPortFrom(r2.client.Addr(), uint16(41000+i))
		r2.handshake(uint32(7_000_000+i*1000), nil)
		s := r2.sentIP()
		if s.Src == src {
			t.Fatalf("new backend leg %d took the adopted port %v", i, src)
		}
	}

	// Adopted connections expire like the engine's own.
	kc := flow.Key{Src: r1.client, Dst: vip}
	r2.flows.update(kc, func(s *flow.State) { s.RST = true; s.LastSeen = r2.mono })
	r2.e.expireFlows(r2.advance(11 * time.Second))
	if _, ok := r2.flows.get(kc); ok {
		t.Error("adopted flow not expired after RST + reset timeout")
	}
	r2.e.expireFlows(r2.advance(time.Hour))
	if _, ok := r2.flows.get(flow.Key{Src: oldClient, Dst: oldVIP}); ok {
		t.Error("draining flow not expired after the idle timeout")
	}
	if ex := r2.e.Stats().Expired; ex["reset"] != 1 || ex["idle"] < 1 {
		t.Errorf("expired %v", ex)
	}
	if n := r2.e.RetiredLive(oldVIP); n != 0 {
		t.Errorf("RetiredLive(removed service) = %d after its connection expired", n)
	}
	r2.e.tendRetired(r2.e.set.Load(), r2.advance(time.Second))
	if rs := r2.e.set.Load().retiring[oldVIP]; len(rs) != 0 {
		t.Errorf("the removed service's stand-in still retiring after its last connection ended")
	}
}

// TestQueuedHandshakeSurvivesRestart: the ACK of a SYN-ACK sent from the
// half-open queue of an engine that has since exited is validated by the
// next engine (same secret) as a cookie once it took over; it was never
// in that engine's queue.
func TestQueuedHandshakeSurvivesRestart(t *testing.T) {
	r1 := newRig(t, spec.CookiesAuto, nil)
	const isn = 3_000_000
	r1.inject(packet.BuildSyn, packet.Fields{Src: r1.client, Dst: vip, Seq: isn, Flags: packet.SYN, Window: 64240, Options: clientSynOpts})
	sa := r1.reply()
	if st := r1.e.set.Load().order[0].ServiceStats(); st.SynAckQueued != 1 {
		t.Fatalf("SYN-ACK not from the queue: %+v", st)
	}

	r2 := newRig(t, spec.CookiesAuto, nil)
	r2.e.CookiesSentElsewhere()
	r2.inject(packet.Build, packet.Fields{
		Src: r2.client, Dst: vip, Seq: isn + 1, Ack: sa.Seq + 1, Flags: packet.ACK | packet.PSH, Window: 502,
		Options: flow.SynOptions{Timestamps: true, TSval: 5001, TSecr: sa.Options.TSval}, Payload: []byte("hi"),
	})
	syn := r2.sentIP()
	if syn.Flags != packet.SYN || syn.Dst != backend {
		t.Fatalf("after the restart: %v to %v, want the backend SYN", syn.Flags, syn.Dst)
	}
	if o := syn.Options; o.WScale != clientSynOpts.WScale || !o.SACK || !o.Timestamps {
		t.Errorf("options recovered from the cookie: %+v", o)
	}
}

// TestReplayACKs: a handshake ACK the data plane kept while no engine ran
// (a pure ACK: the client, waiting for a server that speaks first, sends
// nothing more) opens its connection once the next engine replays it.
func TestReplayACKs(t *testing.T) {
	r1 := newRig(t, spec.CookiesAuto, nil)
	const isn = 4_000_000
	r1.inject(packet.BuildSyn, packet.Fields{Src: r1.client, Dst: vip, Seq: isn, Flags: packet.SYN, Window: 64240, Options: clientSynOpts})
	sa := r1.reply()

	buf := make([]byte, 2048)
	n, err := packet.Build(buf, &packet.Fields{
		Src: r1.client, Dst: vip, Seq: isn + 1, Ack: sa.Seq + 1, Flags: packet.ACK, Window: 502,
		Options: flow.SynOptions{Timestamps: true, TSval: 5001, TSecr: sa.Options.TSval},
		SrcMAC:  r1.peerMAC, DstMAC: r1.ourMAC,
	})
	if err != nil {
		t.Fatal(err)
	}
	r2 := newRig(t, spec.CookiesAuto, nil)
	r2.e.CookiesSentElsewhere()
	if got := r2.e.ReplayACKs([]flow.StandbyACK{{Frame: buf[:n], Ifindex: 3}}); got != 1 {
		t.Fatalf("replayed ACKs validated: %d, want 1", got)
	}
	syn := r2.sentIP()
	if syn.Flags != packet.SYN || syn.Dst != backend {
		t.Fatalf("after the replay: %v to %v, want the backend SYN", syn.Flags, syn.Dst)
	}
}

// TestHandOver: on the way out the engine hands SYNs to the data plane's
// cookies and waits for the connections it is opening, up to its timeout.
func TestHandOver(t *testing.T) {
	r := newRig(t, spec.CookiesAuto, nil)
	off := r.flows
	r.handshake(42, nil)
	syn := r.sentIP() // the backend leg is opening
	if opening, _ := r.e.HandOver(50 * time.Millisecond); opening != 1 {
		t.Fatalf("drain with a backend leg in flight: %d opening left, want 1", opening)
	}
	r.backendSynAck(syn, 9, 7)
	r.sentIP() // the backend ACK: spliced
	done := make(chan int)
	go func() { o, _ := r.e.HandOver(5 * time.Second); done <- o }()
	select {
	case o := <-done:
		if o != 0 {
			t.Fatalf("drain after the splice: %d opening left", o)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("drain did not return once nothing was opening")
	}
	select {
	case s := <-r.e.offloadReqs:
		r.e.manageOffload(s, r.now)
	case <-time.After(time.Second):
		t.Fatal("drain did not ask for the cookie offload")
	}
	if c, n := off.lastWrite(); n != 1 || !c.Offload {
		t.Errorf("offload while draining: %+v (%d writes), want on", c, n)
	}
}
