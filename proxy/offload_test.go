package proxy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/spec"
)

func TestOffloadAuto(t *testing.T) {
	r := newRig(t, spec.CookiesAuto, nil)
	off := r.flows
	s := r.e.set.Load().order[0]
	r.e.manageOffload(s, r.now)
	if c, n := off.lastWrite(); n != 1 || c.Offload || !c.Standby || c.Offer.Window == 0 {
		t.Fatalf("auto before any overflow: entry %+v (%d writes), want standby cookies only", c, n)
	}
	// Fill the 16-entry SYN queue; the 17th SYN gets a cookie and asks for
	// the offload.
	for i := 0; i < 17; i++ {
		r.client = netip.AddrPortFrom(r.client.Addr(), uint16(30000+i))
		r.inject(packet.BuildSyn, packet.Fields{Src: r.client, Dst: vip, Seq: 1, Flags: packet.SYN, Window: 1000, Options: clientSynOpts})
		r.reply()
	}
	select {
	case got := <-r.e.offloadReqs:
		r.e.manageOffload(got, r.now)
	case <-time.After(time.Second):
		t.Fatal("no offload request after the queue overflowed")
	}
	c, n := off.lastWrite()
	if n != 2 || !c.Offload || c.Offer.MSS != 1460 || c.Offer.WScale != 7 || c.Offer.Window == 0 || c.ID != s.id || c.Listen != vip {
		t.Fatalf("offload entry %+v (%d writes)", c, n)
	}
	// While the data plane sends the cookies, the ACK gate stays open
	// long after the last overflow the listener saw itself.
	r.e.manageOffload(s, r.advance(3*time.Minute))
	stray := s.Listen
	if d := s.l.OnACK(flowTuple(r.client, stray), 1, 1, nil, r.now); !d.CookieCheckAllowed {
		t.Error("ACK cookie gate closed while the data plane answers with cookies")
	}
	if _, n := off.lastWrite(); n != 2 {
		t.Errorf("offload re-set without a change (%d writes)", n)
	}
	// The flood is over: the half-open entries time out, the queue
	// drains, and the engine takes the SYNs back.
	for i := 0; i < 70; i++ {
		r.e.expireHalfOpen(s, r.advance(time.Second))
	}
	r.e.manageOffload(s, r.now)
	if c, n := off.lastWrite(); n != 3 || c.Offload || !c.Standby {
		t.Errorf("after the queue drained: %+v (%d writes), want off", c, n)
	}
}

func TestOffloadAlwaysAndNever(t *testing.T) {
	r := newRig(t, spec.CookiesAlways, nil)
	off := r.flows
	r.e.manageOffload(r.e.set.Load().order[0], r.now)
	if c, n := off.lastWrite(); n != 1 || !c.Offload {
		t.Errorf("always: %+v (%d writes), want on at start", c, n)
	}
	// A new backend offer is pushed to the data plane.
	if err := r.e.SetBackendOptions("web", flow.SynOptions{MSS: 1400, WScale: 9, SACK: true, Timestamps: true}); err != nil {
		t.Fatal(err)
	}
	r.e.manageOffload(r.e.set.Load().order[0], r.now)
	r.e.manageOffload(r.e.set.Load().order[0], r.now) // unchanged: not pushed again
	if c, n := off.lastWrite(); n != 2 || !c.Offload || c.Offer.WScale != 9 || c.Offer.MSS != 1400 {
		t.Errorf("after a new backend offer: %+v (%d writes)", c, n)
	}
	r2 := newRig(t, spec.CookiesNever, nil)
	r2.e.manageOffload(r2.e.set.Load().order[0], r2.now)
	if c, _ := r2.flows.lastWrite(); c.Offload || c.Standby || c.Offer != (spec.Offer{}) {
		t.Errorf("never: entry %+v, want no cookies in the data path", c)
	}
}

func flowTuple(client, service netip.AddrPort) flow.Tuple {
	return flow.Tuple{Client: client, Service: service}
}
