package queue

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrent runs receive loops, a cookie path, a consumer and the
// timer loop at once (meant for -race), then checks that every event was
// counted exactly once and that the structures are intact.
func TestConcurrent(t *testing.T) {
	const (
		receivers = 4
		tuples    = 300 // per receiver
	)
	iters := 6000
	if testing.Short() {
		iters = 1500
	}
	l := newTestListener(t, func(c *Config) {
		c.MaxSynBacklog, c.Shards, c.Backlog, c.SynAckRetries = 512, 4, 128, 2
		c.ResendInterval = 50 * time.Millisecond
	})
	var clock, rounds, checkpoints atomic.Int64
	now := func() time.Time { return at(time.Duration(clock.Load())) }

	var syns, acks, cookieDrops, popped atomic.Uint64
	var wg sync.WaitGroup
	for g := range receivers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 99))
			isnSeq := uint32(g) << 24
			newISN := func() uint32 { isnSeq++; return isnSeq }
			ours := map[int]uint32{} // our ISN last queued per tuple
			for i := range iters {
				if i%64 == 0 {
					// Keep in step with the timer loop, so timers
					// fire during the run on any scheduler.
					checkpoints.Add(1)
					for rounds.Load() < int64(i/64) {
						runtime.Gosched()
					}
				}
				k := g*tuples + r.IntN(tuples)
				clientISN := uint32(k)
				if r.IntN(8) == 0 {
					clientISN++ // a new ISN now and then: replacements
				}
				if i%4 == 0 {
					// A second consumer, so the accept queue moves
					// however the scheduler treats the Wait loop.
					if _, ok := l.Pop(); ok {
						popped.Add(1)
					}
				}
				d := l.OnSYN(syn(k, clientISN), now(), newISN)
				syns.Add(1)
				switch d.Action {
				case SynQueued:
					ours[k] = d.OurISN
				case SynResend:
					if d.OurISN != ours[k] {
						t.Errorf("tuple %d resent ISN %d, queued %d", k, d.OurISN, ours[k])
						return
					}
				}
				if d.Action == SynQueued || d.Action == SynResend {
					switch r.IntN(4) {
					case 0:
						l.OnACK(tuple(k), clientISN+1, d.OurISN+1, nil, now())
						acks.Add(1)
					case 1:
						l.OnACK(tuple(k), clientISN+1, d.OurISN+7, nil, now())
						acks.Add(1)
					}
				}
				if r.IntN(10) == 0 {
					l.OnACK(tuple(1_000_000+i), 1, 1, nil, now())
					acks.Add(1)
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // cookie path
		defer wg.Done()
		for i := range iters / 4 {
			if l.Accept(cookieConn(2_000_000+i), now()) == AcceptDropped {
				cookieDrops.Add(1)
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	consumed := make(chan struct{})
	go func() { // backend worker
		defer close(consumed)
		for {
			if _, err := l.Wait(ctx); err != nil {
				return
			}
			popped.Add(1)
		}
	}()
	stop := make(chan struct{})
	expired := make(chan struct{})
	go func() { // timer loop
		defer close(expired)
		for r := int64(1); ; r++ {
			// Round r runs once every receiver passed checkpoint r-1.
			for checkpoints.Load() < r*receivers {
				select {
				case <-stop:
					return
				default:
					runtime.Gosched()
				}
			}
			clock.Add(int64(200 * time.Millisecond))
			l.Expire(now(), func(Timeout) {})
			_ = l.Stats()
			rounds.Store(r)
		}
	}()
	wg.Wait()
	close(stop)
	<-expired
	cancel()
	<-consumed

	st := l.Stats()
	t.Logf("%+v", st)
	if got := st.SynQueued + st.SynResent + st.SynResendLimited + st.CookiesSent + st.SynDropsQueueFull + st.SynDropsAcceptFull; st.SynReceived != syns.Load() || got != st.SynReceived {
		t.Errorf("%d SYNs sent, %d received, %d outcomes: %+v", syns.Load(), st.SynReceived, got, st)
	}
	if got := st.AckMatched + st.AckUnmatched + st.AckBadAck + st.AckBadSeq; got != acks.Load() {
		t.Errorf("%d ACKs sent, %d outcomes: %+v", acks.Load(), got, st)
	}
	if popped.Load()+uint64(l.AcceptQueueLen()) != st.Accepted {
		t.Errorf("%d popped + %d queued != %d accepted", popped.Load(), l.AcceptQueueLen(), st.Accepted)
	}
	ackOverflows := st.AcceptOverflowDrops - cookieDrops.Load()
	removedByAck := st.AckMatched - ackOverflows
	if want := st.SynQueued - st.SynReplaced - removedByAck - st.Timeouts; uint64(l.SynQueueLen()) != want {
		t.Errorf("%d half-open entries, counters say %d: %+v", l.SynQueueLen(), want, st)
	}
	if st.AckMatched == 0 || st.Timeouts == 0 || st.SynReplaced == 0 || st.SynResent == 0 || st.AckBadAck == 0 {
		t.Errorf("the run missed a path: %+v", st)
	}
	checkInvariants(t, l)
}
