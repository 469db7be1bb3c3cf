package proxy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

// TestReconcile: at start the engine makes the data path its own. It
// writes the cookie key and its services' entries, keeps the listener of
// a removed service whose connection it adopted (without cookies), deletes
// that of one without, and leaves only its own source addresses.
// TestReconcileOffloadsAlways: a service with cookies always has its
// cookies minted in the data path as soon as Reconcile returns (the
// gateway reports running then), not from Run's first pass.
func TestReconcileOffloadsAlways(t *testing.T) {
	r := newRig(t, spec.CookiesAlways, nil)
	if _, err := r.e.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if e, ok := r.flows.service(vip); !ok || !e.Offload {
		t.Errorf("entry after Reconcile: %+v (%v), want the offload on", e, ok)
	}
}

func TestReconcile(t *testing.T) {
	stale := netip.MustParseAddrPort("192.0.2.10:81")    // removed, nothing live
	draining := netip.MustParseAddrPort("192.0.2.10:82") // removed, one connection live
	oldSource := netip.MustParseAddr("10.0.0.99")
	flows := newFakeFlows()
	for _, l := range []netip.AddrPort{stale, draining} {
		flows.SetService(spec.Entry{Listen: l, ID: 7, Standby: true, Offer: spec.Offer{Window: 1000}})
	}
	flows.AddLocal(oldSource)
	flows.AddLocal(netip.MustParseAddr("10.0.0.98")) // nobody's
	// A spliced connection of the draining service, from oldSource.
	client := netip.MustParseAddrPort("198.51.100.9:5000")
	leg := netip.AddrPortFrom(oldSource, 20001)
	flows.InstallTrackedFlow(flow.Key{Src: client, Dst: draining}, flow.NAT{Src: leg, Dst: backend}, flow.Track{})
	flows.InstallTrackedFlow(flow.Key{Src: backend, Dst: leg}, flow.NAT{Src: draining, Dst: client}, flow.Track{})

	r := newRig(t, spec.CookiesAuto, func(c *Config) { c.Datapath = flows })
	r.flows = flows
	st, err := r.e.Reconcile()
	if err != nil {
		t.Fatal(err)
	}
	if st.Adopted != 1 || st.Draining != 1 || len(st.Removed) != 1 || st.Removed[0] != stale || len(st.Retiring) != 1 || st.Retiring[0] != draining {
		t.Fatalf("reconcile: %+v", st)
	}
	if flows.keys == 0 {
		t.Error("no cookie key written")
	}
	if e, ok := flows.service(vip); !ok || e.Offload || !e.Standby || e.Offer.Window == 0 || e.Offer.MSS != 1460 {
		t.Errorf("the configured service's entry: %+v (%v), want standby cookies with the offer", e, ok)
	}
	if _, ok := flows.service(stale); ok {
		t.Error("a removed service without connections is still in the data path")
	}
	if e, ok := flows.service(draining); !ok || e.Standby || e.Offload || e.ID != 7 {
		t.Errorf("a removed service with a live connection: %+v (%v), want kept without cookies", e, ok)
	}
	locals, _ := flows.Locals()
	want := map[netip.Addr]bool{source: true, oldSource: true}
	if len(locals) != len(want) || !want[locals[0]] || !want[locals[1]] {
		t.Errorf("locals %v, want %v", locals, want)
	}

	// Once its connection is gone, the retired listener leaves too.
	if r.e.conns.byClient(flow.Tuple{Client: client, Service: draining}) == nil {
		t.Fatal("the draining connection was not adopted")
	}
	flows.DeleteFlow(flow.Key{Src: backend, Dst: leg}) // its end: the scan expires it
	for sh := range connShards {
		r.e.expireShard(sh, r.now)
	}
	r.e.tendRetired(r.e.set.Load(), r.advance(time.Second))
	if _, ok := flows.service(draining); ok {
		t.Error("a removed service whose last connection ended is still in the data path")
	}
}

// TestRestoreOffers: a service an earlier engine left in the data path
// announces what it announced until its probe; one it did not is named
// for probing.
func TestRestoreOffers(t *testing.T) {
	flows := newFakeFlows()
	flows.SetService(spec.Entry{Listen: vip, Standby: true, Offer: spec.Offer{Window: 1000, MSS: 1300, WScale: 4, Timestamps: true}})
	r := newRig(t, spec.CookiesAuto, func(c *Config) {
		c.Datapath = flows
		other := c.Services[0]
		other.Name, other.Listen = "other", netip.MustParseAddrPort("192.0.2.10:81")
		c.Services = append(c.Services, other)
	})
	// newRig set the backend options of "web"; start from the defaults.
	r.e.set.Load().order[0].offer.Store(r.e.set.Load().order[0].mergeOffer(defaultBackendOptions(false)))
	unknown, err := r.e.RestoreOffers()
	if err != nil {
		t.Fatal(err)
	}
	if len(unknown) != 1 || unknown[0].Name != "other" {
		t.Errorf("unknown %v, want other", unknown)
	}
	if o := r.e.set.Load().order[0].offer.Load().Offer; o.MSS != 1300 || o.WScale != 4 || o.SACK || !o.Timestamps {
		t.Errorf("restored offer %+v", o)
	}
}

// TestReconfigureDataPath: a reload writes the added service's entry (with
// its rate-limit exemption) and source address, and takes a removed listener's cookies away at once and
// its entry once its handshakes are done.
func TestReconfigureDataPath(t *testing.T) {
	r := reloadRig(t)
	if _, err := r.e.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.flows.service(vip3); !ok {
		t.Fatal("gone is not in the data path before the reload")
	}
	// A half-open handshake of the service about to go.
	a := netip.MustParseAddrPort("198.51.100.7:40001")
	r.syn(a, vip3, 1000)
	r.reply()

	api := r.svc
	api.Name, api.Listen, api.Sources = "api", vip2, []netip.Addr{netip.MustParseAddr("10.0.0.2")}
	api.Cookies = spec.CookiesAlways
	api.RateLimitExempt = true
	if _, err := r.e.Reconfigure([]spec.Service{r.svc, api}, Timeouts{}, nil); err != nil {
		t.Fatal(err)
	}
	if e, ok := r.flows.service(vip2); !ok || !e.Standby || e.Offer.Window == 0 || !e.NoRateLimit {
		t.Errorf("added service's entry %+v (%v)", e, ok)
	}
	if !r.flows.locals[netip.MustParseAddr("10.0.0.2")] {
		t.Error("added service's source address not in the data path")
	}
	if e, ok := r.flows.service(vip3); !ok || e.Standby || e.Offload {
		t.Errorf("removed service with a half-open handshake: %+v (%v), want kept without cookies", e, ok)
	}
	// Its half-open entry expires (retries at 1, 2, 4, 8, 16 s, then 32 s
	// more); then the listener leaves the data path.
	for range 70 {
		r.e.tendRetired(r.e.set.Load(), r.advance(time.Second))
	}
	if _, ok := r.flows.service(vip3); ok {
		t.Error("the removed service is still in the data path after its handshake expired")
	}
	if _, ok := r.flows.service(vip); !ok {
		t.Error("the kept service left the data path")
	}
}
