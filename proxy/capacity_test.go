package proxy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/spec"
)

// spliceOne opens a connection from client port cport up to the splice and
// returns the engine's backend SYN.
func (r *rig) spliceOne(cport uint16, isn uint32) packet.Segment {
	r.t.Helper()
	r.client = netip.AddrPortFrom(r.client.Addr(), cport)
	r.handshake(isn, nil)
	syn := r.sentIP()
	if syn.Flags != packet.SYN {
		r.t.Fatalf("want the backend SYN, got %v", syn.Flags)
	}
	r.backendSynAck(syn, 9, 7)
	if ack := r.sentIP(); ack.Flags != packet.ACK {
		r.t.Fatalf("want the backend ACK, got %v", ack.Flags)
	}
	return syn
}

// closeFlows marks both directions of the connection of client and leg as
// closed (FINs both ways) with the given client->backend byte count.
func (r *rig) closeFlows(client netip.AddrPort, leg netip.AddrPort, bytes uint64) {
	r.flows.update(flow.Key{Src: client, Dst: vip}, func(s *flow.State) { s.FIN, s.LastSeen, s.Bytes = true, r.mono, bytes })
	r.flows.update(flow.Key{Src: backend, Dst: leg}, func(s *flow.State) { s.FIN, s.LastSeen = true, r.mono })
}

// TestPortReuseAboveFloor: with one source port, each new connection
// reuses the port at once, with an ISN after everything the backend can
// have seen of the previous one (its ISN, SYN, FIN and every byte the fast
// path counted) and timestamps no older, so a backend in TIME_WAIT takes
// the SYN as a new connection (RFC 6191) and no RST is needed.
func TestPortReuseAboveFloor(t *testing.T) {
	r := newRig(t, spec.CookiesNever, func(c *Config) { c.PortMin, c.PortMax = 20000, 20000 })
	prev := r.spliceOne(40000, 1000)
	for i := 1; i <= 20; i++ {
		bytes := uint64(i) * 1_000_003
		r.closeFlows(r.client, prev.Src, bytes)
		r.e.expireFlows(r.advance(11 * time.Second)) // close timeout
		syn := r.spliceOne(40000+uint16(i), uint32(i)*7777)
		if syn.Src != prev.Src {
			t.Fatalf("connection %d: source %v, want the one port %v again", i, syn.Src, prev.Src)
		}
		floor := prev.Seq + 2 + uint32(bytes)
		if d := int32(syn.Seq - floor); d <= 0 {
			t.Fatalf("connection %d: ISN %d not after the previous leg's last possible seq %d", i, syn.Seq, floor)
		}
		if d := int32(syn.Options.TSval - prev.Options.TSval); d < 11_000 {
			t.Fatalf("connection %d: TSval %d, previous %d: want the engine's clock (11 s later)", i, syn.Options.TSval, prev.Options.TSval)
		}
		prev = syn
	}
	st := r.e.set.Load().order[0].ServiceStats()
	if st.BackendTimeWait != 0 || st.SourcePortWaited != 0 || st.SourcePortFailed != 0 {
		t.Errorf("timewait resets %d, port waits %d/%d; want none", st.BackendTimeWait, st.SourcePortWaited, st.SourcePortFailed)
	}
}

// TestPortPerBackend: a port is unique per source address and backend, so
// two services with different backends use the same single port at once.
func TestPortPerBackend(t *testing.T) {
	other := netip.MustParseAddrPort("10.0.0.6:8080")
	r := newRig(t, spec.CookiesNever, func(c *Config) {
		c.PortMin, c.PortMax = 20000, 20000
		s := c.Services[0]
		s.Name, s.Listen, s.Backends = "web2", netip.MustParseAddrPort("192.0.2.10:81"), []spec.Backend{{Addr: other, Weight: 1}}
		c.Services = append(c.Services, s)
	})
	r.handshake(1, nil)
	a := r.sentIP()
	r.client = netip.AddrPortFrom(r.client.Addr(), 40001)
	r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: netip.MustParseAddrPort("192.0.2.10:81"), Seq: 5, Flags: packet.SYN, Window: 64240, Options: clientSynOpts})
	sa := r.reply()
	r.inject(packet.Build, packet.Fields{Src: r.client, Dst: sa.Src, Seq: 6, Ack: sa.Seq + 1, Flags: packet.ACK, Window: 502})
	b := r.sentIP()
	if a.Dst != backend || b.Dst != other || a.Src != b.Src {
		t.Fatalf("SYNs %v->%v and %v->%v: want the same source port toward two backends", a.Src, a.Dst, b.Src, b.Dst)
	}
}

// TestSourcesAndPortWait: two source addresses of one port each carry two
// connections; a third waits for a port (counted), gets one when a
// connection ends, and a fourth that never gets one is reset at the
// connect timeout (counted too).
func TestSourcesAndPortWait(t *testing.T) {
	src2 := netip.MustParseAddr("10.0.0.2")
	r := newRig(t, spec.CookiesNever, func(c *Config) {
		c.PortMin, c.PortMax = 20000, 20000
		c.ConnectTimeout = 30 * time.Second
		c.Services[0].Sources = []netip.Addr{source, src2}
	})
	s1 := r.spliceOne(40000, 1)
	c1 := r.client
	s2 := r.spliceOne(40001, 2)
	if s1.Src.Addr() == s2.Src.Addr() {
		t.Fatalf("both connections from %v: want one per source address", s1.Src.Addr())
	}
	r.client = netip.AddrPortFrom(r.client.Addr(), 40002)
	r.handshake(3, nil)
	r.noSentIP() // no port: waits
	r.e.expireOpening(r.advance(time.Second))
	r.noSentIP()
	// The first connection ends (idle, not closed: nothing to reclaim
	// before).
	r.closeFlows(c1, s1.Src, 0)
	r.e.expireFlows(r.advance(11 * time.Second))
	r.e.expireOpening(r.now)
	if syn := r.sentIP(); syn.Flags != packet.SYN || syn.Src != s1.Src {
		t.Fatalf("waiting connection: %v from %v, want its SYN from the freed %v", syn.Flags, syn.Src, s1.Src)
	} else {
		r.backendSynAck(syn, 9, 7)
		r.sentIP()
	}
	r.client = netip.AddrPortFrom(r.client.Addr(), 40003)
	r.handshake(4, nil)
	r.noSentIP()
	r.e.expireOpening(r.advance(29 * time.Second))
	r.noSentIP()
	r.e.expireOpening(r.advance(time.Second)) // connect timeout
	rst := r.sentIP()
	if rst.Flags&packet.RST == 0 || rst.Dst != r.client {
		t.Fatalf("after the connect timeout without a port: %v to %v, want a RST to the client", rst.Flags, rst.Dst)
	}
	st := r.e.set.Load().order[0].ServiceStats()
	if st.SourcePortWaited != 1 || st.SourcePortFailed != 1 || st.BackendFailures["no_port"] != 1 {
		t.Errorf("port waits: waited %d failed %d no_port %d; want 1, 1, 1", st.SourcePortWaited, st.SourcePortFailed, st.BackendFailures["no_port"])
	}
}

// TestReclaimClosedFlow: when no port is free, a flow that closed (FINs
// both ways) and has been quiet for reclaimIdle gives its port up before
// its close timeout; a live flow is never taken.
func TestReclaimClosedFlow(t *testing.T) {
	r := newRig(t, spec.CookiesNever, func(c *Config) { c.PortMin, c.PortMax = 20000, 20000 })
	s1 := r.spliceOne(40000, 1)
	c1 := r.client
	r.client = netip.AddrPortFrom(r.client.Addr(), 40001)
	r.handshake(2, nil)
	r.noSentIP() // the only port's flow is live
	r.closeFlows(c1, s1.Src, 100)
	r.e.expireOpening(r.advance(500 * time.Millisecond))
	r.noSentIP() // closed, but not quiet long enough
	r.e.expireOpening(r.advance(600 * time.Millisecond))
	syn := r.sentIP()
	if syn.Flags != packet.SYN || syn.Src != s1.Src {
		t.Fatalf("%v from %v, want the SYN from the reclaimed %v", syn.Flags, syn.Src, s1.Src)
	}
	if int32(syn.Seq-(s1.Seq+2+100)) <= 0 {
		t.Errorf("ISN %d not after the reclaimed leg's floor %d", syn.Seq, s1.Seq+102)
	}
	if _, ok := r.flows.get(flow.Key{Src: c1, Dst: vip}); ok {
		t.Error("the reclaimed connection's flow is still installed")
	}
	if got := r.e.Stats().Expired["reclaimed"]; got != 1 {
		t.Errorf("expired{reclaimed} = %d, want 1", got)
	}
	if st := r.e.set.Load().order[0].ServiceStats(); st.SourcePortWaited != 1 {
		t.Errorf("port waits = %d, want 1", st.SourcePortWaited)
	}
}

// TestConnTableFullResets: a connection past MaxConns is refused at once
// with a RST, and counted, instead of hanging after its handshake.
func TestConnTableFullResets(t *testing.T) {
	r := newRig(t, spec.CookiesNever, func(c *Config) { c.MaxConns = 1 })
	r.spliceOne(40000, 1)
	r.client = netip.AddrPortFrom(r.client.Addr(), 40001)
	sa := r.handshake(2, nil)
	rst := r.sentIP()
	if rst.Flags != packet.RST|packet.ACK || rst.Dst != r.client || rst.Seq != sa.Seq+1 {
		t.Fatalf("second connection: %v to %v seq %d, want RST|ACK seq %d to %v", rst.Flags, rst.Dst, rst.Seq, sa.Seq+1, r.client)
	}
	r.noSentIP()
	if got := r.e.set.Load().order[0].ServiceStats().BackendFailures["conn_table_full"]; got != 1 {
		t.Errorf("conn_table_full = %d, want 1", got)
	}
}

// TestFlowTableFullResets: a flow table at its bound refuses the install;
// the client gets a RST and the failure its own reason.
func TestFlowTableFullResets(t *testing.T) {
	r := newRig(t, spec.CookiesNever, nil)
	r.flows.fail = flow.ErrTableFull
	r.handshake(42, nil)
	syn := r.sentIP()
	r.backendSynAck(syn, 9, 7)
	var sawClientRST bool
	for i := 0; i < 2; i++ {
		if s := r.sentIP(); s.Flags&packet.RST != 0 && s.Dst == r.client {
			sawClientRST = true
		}
	}
	if !sawClientRST {
		t.Error("client not reset")
	}
	if got := r.e.set.Load().order[0].ServiceStats().BackendFailures["flow_table_full"]; got != 1 {
		t.Errorf("flow_table_full = %d, want 1", got)
	}
}

// TestTimeWaitResetSparesLiveFlow: the TIME_WAIT clearing RST is never sent
// for a 4-tuple that has a flow entry.
func TestTimeWaitResetSparesLiveFlow(t *testing.T) {
	r := newRig(t, spec.CookiesNever, nil)
	r.handshake(42, nil)
	syn := r.sentIP()
	kb := flow.Key{Src: backend, Dst: syn.Src}
	r.flows.InstallFlow(kb, flow.NAT{Src: vip, Dst: r.client})
	r.inject(packet.Build, packet.Fields{Src: backend, Dst: syn.Src, Seq: 777, Ack: 123456, Flags: packet.ACK, Window: 100})
	r.noSentIP()
	if got := r.e.set.Load().order[0].ServiceStats().BackendTimeWait; got != 0 {
		t.Errorf("timewait resets = %d, want 0", got)
	}
}

// TestPortFloor: the floor covers the leg's ISN, SYN, FIN and every byte
// sent; past maxFloorSlack bytes there is none (the next ISN could not stay
// within half the sequence space of the truth).
func TestPortFloor(t *testing.T) {
	c := &conn{clientISN: 100, seqDelta: 0xffff_ff00, sentBytes: 10}
	want := uint32(100+2+1010) - 0x100 // the ISN wraps: 100 + 0xffffff00
	if f, ok := c.portFloor(1000); !ok || f != want {
		t.Errorf("floor = %d, %v; want %d", f, ok, want)
	}
	if _, ok := c.portFloor(maxFloorSlack - 10); ok {
		t.Error("a floor past maxFloorSlack")
	}
	if _, ok := c.portFloor(maxFloorSlack - 11); !ok {
		t.Error("no floor just below maxFloorSlack")
	}
	// The worst case the floor allows still lands the next ISN after the
	// backend's next sequence number: the connection sent nothing, its
	// count says maxFloorSlack-1, the random part is at its largest.
	worst := uint32(maxFloorSlack-1) + 1 + (isnSpread - 1)
	if int32(worst) <= 0 {
		t.Errorf("worst-case distance %d is not after()", worst)
	}
}

// TestOrphanFlows: flows of an earlier process (pinned maps survive a
// restart) keep their ports: a new connection passes over a port whose
// 4-tuple has a flow. They expire like conntrack's: a reset one after
// ResetTimeout, an idle one after EstablishedTimeout, never one still
// active; the engine's own flows are not touched.
func TestOrphanFlows(t *testing.T) {
	r := newRig(t, spec.CookiesNever, func(c *Config) { c.EstablishedTimeout = time.Hour })
	oldClient := netip.MustParseAddrPort("198.51.100.9:5555")
	oldLeg := netip.AddrPortFrom(source, 20000)
	active := flow.Key{Src: netip.MustParseAddrPort("198.51.100.9:6666"), Dst: vip}
	r.flows.InstallFlow(flow.Key{Src: oldClient, Dst: vip}, flow.NAT{Src: oldLeg, Dst: backend})
	r.flows.InstallFlow(flow.Key{Src: backend, Dst: oldLeg}, flow.NAT{Src: vip, Dst: oldClient})
	r.flows.InstallFlow(active, flow.NAT{Src: netip.AddrPortFrom(source, 20005), Dst: backend})
	r.flows.update(flow.Key{Src: backend, Dst: oldLeg}, func(s *flow.State) { s.RST, s.LastSeen = true, r.mono })

	syn := r.spliceOne(40000, 1)
	if syn.Src == oldLeg {
		t.Fatalf("the new connection took %v, the port of a live flow of an earlier process", syn.Src)
	}
	own := []flow.Key{{Src: r.client, Dst: vip}, {Src: backend, Dst: syn.Src}}

	r.advance(9 * time.Second)
	r.flows.update(active, func(s *flow.State) { s.LastSeen = r.mono })
	r.e.expireOrphans()
	if _, ok := r.flows.get(flow.Key{Src: backend, Dst: oldLeg}); !ok {
		t.Fatal("a reset orphan removed before the reset timeout")
	}
	r.advance(time.Second)
	r.e.expireOrphans()
	if _, ok := r.flows.get(flow.Key{Src: backend, Dst: oldLeg}); ok {
		t.Error("a reset orphan still there after the reset timeout")
	}
	if _, ok := r.flows.get(flow.Key{Src: oldClient, Dst: vip}); !ok {
		t.Error("an orphan without RST removed before the idle timeout")
	}
	r.advance(time.Hour - time.Minute)
	r.flows.update(active, func(s *flow.State) { s.LastSeen = r.mono })
	r.advance(time.Minute)
	r.e.expireOrphans()
	if _, ok := r.flows.get(flow.Key{Src: oldClient, Dst: vip}); ok {
		t.Error("an idle orphan still there after the idle timeout")
	}
	if _, ok := r.flows.get(active); !ok {
		t.Error("an active orphan removed")
	}
	for _, k := range own {
		if _, ok := r.flows.get(k); !ok {
			t.Errorf("the engine's own flow %v removed as an orphan", k)
		}
	}
	if got := r.e.Stats().Expired["orphaned"]; got != 2 {
		t.Errorf("expired{orphaned} = %d, want 2", got)
	}
}
