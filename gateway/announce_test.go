package gateway

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/syngate/syngate/spec"
)

// TestAnnounceWant: a VIP is announced while any service on it is healthy,
// once, and nothing while draining.
func TestAnnounceWant(t *testing.T) {
	svc := func(name, listen string) spec.Service {
		return spec.Service{Name: name, Listen: netip.MustParseAddrPort(listen)}
	}
	h := fakeHealth{}
	up := func(name string, ok bool) { h[name] = ok }
	a := newAnnouncer(nil, []spec.Service{
		svc("web", "192.0.2.10:80"), svc("tls", "192.0.2.10:443"),
		svc("web6", "[2001:db8::10]:80"), svc("other", "192.0.2.11:80"),
	}, h, nil)
	p := netip.MustParsePrefix
	check := func(what string, want ...netip.Prefix) {
		t.Helper()
		if got := a.want(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: want() = %v, want %v", what, got, want)
		}
	}
	check("nothing probed yet")
	up("web", true)
	up("web6", true)
	check("web and web6 healthy", p("192.0.2.10/32"), p("2001:db8::10/128"))
	up("web", false)
	check("web down, tls never probed", p("2001:db8::10/128"))
	up("tls", true)
	up("other", true)
	check("tls carries the shared VIP", p("192.0.2.10/32"), p("2001:db8::10/128"), p("192.0.2.11/32"))
	a.drain()
	check("draining")
}

// fakeHealth is a Health whose answers a test sets.
type fakeHealth map[string]bool

func (f fakeHealth) Healthy(service string) bool { return f[service] }
