package pktio

import (
	"fmt"
	"sync"
	"time"
	"unsafe"
)

// MemConfig sizes one end of a Pipe. Zero fields take the defaults.
type MemConfig struct {
	Frames    int // frames owned by each end; default 256
	FrameSize int // bytes per frame; default 2048
	RxQueue   int // received frames waiting for Receive, beyond which arrivals are dropped; default 128
}

// MemStats counts what happened at one end of a Pipe.
type MemStats struct {
	Received    uint64 // frames handed out by Receive
	Transmitted uint64 // frames taken by Transmit
	Delivered   uint64 // transmitted frames that reached the peer's receive queue
	Dropped     uint64 // transmitted frames lost: peer queue full, peer out of frames, or peer closed
	Lent        int    // frames the caller holds now (received or allocated, not yet given back)
	Free        int    // frames available to Alloc and to arrivals
}

// MemPort is one end of an in-memory link made by Pipe. Frames written by
// Transmit are copied into the other end's frames and queued for its
// Receive; like a real link it drops (and counts) what does not fit. Both
// ends may be driven from different goroutines. MemPort panics when a frame
// is released that the caller does not hold, so tests catch engine bugs
// that would corrupt a real port's frame accounting.
type MemPort struct {
	cfg   MemConfig
	peer  *MemPort
	ready chan struct{} // signalled when the receive queue becomes non-empty
	done  chan struct{} // closed by Close

	mu     sync.Mutex
	closed bool
	area   []byte
	free   []uint64 // offsets of free frames, used as a stack
	lent   []bool   // per frame index: held by the caller
	rxq    []rxDesc // ring of received frames
	rxHead int
	rxLen  int
	stats  MemStats
}

type rxDesc struct {
	off uint64
	n   int
}

var _ Port = (*MemPort)(nil)

// Pipe returns two connected ports: what one transmits the other receives.
func Pipe(cfg MemConfig) (*MemPort, *MemPort) {
	if cfg.Frames <= 0 {
		cfg.Frames = 256
	}
	if cfg.FrameSize <= 0 {
		cfg.FrameSize = 2048
	}
	if cfg.RxQueue <= 0 {
		cfg.RxQueue = 128
	}
	a, b := newMemPort(cfg), newMemPort(cfg)
	a.peer, b.peer = b, a
	return a, b
}

func newMemPort(cfg MemConfig) *MemPort {
	p := &MemPort{
		cfg:   cfg,
		ready: make(chan struct{}, 1),
		done:  make(chan struct{}),
		area:  make([]byte, cfg.Frames*cfg.FrameSize),
		free:  make([]uint64, 0, cfg.Frames),
		lent:  make([]bool, cfg.Frames),
		rxq:   make([]rxDesc, cfg.RxQueue),
	}
	for i := cfg.Frames - 1; i >= 0; i-- {
		p.free = append(p.free, uint64(i*cfg.FrameSize))
	}
	return p
}

// FrameSize is the capacity of every frame.
func (p *MemPort) FrameSize() int { return p.cfg.FrameSize }

// Receive implements Port.
func (p *MemPort) Receive(pkts []Packet) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, ErrClosed
	}
	n := 0
	for n < len(pkts) && p.rxLen > 0 {
		d := p.rxq[p.rxHead]
		p.rxHead = (p.rxHead + 1) % len(p.rxq)
		p.rxLen--
		p.lent[d.off/uint64(p.cfg.FrameSize)] = true
		pkts[n] = Packet{Data: p.area[d.off : d.off+uint64(d.n) : d.off+uint64(p.cfg.FrameSize)], Handle: d.off}
		n++
	}
	p.stats.Received += uint64(n)
	p.stats.Lent += n
	return n, nil
}

// Wait implements Port.
func (p *MemPort) Wait(timeout time.Duration) (bool, error) {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	for {
		p.mu.Lock()
		closed, ready := p.closed, p.rxLen > 0
		p.mu.Unlock()
		switch {
		case closed:
			return false, ErrClosed
		case ready:
			return true, nil
		case timeout == 0:
			return false, nil
		}
		select {
		case <-p.ready:
		case <-p.done:
		case <-expired:
			return false, nil
		}
	}
}

// Alloc implements Port.
func (p *MemPort) Alloc(pkts []Packet) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0
	}
	n := 0
	for n < len(pkts) && len(p.free) > 0 {
		off := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		p.lent[off/uint64(p.cfg.FrameSize)] = true
		pkts[n] = Packet{Data: p.area[off : off : off+uint64(p.cfg.FrameSize)], Handle: off}
		n++
	}
	p.stats.Lent += n
	return n
}

// check reports whether pkt is a frame the caller holds with Data inside it.
// Called with p.mu held.
func (p *MemPort) check(pkt Packet) error {
	fs := uint64(p.cfg.FrameSize)
	if pkt.Handle%fs != 0 || pkt.Handle/fs >= uint64(len(p.lent)) || !p.lent[pkt.Handle/fs] {
		return fmt.Errorf("handle %#x is not a frame the caller holds: %w", pkt.Handle, ErrFrame)
	}
	if len(pkt.Data) == 0 {
		return fmt.Errorf("empty frame: %w", ErrFrame)
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(pkt.Data))) - uintptr(unsafe.Pointer(&p.area[pkt.Handle]))
	if start >= uintptr(fs) || start+uintptr(len(pkt.Data)) > uintptr(fs) {
		return fmt.Errorf("data of frame %#x points outside it: %w", pkt.Handle, ErrFrame)
	}
	return nil
}

// Transmit implements Port. Delivery to the peer happens before it returns.
func (p *MemPort) Transmit(pkts []Packet) (int, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0, ErrClosed
	}
	var err error
	n := 0
	for ; n < len(pkts); n++ {
		if err = p.check(pkts[n]); err != nil {
			break
		}
		// Taken from the caller now; the frame stays out of the free
		// list until its bytes have been copied.
		p.lent[pkts[n].Handle/uint64(p.cfg.FrameSize)] = false
	}
	p.stats.Lent -= n
	p.stats.Transmitted += uint64(n)
	p.mu.Unlock()

	delivered := p.peer.deliver(pkts[:n])

	p.mu.Lock()
	p.stats.Delivered += uint64(delivered)
	p.stats.Dropped += uint64(n - delivered)
	if !p.closed {
		for _, pkt := range pkts[:n] {
			p.free = append(p.free, pkt.Handle)
		}
	}
	p.mu.Unlock()
	return n, err
}

// deliver copies frames into p's receive queue and reports how many fit.
func (p *MemPort) deliver(pkts []Packet) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0
	}
	n := 0
	for _, pkt := range pkts {
		if p.rxLen == len(p.rxq) || len(p.free) == 0 || len(pkt.Data) > p.cfg.FrameSize {
			continue
		}
		off := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		copy(p.area[off:], pkt.Data)
		p.rxq[(p.rxHead+p.rxLen)%len(p.rxq)] = rxDesc{off: off, n: len(pkt.Data)}
		p.rxLen++
		n++
	}
	if n > 0 {
		select {
		case p.ready <- struct{}{}:
		default:
		}
	}
	return n
}

// Release implements Port. It panics if a frame is not held by the caller.
func (p *MemPort) Release(pkts []Packet) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	fs := uint64(p.cfg.FrameSize)
	for _, pkt := range pkts {
		i := pkt.Handle / fs
		if pkt.Handle%fs != 0 || i >= uint64(len(p.lent)) || !p.lent[i] {
			panic(fmt.Sprintf("pktio: release of frame %#x the caller does not hold", pkt.Handle))
		}
		p.lent[i] = false
		p.free = append(p.free, pkt.Handle)
	}
	p.stats.Lent -= len(pkts)
}

// Stats returns the counters of this end.
func (p *MemPort) Stats() MemStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Free = len(p.free)
	return s
}

// Close implements Port. The peer keeps working; what it sends is dropped.
func (p *MemPort) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.area, p.free, p.rxLen = nil, nil, 0
	close(p.done)
	return nil
}
