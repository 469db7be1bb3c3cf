package queue

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"
)

// Conn is a validated handshake waiting for its backend leg.
type Conn struct {
	Tuple     flow.Tuple
	ClientISN uint32          // the client's ISN; its first data byte is ClientISN+1
	OurISN    uint32          // the ISN of the SYN-ACK the client acknowledged
	Options   flow.SynOptions // the client's SYN options, to replay to the backend
	MSS       uint16          // the MSS our SYN-ACK announced
	// FirstSeen is when the SYN arrived (queued handshakes) or when the ACK
	// arrived (cookies, unless the caller knows better).
	FirstSeen time.Time
	// Cookie is set by the caller for connections validated from a cookie.
	Cookie bool
	// Data is whatever the client sent with its ACK. The listener only
	// carries the slice: the caller must not reuse its backing array.
	Data []byte
}

// AcceptResult is the outcome of putting a connection on the accept queue.
type AcceptResult int

const (
	// AcceptQueued: the connection is queued for a consumer.
	AcceptQueued AcceptResult = iota
	// AcceptDropped: the queue is full and the policy is spec.OverflowDrop;
	// ignore the segment and let the client retry.
	AcceptDropped
	// AcceptReset: the queue is full and the policy is spec.OverflowReset; send
	// the client a RST.
	AcceptReset
)

var acceptResultNames = [...]string{AcceptQueued: "queued", AcceptDropped: "dropped", AcceptReset: "reset"}

// String names the result for logs.
func (r AcceptResult) String() string { return name(acceptResultNames[:], int(r), "AcceptResult") }

// acceptQueue is a fixed ring of Conns. It has one lock: it is a single FIFO
// by nature, and each operation holds the lock for a copy.
type acceptQueue struct {
	mu       sync.Mutex
	buf      []Conn
	head     int
	n        int
	overflow spec.OverflowPolicy
	len      atomic.Int64
	ready    chan struct{}

	accepted       atomic.Uint64
	overflowDrops  atomic.Uint64
	overflowResets atomic.Uint64
}

func (q *acceptQueue) init(capacity int, p spec.OverflowPolicy) {
	q.buf = make([]Conn, capacity)
	q.overflow = p
	q.ready = make(chan struct{}, 1)
}

// full is a lock-free hint for OnSYN; push decides for real.
func (q *acceptQueue) full() bool { return q.len.Load() >= int64(len(q.buf)) }

func (q *acceptQueue) push(c *Conn) AcceptResult {
	q.mu.Lock()
	if q.n == len(q.buf) {
		q.mu.Unlock()
		if q.overflow == spec.OverflowReset {
			q.overflowResets.Add(1)
			return AcceptReset
		}
		q.overflowDrops.Add(1)
		return AcceptDropped
	}
	tail := q.head + q.n
	if tail >= len(q.buf) {
		tail -= len(q.buf)
	}
	q.buf[tail] = *c
	q.n++
	q.len.Store(int64(q.n))
	q.mu.Unlock()
	q.accepted.Add(1)
	q.signal()
	return AcceptQueued
}

func (q *acceptQueue) pop() (Conn, bool) {
	q.mu.Lock()
	if q.n == 0 {
		q.mu.Unlock()
		return Conn{}, false
	}
	c := q.buf[q.head]
	q.buf[q.head] = Conn{} // let the GC have Data once the consumer is done
	q.head++
	if q.head == len(q.buf) {
		q.head = 0
	}
	q.n--
	q.len.Store(int64(q.n))
	more := q.n > 0
	q.mu.Unlock()
	if more {
		// Pass the wake-up on, so that another waiting consumer runs.
		q.signal()
	}
	return c, true
}

func (q *acceptQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// Wait pops the oldest connection, blocking until there is one or ctx ends.
func (l *Listener) Wait(ctx context.Context) (Conn, error) {
	for {
		if c, ok := l.accept.pop(); ok {
			return c, nil
		}
		select {
		case <-l.accept.ready:
		case <-ctx.Done():
			return Conn{}, fmt.Errorf("wait for connection: %w", ctx.Err())
		}
	}
}
