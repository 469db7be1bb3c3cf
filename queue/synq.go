package queue

import (
	"encoding/binary"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syngate/syngate/flow"
)

// The half-open queue: per shard, a fixed array of entries with a free list,
// an open-addressing index (linear probing, backward-shift deletion, so no
// tombstones and no rehashing ever) and a timer wheel of intrusive lists with
// one-second slots. Everything is sized in NewListener.

const (
	// wheelSlots covers MaxRTO plus rounding in one lap, so an entry is
	// never parked in a slot that comes round before its deadline second.
	wheelSlots = 128
	wheelMask  = wheelSlots - 1
	nilIdx     = int32(-1)
	// noTime marks an unset monotonic timestamp.
	noTime = int64(math.MinInt64)
)

// key is a tuple without pointers (netip.Addr holds one for its zone), so
// the entry array is never scanned by the GC however large it is. Zones are
// dropped: a SYN never carries one.
type key struct {
	c0, c1, s0, s1 uint64 // client and service addresses, 16-byte form
	ports          uint64 // client port<<16 | service port, flags above
}

const (
	keyClient4  = 1 << 32 // the client address is IPv4
	keyService4 = 1 << 33
)

func makeKey(t flow.Tuple) key {
	c, s := t.Client.Addr(), t.Service.Addr()
	ca, sa := c.As16(), s.As16()
	k := key{
		c0:    binary.BigEndian.Uint64(ca[:8]),
		c1:    binary.BigEndian.Uint64(ca[8:]),
		s0:    binary.BigEndian.Uint64(sa[:8]),
		s1:    binary.BigEndian.Uint64(sa[8:]),
		ports: uint64(t.Client.Port())<<16 | uint64(t.Service.Port()),
	}
	if c.Is4() {
		k.ports |= keyClient4
	}
	if s.Is4() {
		k.ports |= keyService4
	}
	return k
}

func (k *key) tuple() flow.Tuple {
	return flow.Tuple{
		Client:  netip.AddrPortFrom(addrOf(k.c0, k.c1, k.ports&keyClient4 != 0), uint16(k.ports>>16)),
		Service: netip.AddrPortFrom(addrOf(k.s0, k.s1, k.ports&keyService4 != 0), uint16(k.ports)),
	}
}

func addrOf(hi, lo uint64, is4 bool) netip.Addr {
	if is4 {
		return netip.AddrFrom4([4]byte{byte(lo >> 24), byte(lo >> 16), byte(lo >> 8), byte(lo)})
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	return netip.AddrFrom16(b)
}

// entry is one half-open connection. It holds no pointers, and the fields a
// lookup reads come first.
type entry struct {
	key        key
	hash       uint64
	firstSeen  int64 // SYN arrival, ns on the listener clock
	deadline   int64 // next timer expiry, ns on the listener clock
	lastResend int64 // last SYN-ACK resent for a retransmitted SYN, or noTime
	opts       flow.SynOptions
	clientISN  uint32
	ourISN     uint32
	next, prev int32 // timer wheel list; next doubles as the free list link
	slot       int32 // wheel slot the entry is linked into
	mss        uint16
	attempts   uint8 // timer retransmissions so far
}

// counters are a shard's share of Stats; keeping them per shard keeps
// receive queues on different shards off each other's cache lines.
type counters struct {
	synReceived        atomic.Uint64
	synQueued          atomic.Uint64
	synReplaced        atomic.Uint64
	synResent          atomic.Uint64
	synResendLimited   atomic.Uint64
	cookiesSent        atomic.Uint64
	cookiesOverflow    atomic.Uint64
	synQueueFullDrops  atomic.Uint64
	synAcceptFullDrops atomic.Uint64
	retransmits        atomic.Uint64
	timeouts           atomic.Uint64
	ackMatched         atomic.Uint64
	ackUnmatched       atomic.Uint64
	ackCookieDenied    atomic.Uint64
	ackPeerChecks      atomic.Uint64
	ackBadAck          atomic.Uint64
	ackBadSeq          atomic.Uint64
}

type shard struct {
	mu      sync.Mutex
	entries []entry
	// index holds, per position, the low 32 bits of the hash (the tag, of
	// which the low bits are also the home position) above entry index + 1;
	// zero is empty. A lookup miss never touches the entries.
	index  []uint64
	mask   uint64
	free   int32 // head of the free list
	cursor int64 // wheel slots up to this second need no rescan
	wheel  [wheelSlots]int32
	stats  counters
	_      [64]byte // keep neighbouring shards' locks apart
}

func (s *shard) init(capacity int) {
	s.entries = make([]entry, capacity)
	size := 2
	for size < 2*capacity {
		size *= 2
	}
	s.index = make([]uint64, size)
	s.mask = uint64(size - 1)
	for i := range s.entries {
		s.entries[i].next = int32(i + 1)
	}
	s.free = nilIdx
	if capacity > 0 {
		s.entries[capacity-1].next = nilIdx
		s.free = 0
	}
	for i := range s.wheel {
		s.wheel[i] = nilIdx
	}
	s.cursor = -1
}

// lookup finds k. It returns the index position holding it and its entry
// index, or, when absent, the empty position where it would go and nilIdx.
func (s *shard) lookup(h uint64, k *key) (uint64, int32) {
	tag := h & 0xffffffff
	pos := h & s.mask
	for {
		v := s.index[pos]
		if v == 0 {
			return pos, nilIdx
		}
		if v>>32 == tag {
			if i := int32(uint32(v)) - 1; s.entries[i].key == *k {
				return pos, i
			}
		}
		pos = (pos + 1) & s.mask
	}
}

// alloc takes an entry off the free list and indexes it at pos, which must
// come from a lookup of the same key under the same lock.
func (s *shard) alloc(pos uint64, h uint64, k *key) int32 {
	i := s.free
	if i == nilIdx {
		return nilIdx
	}
	e := &s.entries[i]
	s.free = e.next
	e.key, e.hash = *k, h
	s.index[pos] = h<<32 | uint64(i+1)
	return i
}

// remove unindexes entry i (found at pos), stops its timer and frees it.
func (s *shard) remove(pos uint64, i int32) {
	s.unlink(i)
	// Backward-shift deletion: pull later members of the probe run into
	// the hole unless their home position lies cyclically in (hole, j].
	hole := pos
	s.index[hole] = 0
	for j := (hole + 1) & s.mask; s.index[j] != 0; j = (j + 1) & s.mask {
		home := s.index[j] >> 32 & s.mask
		if (j-home)&s.mask < (j-hole)&s.mask {
			continue // home is between the hole and j: it must stay
		}
		s.index[hole] = s.index[j]
		s.index[j] = 0
		hole = j
	}
	s.entries[i] = entry{next: s.free, prev: nilIdx, slot: nilIdx}
	s.free = i
}

// schedule links entry i into the wheel for its deadline. An entry due in
// a second the wheel already scanned goes into the next slot to be scanned.
func (s *shard) schedule(i int32) {
	e := &s.entries[i]
	sec := max(e.deadline/int64(time.Second), s.cursor+1)
	slot := int32(sec & wheelMask)
	e.slot, e.prev, e.next = slot, nilIdx, s.wheel[slot]
	if e.next != nilIdx {
		s.entries[e.next].prev = i
	}
	s.wheel[slot] = i
}

func (s *shard) unlink(i int32) {
	e := &s.entries[i]
	if e.slot == nilIdx {
		return
	}
	if e.prev != nilIdx {
		s.entries[e.prev].next = e.next
	} else {
		s.wheel[e.slot] = e.next
	}
	if e.next != nilIdx {
		s.entries[e.next].prev = e.prev
	}
	e.slot, e.prev, e.next = nilIdx, nilIdx, nilIdx
}

// expire fires the timers due at now, appending one Timeout per fired
// entry to out, and reports how many entries it removed.
func (s *shard) expire(now int64, retries int, out []Timeout) ([]Timeout, int) {
	nowSec := now / int64(time.Second)
	from := max(s.cursor+1, nowSec-wheelSlots+1)
	removed := 0
	for sec := from; sec <= nowSec; sec++ {
		for i := s.wheel[sec&wheelMask]; i != nilIdx; {
			e := &s.entries[i]
			next := e.next
			if e.deadline > now {
				// Due later this second, or a lap ahead.
				i = next
				continue
			}
			ev := Timeout{
				Tuple:     e.key.tuple(),
				ClientISN: e.clientISN,
				OurISN:    e.ourISN,
				Options:   e.opts,
				MSS:       e.mss,
				Attempt:   int(e.attempts),
			}
			if int(e.attempts) >= retries {
				ev.Dropped = true
				pos, _ := s.lookup(e.hash, &e.key)
				s.remove(pos, i)
				removed++
			} else {
				e.attempts++
				ev.Attempt = int(e.attempts)
				s.unlink(i)
				e.deadline = now + int64(rto(int(e.attempts)))
				// Due after now: if a later slot of this scan holds it,
				// it is skipped there.
				s.schedule(i)
			}
			out = append(out, ev)
			i = next
		}
	}
	// The current second may still hold entries due later in it, so the
	// next call scans it again.
	s.cursor = nowSec - 1
	return out, removed
}

// rto is the timeout after the n-th retransmission: 1 s doubled n times,
// capped at MaxRTO.
func rto(n int) time.Duration {
	if n >= 7 { // 1<<7 s > MaxRTO
		return MaxRTO
	}
	return min(InitialRTO<<n, MaxRTO)
}

// hashKey keys the tuple hash with per-listener random words, so a client
// cannot aim many tuples at one shard or one probe run.
type hashKey [4]uint64

func newHashKey() hashKey {
	return hashKey{rand.Uint64(), rand.Uint64(), rand.Uint64(), rand.Uint64() | 1}
}

// mix folds a 128-bit product; with a secret in each operand this is the
// multiply-mix used by wyhash-style hashes.
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

func (hk *hashKey) sum(k *key) uint64 {
	h := mix(k.c0^hk[0], k.c1^hk[1])
	h = mix(h^k.s0^hk[2], k.s1^hk[3])
	return mix(h^k.ports^hk[1], hk[3])
}
