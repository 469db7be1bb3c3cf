package proxy

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/syngate/syngate/cookie"
	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
	"github.com/syngate/syngate/spec"
)

// TestPeerCookieAcrossGateways: gateway A answers a SYN with a cookie (its
// queue overflowed, here: always); an ECMP change delivers the ACK to
// gateway B, which shares the secret and never overflowed (auto, gate
// closed). B validates the peer's cookie and opens the backend leg. A
// gateway with another secret, or with peer checks off, does not.
func TestPeerCookieAcrossGateways(t *testing.T) {
	a := newRig(t, spec.CookiesAlways, nil)
	const isn = 4_000_000
	a.inject(packet.BuildSyn, packet.Fields{Src: a.client, Dst: vip, Seq: isn, Flags: packet.SYN, Window: 64240, Options: clientSynOpts})
	sa := a.reply()
	ack := packet.Fields{
		Src: a.client, Dst: vip, Seq: isn + 1, Ack: sa.Seq + 1, Flags: packet.ACK, Window: 502,
		Options: flow.SynOptions{Timestamps: true, TSval: 5001, TSecr: sa.Options.TSval},
	}

	t.Run("shared secret", func(t *testing.T) {
		b := newRig(t, spec.CookiesAuto, nil)
		b.inject(packet.Build, ack)
		syn := b.sentIP()
		// The backend leg's ISN is the gateway's own (per-leg ISNs), so
		// only the SYN itself is checked.
		if syn.Flags != packet.SYN || syn.Dst != backend {
			t.Fatalf("backend SYN = %v %v->%v", syn.Flags, syn.Src, syn.Dst)
		}
		if o := syn.Options; o.WScale != 9 || !o.SACK || !o.Timestamps {
			t.Errorf("backend SYN options %+v: the peer's cookie should carry wscale 9, SACK, TS", o)
		}
		st := b.e.set.Load().order[0].ServiceStats()
		if st.AckPeerCookie != 1 || st.AckCookie != 0 {
			t.Errorf("ack_validated peer_cookie %d cookie %d, want 1, 0", st.AckPeerCookie, st.AckCookie)
		}
	})
	t.Run("other secret", func(t *testing.T) {
		c := newRig(t, spec.CookiesAuto, func(cfg *Config) {
			jar, err := cookie.NewJar([]byte("another secret, another cluster."), cookie.Config{})
			if err != nil {
				t.Fatal(err)
			}
			cfg.Jar = jar
		})
		c.inject(packet.Build, ack)
		c.noSentIP()
		st := c.e.set.Load().order[0].ServiceStats()
		if st.AckPeerCookie != 0 || st.AckRejected["no_entry"] != 1 {
			t.Errorf("peer_cookie %d, no_entry %d; want 0, 1", st.AckPeerCookie, st.AckRejected["no_entry"])
		}
	})
	t.Run("peer checks off", func(t *testing.T) {
		d := newRig(t, spec.CookiesAuto, func(cfg *Config) { cfg.Services[0].Limits.PeerCookieChecks = 0 })
		d.inject(packet.Build, ack)
		d.noSentIP()
	})
}

// TestForgedACKsAtClosedGate sends random forged ACKs (random sequence and
// acknowledgment numbers and client ports, timestamps echoing random
// values) to a gateway whose cookie gate is closed: the budget checks
// DefaultPeerCookieChecks of them in the second, none is accepted
// (expected accepts 10^4 * 2^-26 = 1.5e-4), and none reaches the backend.
func TestForgedACKsAtClosedGate(t *testing.T) {
	r := newRig(t, spec.CookiesAuto, nil)
	const n = 3 * spec.DefaultPeerCookieChecks / 2
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range n {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), uint16(1024+rng.IntN(60000)))
		r.inject(packet.Build, packet.Fields{
			Src: src, Dst: vip, Seq: rng.Uint32(), Ack: rng.Uint32(), Flags: packet.ACK, Window: 502,
			Options: flow.SynOptions{Timestamps: true, TSval: rng.Uint32(), TSecr: rng.Uint32()},
		})
		if i%128 == 127 || i == n-1 {
			// The in-memory link holds a few hundred frames: let the
			// engine catch up.
			waitUnmatched(t, r.e.set.Load().order[0], uint64(i+1))
		}
	}
	s := r.e.set.Load().order[0]
	q, st := s.l.Stats(), s.ServiceStats()
	t.Logf("%d forged ACKs: %d checked as peer cookies, %d refused by the budget, %d accepted", n, q.AckPeerChecks, q.AckCookieDenied, st.AckPeerCookie)
	if q.AckUnmatched != n || q.AckPeerChecks != spec.DefaultPeerCookieChecks || q.AckCookieDenied != n-spec.DefaultPeerCookieChecks {
		t.Errorf("unmatched %d, peer checks %d, denied %d; want %d, %d, %d", q.AckUnmatched, q.AckPeerChecks, q.AckCookieDenied, n, spec.DefaultPeerCookieChecks, n-spec.DefaultPeerCookieChecks)
	}
	if st.AckPeerCookie != 0 || st.AckCookie != 0 {
		t.Errorf("forged ACKs accepted: peer %d, cookie %d", st.AckPeerCookie, st.AckCookie)
	}
	r.noSentIP()
}

func waitUnmatched(t *testing.T, s *service, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.l.Stats().AckUnmatched < n {
		if time.Now().After(deadline) {
			t.Fatalf("engine saw %d ACKs, want %d", s.l.Stats().AckUnmatched, n)
		}
		time.Sleep(time.Millisecond)
	}
}
