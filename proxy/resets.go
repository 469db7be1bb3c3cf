package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/syngate/syngate/flow"
)

// Bounds of the record of connections the engine reset. A late segment
// is one in flight when the RST left, or a retransmission when the RST was
// lost (the client's RTO starts at 200 ms and doubles): 30 s covers its
// first seven. Entries are ~100 bytes; past the bound the oldest go first,
// which only shortens how long a reset is remembered under a burst of
// refusals.
const (
	recentResetTTL = 30 * time.Second
	recentResetMax = 8192
)

// recentResets remembers the connections the engine reset before they
// were spliced (a backend leg that failed, a full connection table, an
// accept queue overflow under on_overflow: reset), by 4-tuple and the ISN
// of our SYN-ACK, as a TCP stack
// remembers a connection it closed: a late segment of it (the client's
// first data, sent before our RST arrived) carries the handshake's ACK,
// whose ISN is a cookie, and must not validate as a new handshake and open
// another backend leg for a connection the client no longer has. Such a
// segment gets a RST. A new connection on the same 4-tuple has a new ISN
// and is not affected.
type recentResets struct {
	n  atomic.Int32 // entries: the ACK path skips the lock while it is 0
	mu sync.Mutex
	by map[flow.Tuple]resetRecord
	// fifo holds the tuples in the order they were reset, oldest at
	// head; a tuple reset again is found by its newer time.
	fifo []resetRecord
	head int
}

type resetRecord struct {
	tuple  flow.Tuple
	ourISN uint32
	at     time.Time
}

// add records that the connection t, whose SYN-ACK had ISN ourISN, was
// reset at now.
func (r *recentResets) add(t flow.Tuple, ourISN uint32, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.by == nil {
		r.by = make(map[flow.Tuple]resetRecord)
	}
	r.expireLocked(now)
	if len(r.fifo)-r.head >= recentResetMax {
		r.popLocked()
	}
	rec := resetRecord{tuple: t, ourISN: ourISN, at: now}
	r.by[t] = rec
	r.fifo = append(r.fifo, rec)
	r.n.Store(int32(len(r.by)))
}

// match reports whether a segment of t acknowledging ack belongs to a
// connection reset within recentResetTTL of now.
func (r *recentResets) match(t flow.Tuple, ack uint32, now time.Time) bool {
	if r.n.Load() == 0 {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.by[t]
	return ok && rec.ourISN+1 == ack && now.Sub(rec.at) < recentResetTTL
}

// expireLocked drops the records older than recentResetTTL. r.mu is held.
func (r *recentResets) expireLocked(now time.Time) {
	for r.head < len(r.fifo) && now.Sub(r.fifo[r.head].at) >= recentResetTTL {
		r.popLocked()
	}
}

// popLocked drops the oldest record, and compacts the queue once half of
// it is spent. r.mu is held.
func (r *recentResets) popLocked() {
	old := r.fifo[r.head]
	r.fifo[r.head] = resetRecord{}
	r.head++
	if cur, ok := r.by[old.tuple]; ok && cur.at.Equal(old.at) && cur.ourISN == old.ourISN {
		delete(r.by, old.tuple)
	}
	if r.head > len(r.fifo)/2 {
		r.fifo = append(r.fifo[:0], r.fifo[r.head:]...)
		r.head = 0
	}
	r.n.Store(int32(len(r.by)))
}
