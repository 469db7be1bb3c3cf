package queue

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

// TestShardIndexCollisions drives one shard's index with hashes chosen to
// collide and wrap around the table, against a map as the model, so that
// backward-shift deletion is exercised on long runs.
func TestShardIndexCollisions(t *testing.T) {
	var s shard
	s.init(24) // index of 64 positions
	r := rand.New(rand.NewPCG(1, 2))
	model := map[flow.Tuple]int32{}
	hashOf := func(k int) uint64 {
		// Homes 61..63 and 0..1: runs wrap past the end of the table.
		return uint64(61+k%5) & s.mask
	}
	for step := range 20000 {
		k := r.IntN(40)
		tp := tuple(k)
		key := makeKey(tp)
		h := hashOf(k)
		pos, i := s.lookup(h, &key)
		want, inModel := model[tp]
		if (i != nilIdx) != inModel || (inModel && i != want) {
			t.Fatalf("step %d: lookup(%d) = %d, model %d %v", step, k, i, want, inModel)
		}
		switch {
		case inModel:
			s.remove(pos, i)
			delete(model, tp)
		case len(model) < len(s.entries):
			i = s.alloc(pos, h, &key)
			s.entries[i].deadline = int64(step)
			s.schedule(i)
			model[tp] = i
		}
	}
	for tp, i := range model {
		key := makeKey(tp)
		if _, j := s.lookup(hashOf(int(tp.Client.Addr().As4()[3])), &key); j != i {
			t.Errorf("%v: found %d, want %d", tp, j, i)
		}
	}
}

// TestFloodBounded sends 100k distinct SYNs at a small queue: it fills up
// to MaxSynBacklog exactly and stays there, whatever the shard count.
func TestFloodBounded(t *testing.T) {
	for _, tt := range []struct {
		backlog, shards int
		policy          spec.CookiePolicy
	}{
		{1024, 0, spec.CookiesAuto},  // 4 shards
		{1024, 1, spec.CookiesNever}, // one exact shard
		{1000, 16, spec.CookiesAuto}, // uneven split
	} {
		l := newTestListener(t, func(c *Config) {
			c.MaxSynBacklog, c.Shards, c.Cookies = tt.backlog, tt.shards, tt.policy
		})
		var isn isnCounter
		for i := range 100_000 {
			d := l.OnSYN(syn(i, uint32(i)), at(time.Duration(i)*time.Microsecond), isn.get)
			// One shard may fill a little early (documented), so the
			// first SYNs must all queue only with a single shard.
			if tt.shards == 1 && i < tt.backlog && d.Action != SynQueued {
				t.Fatalf("backlog %d shards %d: SYN %d not queued: %+v", tt.backlog, tt.shards, i, d)
			}
		}
		st := l.Stats()
		if l.SynQueueLen() != tt.backlog || st.SynQueued != uint64(tt.backlog) || int(isn.calls) != tt.backlog {
			t.Errorf("backlog %d shards %d: %d entries, %d queued, %d ISNs", tt.backlog, tt.shards, l.SynQueueLen(), st.SynQueued, isn.calls)
		}
		if over := st.CookiesOverflow + st.SynDropsQueueFull; over != uint64(100_000-tt.backlog) {
			t.Errorf("backlog %d shards %d: %d overflows", tt.backlog, tt.shards, over)
		}
		checkInvariants(t, l)
	}
}

// TestNoAllocs checks that the per-packet paths allocate nothing once the
// listener exists, including under churn: new SYNs into a full queue,
// handshakes completing, timers firing and entries timing out.
func TestNoAllocs(t *testing.T) {
	l := newTestListener(t, func(c *Config) {
		c.MaxSynBacklog, c.Backlog, c.Somaxconn, c.SynAckRetries = 512, 64, 64, 1
	})
	newISN := func() uint32 { return 1 }
	now := time.Duration(0)
	next := 0
	round := func() {
		now += 700 * time.Millisecond
		first := next
		for range 1000 {
			l.OnSYN(syn(next, uint32(next)), at(now), newISN)
			next++
			l.OnACK(tuple(next+1_000_000), 1, 1, nil, at(now))
		}
		for i := first; i < first+200; i++ {
			l.OnACK(tuple(i), uint32(i)+1, 2, nil, at(now))
		}
		for {
			if _, ok := l.Pop(); !ok {
				break
			}
		}
		l.Accept(cookieConn(next), at(now))
		l.Expire(at(now), func(Timeout) {})
		_ = l.Stats()
	}
	for range 10 {
		round() // warm up: fill the queues
	}
	if a := testing.AllocsPerRun(50, round); a != 0 {
		t.Errorf("%v allocations per round of 1000 SYNs, want 0", a)
	}
	st := l.Stats()
	if st.Timeouts == 0 || st.Retransmits == 0 || st.Accepted == 0 || st.CookiesOverflow == 0 || st.AcceptOverflowDrops == 0 {
		t.Errorf("the rounds did not exercise every path: %+v", st)
	}
	if l.SynQueueLen() > 512 {
		t.Errorf("%d entries, want at most 512", l.SynQueueLen())
	}
	checkInvariants(t, l)
}

func TestKeyRoundTrip(t *testing.T) {
	for _, s := range [][2]string{
		{"10.0.0.1:1234", "192.0.2.1:443"},
		{"[2001:db8::1]:65535", "[2001:db8::2]:80"},
		{"[::ffff:10.0.0.1]:1", "192.0.2.1:0"}, // 4in6 stays distinct from 4
		{"0.0.0.0:0", "[::]:0"},
	} {
		tp := flow.Tuple{Client: netip.MustParseAddrPort(s[0]), Service: netip.MustParseAddrPort(s[1])}
		k := makeKey(tp)
		if got := k.tuple(); got != tp {
			t.Errorf("%v: round trip gives %v", tp, got)
		}
	}
	a := makeKey(flow.Tuple{Client: netip.MustParseAddrPort("10.0.0.1:1"), Service: service})
	b := makeKey(flow.Tuple{Client: netip.MustParseAddrPort("[::ffff:10.0.0.1]:1"), Service: service})
	if a == b {
		t.Error("IPv4 and IPv4-mapped IPv6 clients share a key")
	}
}
