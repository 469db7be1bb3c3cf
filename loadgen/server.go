package loadgen

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syngate/syngate/lab"
)

// Handler serves one connection; the server closes it afterwards.
type Handler func(c net.Conn) error

// Server is a TCP server listening inside a lab namespace, a backend for
// load tests.
type Server struct {
	l net.Listener
	h Handler

	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool

	accepted atomic.Uint64
	failed   atomic.Uint64
}

// Serve listens on addr inside ns (port 0 picks one, see Addr) and serves
// every connection with h on its own goroutine until Close.
func Serve(ns *lab.NS, addr netip.AddrPort, h Handler) (*Server, error) {
	if ns == nil || h == nil {
		return nil, errors.New("loadgen: serve needs a namespace and a handler")
	}
	var l net.Listener
	err := ns.Run(func() error {
		var err error
		l, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %v in %s: %w", addr, ns, err)
	}
	s := &Server{l: l, h: h, conns: map[net.Conn]struct{}{}}
	s.wg.Go(s.accept)
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() netip.AddrPort {
	return s.l.Addr().(*net.TCPAddr).AddrPort()
}

// Accepted is the number of connections accepted so far.
func (s *Server) Accepted() uint64 { return s.accepted.Load() }

// Failed is the number of connections whose handler returned an error.
func (s *Server) Failed() uint64 { return s.failed.Load() }

func (s *Server) accept() {
	for {
		c, err := s.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or the like: back off, keep serving.
			slog.Warn("loadgen: accept", "addr", s.l.Addr(), "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.accepted.Add(1)
		s.wg.Go(func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			if err := s.h(c); err != nil {
				s.failed.Add(1)
			}
		})
	}
}

// Close stops listening, closes the open connections and waits for every
// handler to return.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.l.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}
