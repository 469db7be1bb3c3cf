package proxy

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/spec"
)

var (
	backend2 = netip.MustParseAddrPort("10.0.0.6:8080")
	vip2     = netip.MustParseAddrPort("192.0.2.11:80")
	vip3     = netip.MustParseAddrPort("192.0.2.12:80")
)

// reloadRig is a rig with a second service ("gone" at vip3) whose engine
// lets Reconfigure start the backend-leg loops of added services.
func reloadRig(t *testing.T) *rig {
	r := newRig(t, spec.CookiesNever, func(c *Config) {
		gone := c.Services[0]
		gone.Name, gone.Listen = "gone", vip3
		c.Services = append(c.Services, gone)
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	r.e.reconfMu.Lock()
	r.e.runCtx, r.e.legs = ctx, &wg
	r.e.reconfMu.Unlock()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return r
}

func (r *rig) syn(client, dst netip.AddrPort, isn uint32) {
	r.t.Helper()
	r.inject(packet.BuildSyn, packet.Fields{Src: client, Dst: dst, Seq: isn, Flags: packet.SYN, Window: 64240, Options: clientSynOpts})
}

func (r *rig) ack(client, dst netip.AddrPort, isn uint32, sa packet.Segment) {
	r.t.Helper()
	r.inject(packet.Build, packet.Fields{
		Src: client, Dst: dst, Seq: isn + 1, Ack: sa.Seq + 1, Flags: packet.ACK, Window: 502,
		Options: flow.SynOptions{Timestamps: true, TSval: 5001, TSecr: sa.Options.TSval},
	})
}

// TestReconfigure changes one service's backend, adds one and removes one
// while a handshake of the changed service is half-open: that handshake
// finishes with the backend it began with, new ones go to the new backend,
// the added service answers and the removed one does not.
func TestReconfigure(t *testing.T) {
	r := reloadRig(t)
	old := r.e.set.Load().services[vip]

	// A handshake half-open across the reload.
	a := netip.MustParseAddrPort("198.51.100.7:40001")
	r.syn(a, vip, 1000)
	saA := r.reply()
	if saA.Flags != packet.SYN|packet.ACK {
		t.Fatalf("SYN-ACK = %v", saA.Flags)
	}

	// Another backend and another hashing: more than the pool changed,
	// so the service is replaced (a pool-only change is
	// TestReconfigurePoolOnly's).
	web := r.svc
	web.Backends, web.Hash = []spec.Backend{{Addr: backend2, Weight: 1}}, spec.HashAddress
	api := r.svc
	api.Name, api.Listen = "api", vip2
	st, err := r.e.Reconfigure([]spec.Service{web, api}, Timeouts{Established: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.Changed, []string{"web"}) || !slices.Equal(st.Added, []string{"api"}) || !slices.Equal(st.Removed, []string{"gone"}) || st.Unchanged != 0 {
		t.Fatalf("stats = %+v", st)
	}
	if got := r.e.Timeouts(); got.Established != time.Hour || got.Connect != 3*time.Second || got.Close != 10*time.Second {
		t.Errorf("timeouts = %+v: want established 1h, the others as they were", got)
	}
	if !old.retired.Load() || r.e.set.Load().services[vip] == old {
		t.Fatal("the changed service was not replaced and retired")
	}

	// The half-open handshake completes with the retired service and its
	// backend.
	r.ack(a, vip, 1000, saA)
	syn := r.sentIP()
	if syn.Flags != packet.SYN || syn.Dst != backend {
		t.Fatalf("backend SYN of the half-open handshake = %v to %v; want to the old backend %v", syn.Flags, syn.Dst, backend)
	}

	// A new handshake goes to the new backend.
	b := netip.MustParseAddrPort("198.51.100.7:40002")
	r.syn(b, vip, 2000)
	saB := r.reply()
	r.ack(b, vip, 2000, saB)
	syn = r.sentIP()
	if syn.Dst != backend2 {
		t.Fatalf("backend SYN of a new handshake to %v; want the new backend %v", syn.Dst, backend2)
	}

	// The added service answers; the removed one does not.
	r.syn(netip.MustParseAddrPort("198.51.100.7:40003"), vip2, 3000)
	if sa := r.reply(); sa.Flags != packet.SYN|packet.ACK || sa.Src != vip2 {
		t.Fatalf("added service: %v from %v", sa.Flags, sa.Src)
	}
	r.syn(netip.MustParseAddrPort("198.51.100.7:40004"), vip3, 4000)
	if rst := r.reply(); rst.Flags&packet.RST == 0 || rst.Src != vip3 {
		t.Fatalf("removed service: %v from %v; want a RST (refused, as by the kernel)", rst.Flags, rst.Src)
	}

	// A retired service without connections leaves the set; one with a
	// connection stays (the gateway keeps its data-plane entry meanwhile).
	r.e.tendRetired(r.e.set.Load(), r.advance(time.Second))
	if rs := r.e.set.Load().retiring; len(rs[vip3]) != 0 || len(rs[vip]) != 1 {
		t.Errorf("retiring after tending: %d at the removed listener (no connections), %d at the changed one (one connection)", len(rs[vip3]), len(rs[vip]))
	}
	if n := r.e.RetiredLive(vip3); n != 0 {
		t.Errorf("RetiredLive(removed) = %d", n)
	}
	if n := r.e.RetiredLive(vip); n != 1 {
		t.Errorf("RetiredLive(changed) = %d, want its one connection", n)
	}
	if c := r.e.conns.byClient(flow.Tuple{Client: a, Service: vip}); c == nil || c.svc != old {
		t.Errorf("the half-open handshake's connection is not the retired service's")
	}
	if !r.e.owned(r.e.conns.byClient(flow.Tuple{Client: a, Service: vip}).backendKey()) {
		t.Error("the retired service's connection is not owned: the orphan scan would delete its flows")
	}
}

// TestReconfigurePoolOnly: a service whose only change is its pool keeps
// its state and gets the new pool as SetBackends gives it: the member that
// stays keeps its health, a connection keeps its backend, and new
// handshakes go to the new pool.
func TestReconfigurePoolOnly(t *testing.T) {
	r := reloadRig(t)
	old := r.e.set.Load().services[vip]
	gone := r.e.set.Load().services[vip3].Service

	// A connection to the first backend, before the reload.
	a := netip.MustParseAddrPort("198.51.100.7:40001")
	r.syn(a, vip, 1000)
	saA := r.reply()
	r.ack(a, vip, 1000, saA)
	if syn := r.sentIP(); syn.Flags != packet.SYN || syn.Dst != backend {
		t.Fatalf("backend SYN = %v to %v; want to %v", syn.Flags, syn.Dst, backend)
	}
	c := r.e.conns.byClient(flow.Tuple{Client: a, Service: vip})
	if c == nil || c.be == nil || c.be.addr != backend {
		t.Fatal("no connection to the first backend")
	}
	first := c.be
	if err := r.e.SetBackendUp("web", backend, false); err != nil {
		t.Fatal(err)
	}

	web := r.svc
	web.Backends = []spec.Backend{{Addr: backend, Weight: 3}, {Addr: backend2, Weight: 1}}
	st, err := r.e.Reconfigure([]spec.Service{web, gone}, Timeouts{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.Repooled, []string{"web"}) || len(st.Changed) != 0 || len(st.Added) != 0 || len(st.Removed) != 0 || st.Unchanged != 1 {
		t.Fatalf("stats = %+v", st)
	}
	s := r.e.set.Load().services[vip]
	if s != old || s.retired.Load() || len(r.e.set.Load().retiring) != 0 {
		t.Fatal("a pool-only change replaced or retired the service")
	}
	if s.memberAt(backend) != first || c.be != first || c.svc != old {
		t.Error("the member that stays, or the connection's backend, was replaced")
	}
	h := r.e.Health()[0]
	if len(h.Backends) != 2 || h.Backends[0].Up || h.Backends[0].Weight != 3 || !h.Backends[1].Up || h.Usable != 1 {
		t.Errorf("health after the reload: %+v; want the first backend still down (weight 3), the new one up", h)
	}

	// A new handshake goes to the one usable member: the new backend.
	b := netip.MustParseAddrPort("198.51.100.7:40002")
	r.syn(b, vip, 2000)
	saB := r.reply()
	r.ack(b, vip, 2000, saB)
	if syn := r.sentIP(); syn.Flags != packet.SYN || syn.Dst != backend2 {
		t.Fatalf("backend SYN of a new handshake = %v to %v; want to %v", syn.Flags, syn.Dst, backend2)
	}

	// The same config again changes nothing.
	st, err = r.e.Reconfigure([]spec.Service{web, gone}, Timeouts{}, nil)
	if err != nil || len(st.Repooled) != 0 || st.Unchanged != 2 {
		t.Fatalf("same config again: %+v, %v", st, err)
	}
}

// TestReconfigureKeepsUnchanged: a service whose settings did not change
// keeps its state (the same queues and counters).
func TestReconfigureKeepsUnchanged(t *testing.T) {
	r := reloadRig(t)
	web := r.e.set.Load().services[vip]
	st, err := r.e.Reconfigure([]spec.Service{r.svc}, Timeouts{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Unchanged != 1 || len(st.Changed)+len(st.Added) != 0 || !slices.Equal(st.Removed, []string{"gone"}) {
		t.Fatalf("stats = %+v", st)
	}
	if r.e.set.Load().services[vip] != web || web.retired.Load() {
		t.Fatal("the unchanged service was replaced")
	}
	sa := r.handshake(1000, nil)
	if sa.Flags != packet.SYN|packet.ACK {
		t.Fatalf("SYN-ACK = %v", sa.Flags)
	}
	if syn := r.sentIP(); syn.Dst != backend {
		t.Fatalf("backend SYN to %v", syn.Dst)
	}
}

// TestReconfigureInvalid: a refused set changes nothing.
func TestReconfigureInvalid(t *testing.T) {
	r := reloadRig(t)
	before := r.e.set.Load()
	to := r.e.Timeouts()
	dup := r.svc
	dup.Name = "dup"
	bad := r.svc
	bad.Name, bad.Listen, bad.Sources = "bad", vip2, []netip.Addr{netip.MustParseAddr("2001:db8::1")}
	for _, svcs := range [][]spec.Service{nil, {r.svc, dup}, {r.svc, bad}} {
		if _, err := r.e.Reconfigure(svcs, Timeouts{Established: time.Minute}, nil); err == nil {
			t.Errorf("Reconfigure(%d services) accepted", len(svcs))
		}
	}
	if r.e.set.Load() != before || r.e.Timeouts() != to {
		t.Fatal("a refused reconfiguration changed the engine")
	}
	for _, s := range before.order {
		if s.retired.Load() {
			t.Errorf("service %s retired by a refused reconfiguration", s.Name)
		}
	}
}
