package queue

import (
	"net/netip"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

// localGate reports whether the listener's own cookie gate let an ACK be
// checked (not the peer-cookie budget).
func localGate(a AckDecision) bool { return a.CookieCheckAllowed && !a.PeerCookie }

// TestPeerCookieBudget: under spec.CookiesAuto with the gate closed, up to
// PeerCookieChecks ACKs a second are checked as a peer's cookies, and no
// more; a negative budget is Linux's closed gate; spec.CookiesNever never checks.
func TestPeerCookieBudget(t *testing.T) {
	t0 := time.Unix(5000, 0)
	tup := flow.Tuple{Client: netip.MustParseAddrPort("192.0.2.1:1000"), Service: netip.MustParseAddrPort("203.0.113.1:80")}
	for _, tc := range []struct {
		name   string
		policy spec.CookiePolicy
		budget int
		want   int
	}{
		{"auto budget 5", spec.CookiesAuto, 5, 5},
		{"auto default", spec.CookiesAuto, spec.DefaultPeerCookieChecks, spec.DefaultPeerCookieChecks},
		{"auto off", spec.CookiesAuto, 0, 0},
		{"never", spec.CookiesNever, 5, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Cookies, cfg.PeerCookieChecks = tc.policy, tc.budget
			l, err := NewListener(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for sec := range 3 {
				now := t0.Add(time.Duration(sec) * time.Second)
				got := 0
				for range spec.DefaultPeerCookieChecks + 100 {
					d := l.OnACK(tup, 1, 1, nil, now)
					if d.CookieCheckAllowed {
						if !d.PeerCookie {
							t.Fatalf("check allowed by the local gate, which never opened: %+v", d)
						}
						got++
					}
				}
				if got != tc.want {
					t.Errorf("second %d: %d peer checks, want %d", sec, got, tc.want)
				}
			}
			st := l.Stats()
			if st.AckPeerChecks != uint64(3*tc.want) {
				t.Errorf("AckPeerChecks = %d, want %d", st.AckPeerChecks, 3*tc.want)
			}
		})
	}
}
