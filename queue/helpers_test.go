package queue

import (
	"net/netip"
	"testing"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

// t0 is an arbitrary wall time without a monotonic reading; the tests
// drive the clock from it.
var t0 = time.Unix(1_700_000_000, 0)

func at(d time.Duration) time.Time { return t0.Add(d) }

var service = netip.MustParseAddrPort("192.0.2.1:443")

// tuple returns the i-th distinct client of service.
func tuple(i int) flow.Tuple {
	a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	return flow.Tuple{Client: netip.AddrPortFrom(a, uint16(1024+i%50000)), Service: service}
}

var testOpts = flow.SynOptions{MSS: 1460, WScale: 7, SACK: true, Timestamps: true, TSval: 12345}

func syn(i int, isn uint32) SYN {
	return SYN{Tuple: tuple(i), ISN: isn, Options: testOpts, MSS: 1400}
}

// isnCounter hands out 1000, 1001, ... and counts calls.
type isnCounter struct{ next, calls uint32 }

func (c *isnCounter) get() uint32 {
	c.calls++
	c.next++
	return 1000 + c.next - 1
}

func testConfig(mut func(*Config)) Config {
	c := Config{
		Limits:   spec.Limits{MaxSynBacklog: 8, SynAckRetries: 5, Backlog: 4, Somaxconn: 128, PeerCookieChecks: spec.DefaultPeerCookieChecks},
		Cookies:  spec.CookiesAuto,
		Overflow: spec.OverflowDrop,
	}
	if mut != nil {
		mut(&c)
	}
	return c
}

func newTestListener(t testing.TB, mut func(*Config)) *Listener {
	t.Helper()
	l, err := NewListener(testConfig(mut))
	if err != nil {
		t.Fatalf("NewListener: %v", err)
	}
	return l
}

// checkInvariants walks every internal structure and checks that the
// index, the free lists, the timer wheels and the length agree.
func checkInvariants(t testing.TB, l *Listener) {
	t.Helper()
	total := 0
	for si := range l.shards {
		s := &l.shards[si]
		s.mu.Lock()
		indexed := 0
		for pos, v := range s.index {
			if v == 0 {
				continue
			}
			indexed++
			i := int32(uint32(v)) - 1
			e := &s.entries[i]
			if v>>32 != e.hash&0xffffffff || e.hash != l.key.sum(&e.key) {
				t.Errorf("shard %d: entry %d indexed with tag %#x, hash %#x", si, i, v>>32, e.hash)
			}
			if p, j := s.lookup(e.hash, &e.key); j != i || p != uint64(pos) {
				t.Errorf("shard %d: entry %d at %d found as %d at %d", si, i, pos, j, p)
			}
			if e.slot == nilIdx {
				t.Errorf("shard %d: live entry %d has no timer", si, i)
			}
		}
		free := 0
		for i := s.free; i != nilIdx; i = s.entries[i].next {
			free++
			if free > len(s.entries) {
				t.Fatalf("shard %d: free list loops", si)
			}
		}
		timed := 0
		for slot, head := range s.wheel {
			prev := nilIdx
			for i := head; i != nilIdx; i = s.entries[i].next {
				e := &s.entries[i]
				if e.prev != prev || e.slot != int32(slot) {
					t.Errorf("shard %d slot %d: entry %d links prev=%d slot=%d, want %d %d", si, slot, i, e.prev, e.slot, prev, slot)
				}
				prev = i
				timed++
				if timed > len(s.entries) {
					t.Fatalf("shard %d: wheel loops", si)
				}
			}
		}
		s.mu.Unlock()
		if indexed+free != len(s.entries) || timed != indexed {
			t.Errorf("shard %d: %d indexed, %d free, %d timed, %d entries", si, indexed, free, timed, len(s.entries))
		}
		total += indexed
	}
	if total != l.SynQueueLen() {
		t.Errorf("SynQueueLen %d, %d entries indexed", l.SynQueueLen(), total)
	}
}
