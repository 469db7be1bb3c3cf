package proxy

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrNoPorts is returned when every source port is in use or resting.
var ErrNoPorts = errors.New("no free source port")

// portPool hands out the source ports of the backend legs of one source
// address. A freed port rests for the quiet time before it is handed out
// again, so a late segment of the old connection cannot land in the new
// one, as TIME_WAIT protects a kernel socket. Allocation and release are
// O(1) and the memory is fixed by the range size.
type portPool struct {
	mu    sync.Mutex
	min   uint16
	quiet time.Duration
	// next is the first never-used port offset; fresh ports are taken in
	// order before any freed one is reused.
	next int
	size int
	// resting is a FIFO ring of freed ports with the time they were freed:
	// frees happen in time order, so the head is always the oldest.
	resting []restingPort
	head, n int
	inUse   []bool
}

type restingPort struct {
	port  uint16
	freed time.Time
}

func newPortPool(min, max uint16, quiet time.Duration) (*portPool, error) {
	if min == 0 || min > max {
		return nil, fmt.Errorf("port range %d-%d: want 1 <= min <= max", min, max)
	}
	size := int(max) - int(min) + 1
	return &portPool{min: min, quiet: quiet, size: size, resting: make([]restingPort, size), inUse: make([]bool, size)}, nil
}

// get returns a port not in use and not resting.
func (p *portPool) get(now time.Time) (uint16, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next < p.size {
		off := p.next
		p.next++
		p.inUse[off] = true
		return p.min + uint16(off), nil
	}
	if p.n > 0 && now.Sub(p.resting[p.head].freed) >= p.quiet {
		port := p.resting[p.head].port
		p.head = (p.head + 1) % p.size
		p.n--
		p.inUse[port-p.min] = true
		return port, nil
	}
	return 0, ErrNoPorts
}

// put starts the quiet time of a port. Putting a port that is not in use
// is ignored, so a double release cannot hand one port to two connections.
func (p *portPool) put(port uint16, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	off := int(port) - int(p.min)
	if off < 0 || off >= p.size || !p.inUse[off] {
		return
	}
	p.inUse[off] = false
	p.resting[(p.head+p.n)%p.size] = restingPort{port: port, freed: now}
	p.n++
}

// inuse counts the ports held by connections.
func (p *portPool) inuse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next - p.n
}
