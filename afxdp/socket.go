package afxdp

import (
	"errors"
	"fmt"
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/pktio"
)

var (
	// ErrNotSupported means the kernel has no AF_XDP (CONFIG_XDP_SOCKETS)
	// or lacks a feature this package needs.
	ErrNotSupported = errors.New("afxdp: AF_XDP not supported by the kernel")
	// ErrZeroCopy means zero-copy was demanded (ModeZeroCopy) but the
	// driver cannot do it.
	ErrZeroCopy = errors.New("afxdp: zero-copy not supported by the driver")
	// ErrNoInterface means the interface does not exist in the calling
	// thread's network namespace.
	ErrNoInterface = errors.New("afxdp: no such interface")
	// ErrNoQueue means the interface has no receive queue with that id.
	ErrNoQueue = errors.New("afxdp: no such queue")
	// ErrConfig means the Config is unusable (sizes not powers of two...).
	ErrConfig = errors.New("afxdp: invalid config")
)

// Mode is how frames move between the driver and the UMEM.
type Mode int

const (
	// ModeAuto tries zero-copy and falls back to copy mode.
	ModeAuto Mode = iota
	// ModeCopy forces copy mode (works on every driver).
	ModeCopy
	// ModeZeroCopy demands zero-copy and fails with ErrZeroCopy without it.
	ModeZeroCopy
)

// String names the mode as logs and metrics spell it.
func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeCopy:
		return "copy"
	case ModeZeroCopy:
		return "zero-copy"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Config sizes a socket. Zero fields take the defaults; ring sizes must be
// powers of two.
type Config struct {
	Frames    int  // UMEM frames; default 4096
	FrameSize int  // 2048 (default) or 4096
	FillSize  int  // fill ring; default Frames/2, at most Frames
	CompSize  int  // completion ring; default Frames/2
	RxSize    int  // RX ring; default Frames/2
	TxSize    int  // TX ring; default Frames/2
	Mode      Mode // zero-copy or copy
	// NoNeedWakeup disables XDP_USE_NEED_WAKEUP: the socket then kicks the
	// kernel on every transmit instead of only when asked to.
	NoNeedWakeup bool
}

func (c *Config) setDefaults() error {
	if c.Frames == 0 {
		c.Frames = 4096
	}
	if c.FrameSize == 0 {
		c.FrameSize = 2048
	}
	half := c.Frames / 2
	for _, f := range []*int{&c.FillSize, &c.CompSize, &c.RxSize, &c.TxSize} {
		if *f == 0 {
			*f = half
		}
	}
	pow2 := func(n int) bool { return n > 0 && n&(n-1) == 0 }
	switch {
	case c.FrameSize != 2048 && c.FrameSize != 4096:
		return fmt.Errorf("frame size %d, want 2048 or 4096: %w", c.FrameSize, ErrConfig)
	case c.Frames < 2:
		return fmt.Errorf("%d frames: %w", c.Frames, ErrConfig)
	case !pow2(c.FillSize) || !pow2(c.CompSize) || !pow2(c.RxSize) || !pow2(c.TxSize):
		return fmt.Errorf("ring sizes fill %d comp %d rx %d tx %d must be powers of two: %w", c.FillSize, c.CompSize, c.RxSize, c.TxSize, ErrConfig)
	case c.FillSize > c.Frames:
		return fmt.Errorf("fill ring %d larger than %d frames: %w", c.FillSize, c.Frames, ErrConfig)
	case c.Mode < ModeAuto || c.Mode > ModeZeroCopy:
		return fmt.Errorf("mode %d: %w", c.Mode, ErrConfig)
	}
	return nil
}

// frame states, to refuse handing one frame to the kernel twice.
const (
	frameFree   uint8 = iota // in the free list
	frameKernel              // in the fill, RX, TX or completion ring
	frameLent                // held by the caller
)

// Socket is an AF_XDP socket bound to one queue of one interface, with its
// own UMEM. It implements pktio.Port; like every Port it is driven by one
// goroutine at a time, and Close must not race with the other methods.
type Socket struct {
	fd        int
	ifindex   int
	queue     int
	cfg       Config
	mode      Mode // ModeCopy or ModeZeroCopy once bound
	wakeup    bool
	umem      []byte
	umemBase  uintptr
	frameMask uint64
	fill      addrRing
	comp      addrRing
	rx        descRing
	tx        descRing
	free      []uint64 // frame addresses, used as a stack
	state     []uint8  // per frame index
	pollfds   [1]unix.PollFd
	closed    bool
	counters  Counters
}

var _ pktio.Port = (*Socket)(nil)

// Open creates a socket on queue of the interface ifname, looked up in the
// calling thread's network namespace (call it inside lab.NS.Run to open
// one in a test namespace; the socket then works from any goroutine). The
// socket receives nothing until its FD is put in an XSKMAP at key queue
// and an XDP program redirects there.
func Open(ifname string, queue int, cfg Config) (*Socket, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("open af_xdp socket on %s: %w: %w", ifname, ErrNoInterface, err)
	}
	n, err := QueueCount(ifname)
	if err != nil {
		return nil, fmt.Errorf("open af_xdp socket on %s: %w", ifname, err)
	}
	if queue < 0 || queue >= n {
		return nil, fmt.Errorf("open af_xdp socket on %s queue %d (of %d): %w", ifname, queue, n, ErrNoQueue)
	}
	return OpenIndex(ifi.Index, queue, cfg)
}

// OpenAll opens one socket per receive queue of ifname, so that an XDP
// program redirecting by rx_queue_index reaches one of them whatever queue
// a frame arrives on.
func OpenAll(ifname string, cfg Config) ([]*Socket, error) {
	n, err := QueueCount(ifname)
	if err != nil {
		return nil, fmt.Errorf("open af_xdp sockets on %s: %w", ifname, err)
	}
	socks := make([]*Socket, 0, n)
	for q := range n {
		s, err := Open(ifname, q, cfg)
		if err != nil {
			for _, s := range socks {
				s.Close()
			}
			return nil, err
		}
		socks = append(socks, s)
	}
	return socks, nil
}

// OpenIndex is Open by interface index.
func OpenIndex(ifindex, queue int, cfg Config) (*Socket, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	umem, err := unix.Mmap(-1, 0, cfg.Frames*cfg.FrameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap umem of %d frames: %w", cfg.Frames, err)
	}
	s := &Socket{
		fd:        -1,
		ifindex:   ifindex,
		queue:     queue,
		cfg:       cfg,
		wakeup:    !cfg.NoNeedWakeup,
		umem:      umem,
		umemBase:  uintptr(unsafe.Pointer(&umem[0])),
		frameMask: ^uint64(cfg.FrameSize - 1),
		free:      make([]uint64, 0, cfg.Frames),
		state:     make([]uint8, cfg.Frames),
	}
	// Zero-copy is tried on a socket of its own: a failed bind leaves
	// the rings in a state not worth reasoning about.
	if cfg.Mode != ModeCopy {
		err := s.setup(ModeZeroCopy)
		switch {
		case err == nil:
			return s.start(), nil
		case !isZeroCopyRefusal(err):
			s.Close()
			return nil, err
		case cfg.Mode == ModeZeroCopy:
			s.Close()
			return nil, fmt.Errorf("%w: %w", ErrZeroCopy, err)
		}
		s.teardown()
	}
	if err := s.setup(ModeCopy); err != nil {
		s.Close()
		return nil, err
	}
	return s.start(), nil
}

// isZeroCopyRefusal tells the errors of a driver without zero-copy apart
// from everything else.
func isZeroCopyRefusal(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EINVAL)
}

// setup creates the socket, registers the UMEM, maps the rings and binds.
func (s *Socket) setup(mode Mode) error {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EAFNOSUPPORT) {
			return fmt.Errorf("create af_xdp socket: %w: %w", ErrNotSupported, err)
		}
		return fmt.Errorf("create af_xdp socket: %w", err)
	}
	s.fd = fd
	reg := unix.XDPUmemReg{
		Addr: uint64(s.umemBase),
		Len:  uint64(len(s.umem)),
		Size: uint32(s.cfg.FrameSize),
	}
	if err := setsockopt(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return fmt.Errorf("register umem: %w", err)
	}
	for _, r := range []struct {
		opt, size int
		name      string
	}{
		{unix.XDP_UMEM_FILL_RING, s.cfg.FillSize, "fill"},
		{unix.XDP_UMEM_COMPLETION_RING, s.cfg.CompSize, "completion"},
		{unix.XDP_RX_RING, s.cfg.RxSize, "rx"},
		{unix.XDP_TX_RING, s.cfg.TxSize, "tx"},
	} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, r.opt, r.size); err != nil {
			return fmt.Errorf("size %s ring to %d: %w", r.name, r.size, err)
		}
	}
	var off unix.XDPMmapOffsets
	n, err := getsockopt(fd, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off))
	if err != nil {
		return fmt.Errorf("read ring offsets: %w", err)
	}
	if n != unsafe.Sizeof(off) {
		return fmt.Errorf("ring offsets without need-wakeup flags (kernel older than 5.4): %w", ErrNotSupported)
	}
	if s.fill, err = mmapAddrRing(fd, unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, uint32(s.cfg.FillSize)); err != nil {
		return err
	}
	if s.comp, err = mmapAddrRing(fd, unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, uint32(s.cfg.CompSize)); err != nil {
		return err
	}
	if s.rx, err = mmapDescRing(fd, unix.XDP_PGOFF_RX_RING, off.Rx, uint32(s.cfg.RxSize)); err != nil {
		return err
	}
	if s.tx, err = mmapDescRing(fd, unix.XDP_PGOFF_TX_RING, off.Tx, uint32(s.cfg.TxSize)); err != nil {
		return err
	}
	flags := uint16(unix.XDP_COPY)
	if mode == ModeZeroCopy {
		flags = unix.XDP_ZEROCOPY
	}
	if s.wakeup {
		flags |= unix.XDP_USE_NEED_WAKEUP
	}
	if err := unix.Bind(fd, &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(s.ifindex), QueueID: uint32(s.queue)}); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("bind af_xdp (%s) to ifindex %d queue %d: %w: %w", mode, s.ifindex, s.queue, ErrNoInterface, err)
		}
		return fmt.Errorf("bind af_xdp (%s) to ifindex %d queue %d: %w", mode, s.ifindex, s.queue, err)
	}
	var opts uint32
	if _, err := getsockopt(fd, unix.XDP_OPTIONS, unsafe.Pointer(&opts), unsafe.Sizeof(opts)); err != nil {
		return fmt.Errorf("read af_xdp options: %w", err)
	}
	s.mode = ModeCopy
	if opts&unix.XDP_OPTIONS_ZEROCOPY != 0 {
		s.mode = ModeZeroCopy
	}
	return nil
}

// start puts every frame in the free list and as many as fit in the fill ring.
func (s *Socket) start() *Socket {
	for i := s.cfg.Frames - 1; i >= 0; i-- {
		s.free = append(s.free, uint64(i*s.cfg.FrameSize))
	}
	s.refill()
	return s
}

// teardown unmaps the rings and closes the socket, keeping the UMEM.
func (s *Socket) teardown() {
	for _, r := range []*ring{&s.fill.ring, &s.comp.ring, &s.rx.ring, &s.tx.ring} {
		r.unmap()
	}
	s.fill, s.comp, s.rx, s.tx = addrRing{}, addrRing{}, descRing{}, descRing{}
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

// Close unbinds the socket (which also drops it from any XSKMAP) and frees
// the UMEM; frames the caller still holds become invalid.
func (s *Socket) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.teardown()
	if s.umem != nil {
		if err := unix.Munmap(s.umem); err != nil {
			return fmt.Errorf("unmap umem: %w", err)
		}
		s.umem = nil
	}
	return nil
}

// FD is the socket's descriptor, the value to store in an XSKMAP.
func (s *Socket) FD() int { return s.fd }

// Queue is the receive queue the socket is bound to, its XSKMAP key.
func (s *Socket) Queue() int { return s.queue }

// Ifindex is the interface the socket is bound to.
func (s *Socket) Ifindex() int { return s.ifindex }

// Mode reports whether the socket runs in copy or zero-copy mode.
func (s *Socket) Mode() Mode { return s.mode }

// FrameSize is the UMEM frame size, the capacity of every frame.
func (s *Socket) FrameSize() int { return s.cfg.FrameSize }

// frameIndex maps an address the kernel returned to its frame, rejecting
// addresses outside the UMEM.
func (s *Socket) frameIndex(addr uint64) (uint64, bool) {
	i := addr / uint64(s.cfg.FrameSize)
	return i, i < uint64(len(s.state))
}

// refill moves free frames into the fill ring.
func (s *Socket) refill() {
	want := uint32(len(s.free))
	if want == 0 {
		return
	}
	n := min(s.fill.free(want), want)
	if n == 0 {
		return
	}
	idx := s.fill.cachedProd
	for i := range n {
		addr := s.free[len(s.free)-1]
		s.free = s.free[:len(s.free)-1]
		s.state[addr/uint64(s.cfg.FrameSize)] = frameKernel
		s.fill.addrs[(idx+i)&s.fill.mask] = addr
	}
	s.fill.submit(n)
}

// drainCompletions returns sent frames to the free list.
func (s *Socket) drainCompletions() {
	n := s.comp.avail(s.comp.size)
	if n == 0 {
		return
	}
	idx := s.comp.cachedCons
	for i := range n {
		addr := s.comp.addrs[(idx+i)&s.comp.mask] & s.frameMask
		if fi, ok := s.frameIndex(addr); ok && s.state[fi] == frameKernel {
			s.state[fi] = frameFree
			s.free = append(s.free, addr)
		} else {
			s.counters.BadAddrs++
		}
	}
	s.comp.release(n)
	s.counters.TxCompleted += uint64(n)
}

// Receive implements pktio.Port. A received frame's data starts after
// the kernel's XDP headroom, so it can grow in place to the frame size
// less 256 bytes.
func (s *Socket) Receive(pkts []pktio.Packet) (int, error) {
	if s.closed {
		return 0, pktio.ErrClosed
	}
	n := s.rx.avail(uint32(len(pkts)))
	idx := s.rx.cachedCons
	got := 0
	fs := uint64(s.cfg.FrameSize)
	for i := range n {
		d := s.rx.descs[(idx+i)&s.rx.mask]
		base := d.Addr & s.frameMask
		fi, ok := s.frameIndex(base)
		if !ok || d.Addr+uint64(d.Len) > base+fs || s.state[fi] != frameKernel {
			s.counters.BadAddrs++
			continue
		}
		s.state[fi] = frameLent
		pkts[got] = pktio.Packet{Data: s.umem[d.Addr : d.Addr+uint64(d.Len) : base+fs], Handle: base}
		got++
	}
	if n > 0 {
		s.rx.release(n)
	}
	s.counters.RxPackets += uint64(got)
	s.refill()
	if n == 0 && s.wakeup && s.fill.needWakeup() {
		s.counters.RxKicks++
		if err := kickRx(s.fd); err != nil {
			return 0, fmt.Errorf("wake af_xdp rx: %w", err)
		}
	}
	return got, nil
}

// Wait implements pktio.Port by polling the socket.
func (s *Socket) Wait(timeout time.Duration) (bool, error) {
	if s.closed {
		return false, pktio.ErrClosed
	}
	if s.rx.avail(1) > 0 {
		return true, nil
	}
	s.refill()
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	s.pollfds[0] = unix.PollFd{Fd: int32(s.fd), Events: unix.POLLIN}
	for {
		_, err := unix.Poll(s.pollfds[:], ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll af_xdp socket: %w", err)
		}
		break
	}
	return s.rx.avail(1) > 0, nil
}

// Alloc implements pktio.Port.
func (s *Socket) Alloc(pkts []pktio.Packet) int {
	if s.closed {
		return 0
	}
	s.drainCompletions()
	n := min(len(pkts), len(s.free))
	fs := uint64(s.cfg.FrameSize)
	for i := range n {
		addr := s.free[len(s.free)-1]
		s.free = s.free[:len(s.free)-1]
		s.state[addr/fs] = frameLent
		pkts[i] = pktio.Packet{Data: s.umem[addr : addr : addr+fs], Handle: addr}
	}
	return n
}

// Transmit implements pktio.Port. It returns fewer than len(pkts) with a
// nil error when the TX ring is full.
func (s *Socket) Transmit(pkts []pktio.Packet) (int, error) {
	if s.closed {
		return 0, pktio.ErrClosed
	}
	s.drainCompletions()
	room := s.tx.free(uint32(len(pkts)))
	idx := s.tx.cachedProd
	fs := uint64(s.cfg.FrameSize)
	var err error
	n := uint32(0)
	for ; n < room && int(n) < len(pkts); n++ {
		p := pkts[n]
		fi, ok := s.frameIndex(p.Handle)
		if !ok || p.Handle%fs != 0 || s.state[fi] != frameLent || len(p.Data) == 0 {
			err = fmt.Errorf("transmit frame %#x not held by the caller: %w", p.Handle, pktio.ErrFrame)
			break
		}
		off := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(p.Data))) - s.umemBase)
		if off < p.Handle || off+uint64(len(p.Data)) > p.Handle+fs {
			err = fmt.Errorf("transmit frame %#x: %w", p.Handle, pktio.ErrFrame)
			break
		}
		s.state[fi] = frameKernel
		s.tx.descs[(idx+n)&s.tx.mask] = unix.XDPDesc{Addr: off, Len: uint32(len(p.Data))}
	}
	if n == 0 {
		return 0, err
	}
	s.tx.submit(n)
	s.counters.TxPackets += uint64(n)
	if !s.wakeup || s.tx.needWakeup() {
		s.kick()
	}
	return int(n), err
}

// kick makes the kernel send what the TX ring holds. In copy mode each
// sendto sends a bounded batch synchronously, so it repeats while that
// makes progress; in zero-copy mode the driver sends asynchronously and
// one kick is enough.
func (s *Socket) kick() {
	for range 64 {
		before := s.tx.pending()
		s.counters.TxKicks++
		if err := kickTx(s.fd); err != nil {
			s.counters.TxKickErrors++
			return
		}
		s.drainCompletions()
		if after := s.tx.pending(); after == 0 || after == before {
			return
		}
	}
}

// Flush kicks the kernel until the TX ring is empty or timeout passes, and
// returns sent frames to the free list. In copy mode the kernel sends only
// a bounded batch per kick, so a caller that transmitted a large burst and
// then goes idle should Flush (or Wait, which also drives TX).
func (s *Socket) Flush(timeout time.Duration) error {
	if s.closed {
		return pktio.ErrClosed
	}
	deadline := time.Now().Add(timeout)
	for s.tx.pending() > 0 {
		before := s.tx.pending()
		if err := kickTx(s.fd); err != nil {
			return fmt.Errorf("flush af_xdp tx: %w", err)
		}
		s.counters.TxKicks++
		s.drainCompletions()
		if s.tx.pending() == before {
			// No progress (zero-copy sends asynchronously, or the
			// device is busy): do not spin a core on it.
			time.Sleep(50 * time.Microsecond)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("flush af_xdp tx: %d frames still queued: %w", s.tx.pending(), pktio.ErrTimeout)
		}
	}
	s.drainCompletions()
	return nil
}

// Release implements pktio.Port. Frames the caller does not hold are
// ignored and counted in Counters.BadReleases.
func (s *Socket) Release(pkts []pktio.Packet) {
	if s.closed {
		return
	}
	fs := uint64(s.cfg.FrameSize)
	for _, p := range pkts {
		fi, ok := s.frameIndex(p.Handle)
		if !ok || p.Handle%fs != 0 || s.state[fi] != frameLent {
			s.counters.BadReleases++
			continue
		}
		s.state[fi] = frameFree
		s.free = append(s.free, p.Handle)
	}
	// Hand them straight to the kernel: a frame in the free list is one
	// the next arrival cannot use.
	s.refill()
}
