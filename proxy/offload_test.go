package proxy

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/queue"
)

type offloadCall struct {
	on     bool
	o      Offer
	window uint16
}

type fakeOffload struct {
	mu    sync.Mutex
	calls []offloadCall
}

func (f *fakeOffload) OffloadCookies(s Service, on bool, o Offer, window uint16) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, offloadCall{on, o, window})
	return nil
}

func (f *fakeOffload) last() (offloadCall, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return offloadCall{}, 0
	}
	return f.calls[len(f.calls)-1], len(f.calls)
}

func TestOffloadAuto(t *testing.T) {
	off := &fakeOffload{}
	r := newRig(t, queue.CookiesAuto, func(c *Config) { c.Offload = off })
	s := r.e.set.Load().order[0]
	r.e.manageOffload(s, r.now)
	if _, n := off.last(); n != 0 {
		t.Fatal("auto offloaded before any overflow")
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
	c, n := off.last()
	if n != 1 || !c.on || c.o.MSS != 1460 || c.o.WScale != 7 || c.window == 0 {
		t.Fatalf("offload call %+v (%d calls)", c, n)
	}
	// While the data plane sends the cookies, the ACK gate stays open
	// long after the last overflow the listener saw itself.
	r.e.manageOffload(s, r.advance(3*time.Minute))
	stray := s.Listen
	if d := s.l.OnACK(flowTuple(r.client, stray), 1, 1, nil, r.now); !d.CookieCheckAllowed {
		t.Error("ACK cookie gate closed while the data plane answers with cookies")
	}
	if _, n := off.last(); n != 1 {
		t.Errorf("offload re-set without a change (%d calls)", n)
	}
	// The flood is over: the half-open entries time out, the queue
	// drains, and the engine takes the SYNs back.
	for i := 0; i < 70; i++ {
		r.e.expireHalfOpen(s, r.advance(time.Second))
	}
	r.e.manageOffload(s, r.now)
	if c, n := off.last(); n != 2 || c.on {
		t.Errorf("after the queue drained: %+v (%d calls), want off", c, n)
	}
}

func TestOffloadAlwaysAndNever(t *testing.T) {
	off := &fakeOffload{}
	r := newRig(t, queue.CookiesAlways, func(c *Config) { c.Offload = off })
	r.e.manageOffload(r.e.set.Load().order[0], r.now)
	if c, n := off.last(); n != 1 || !c.on {
		t.Errorf("always: %+v (%d calls), want on at start", c, n)
	}
	// A new backend offer is pushed to the data plane.
	if err := r.e.SetBackendOptions("web", flow.SynOptions{MSS: 1400, WScale: 9, SACK: true, Timestamps: true}); err != nil {
		t.Fatal(err)
	}
	r.e.manageOffload(r.e.set.Load().order[0], r.now)
	r.e.manageOffload(r.e.set.Load().order[0], r.now) // unchanged: not pushed again
	if c, n := off.last(); n != 2 || !c.on || c.o.WScale != 9 || c.o.MSS != 1400 {
		t.Errorf("after a new backend offer: %+v (%d calls)", c, n)
	}
	off2 := &fakeOffload{}
	r2 := newRig(t, queue.CookiesNever, func(c *Config) { c.Offload = off2 })
	r2.e.manageOffload(r2.e.set.Load().order[0], r2.now)
	if _, n := off2.last(); n != 0 {
		t.Error("never: offloaded")
	}
}

func flowTuple(client, service netip.AddrPort) flow.Tuple {
	return flow.Tuple{Client: client, Service: service}
}
