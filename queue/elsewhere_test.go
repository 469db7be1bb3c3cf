package queue

import (
	"net/netip"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

func TestCookiesSentElsewhereOpensGate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tup := flow.Tuple{Client: netip.MustParseAddrPort("192.0.2.1:1000"), Service: netip.MustParseAddrPort("203.0.113.1:80")}
	for _, tc := range []struct {
		policy spec.CookiePolicy
		want   bool
	}{{spec.CookiesAuto, true}, {spec.CookiesNever, false}} {
		cfg := DefaultConfig()
		cfg.Cookies = tc.policy
		l, err := NewListener(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if d := l.OnACK(tup, 1, 1, nil, t0); localGate(d) {
			t.Fatalf("%v: gate open before any cookie", tc.policy)
		}
		l.CookiesSentElsewhere(t0)
		if d := l.OnACK(tup, 1, 1, nil, t0.Add(time.Second)); localGate(d) != tc.want {
			t.Errorf("%v: gate after cookies sent elsewhere = %v, want %v", tc.policy, localGate(d), tc.want)
		}
		if d := l.OnACK(tup, 1, 1, nil, t0.Add(2*DefaultCookieTick+time.Second)); localGate(d) {
			t.Errorf("%v: gate still open two ticks later", tc.policy)
		}
		if l.SynQueueCap() != cfg.MaxSynBacklog {
			t.Errorf("SynQueueCap = %d", l.SynQueueCap())
		}
	}
}
