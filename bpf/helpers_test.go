package bpf

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"runtime"
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
	before, err := d.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	opts := ebpf.RunOptions{Data: data, DataOut: make([]byte, len(data)+256)}
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
	type res struct {
		fd  int
		err error
		op  string
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread leaves with the namespace
		fail := func(op string, err error) { ch <- res{-1, err, op} }
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			fail("unshare", err)
			return
		}
		fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			fail("socket", err)
			return
		}
		const frames, frameSize = 16, 4096
		mem, err := unix.Mmap(-1, 0, frames*frameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			unix.Close(fd)
			fail("mmap", err)
			return
		}
		// The umem stays mapped for the life of the test binary; the
		// kernel pins its pages while the socket lives.
		reg := unix.XDPUmemReg{Addr: uint64(uintptr(unsafe.Pointer(&mem[0]))), Len: uint64(len(mem)), Size: frameSize}
		if _, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_UMEM_REG,
			uintptr(unsafe.Pointer(&reg)), unsafe.Sizeof(reg), 0); e != 0 {
			unix.Close(fd)
			fail("umem reg", e)
			return
		}
		for _, opt := range []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_RX_RING} {
			if err := unix.SetsockoptInt(fd, unix.SOL_XDP, opt, frames); err != nil {
				unix.Close(fd)
				fail("ring size", err)
				return
			}
		}
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			unix.Close(fd)
			fail("lo", err)
			return
		}
		if err := unix.Bind(fd, &unix.SockaddrXDP{Flags: unix.XDP_COPY, Ifindex: uint32(lo.Index), QueueID: 0}); err != nil {
			unix.Close(fd)
			fail("bind", err)
			return
		}
		ch <- res{fd: fd}
	}()
	r := <-ch
	if r.err != nil {
		tb.Fatalf("af_xdp socket: %s: %v", r.op, r.err)
	}
	tb.Cleanup(func() { unix.Close(r.fd) })
	return r.fd
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
