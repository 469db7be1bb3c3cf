// Package ringport is the engine's packet I/O on a TC-datapath interface:
// a pktio.Port that receives the frames the TC program copies into the
// interface's BPF ring buffer (bpf.Dataplane.OpenTCRing) and transmits
// through an AF_PACKET socket bound to the interface.
//
// Where AF_XDP lends the engine frames in shared memory, this port copies
// each record into a frame of its own, and each frame it sends into the
// kernel: handshake packets are few and small, and the interface's bulk
// traffic never comes here (the TC program splices it).
//
//	ring, _ := dp.OpenTCRing("eth0")
//	p, _ := ringport.Open(ring, "eth0", ringport.Config{})
//	defer p.Close()
//	engine.Serve(ctx, p, p.Ifindex())
package ringport

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/bpf"
	"github.com/syngate/syngate/pktio"
)

// Config sizes a port.
type Config struct {
	// Frames is how many frames the port lends at a time (received and
	// allocated together); default 512.
	Frames int
	// FrameSize is each frame's capacity; default bpf.TCSnap, the longest
	// frame a ring record carries.
	FrameSize int
	// Logger gets the records the port could not read; default
	// slog.Default().
	Logger *slog.Logger
}

// Stats are a port's counters.
type Stats struct {
	Received, Transmitted uint64
	// Dropped counts records with no free frame to take them, or that did
	// not parse (logged); TxErrors frames the socket refused.
	Dropped, TxErrors uint64
}

// Port is a pktio.Port over a TC ring buffer and an AF_PACKET socket. Like
// every Port it is driven by one goroutine.
type Port struct {
	rd      *ringbuf.Reader
	fd      int
	ifindex int
	name    string
	log     *slog.Logger

	mem    []byte // the frames, FrameSize apart
	size   int
	free   []uint64 // indexes of the frames the port holds
	rec    ringbuf.Record
	queued bool // rec holds a record Wait read and Receive has not taken
	closed bool
	// The counters are read by scrapes on other goroutines.
	received, transmitted, dropped, txErrors atomic.Uint64
}

var _ pktio.Port = (*Port)(nil)

// Open reads ring (the port keeps its own reference: the caller may close
// its map) and opens a socket that sends on the interface ifname.
func Open(ring *ebpf.Map, ifname string, cfg Config) (*Port, error) {
	if cfg.Frames <= 0 {
		cfg.Frames = 512
	}
	if cfg.FrameSize <= 0 {
		cfg.FrameSize = bpf.TCSnap
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("ring port on %s: %w", ifname, err)
	}
	rd, err := ringbuf.NewReader(ring)
	if err != nil {
		return nil, fmt.Errorf("ring port on %s: read the ring: %w", ifname, err)
	}
	// Protocol 0: the socket receives nothing, it only sends.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		rd.Close()
		return nil, fmt.Errorf("ring port on %s: af_packet socket: %w", ifname, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: iface.Index}); err != nil {
		unix.Close(fd)
		rd.Close()
		return nil, fmt.Errorf("ring port on %s: bind af_packet socket: %w", ifname, err)
	}
	p := &Port{rd: rd, fd: fd, ifindex: iface.Index, name: ifname, log: cfg.Logger,
		mem: make([]byte, cfg.Frames*cfg.FrameSize), size: cfg.FrameSize}
	for i := cfg.Frames - 1; i >= 0; i-- {
		p.free = append(p.free, uint64(i))
	}
	return p, nil
}

// Ifindex is the interface the port receives from and sends on.
func (p *Port) Ifindex() int { return p.ifindex }

// Name is the interface's name.
func (p *Port) Name() string { return p.name }

// Stats returns the port's counters; safe from any goroutine.
func (p *Port) Stats() Stats {
	return Stats{
		Received: p.received.Load(), Transmitted: p.transmitted.Load(),
		Dropped: p.dropped.Load(), TxErrors: p.txErrors.Load(),
	}
}

func (p *Port) frame(h uint64) []byte {
	off := int(h) * p.size
	return p.mem[off : off : off+p.size]
}

// take fills a free frame with the queued record's frame.
func (p *Port) take(pkt *pktio.Packet) bool {
	p.queued = false
	_, f, err := bpf.ParseRingRecord(p.rec.RawSample)
	if err != nil {
		p.dropped.Add(1)
		p.log.Warn("ring record dropped", "ifindex", p.ifindex, "err", err)
		return false
	}
	if len(p.free) == 0 || len(f) > p.size {
		p.dropped.Add(1)
		return false
	}
	h := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	*pkt = pktio.Packet{Data: append(p.frame(h), f...), Handle: h}
	p.received.Add(1)
	return true
}

// read reads the next record into p.rec without blocking past deadline.
// It reports whether one was read.
func (p *Port) read(deadline time.Time) (bool, error) {
	p.rd.SetDeadline(deadline)
	err := p.rd.ReadInto(&p.rec)
	switch {
	case err == nil:
		p.queued = true
		return true, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return false, nil
	case errors.Is(err, ringbuf.ErrClosed):
		return false, pktio.ErrClosed
	}
	return false, fmt.Errorf("read the tc ring: %w", err)
}

// Receive implements pktio.Port.
func (p *Port) Receive(pkts []pktio.Packet) (int, error) {
	if p.closed {
		return 0, pktio.ErrClosed
	}
	n := 0
	past := time.Unix(1, 0) // a deadline already gone: do not wait
	for n < len(pkts) && len(p.free) > 0 {
		if !p.queued {
			ok, err := p.read(past)
			if err != nil {
				return n, err
			}
			if !ok {
				break
			}
		}
		if p.take(&pkts[n]) {
			n++
		}
	}
	return n, nil
}

// Wait implements pktio.Port.
func (p *Port) Wait(timeout time.Duration) (bool, error) {
	if p.closed {
		return false, pktio.ErrClosed
	}
	if p.queued {
		return true, nil
	}
	var deadline time.Time // zero: no limit
	if timeout >= 0 {
		deadline = time.Now().Add(timeout)
		if timeout == 0 {
			deadline = time.Unix(1, 0)
		}
	}
	return p.read(deadline)
}

// Alloc implements pktio.Port.
func (p *Port) Alloc(pkts []pktio.Packet) int {
	n := 0
	for n < len(pkts) && len(p.free) > 0 {
		h := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		pkts[n] = pktio.Packet{Data: p.frame(h), Handle: h}
		n++
	}
	return n
}

// inFrame reports whether pkt's Data lies in the frame its Handle names.
func (p *Port) inFrame(pkt pktio.Packet) bool {
	if pkt.Handle >= uint64(len(p.mem)/p.size) || len(pkt.Data) == 0 {
		return false
	}
	lo := int(pkt.Handle) * p.size
	start := int(uintptrOf(pkt.Data) - uintptrOf(p.mem))
	return start >= lo && start+len(pkt.Data) <= lo+p.size
}

// Transmit implements pktio.Port: each frame is sent at once. A frame the
// socket refuses (the interface is down, its queue full) is dropped and
// counted, as a full AF_XDP ring drops it.
func (p *Port) Transmit(pkts []pktio.Packet) (int, error) {
	if p.closed {
		return 0, pktio.ErrClosed
	}
	for i, pkt := range pkts {
		if !p.inFrame(pkt) {
			return i, pktio.ErrFrame
		}
		if _, err := unix.Write(p.fd, pkt.Data); err != nil {
			p.txErrors.Add(1)
		} else {
			p.transmitted.Add(1)
		}
		p.free = append(p.free, pkt.Handle)
	}
	return len(pkts), nil
}

// Release implements pktio.Port.
func (p *Port) Release(pkts []pktio.Packet) {
	for _, pkt := range pkts {
		p.free = append(p.free, pkt.Handle)
	}
}

// Close implements pktio.Port.
func (p *Port) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	return errors.Join(p.rd.Close(), unix.Close(p.fd))
}
