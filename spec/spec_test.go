package spec

import "testing"

func TestPolicies(t *testing.T) {
	for p, want := range map[CookiePolicy]bool{CookiesNever: true, CookiesAuto: true, CookiesAlways: true, "": false, "sometimes": false} {
		if p.Valid() != want {
			t.Errorf("CookiePolicy(%q).Valid() = %v", p, !want)
		}
	}
	for p, want := range map[OverflowPolicy]bool{OverflowDrop: true, OverflowReset: true, "": false} {
		if p.Valid() != want {
			t.Errorf("OverflowPolicy(%q).Valid() = %v", p, !want)
		}
	}
	for p, want := range map[ProxyProtocol]int{ProxyOff: 0, "": 0, ProxyV1: 1, ProxyV2: 2} {
		if got := p.Version(); got != want {
			t.Errorf("ProxyProtocol(%q).Version() = %d, want %d", p, got, want)
		}
	}
}

// TestLimits: Linux's defaults, and somaxconn capping the backlog.
func TestLimits(t *testing.T) {
	l := DefaultLimits()
	if l.AcceptQueue() != DefaultBacklog || l.SynAckRetries != 5 || l.SynAckRetries > MaxSynAckRetries {
		t.Errorf("defaults %+v: accept queue %d", l, l.AcceptQueue())
	}
	l.Backlog = 1 << 20
	if l.AcceptQueue() != DefaultSomaxconn {
		t.Errorf("backlog above somaxconn: accept queue %d, want %d", l.AcceptQueue(), DefaultSomaxconn)
	}
}
