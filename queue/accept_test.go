package queue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/syngate/syngate/spec"
)

func cookieConn(i int) Conn {
	return Conn{Tuple: tuple(i), ClientISN: uint32(i), OurISN: uint32(i) * 3, Options: testOpts, MSS: 1400, Cookie: true}
}

func TestAcceptFIFO(t *testing.T) {
	l := newTestListener(t, func(c *Config) { c.Backlog = 3 })
	if _, ok := l.Pop(); ok {
		t.Fatal("Pop on an empty queue")
	}
	// Wrap the ring a few times.
	next, popped := 0, 0
	for round := range 4 {
		for l.AcceptQueueLen() < 3 {
			c := cookieConn(next)
			c.Data = []byte{byte(next)}
			if r := l.Accept(c, at(time.Duration(next)*time.Second)); r != AcceptQueued {
				t.Fatalf("round %d: Accept(%d) = %v", round, next, r)
			}
			next++
		}
		for range 2 {
			c, ok := l.Pop()
			if !ok || c.Tuple != tuple(popped) || c.Data[0] != byte(popped) || !c.FirstSeen.Equal(at(time.Duration(popped)*time.Second)) {
				t.Fatalf("round %d: Pop = %+v, %v; want conn %d", round, c, ok, popped)
			}
			popped++
		}
	}
	if st := l.Stats(); st.Accepted != uint64(next) || st.AcceptQueueLen != next-popped {
		t.Errorf("stats %+v", st)
	}
	// A FirstSeen set by the caller is kept.
	l = newTestListener(t, nil)
	c := cookieConn(1)
	c.FirstSeen = at(-time.Second)
	l.Accept(c, at(0))
	if got, _ := l.Pop(); !got.FirstSeen.Equal(at(-time.Second)) {
		t.Errorf("FirstSeen %v overwritten", got.FirstSeen)
	}
}

func TestAcceptOverflow(t *testing.T) {
	tests := []struct {
		policy     spec.OverflowPolicy
		accept     AcceptResult
		ack        AckDecision
		keepsEntry bool
	}{
		{spec.OverflowDrop, AcceptDropped, AckDecision{Action: AckDrop, Reason: ReasonAcceptQueueFull}, true},
		{spec.OverflowReset, AcceptReset, AckDecision{Action: AckReset, Reason: ReasonAcceptQueueFull}, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.policy), func(t *testing.T) {
			l := newTestListener(t, func(c *Config) { c.Backlog, c.Overflow = 2, tt.policy })
			var isn isnCounter
			l.OnSYN(syn(1, 10), at(0), isn.get) // before the queue fills
			for i := range 2 {
				l.Accept(cookieConn(100+i), at(0))
			}
			if r := l.Accept(cookieConn(102), at(0)); r != tt.accept {
				t.Errorf("cookie conn into a full queue: %v, want %v", r, tt.accept)
			}
			if a := l.OnACK(tuple(1), 11, 1001, nil, at(time.Second/2)); a.Action != tt.ack.Action || a.Reason != tt.ack.Reason {
				t.Errorf("valid ACK into a full queue: %+v, want %+v", a, tt.ack)
			}
			if kept := l.SynQueueLen() == 1; kept != tt.keepsEntry {
				t.Errorf("entry kept %v, want %v", kept, tt.keepsEntry)
			}
			st := l.Stats()
			if st.AcceptOverflowDrops+st.AcceptOverflowResets != 2 || st.Accepted != 2 || st.AckMatched != 1 {
				t.Errorf("stats %+v", st)
			}
			if tt.keepsEntry {
				// The entry still retransmits, and once a consumer
				// makes room the client's next ACK gets in.
				if n, _ := l.Expire(at(time.Second), nil); n != 1 {
					t.Errorf("%d retransmissions of the acked entry, want 1", n)
				}
				l.Pop()
				if a := l.OnACK(tuple(1), 11, 1001, nil, at(2*time.Second)); a.Action != AckQueued {
					t.Errorf("ACK after a Pop: %+v", a)
				}
			}
			checkInvariants(t, l)
		})
	}
}

func TestSynDroppedWhileAcceptQueueFull(t *testing.T) {
	for _, policy := range []spec.CookiePolicy{spec.CookiesNever, spec.CookiesAuto, spec.CookiesAlways} {
		t.Run(string(policy), func(t *testing.T) {
			l := newTestListener(t, func(c *Config) { c.Backlog, c.Cookies = 1, policy })
			var isn isnCounter
			if d := l.OnSYN(syn(5, 1), at(0), isn.get); d.Action == SynDrop {
				t.Fatalf("SYN before the accept queue fills: %+v", d)
			}
			l.Accept(cookieConn(1), at(0))
			want := SynDecision{Action: SynDrop, Reason: ReasonAcceptQueueFull}
			for i := range 3 {
				if d := l.OnSYN(syn(10+i, 1), at(0), isn.get); d != want {
					t.Errorf("SYN %d: %+v, want %+v", i, d, want)
				}
			}
			// Even a retransmission of a queued SYN gets no answer.
			if d := l.OnSYN(syn(5, 1), at(time.Second), isn.get); d != want {
				t.Errorf("duplicate SYN: %+v, want %+v", d, want)
			}
			if st := l.Stats(); st.SynDropsAcceptFull != 4 {
				t.Errorf("stats %+v", st)
			}
			l.Pop()
			if d := l.OnSYN(syn(20, 1), at(2*time.Second), isn.get); d.Action == SynDrop {
				t.Errorf("SYN after a Pop: %+v", d)
			}
		})
	}
}

func TestWait(t *testing.T) {
	l := newTestListener(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a cancelled context: %v", err)
	}

	// Two consumers block; three connections arrive; all are delivered in
	// order between them.
	got := make(chan Conn, 3)
	done := make(chan error, 2)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		go func() {
			for {
				c, err := l.Wait(ctx)
				if err != nil {
					done <- err
					return
				}
				got <- c
			}
		}()
	}
	for i := range 3 {
		l.Accept(cookieConn(i), at(0))
	}
	seen := map[int]bool{}
	for range 3 {
		c := <-got
		seen[int(c.ClientISN)] = true
	}
	if len(seen) != 3 {
		t.Errorf("delivered %v, want conns 0..2", seen)
	}
	cancel()
	for range 2 {
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Wait after cancel: %v", err)
		}
	}
}

func TestReadySignal(t *testing.T) {
	l := newTestListener(t, nil)
	select {
	case <-l.Ready():
		t.Fatal("Ready before anything was queued")
	default:
	}
	l.Accept(cookieConn(1), at(0))
	l.Accept(cookieConn(2), at(0))
	select {
	case <-l.Ready():
	default:
		t.Fatal("no Ready signal after Accept")
	}
	// One signal stood for two conns; popping one re-arms it for the other.
	l.Pop()
	select {
	case <-l.Ready():
	default:
		t.Fatal("no Ready signal with a conn still queued")
	}
}
