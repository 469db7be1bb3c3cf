package queue

import (
	"slices"
	"testing"
	"time"

	"github.com/syngate/syngate/spec"
)

type event struct {
	at      time.Duration
	attempt int
	dropped bool
}

// runTimers queues one SYN at start and calls Expire every step until end,
// recording every callback.
func runTimers(t *testing.T, l *Listener, start, step, end time.Duration) []event {
	t.Helper()
	var isn isnCounter
	if d := l.OnSYN(syn(1, 7), at(start), isn.get); d.Action != SynQueued {
		t.Fatalf("OnSYN = %+v", d)
	}
	var got []event
	for now := start; now <= end; now += step {
		l.Expire(at(now), func(e Timeout) {
			if e.Tuple != tuple(1) || e.ClientISN != 7 || e.OurISN != 1000 || e.Options != testOpts || e.MSS != 1400 {
				t.Errorf("timeout carries %+v", e)
			}
			got = append(got, event{now, e.Attempt, e.Dropped})
		})
	}
	return got
}

func TestRetransmitSchedule(t *testing.T) {
	s := time.Second
	tests := []struct {
		retries int
		want    []event
	}{
		{0, []event{{1 * s, 0, true}}},
		{1, []event{{1 * s, 1, false}, {3 * s, 1, true}}},
		{2, []event{{1 * s, 1, false}, {3 * s, 2, false}, {7 * s, 2, true}}},
		{5, []event{{1 * s, 1, false}, {3 * s, 2, false}, {7 * s, 3, false}, {15 * s, 4, false}, {31 * s, 5, false}, {63 * s, 5, true}}},
	}
	for _, tt := range tests {
		// The schedule must not depend on how often Expire runs, as
		// long as it runs on the second.
		for _, step := range []time.Duration{100 * time.Millisecond, 250 * time.Millisecond, time.Second} {
			l := newTestListener(t, func(c *Config) { c.SynAckRetries = tt.retries })
			got := runTimers(t, l, 0, step, 70*time.Second)
			if !slices.Equal(got, tt.want) {
				t.Errorf("retries %d, Expire every %s:\n got %v\nwant %v", tt.retries, step, got, tt.want)
			}
			if l.SynQueueLen() != 0 {
				t.Errorf("retries %d: %d entries left", tt.retries, l.SynQueueLen())
			}
			st := l.Stats()
			if st.Retransmits != uint64(tt.retries) || st.Timeouts != 1 {
				t.Errorf("retries %d: stats %d retransmits, %d timeouts", tt.retries, st.Retransmits, st.Timeouts)
			}
			checkInvariants(t, l)
		}
	}
}

func TestRetransmitBackoffCapped(t *testing.T) {
	for n, want := range map[int]time.Duration{0: time.Second, 4: 16 * time.Second, 6: 64 * time.Second, 7: MaxRTO, 200: MaxRTO} {
		if got := rto(n); got != want {
			t.Errorf("rto(%d) = %s, want %s", n, got, want)
		}
	}
	// With many retries the gaps grow to MaxRTO and stay there; the wheel
	// must still deliver every one of them on time.
	l := newTestListener(t, func(c *Config) { c.SynAckRetries = 10 })
	got := runTimers(t, l, 0, 500*time.Millisecond, 1000*time.Second)
	var times []time.Duration
	for _, e := range got {
		times = append(times, e.at)
	}
	s := time.Second
	want := []time.Duration{1 * s, 3 * s, 7 * s, 15 * s, 31 * s, 63 * s, 127 * s, 247 * s, 367 * s, 487 * s, 607 * s}
	if !slices.Equal(times, want) {
		t.Errorf("fired at %v, want %v", times, want)
	}
}

func TestRetransmitSubSecond(t *testing.T) {
	// A SYN at 0.6 s is due at 1.6 s: not at 1.0 s, and at the first
	// Expire from 1.6 s on.
	l := newTestListener(t, nil)
	got := runTimers(t, l, 600*time.Millisecond, 200*time.Millisecond, 4*time.Second)
	want := []event{{1600 * time.Millisecond, 1, false}, {3600 * time.Millisecond, 2, false}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestExpireAfterLongPause(t *testing.T) {
	l := newTestListener(t, nil)
	var isn isnCounter
	l.Expire(at(0), nil)
	l.OnSYN(syn(1, 1), at(0), isn.get)
	// Expire stalls for longer than a wheel lap; a SYN arrives meanwhile.
	l.OnSYN(syn(2, 1), at(299*time.Second+500*time.Millisecond), isn.get)
	var fired []int
	n, d := l.Expire(at(300*time.Second), func(e Timeout) { fired = append(fired, e.Attempt) })
	if n != 1 || d != 0 || !slices.Equal(fired, []int{1}) {
		t.Fatalf("after the pause: %d retransmits %d drops %v, want only the old entry's first retransmission", n, d, fired)
	}
	// The new SYN is due at 300.5 s, the old one's next at 302 s.
	if n, _ := l.Expire(at(300*time.Second+400*time.Millisecond), nil); n != 0 {
		t.Errorf("early retransmission at 300.4 s")
	}
	if n, _ := l.Expire(at(300*time.Second+500*time.Millisecond), nil); n != 1 {
		t.Errorf("%d retransmissions at 300.5 s, want 1", n)
	}
	if n, _ := l.Expire(at(302*time.Second), nil); n != 1 {
		t.Errorf("%d retransmissions at 302 s, want 1", n)
	}
	checkInvariants(t, l)
}

func TestExpireSkewedClock(t *testing.T) {
	// A receive queue's clock lags the Expire loop's: the SYN is due in a
	// second Expire already scanned, and must fire at the next call
	// instead of a wheel lap later.
	l := newTestListener(t, nil)
	var isn isnCounter
	l.OnSYN(syn(9, 1), at(0), isn.get)
	l.Expire(at(10*time.Second+100*time.Millisecond), nil)
	l.OnSYN(syn(1, 1), at(9*time.Second), isn.get) // due at 10 s
	var got []Timeout
	l.Expire(at(10*time.Second+200*time.Millisecond), func(e Timeout) { got = append(got, e) })
	if len(got) != 1 || got[0].Tuple != tuple(1) || got[0].Attempt != 1 {
		t.Errorf("got %+v, want the lagging SYN's first retransmission", got)
	}
	checkInvariants(t, l)
}

func TestExpireNilCallbackAndEmpty(t *testing.T) {
	l := newTestListener(t, func(c *Config) { c.MaxSynBacklog, c.Cookies = 0, spec.CookiesAlways })
	if n, d := l.Expire(at(time.Hour), nil); n != 0 || d != 0 {
		t.Errorf("Expire on a cookie-only listener = %d, %d", n, d)
	}
}
