// Package pktio is the packet I/O boundary of syngate's handshake engine:
// batched receive and transmit of whole Ethernet frames that live in port
// memory, so that the engine can rewrite a received frame in place (a SYN
// turned into a SYN-ACK) or build a reply straight into a fresh frame,
// without copying. afxdp.Socket implements Port on AF_XDP; Pipe gives two
// connected in-memory ports for tests.
//
//	a, b := pktio.Pipe(pktio.MemConfig{})
//	pkts := make([]pktio.Packet, 64)
//	for {
//		n, err := a.Receive(pkts)
//		if err != nil {
//			return err
//		}
//		if n == 0 {
//			if _, err := a.Wait(100 * time.Millisecond); err != nil {
//				return err
//			}
//			continue
//		}
//		// ... rewrite pkts[:n] in place, then:
//		sent, err := a.Transmit(pkts[:n])
//		a.Release(pkts[sent:n]) // what was not taken is still ours
//	}
//
// # Frame ownership
//
// Every frame belongs either to the port or to the caller, never both:
//
//   - Receive and Alloc hand frames to the caller: pkts[:n] are the
//     caller's until it passes them to Transmit or Release.
//   - Transmit takes pkts[:n] and gives the caller nothing back; the frames
//     return to the port once sent (or dropped). pkts[n:] stay the caller's.
//   - Release gives frames back unsent.
//   - After handing a frame to the port the caller must not read or write
//     its Data again: the port may already be reusing it.
//   - Close invalidates every frame, including those the caller still holds.
//
// While it owns a frame the caller may change Data's contents and length up
// to cap(Data), and may move its start forward; Data must stay inside its
// frame. A Data that no longer points into its frame (say append outgrew
// the capacity and copied) is refused by Transmit with ErrFrame.
//
// A Port is not safe for concurrent use: one goroutine drives it, and Close
// must not run while another method does (an AF_XDP port unmaps its
// memory). To stop a loop, Wait with a bounded timeout and check a context
// between waits.
package pktio

import (
	"errors"
	"fmt"
	"time"
)

var (
	// ErrClosed is returned by every method of a closed port.
	ErrClosed = errors.New("pktio: port closed")
	// ErrFrame means a packet's Data does not lie within the frame its
	// Handle names, or is empty.
	ErrFrame = errors.New("pktio: packet data outside its frame")
	// ErrTimeout is returned by Recv when nothing arrived in time.
	ErrTimeout = errors.New("pktio: timeout")
	// ErrNoFrame is returned by Send when the port has no free frame.
	ErrNoFrame = errors.New("pktio: no free frame")
	// ErrTxFull is returned by Send when the port took no frame to send.
	ErrTxFull = errors.New("pktio: transmit queue full")
)

// Packet is one frame lent to the caller.
type Packet struct {
	// Data is the frame: len is the frame length, cap how far it may grow
	// in place. Fresh frames from Alloc have length 0.
	Data []byte
	// Handle names the frame to the port that lent it; opaque to the
	// caller, who must leave it unchanged.
	Handle uint64
}

// Port is batched, non-blocking packet I/O over frames the port owns.
// See the package documentation for who owns a frame when.
type Port interface {
	// Receive moves up to len(pkts) received frames into pkts and
	// returns how many. It does not block; 0 means nothing is pending.
	Receive(pkts []Packet) (int, error)
	// Wait blocks until Receive has something, for at most timeout
	// (negative: no limit; zero: just check). It reports whether frames
	// are ready.
	Wait(timeout time.Duration) (bool, error)
	// Alloc fills pkts with fresh frames to transmit, of length 0, and
	// returns how many it could provide.
	Alloc(pkts []Packet) int
	// Transmit queues pkts for sending, in order, and returns how many
	// it took. On error, pkts[n] is the packet at fault.
	Transmit(pkts []Packet) (int, error)
	// Release returns frames to the port without sending them.
	Release(pkts []Packet)
	// Close releases the port and all of its frames.
	Close() error
}

// Send copies frame into a fresh frame of p and transmits it. It is a
// convenience for tests and tools, not for the hot path.
func Send(p Port, frame []byte) error {
	var pkts [1]Packet
	if p.Alloc(pkts[:]) == 0 {
		return ErrNoFrame
	}
	if len(frame) > cap(pkts[0].Data) {
		p.Release(pkts[:])
		return fmt.Errorf("frame of %d bytes exceeds the %d-byte frame size: %w", len(frame), cap(pkts[0].Data), ErrFrame)
	}
	pkts[0].Data = append(pkts[0].Data[:0], frame...)
	n, err := p.Transmit(pkts[:])
	if n == 0 {
		p.Release(pkts[:])
		if err == nil {
			err = ErrTxFull
		}
		return err
	}
	return nil
}

// Recv waits up to timeout for one frame and returns a copy of it. It is a
// convenience for tests and tools, not for the hot path.
func Recv(p Port, timeout time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	var pkts [1]Packet
	for {
		n, err := p.Receive(pkts[:])
		if err != nil {
			return nil, err
		}
		if n == 1 {
			b := append([]byte(nil), pkts[0].Data...)
			p.Release(pkts[:])
			return b, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, ErrTimeout
		}
		if _, err := p.Wait(left); err != nil {
			return nil, err
		}
	}
}
