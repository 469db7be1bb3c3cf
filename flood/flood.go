package flood

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batch is how many frames one sendmmsg call carries: enough to make the
// syscall cost vanish next to the kernel's per-frame work.
const batch = 128

// Result is what a flood achieved. Sent plus Errors is the number of
// frames attempted.
type Result struct {
	Sent    uint64        // frames the kernel accepted on the interface
	Errors  uint64        // frames it refused (no buffer, queue full)
	Elapsed time.Duration // from the first frame to the end, or so far
	PPS     float64       // Sent per second of Elapsed
}

// String reads like "sent 200000, errors 0 in 215ms: 931601 pps".
func (r Result) String() string {
	return fmt.Sprintf("sent %d, errors %d in %v: %.0f pps", r.Sent, r.Errors, r.Elapsed.Round(time.Millisecond), r.PPS)
}

// Flood is a running flood. Its counters are live, so a demo can print the
// rate while it runs.
type Flood struct {
	start  time.Time
	sent   atomic.Uint64
	errs   atomic.Uint64
	cancel context.CancelFunc
	done   chan struct{}

	// Set once before done closes.
	elapsed time.Duration
	err     error
}

// Run floods as cfg says and returns when the flood is over.
func Run(ctx context.Context, cfg Config) (Result, error) {
	f, err := Start(ctx, cfg)
	if err != nil {
		return Result{}, err
	}
	return f.Wait()
}

// Start checks cfg, resolves the next hop, opens one packet socket per
// worker inside cfg.From and starts sending. The flood ends after
// cfg.Packets frames, after cfg.Duration, on Stop or when ctx ends.
func Start(ctx context.Context, cfg Config) (*Flood, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	ifi, err := cfg.From.Interface(cfg.Iface)
	if err != nil {
		return nil, fmt.Errorf("flood: %w", err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("flood: %s/%s is not an Ethernet interface", cfg.From, cfg.Iface)
	}
	if cfg.DstMAC == nil {
		if cfg.DstMAC, err = resolveMAC(ctx, cfg.From, cfg.Iface, cfg.Target.Addr()); err != nil {
			return nil, err
		}
	}
	workers := cfg.Workers
	if workers == 0 {
		workers = runtime.NumCPU()
	}
	ws := make([]*worker, 0, workers)
	closeAll := func() {
		for _, w := range ws {
			unix.Close(w.fd)
		}
	}
	for range workers {
		var seed [16]byte
		rand.Read(seed[:])
		gen := newFrameGen(ifi.HardwareAddr, cfg.DstMAC, cfg.SpoofPrefix, cfg.Target,
			binary.LittleEndian.Uint64(seed[:]), binary.LittleEndian.Uint64(seed[8:]))
		var fd int
		err := cfg.From.Run(func() error {
			var err error
			fd, err = openSocket(ifi.Index)
			return err
		})
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("flood: %s/%s: %w", cfg.From, cfg.Iface, err)
		}
		ws = append(ws, newWorker(fd, gen))
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	f := &Flood{start: time.Now(), cancel: cancel, done: make(chan struct{})}
	p := &pacer{start: f.start, limit: cfg.Packets, rate: float64(cfg.Rate), deadline: f.start.Add(cfg.Duration)}
	var wg sync.WaitGroup
	errs := make([]error, len(ws))
	for i, w := range ws {
		wg.Go(func() {
			defer unix.Close(w.fd)
			if len(cfg.CPUs) > 0 {
				// The thread stays locked: it ends with the goroutine and
				// its affinity with it.
				runtime.LockOSThread()
				var set unix.CPUSet
				set.Set(cfg.CPUs[i%len(cfg.CPUs)])
				if err := unix.SchedSetaffinity(0, &set); err != nil {
					errs[i] = fmt.Errorf("pin worker %d to CPU %d: %w", i, cfg.CPUs[i%len(cfg.CPUs)], err)
					return
				}
			}
			errs[i] = w.run(ctx, f, p)
		})
	}
	go func() {
		wg.Wait()
		f.elapsed = time.Since(f.start)
		f.err = errors.Join(errs...)
		cancel()
		close(f.done)
	}()
	return f, nil
}

// Stats returns the counters so far; after Done, the final result.
func (f *Flood) Stats() Result {
	r := Result{Sent: f.sent.Load(), Errors: f.errs.Load()}
	select {
	case <-f.done:
		r.Elapsed = f.elapsed
	default:
		r.Elapsed = time.Since(f.start)
	}
	if r.Elapsed > 0 {
		r.PPS = float64(r.Sent) / r.Elapsed.Seconds()
	}
	return r
}

// Stop ends the flood early; Wait still reports what was sent.
func (f *Flood) Stop() { f.cancel() }

// Done is closed when the flood is over.
func (f *Flood) Done() <-chan struct{} { return f.done }

// Wait waits for the end of the flood and returns its result and the
// socket errors that stopped workers early, if any.
func (f *Flood) Wait() (Result, error) {
	<-f.done
	return f.Stats(), f.err
}

// openSocket opens a send-only packet socket bound to ifindex. Protocol 0
// registers no receive hook, so the socket costs nothing on the way in;
// the kernel reads the ethertype from each frame. Bypassing the qdisc
// hands frames straight to the driver.
func openSocket(ifindex int) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("packet socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("PACKET_QDISC_BYPASS: %w", err)
	}
	// A blocked send never outlives the flood by more than this.
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("SO_SNDTIMEO: %w", err)
	}
	// Best effort: room for a few batches in flight.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind packet socket: %w", err)
	}
	return fd, nil
}

// pacer hands out frames to workers: never more than limit in all, and with
// a rate, no frame before its time (frame i is due at start + i/rate).
type pacer struct {
	start    time.Time
	deadline time.Time
	limit    uint64
	rate     float64 // frames per second, 0 for no limit
	claimed  atomic.Uint64
}

// claim reserves up to max frames. It returns how many, or zero and how
// long to wait for the next one; done means the count is exhausted.
func (p *pacer) claim(max int, now time.Time) (n int, wait time.Duration, done bool) {
	for {
		c := p.claimed.Load()
		if c >= p.limit {
			return 0, 0, true
		}
		allowed := p.limit - c
		if p.rate > 0 {
			due := uint64(p.rate*now.Sub(p.start).Seconds()) + 1
			if due <= c {
				next := p.start.Add(time.Duration(float64(c) / p.rate * float64(time.Second)))
				return 0, next.Sub(now), false
			}
			allowed = min(allowed, due-c)
		}
		n := min(uint64(max), allowed)
		if p.claimed.CompareAndSwap(c, c+n) {
			return int(n), 0, false
		}
	}
}

// worker owns one socket and a ring of prebuilt frames it rewrites and
// sends a batch at a time.
type worker struct {
	fd   int
	gen  *frameGen
	bufs []byte
	iov  []unix.Iovec
	msgs []unix.Mmsghdr
}

func newWorker(fd int, gen *frameGen) *worker {
	w := &worker{
		fd:   fd,
		gen:  gen,
		bufs: make([]byte, batch*slotSize),
		iov:  make([]unix.Iovec, batch),
		msgs: make([]unix.Mmsghdr, batch),
	}
	for i := range batch {
		slot := w.bufs[i*slotSize : i*slotSize+gen.frameLen()]
		gen.init(slot)
		w.iov[i].Base = &slot[0]
		w.iov[i].SetLen(len(slot))
		w.msgs[i].Hdr.Iov = &w.iov[i]
		w.msgs[i].Hdr.SetIovlen(1)
	}
	return w
}

func (w *worker) slot(i int) []byte { return w.bufs[i*slotSize : i*slotSize+slotSize] }

// run sends batches until the pacer runs dry, the deadline passes or ctx
// ends. Only a socket error that is not about a full queue stops it early.
func (w *worker) run(ctx context.Context, f *Flood, p *pacer) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		if !now.Before(p.deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		default:
		}
		n, wait, done := p.claim(batch, now)
		if done {
			return nil
		}
		if n == 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
			}
			continue
		}
		for i := range n {
			w.gen.fill(w.slot(i))
		}
		sent, failed, err := w.send(n)
		f.sent.Add(sent)
		f.errs.Add(failed)
		if err != nil {
			return err
		}
	}
}

// send hands the first n slots to the kernel. A frame the kernel refuses
// for lack of room is counted and skipped, as a flood would.
func (w *worker) send(n int) (sent, failed uint64, err error) {
	for off := 0; off < n; {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(w.fd),
			uintptr(unsafe.Pointer(&w.msgs[off])), uintptr(n-off), 0, 0, 0)
		switch e {
		case 0:
			sent += uint64(r)
			off += int(r)
		case unix.EINTR:
		case unix.ENOBUFS, unix.EAGAIN, unix.ENOMEM:
			failed++
			off++
		default:
			return sent, failed + uint64(n-off), fmt.Errorf("sendmmsg: %w", e)
		}
	}
	return sent, failed, nil
}
