package bpf

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
)

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("skipping: loading and running XDP programs needs root (CAP_BPF+CAP_NET_ADMIN)")
	}
}

// inNewNetns moves the calling goroutine, locked to its thread for good,
// into a fresh network namespace: BPF_PROG_TEST_RUN then sees only that
// namespace's loopback and empty routing table, so FIB lookups are
// deterministic. The thread is discarded when the test goroutine ends.
func inNewNetns(tb testing.TB) {
	tb.Helper()
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		tb.Fatalf("unshare network namespace: %v", err)
	}
}

// loadTest loads the program with cfg and closes it when the test ends.
func loadTest(tb testing.TB, cfg Config) *Dataplane {
	tb.Helper()
	requireRoot(tb)
	d, err := Load(cfg)
	if err != nil {
		tb.Fatalf("load: %v", err)
	}
	tb.Cleanup(func() {
		if err := d.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return d
}

// pkt describes one test frame; zero fields get usable defaults.
type pkt struct {
	src, dst netip.AddrPort
	vlan     bool
	flags    string // any of "SAFRPU"
	seq, ack uint32
	window   uint16
	opts     []layers.TCPOption
	payload  []byte
	v6ext    []byte // raw IPv6 extension headers between IPv6 and TCP
	v6next   layers.IPProtocol
	ipFlags  layers.IPv4Flag
	fragOff  uint16
}

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xa}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xb}
)

// frame serializes p with correct lengths and checksums.
func frame(tb testing.TB, p pkt) []byte {
	tb.Helper()
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(p.src.Port()), DstPort: layers.TCPPort(p.dst.Port()),
		Seq: p.seq, Ack: p.ack, Window: p.window, Options: p.opts,
	}
	for _, f := range p.flags {
		switch f {
		case 'S':
			tcp.SYN = true
		case 'A':
			tcp.ACK = true
		case 'F':
			tcp.FIN = true
		case 'R':
			tcp.RST = true
		case 'P':
			tcp.PSH = true
		case 'U':
			tcp.URG = true
		}
	}
	eth := &layers.Ethernet{SrcMAC: macA, DstMAC: macB}
	var ls []gopacket.SerializableLayer
	ls = append(ls, eth)
	etherType := layers.EthernetTypeIPv4
	if p.src.Addr().Is6() {
		etherType = layers.EthernetTypeIPv6
	}
	if p.vlan {
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: 42, Type: etherType})
	} else {
		eth.EthernetType = etherType
	}
	if p.src.Addr().Is6() {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: p.src.Addr().AsSlice(), DstIP: p.dst.Addr().AsSlice(), NextHeader: layers.IPProtocolTCP}
		if p.v6ext != nil {
			ip.NextHeader = p.v6next
		}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			tb.Fatal(err)
		}
		ls = append(ls, ip)
		if p.v6ext != nil {
			ls = append(ls, gopacket.Payload(p.v6ext))
		}
	} else {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: p.src.Addr().AsSlice(), DstIP: p.dst.Addr().AsSlice(), Flags: p.ipFlags, FragOffset: p.fragOff}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			tb.Fatal(err)
		}
		ls = append(ls, ip)
	}
	ls = append(ls, tcp, gopacket.Payload(p.payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// result is what one run of the program did.
type result struct {
	action  Action
	verdict Verdict
	out     []byte
}

// mustRun runs the program once on data and identifies the verdict from
// the counter that moved; exactly one must move, by one packet.
func mustRun(tb testing.TB, d *Dataplane, data []byte) result {
	tb.Helper()
	return mustRunOn(tb, d, data, 0, 0)
}

// loIfindex is the loopback's ifindex in every network namespace: the
// ingress interface of a test run without an explicit one.
const loIfindex = 1

// xdpMD mirrors struct xdp_md, the context of a test run.
type xdpMD struct {
	Data, DataEnd, DataMeta uint32
	IngressIfindex          uint32
	RxQueueIndex            uint32
	EgressIfindex           uint32
}

// mustRunOn is mustRun with the packet received on queue of ifindex (which
// must exist in the calling thread's network namespace); zero ifindex
// means the kernel's default, queue 0 of the loopback.
func mustRunOn(tb testing.TB, d *Dataplane, data []byte, ifindex, queue int) result {
	tb.Helper()
	before, err := d.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	opts := ebpf.RunOptions{Data: data, DataOut: make([]byte, len(data)+256)}
	if ifindex != 0 {
		opts.Context = xdpMD{DataEnd: uint32(len(data)), IngressIfindex: uint32(ifindex), RxQueueIndex: uint32(queue)}
	}
	ret, err := d.objs.SyngateXdp.Run(&opts)
	if err != nil {
		tb.Fatalf("run: %v", err)
	}
	after, err := d.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	r := result{action: Action(ret), verdict: NumVerdicts, out: opts.DataOut}
	for v := range after {
		dp := after[v].Packets - before[v].Packets
		if dp == 0 {
			continue
		}
		if dp != 1 || r.verdict != NumVerdicts {
			tb.Fatalf("counters moved unexpectedly: before %v after %v", before, after)
		}
		if db := after[v].Bytes - before[v].Bytes; db != uint64(len(data)) {
			tb.Fatalf("%v counted %d bytes, frame has %d", Verdict(v), db, len(data))
		}
		r.verdict = Verdict(v)
	}
	if r.verdict == NumVerdicts {
		tb.Fatalf("no counter moved (action %v)", r.action)
	}
	if r.action != r.verdict.Action() {
		tb.Fatalf("verdict %v with action %v, want %v", r.verdict, r.action, r.verdict.Action())
	}
	return r
}

// xskSocket returns an AF_XDP socket bound to queue 0 of the loopback of a
// private network namespace: the smallest socket the kernel lets into an
// XSKMAP. No packet ever reaches it.
func xskSocket(tb testing.TB) int {
	tb.Helper()
	return xskSocketHandle(tb).fd
}

// xskSocketHandle is xskSocket returning the socket, for tests that close
// it early (close is idempotent).
func xskSocketHandle(tb testing.TB) *xsk {
	tb.Helper()
	type res struct {
		x   *xsk
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread leaves with the namespace
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- res{nil, fmt.Errorf("unshare: %w", err)}
			return
		}
		x, err := openXSK(loIfindex, 0)
		ch <- res{x, err}
	}()
	r := <-ch
	if r.err != nil {
		tb.Fatalf("af_xdp socket: %v", r.err)
	}
	tb.Cleanup(r.x.close)
	return r.x
}

// xsk is a minimal AF_XDP socket: a umem of xskFrames frames, all of them
// handed to the kernel on the fill ring, and an RX ring whose producer
// tells how many frames arrived.
type xsk struct {
	fd       int
	umem     []byte
	rx, fill []byte
	rxProd   *uint32
}

const xskFrames, xskFrameSize = 16, 4096

// openXSK binds a socket to queue of ifindex in the calling thread's
// network namespace.
func openXSK(ifindex, queue int) (x *xsk, err error) {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	x = &xsk{fd: fd}
	defer func() {
		if err != nil {
			x.close()
		}
	}()
	// The kernel pins the umem's pages while the socket lives.
	x.umem, err = unix.Mmap(-1, 0, xskFrames*xskFrameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return x, fmt.Errorf("mmap umem: %w", err)
	}
	reg := unix.XDPUmemReg{Addr: uint64(uintptr(unsafe.Pointer(&x.umem[0]))), Len: uint64(len(x.umem)), Size: xskFrameSize}
	if _, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_UMEM_REG,
		uintptr(unsafe.Pointer(&reg)), unsafe.Sizeof(reg), 0); e != 0 {
		return x, fmt.Errorf("umem reg: %w", e)
	}
	for _, opt := range []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_RX_RING} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, opt, xskFrames); err != nil {
			return x, fmt.Errorf("ring size: %w", err)
		}
	}
	var off unix.XDPMmapOffsets
	offLen := uint32(unsafe.Sizeof(off))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS,
		uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&offLen)), 0); e != 0 {
		return x, fmt.Errorf("mmap offsets: %w", e)
	}
	x.rx, err = unix.Mmap(fd, unix.XDP_PGOFF_RX_RING, int(off.Rx.Desc)+xskFrames*int(unsafe.Sizeof(unix.XDPDesc{})),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return x, fmt.Errorf("mmap rx ring: %w", err)
	}
	x.rxProd = (*uint32)(unsafe.Pointer(&x.rx[off.Rx.Producer]))
	x.fill, err = unix.Mmap(fd, unix.XDP_UMEM_PGOFF_FILL_RING, int(off.Fr.Desc)+xskFrames*8,
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return x, fmt.Errorf("mmap fill ring: %w", err)
	}
	for i := range xskFrames {
		binary.NativeEndian.PutUint64(x.fill[int(off.Fr.Desc)+8*i:], uint64(i*xskFrameSize))
	}
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&x.fill[off.Fr.Producer])), xskFrames)
	if err := unix.Bind(fd, &unix.SockaddrXDP{Flags: unix.XDP_COPY, Ifindex: uint32(ifindex), QueueID: uint32(queue)}); err != nil {
		return x, fmt.Errorf("bind to ifindex %d queue %d: %w", ifindex, queue, err)
	}
	return x, nil
}

// received is how many frames the kernel put on the RX ring.
func (x *xsk) received() uint32 { return atomic.LoadUint32(x.rxProd) }

func (x *xsk) close() {
	if x.fd < 0 {
		return
	}
	defer func() { x.fd = -1 }()
	for _, m := range [][]byte{x.rx, x.fill} {
		if m != nil {
			_ = unix.Munmap(m)
		}
	}
	_ = unix.Close(x.fd)
	if x.umem != nil {
		_ = unix.Munmap(x.umem)
	}
}

// Options used across tests.
func optTS(val, ecr uint32) layers.TCPOption {
	d := make([]byte, 8)
	binary.BigEndian.PutUint32(d, val)
	binary.BigEndian.PutUint32(d[4:], ecr)
	return layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionData: d}
}

func optSACK(edges ...uint32) layers.TCPOption {
	d := make([]byte, 4*len(edges))
	for i, e := range edges {
		binary.BigEndian.PutUint32(d[4*i:], e)
	}
	return layers.TCPOption{OptionType: layers.TCPOptionKindSACK, OptionData: d}
}

var (
	optNOP = layers.TCPOption{OptionType: layers.TCPOptionKindNop}
	optMSS = layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionData: []byte{0x05, 0xb4}}
)
