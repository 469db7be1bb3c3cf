package gateway

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// rawSender sends complete IP packets through the kernel (IPPROTO_RAW
// sockets, header included), so the kernel routes them and resolves the
// next hop's MAC. The engine uses it for what it originates outside a
// receive loop: the backend leg and timer retransmissions.
type rawSender struct {
	mu     sync.Mutex
	fd4    int
	fd6    int
	closed bool
}

func newRawSender() (*rawSender, error) {
	fd4, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("raw IPv4 socket: %w", err)
	}
	fd6, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		unix.Close(fd4)
		return nil, fmt.Errorf("raw IPv6 socket: %w", err)
	}
	return &rawSender{fd4: fd4, fd6: fd6}, nil
}

var errShortPacket = errors.New("packet shorter than its IP header")

// SendIP implements proxy.Sender.
func (r *rawSender) SendIP(pkt []byte) error {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return errors.New("raw sender closed")
	}
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		dst := netip.AddrFrom4([4]byte(pkt[16:20]))
		return unix.Sendto(r.fd4, pkt, 0, &unix.SockaddrInet4{Addr: dst.As4()})
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		// The port field of an IPPROTO_RAW IPv6 sockaddr must be zero.
		return unix.Sendto(r.fd6, pkt, 0, &unix.SockaddrInet6{Addr: [16]byte(pkt[24:40])})
	}
	return errShortPacket
}

func (r *rawSender) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	return errors.Join(unix.Close(r.fd4), unix.Close(r.fd6))
}
