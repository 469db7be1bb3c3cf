package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/bpf"
	"github.com/syngate/syngate/config"
	"github.com/syngate/syngate/metrics"
	"github.com/syngate/syngate/proxy"
	"github.com/syngate/syngate/ringport"
)

// tcPorts runs the engine's loops of the TC-datapath interfaces: one ring
// port each (package ringport), and the socket that tells the TC program
// an engine runs (bpf.Dataplane.RegisterEngine).
type tcPorts struct {
	dp    *bpf.Dataplane
	log   *slog.Logger
	mark  *os.File // in tc_engine while open
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

// register opens the engine's mark: one end of a unix datagram
// socketpair (nothing can reach it from the network), which a sockmap
// takes and the kernel removes from it when it closes.
func (t *tcPorts) register() error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("engine mark for the tc program: %w", err)
	}
	unix.Close(fds[1])
	if err := t.dp.RegisterEngine(fds[0]); err != nil {
		unix.Close(fds[0])
		return err
	}
	t.mark = os.NewFile(uintptr(fds[0]), "syngate-engine-mark")
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

// RingStats implements metrics.RingSource.
func (t *tcPorts) RingStats() []metrics.RingStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]metrics.RingStats, len(t.ports))
	for i, p := range t.ports {
		st := p.Stats()
		out[i] = metrics.RingStats{
			Interface: p.Name(), Received: st.Received, Transmitted: st.Transmitted,
			Dropped: st.Dropped, TxErrors: st.TxErrors,
		}
	}
	return out
}
