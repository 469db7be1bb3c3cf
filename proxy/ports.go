package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// ErrNoPorts is returned when every source port is in use or resting.
var ErrNoPorts = errors.New("no free source port")

// poolKey names a port pool: one source address toward one backend. A
// backend tells connections apart by the whole 4-tuple, so a port in use
// toward one backend is free toward every other one.
type poolKey struct {
	source  netip.Addr
	backend netip.AddrPort
}

// portPool hands out the source ports of the backend legs from one source
// address to one backend. Allocation and release are O(1) and the memory is
// fixed by the range size (8 bytes of state and 6 of queue per port).
//
// A freed port may be handed out again at once: the engine picks the next
// connection's ISN above the floor recorded at release (the highest
// sequence number the backend can have seen on the port) and its
// timestamps from a clock that only moves forward, so a backend still
// holding the old connection in TIME_WAIT accepts the new SYN (RFC 6191).
// A non-zero quiet time additionally rests a freed port before reuse.
type portPool struct {
	mu    sync.Mutex
	min   uint16
	size  int
	quiet time.Duration
	// next is the first never-used port offset; fresh ports are taken in
	// order before any freed one is reused.
	next int
	// freed is a FIFO ring of freed port offsets with the time they were
	// freed: frees happen in time order, so the head is always the oldest.
	freed   []uint16
	freedAt []uint32 // milliseconds since epoch
	head, n int
	epoch   time.Time
	state   []portState
	cursor  int // where the next reclaim sweep starts
	// dryUntil holds reclaim sweeps off after one found nothing, so many
	// connections waiting for a port do not each sweep every tick.
	dryUntil  time.Time
	nInUse    int
	exhausted uint64 // gets that found no port
}

// portState is one port: whether it is in use and the ISN floor its next
// connection must stay above.
type portState struct {
	inUse    bool
	hasFloor bool
	floor    uint32
}

func newPortPool(min, max uint16, quiet time.Duration, now time.Time) (*portPool, error) {
	if min == 0 || min > max {
		return nil, fmt.Errorf("port range %d-%d: want 1 <= min <= max", min, max)
	}
	size := int(max) - int(min) + 1
	return &portPool{
		min: min, quiet: quiet, size: size, epoch: now,
		freed: make([]uint16, size), freedAt: make([]uint32, size), state: make([]portState, size),
	}, nil
}

// lease is a port handed out, with what its previous connection left.
type lease struct {
	port uint16
	// floor is valid when hasFloor: the backend may have seen sequence
	// numbers up to floor on this port, so a new ISN must be after it.
	floor    uint32
	hasFloor bool
}

// get returns a port not in use and not resting.
func (p *portPool) get(now time.Time) (lease, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var off int
	switch {
	case p.next < p.size:
		off = p.next
		p.next++
	case p.n > 0 && p.since(now)-p.freedAt[p.head] >= uint32(p.quiet.Milliseconds()):
		off = int(p.freed[p.head])
		p.head = (p.head + 1) % p.size
		p.n--
	default:
		p.exhausted++
		return lease{}, ErrNoPorts
	}
	st := &p.state[off]
	st.inUse = true
	p.nInUse++
	return lease{port: p.min + uint16(off), floor: st.floor, hasFloor: st.hasFloor}, nil
}

func (p *portPool) since(now time.Time) uint32 { return uint32(now.Sub(p.epoch).Milliseconds()) }

// put frees a port. With hasFloor, floor is the highest sequence number the
// backend may have received on it (see lease). Putting a port that is not
// in use is ignored, so a double release cannot hand one port to two
// connections.
func (p *portPool) put(port uint16, now time.Time, floor uint32, hasFloor bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	off := int(port) - int(p.min)
	if off < 0 || off >= p.size || !p.state[off].inUse {
		return
	}
	p.state[off] = portState{floor: floor, hasFloor: hasFloor}
	p.nInUse--
	i := (p.head + p.n) % p.size
	p.freed[i], p.freedAt[i] = uint16(off), p.since(now)
	p.n++
}

// sweep returns up to max ports in use, continuing where the last sweep
// stopped, so repeated sweeps visit every port in turn (oldest allocations
// first while ports are handed out in order).
func (p *portPool) sweep(max int) []uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []uint16
	for i := 0; i < p.size && len(out) < max; i++ {
		off := p.cursor
		p.cursor = (p.cursor + 1) % p.size
		if p.state[off].inUse {
			out = append(out, p.min+uint16(off))
		}
	}
	return out
}

// sweepDue reports whether a reclaim sweep may run now.
func (p *portPool) sweepDue(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !now.Before(p.dryUntil)
}

// sweepFailed holds sweeps off for a while after one found nothing.
func (p *portPool) sweepFailed(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dryUntil = now.Add(sweepBackoff)
}

// sweepBackoff is how long sweeps rest after a fruitless one.
const sweepBackoff = 100 * time.Millisecond

// inuse counts the ports held by connections.
func (p *portPool) inuse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nInUse
}
