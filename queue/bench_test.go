package queue

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

var benchQueue = 1 << 16

var benchTuples = func() []flow.Tuple {
	ts := make([]flow.Tuple, 4*benchQueue)
	for i := range ts {
		ts[i] = tuple(i)
	}
	return ts
}()

func benchListener(b *testing.B, mut func(*Config)) *Listener {
	b.Helper()
	c := Config{
		Limits:  spec.Limits{MaxSynBacklog: benchQueue, SynAckRetries: 5, Backlog: benchQueue, Somaxconn: benchQueue},
		Cookies: spec.CookiesAuto, Overflow: spec.OverflowDrop,
	}
	if mut != nil {
		c = testConfig(nil)
		c.MaxSynBacklog, c.Backlog, c.Somaxconn = benchQueue, benchQueue, benchQueue
		mut(&c)
	}
	l, err := NewListener(c)
	if err != nil {
		b.Fatal(err)
	}
	return l
}

func benchISN() uint32 { return 12345 }

// reset empties l in place, so benchmarks can refill it without the
// allocations and GC of a new listener.
func reset(l *Listener) {
	for i := range l.shards {
		s := &l.shards[i]
		clear(s.index)
		for j := range s.entries {
			s.entries[j] = entry{next: int32(j + 1)}
		}
		s.free = nilIdx
		if len(s.entries) > 0 {
			s.entries[len(s.entries)-1].next = nilIdx
			s.free = 0
		}
		for j := range s.wheel {
			s.wheel[j] = nilIdx
		}
	}
	l.synLen.Store(0)
	for {
		if _, ok := l.Pop(); !ok {
			break
		}
	}
}

// BenchmarkOnSYN measures queueing a new half-open entry.
func BenchmarkOnSYN(b *testing.B) {
	b.ReportAllocs()
	l := benchListener(b, nil)
	b.ResetTimer()
	for i := range b.N {
		if i%benchQueue == 0 && i > 0 {
			b.StopTimer()
			reset(l)
			b.StartTimer()
		}
		d := l.OnSYN(SYN{Tuple: benchTuples[i%benchQueue], ISN: uint32(i), Options: testOpts, MSS: 1460}, at(time.Duration(i)), benchISN)
		if d.Action != SynQueued {
			b.Fatalf("SYN %d: %+v", i, d)
		}
	}
}

// BenchmarkOnSYNFlood measures a SYN into a full queue under spec.CookiesAuto:
// the lookup miss and the cookie decision, the path a flood takes.
func BenchmarkOnSYNFlood(b *testing.B) {
	b.ReportAllocs()
	l := fullListener(b)
	b.ResetTimer()
	for i := range b.N {
		d := l.OnSYN(SYN{Tuple: benchTuples[benchQueue+i%(3*benchQueue)], ISN: uint32(i)}, at(time.Duration(i)), benchISN)
		if d.Action != SynCookie {
			b.Fatalf("SYN %d: %+v", i, d)
		}
	}
}

// BenchmarkOnACK measures matching a handshake ACK, removing its entry
// and queueing the connection.
func BenchmarkOnACK(b *testing.B) {
	b.ReportAllocs()
	l := benchListener(b, nil)
	b.ResetTimer()
	for i := range b.N {
		k := i % benchQueue
		if k == 0 {
			b.StopTimer()
			reset(l)
			for j := range benchQueue {
				l.OnSYN(SYN{Tuple: benchTuples[j], ISN: uint32(j)}, at(0), benchISN)
			}
			b.StartTimer()
		}
		a := l.OnACK(benchTuples[k], uint32(k)+1, 12346, nil, at(time.Second/2))
		if a.Action != AckQueued {
			b.Fatalf("ACK %d: %+v", i, a)
		}
	}
}

// BenchmarkOnACKUnmatched measures a stray ACK: lookup miss and gate.
func BenchmarkOnACKUnmatched(b *testing.B) {
	b.ReportAllocs()
	l := fullListener(b)
	b.ResetTimer()
	for i := range b.N {
		l.OnACK(benchTuples[benchQueue+i%(3*benchQueue)], 1, 1, nil, at(time.Second))
	}
}

// BenchmarkExpire measures one Expire over a full queue of 65536 entries
// that are all due: every entry is retransmitted.
func BenchmarkExpire(b *testing.B) {
	b.ReportAllocs()
	l := benchListener(b, func(c *Config) { c.SynAckRetries = 255; c.Shards = 64 })
	var now time.Duration
	fired := 0
	fn := func(Timeout) { fired++ }
	b.ResetTimer()
	for i := range b.N {
		if i%200 == 0 { // entries give up after 255 retransmissions
			b.StopTimer()
			reset(l)
			now += time.Hour
			for j := range benchQueue {
				l.OnSYN(SYN{Tuple: benchTuples[j], ISN: 1}, at(now+time.Duration(j)*time.Microsecond), benchISN)
			}
			b.StartTimer()
		}
		now += MaxRTO + time.Second
		if n, _ := l.Expire(at(now), fn); n != benchQueue {
			b.Fatalf("Expire %d: %d retransmissions", i, n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(fired), "ns/entry")
}

// BenchmarkExpireIdle measures the usual Expire call: a full queue whose
// entries are spread over the wheel, called every 100 ms.
func BenchmarkExpireIdle(b *testing.B) {
	b.ReportAllocs()
	l := benchListener(b, func(c *Config) { c.SynAckRetries = 255; c.Shards = 64 })
	// 65536 SYNs over 100 s, then the loop runs in a quiet stretch.
	for j := range benchQueue {
		l.OnSYN(SYN{Tuple: benchTuples[j], ISN: 1}, at(time.Duration(j)*100*time.Second/time.Duration(benchQueue)), benchISN)
	}
	now := 100 * time.Second
	l.Expire(at(now), nil)
	b.ResetTimer()
	for range b.N {
		now += 100 * time.Millisecond
		l.Expire(at(now), nil)
	}
}

// BenchmarkOnSYNParallel measures receive queues queueing SYNs at once;
// each goroutine works on its own clients, as RSS would spread them.
func BenchmarkOnSYNParallel(b *testing.B) {
	b.ReportAllocs()
	l := benchListener(b, func(c *Config) { c.MaxSynBacklog = 4 * benchQueue; c.ResendInterval = -1 })
	var ids atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		base := int(ids.Add(1)-1) % 4 * benchQueue
		i := 0
		for pb.Next() {
			// New entries on the first lap, new-ISN replacements after.
			d := l.OnSYN(SYN{Tuple: benchTuples[base+i%benchQueue], ISN: uint32(i / benchQueue)}, at(time.Duration(i)), benchISN)
			if d.Action != SynQueued {
				b.Errorf("SYN %d: %+v", i, d)
				return
			}
			i++
		}
	})
}

// BenchmarkOnSYNFloodParallel is BenchmarkOnSYNFlood from every core.
func BenchmarkOnSYNFloodParallel(b *testing.B) {
	b.ReportAllocs()
	l := fullListener(b)
	var ids atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(ids.Add(1)) * 7919
		for pb.Next() {
			l.OnSYN(SYN{Tuple: benchTuples[benchQueue+i%(3*benchQueue)], ISN: uint32(i)}, at(time.Duration(i)), benchISN)
			i++
		}
	})
}

// BenchmarkHandshakeParallel measures a whole handshake per op from every
// core: SYN, matching ACK, and a consumer's Pop.
func BenchmarkHandshakeParallel(b *testing.B) {
	b.ReportAllocs()
	l := benchListener(b, func(c *Config) { c.MaxSynBacklog = 4 * benchQueue })
	var ids atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		base := int(ids.Add(1)-1) % 4 * benchQueue
		i := 0
		for pb.Next() {
			t := benchTuples[base+i%benchQueue]
			d := l.OnSYN(SYN{Tuple: t, ISN: uint32(i)}, at(time.Duration(i)), benchISN)
			if a := l.OnACK(t, uint32(i)+1, d.OurISN+1, nil, at(time.Duration(i))); a.Action != AckQueued {
				b.Errorf("handshake %d: %+v then %+v", i, d, a)
				return
			}
			l.Pop()
			i++
		}
	})
}

// fullListener is a spec.CookiesAuto listener whose SYN queue is full.
func fullListener(b *testing.B) *Listener {
	l := benchListener(b, nil)
	for i := range benchQueue {
		l.OnSYN(SYN{Tuple: benchTuples[i], ISN: 1}, at(0), benchISN)
	}
	return l
}
