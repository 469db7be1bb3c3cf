package queue

import (
	"reflect"
	"testing"
	"time"

	"github.com/syngate/syngate/spec"
)

func TestSynResend(t *testing.T) {
	l := newTestListener(t, nil)
	var isn isnCounter
	first := l.OnSYN(syn(1, 77), at(0), isn.get)
	if first.Action != SynQueued || first.OurISN != 1000 || first.MSS != 1400 {
		t.Fatalf("first SYN: %+v", first)
	}
	tests := []struct {
		at   time.Duration
		want SynDecision
	}{
		{100 * time.Millisecond, SynDecision{Action: SynResend, OurISN: 1000, MSS: 1400}},
		{300 * time.Millisecond, SynDecision{Action: SynDrop, Reason: ReasonRateLimited}},
		{599 * time.Millisecond, SynDecision{Action: SynDrop, Reason: ReasonRateLimited}},
		{600 * time.Millisecond, SynDecision{Action: SynResend, OurISN: 1000, MSS: 1400}},
		{2 * time.Second, SynDecision{Action: SynResend, OurISN: 1000, MSS: 1400}},
	}
	for _, tt := range tests {
		s := syn(1, 77)
		s.MSS = 536 // a resend repeats the stored SYN-ACK, whatever the caller computes now
		if got := l.OnSYN(s, at(tt.at), isn.get); got != tt.want {
			t.Errorf("duplicate SYN at %s: %+v, want %+v", tt.at, got, tt.want)
		}
	}
	if isn.calls != 1 || l.SynQueueLen() != 1 {
		t.Errorf("after duplicates: %d ISNs drawn, %d entries; want 1 and 1", isn.calls, l.SynQueueLen())
	}
	// Duplicates do not restart the timer: 0 s, 1 s, 3 s as usual.
	var fired []time.Duration
	for now := time.Duration(0); now <= 4*time.Second; now += 500 * time.Millisecond {
		l.Expire(at(now), func(Timeout) { fired = append(fired, now) })
	}
	if len(fired) != 2 || fired[0] != time.Second || fired[1] != 3*time.Second {
		t.Errorf("retransmissions at %v, want [1s 3s]", fired)
	}
	st := l.Stats()
	if st.SynReceived != 6 || st.SynQueued != 1 || st.SynResent != 3 || st.SynResendLimited != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestSynResendUnlimited(t *testing.T) {
	l := newTestListener(t, func(c *Config) { c.ResendInterval = -1 })
	var isn isnCounter
	l.OnSYN(syn(1, 77), at(0), isn.get)
	for i := range 5 {
		if d := l.OnSYN(syn(1, 77), at(0), isn.get); d.Action != SynResend {
			t.Fatalf("duplicate %d: %+v", i, d)
		}
	}
}

func TestSynReplace(t *testing.T) {
	l := newTestListener(t, nil)
	var isn isnCounter
	l.OnSYN(syn(1, 77), at(0), isn.get)
	d := l.OnSYN(syn(1, 5000), at(1500*time.Millisecond), isn.get)
	if d.Action != SynQueued || d.OurISN != 1001 {
		t.Fatalf("SYN with a new ISN: %+v", d)
	}
	if l.SynQueueLen() != 1 {
		t.Fatalf("%d entries after replace, want 1", l.SynQueueLen())
	}
	// The timer restarted: no retransmission at 1 s (old), one at 2.5 s.
	var fired []time.Duration
	for now := 1500 * time.Millisecond; now <= 3*time.Second; now += 500 * time.Millisecond {
		l.Expire(at(now), func(e Timeout) {
			if e.ClientISN != 5000 || e.OurISN != 1001 {
				t.Errorf("retransmission of %+v", e)
			}
			fired = append(fired, now)
		})
	}
	if len(fired) != 1 || fired[0] != 2500*time.Millisecond {
		t.Errorf("retransmissions at %v, want [2.5s]", fired)
	}
	// The old handshake's ACK is stale now, the new one completes.
	if a := l.OnACK(tuple(1), 78, 1001, nil, at(3*time.Second)); a.Action != AckReset || a.Reason != ReasonBadAck {
		t.Errorf("old ACK: %+v", a)
	}
	if a := l.OnACK(tuple(1), 5001, 1002, nil, at(3*time.Second)); a.Action != AckQueued {
		t.Errorf("new ACK: %+v", a)
	}
	st := l.Stats()
	if st.SynQueued != 2 || st.SynReplaced != 1 {
		t.Errorf("stats %+v", st)
	}
	checkInvariants(t, l)
}

func TestCookiePolicies(t *testing.T) {
	tests := []struct {
		policy    spec.CookiePolicy
		queued    int // SYNs of the 10 that get a half-open entry
		overflow  SynDecision
		firstSyn  SynAction
		stats     func(Stats) bool
		statsWant string
	}{
		{
			policy: spec.CookiesNever, queued: 8, firstSyn: SynQueued,
			overflow:  SynDecision{Action: SynDrop, Reason: ReasonSynQueueFull},
			stats:     func(s Stats) bool { return s.SynDropsQueueFull == 2 && s.CookiesSent == 0 && s.SynQueued == 8 },
			statsWant: "2 queue-full drops, 8 queued",
		},
		{
			policy: spec.CookiesAuto, queued: 8, firstSyn: SynQueued,
			overflow: SynDecision{Action: SynCookie, Reason: ReasonSynQueueFull},
			stats: func(s Stats) bool {
				return s.CookiesSent == 2 && s.CookiesOverflow == 2 && s.SynDropsQueueFull == 0 && s.SynQueued == 8
			},
			statsWant: "2 overflow cookies, 8 queued",
		},
		{
			policy: spec.CookiesAlways, queued: 0, firstSyn: SynCookie,
			overflow: SynDecision{Action: SynCookie, Reason: ReasonCookiesAlways},
			stats: func(s Stats) bool {
				return s.CookiesSent == 10 && s.CookiesOverflow == 0 && s.SynQueued == 0
			},
			statsWant: "10 cookies, none for overflow",
		},
	}
	for _, tt := range tests {
		t.Run(string(tt.policy), func(t *testing.T) {
			l := newTestListener(t, func(c *Config) { c.Cookies = tt.policy })
			var isn isnCounter
			if d := l.OnSYN(syn(0, 1), at(0), isn.get); d.Action != tt.firstSyn {
				t.Fatalf("first SYN: %+v", d)
			}
			for i := 1; i < 10; i++ {
				d := l.OnSYN(syn(i, 1), at(0), isn.get)
				if i >= tt.queued && d != tt.overflow {
					t.Errorf("SYN %d: %+v, want %+v", i, d, tt.overflow)
				}
			}
			if l.SynQueueLen() != tt.queued || int(isn.calls) != tt.queued {
				t.Errorf("%d entries, %d ISNs drawn, want %d", l.SynQueueLen(), isn.calls, tt.queued)
			}
			if st := l.Stats(); !tt.stats(st) || st.SynReceived != 10 {
				t.Errorf("stats %+v, want %s", st, tt.statsWant)
			}
			// A full queue still answers retransmissions and
			// replacements of queued SYNs.
			if tt.queued > 0 {
				if d := l.OnSYN(syn(3, 1), at(0), isn.get); d.Action != SynResend {
					t.Errorf("duplicate into a full queue: %+v", d)
				}
				if d := l.OnSYN(syn(3, 2), at(0), isn.get); d.Action != SynQueued {
					t.Errorf("new ISN into a full queue: %+v", d)
				}
			}
			checkInvariants(t, l)
		})
	}
}

func TestCookieGate(t *testing.T) {
	tick := 10 * time.Second
	unmatched := func(l *Listener, now time.Duration) AckDecision {
		return l.OnACK(tuple(999), 1, 1, nil, at(now))
	}
	overflow := func(t *testing.T, l *Listener, now time.Duration) {
		var isn isnCounter
		for i := range 9 {
			l.OnSYN(syn(i, 1), at(now), isn.get)
		}
		if l.Stats().CookiesOverflow+l.Stats().SynDropsQueueFull == 0 && l.cookies != spec.CookiesAlways {
			t.Fatal("the queue did not overflow")
		}
	}

	t.Run("never", func(t *testing.T) {
		l := newTestListener(t, func(c *Config) { c.Cookies, c.CookieTick = spec.CookiesNever, tick })
		overflow(t, l, 0)
		if a := unmatched(l, time.Second); a.Action != AckNoEntry || localGate(a) {
			t.Errorf("%+v, want no entry, no cookie check", a)
		}
	})
	t.Run("always", func(t *testing.T) {
		l := newTestListener(t, func(c *Config) { c.Cookies, c.CookieTick = spec.CookiesAlways, tick })
		for _, now := range []time.Duration{0, time.Hour} {
			if a := unmatched(l, now); a.Action != AckNoEntry || !localGate(a) {
				t.Errorf("at %s: %+v, want a cookie check", now, a)
			}
		}
	})
	t.Run("auto", func(t *testing.T) {
		l := newTestListener(t, func(c *Config) { c.CookieTick = tick })
		if a := unmatched(l, 0); localGate(a) {
			t.Errorf("before any overflow: %+v", a)
		}
		overflow(t, l, 100*time.Second)
		// A second overflow within a second does not move the stamp.
		l.OnSYN(syn(50, 1), at(100*time.Second+900*time.Millisecond), func() uint32 { return 0 })
		for _, tt := range []struct {
			at   time.Duration
			want bool
		}{
			{100 * time.Second, true},
			{110 * time.Second, true},
			{120 * time.Second, true}, // two ticks after the overflow
			{120*time.Second + 1, false},
			{200 * time.Second, false},
		} {
			if a := unmatched(l, tt.at); a.Action != AckNoEntry || localGate(a) != tt.want {
				t.Errorf("at %s: %+v, want the local gate %v", tt.at, a, tt.want)
			}
		}
		// Another overflow reopens the gate.
		l.OnSYN(syn(51, 1), at(300*time.Second), func() uint32 { return 0 })
		if a := unmatched(l, 319*time.Second); !localGate(a) {
			t.Errorf("after a new overflow: %+v", a)
		}
		st := l.Stats()
		if st.AckUnmatched != 7 || st.AckCookieDenied != 0 || st.AckPeerChecks != 3 {
			t.Errorf("stats: %d unmatched, %d denied, %d peer checks; want 7, 0, 3", st.AckUnmatched, st.AckCookieDenied, st.AckPeerChecks)
		}
	})
	t.Run("default tick", func(t *testing.T) {
		l := newTestListener(t, nil)
		overflow(t, l, 0)
		if a := unmatched(l, 128*time.Second); !localGate(a) {
			t.Errorf("at two default ticks: %+v", a)
		}
		if a := unmatched(l, 129*time.Second); localGate(a) {
			t.Errorf("after two default ticks: %+v", a)
		}
	})
}

func TestAckValidation(t *testing.T) {
	tests := []struct {
		name      string
		seq, ack  uint32
		want      AckAction
		reason    Reason
		keepEntry bool
	}{
		{"match", 0x00000000, 1001, AckQueued, ReasonNone, false},
		{"ack off by one", 0x00000000, 1000, AckReset, ReasonBadAck, true},
		{"ack of a cookie", 0x00000000, 0xdeadbeef, AckReset, ReasonBadAck, true},
		{"seq is the ISN", 0xffffffff, 1001, AckDrop, ReasonBadSeq, true},
		{"seq ahead", 0x00000010, 1001, AckDrop, ReasonBadSeq, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newTestListener(t, nil)
			var isn isnCounter
			// The client ISN wraps: the ACK's seq is 0.
			l.OnSYN(syn(1, 0xffffffff), at(0), isn.get)
			a := l.OnACK(tuple(1), tt.seq, tt.ack, []byte("GET /"), at(time.Second/2))
			if a.Action != tt.want || a.Reason != tt.reason {
				t.Fatalf("OnACK = %v (%v), want %v (%v)", a.Action, a.Reason, tt.want, tt.reason)
			}
			if kept := l.SynQueueLen() == 1; kept != tt.keepEntry {
				t.Errorf("entry kept %v, want %v", kept, tt.keepEntry)
			}
			if tt.want != AckQueued {
				if l.AcceptQueueLen() != 0 {
					t.Error("rejected ACK reached the accept queue")
				}
				return
			}
			want := Conn{
				Tuple: tuple(1), ClientISN: 0xffffffff, OurISN: 1000, Options: testOpts, MSS: 1400,
				FirstSeen: at(0),
			}
			c, ok := l.Pop()
			if !ok || string(c.Data) != "GET /" {
				t.Fatalf("Pop = %+v, %v", c, ok)
			}
			c.Data = nil
			if !reflect.DeepEqual(c, want) || a.Conn.Tuple != want.Tuple || a.Conn.OurISN != want.OurISN {
				t.Errorf("conn %+v\nwant %+v", c, want)
			}
			// The entry is gone: a repeated ACK is a stray now.
			if a := l.OnACK(tuple(1), tt.seq, tt.ack, nil, at(time.Second)); a.Action != AckNoEntry || localGate(a) {
				t.Errorf("repeated ACK: %+v", a)
			}
			st := l.Stats()
			if st.AckMatched != 1 || st.Accepted != 1 || st.AckUnmatched != 1 {
				t.Errorf("stats %+v", st)
			}
			checkInvariants(t, l)
		})
	}
}

func TestStringers(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{SynCookie.String(), "cookie"},
		{SynAction(9).String(), "SynAction(9)"},
		{AckNoEntry.String(), "no entry"},
		{ReasonBadSeq.String(), "bad sequence number"},
		{Reason(-1).String(), "Reason(-1)"},
		{AcceptReset.String(), "reset"},
		{string(spec.OverflowReset), "reset"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}
