package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/syngate/syngate/bpf"
	"github.com/syngate/syngate/config"
	"github.com/syngate/syngate/proxy"
	"github.com/syngate/syngate/ringport"
)

// tcPorts runs the engine's loops of the TC-datapath interfaces: one ring
// port each (package ringport), and the socket that tells the TC program
// an engine runs (bpf.Dataplane.RegisterEngine).
type tcPorts struct {
	dp    *bpf.Dataplane
	log   *slog.Logger
	mark  *net.UDPConn // in tc_engine while open
	ports []*ringport.Port
	mu    sync.Mutex // ports, against close while a loop starts
}

// start opens in's ring and its port and serves it on ctx. The first call
// registers the engine.
func (t *tcPorts) start(ctx context.Context, wg *sync.WaitGroup, e *proxy.Engine, in config.Interface, allowed []int, errc chan<- error) error {
	if t.mark == nil {
		if err := t.register(); err != nil {
			return err
		}
	}
	ring, err := t.dp.OpenTCRing(in.Name)
	if err != nil {
		return err
	}
	p, err := ringport.Open(ring, in.Name, ringport.Config{Logger: t.log})
	ring.Close() // the reader keeps its own reference
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.ports = append(t.ports, p)
	t.mu.Unlock()
	cpu, how := queueCPU(in.Name, 0, in.CPUs, allowed, "", irqAffinity)
	t.log.Info("tc ring port", "interface", in.Name, "cpu", cpu, "cpu_from", how)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if cpu >= 0 {
			if err := pinThread(cpu); err != nil {
				t.log.Warn("receive loop runs unpinned", "interface", in.Name, "err", err)
			}
		}
		if err := e.Serve(ctx, p, p.Ifindex()); err != nil {
			errc <- fmt.Errorf("%s tc ring: %w", in.Name, err)
		}
	}()
	return nil
}

// register opens the engine's mark: a UDP socket on the loopback, which a
// sockmap takes and the kernel removes from it when the socket closes.
func (t *tcPorts) register() error {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		c, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	}
	if err != nil {
		return fmt.Errorf("engine mark for the tc program: %w", err)
	}
	raw, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return fmt.Errorf("engine mark for the tc program: %w", err)
	}
	var rerr error
	if err := raw.Control(func(fd uintptr) { rerr = t.dp.RegisterEngine(int(fd)) }); err != nil {
		rerr = errors.Join(rerr, err)
	}
	if rerr != nil {
		c.Close()
		return rerr
	}
	t.mark = c
	return nil
}

// close closes the ports (their loops have ended: Run's wait runs first)
// and the mark, which tells the TC program no engine runs any more.
func (t *tcPorts) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.ports {
		if err := p.Close(); err != nil {
			t.log.Warn("close tc ring port", "err", err)
		}
	}
	t.ports = nil
	if t.mark != nil {
		t.mark.Close()
		t.mark = nil
	}
}
