package afxdp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/syngate/syngate/lab"
)

// rig is a veth between two namespaces: "near", where an XDP program
// redirects IPv4 TCP into an AF_XDP socket, and "far", a plain host whose
// kernel talks to it. Both veth ends run XDP programs.
type rig struct {
	near, far       *lab.NS
	nearIf, farIf   string
	nearMAC, farMAC net.HardwareAddr
	nearIP, farIP   netip.Addr
	sock            *Socket
}

// redirectTCP4 builds an XDP program that sends IPv4 TCP frames to the
// socket registered in xskmap under the frame's receive queue, and passes
// everything else (ARP included) to the kernel. The XDP_PASS in the flags
// argument of bpf_redirect_map is what the helper returns when the queue
// has no socket, so frames are never lost to an empty map slot.
func redirectTCP4(tb testing.TB, xskmap *ebpf.Map) *ebpf.Program {
	tb.Helper()
	ethIP := int32(binary.NativeEndian.Uint16([]byte{0x08, 0x00}))
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "test_xsk_redir",
		Type:    ebpf.XDP,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // data
			asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // data_end
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 14+20),
			asm.JGT.Reg(asm.R4, asm.R3, "pass"),
			asm.LoadMem(asm.R5, asm.R2, 12, asm.Half), // ethertype
			asm.JNE.Imm(asm.R5, ethIP, "pass"),
			asm.LoadMem(asm.R5, asm.R2, 14+9, asm.Byte), // IP protocol
			asm.JNE.Imm(asm.R5, 6, "pass"),
			asm.LoadMem(asm.R2, asm.R6, 16, asm.Word), // rx_queue_index
			asm.LoadMapPtr(asm.R1, xskmap.FD()),
			asm.Mov.Imm(asm.R3, 2), // XDP_PASS if the slot is empty
			asm.FnRedirectMap.Call(),
			asm.Return(),
			asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"),
			asm.Return(),
		},
	})
	if err != nil {
		tb.Fatalf("load redirect program: %v", err)
	}
	tb.Cleanup(func() { prog.Close() })
	return prog
}

func newRig(tb testing.TB, cfg Config) *rig {
	tb.Helper()
	lab.RequireRoot(tb)
	near, err := lab.NewNS(tb, "sg-xsk-")
	if err != nil {
		tb.Fatal(err)
	}
	far, err := lab.NewNS(tb, "sg-xsk-")
	if err != nil {
		tb.Fatal(err)
	}
	r := &rig{near: near, far: far, nearIf: "xsk0", farIf: "eth0",
		nearIP: lab.GatewayClientV4.Addr(), farIP: lab.ClientV4.Addr()}
	if err := lab.Veth(near, r.nearIf, far, r.farIf); err != nil {
		tb.Fatal(err)
	}
	if err := near.AddAddr(r.nearIf, lab.GatewayClientV4); err != nil {
		tb.Fatal(err)
	}
	if err := far.AddAddr(r.farIf, lab.ClientV4); err != nil {
		tb.Fatal(err)
	}
	for _, x := range []struct {
		ns  *lab.NS
		ifn string
		mac *net.HardwareAddr
	}{{near, r.nearIf, &r.nearMAC}, {far, r.farIf, &r.farMAC}} {
		ifi, err := x.ns.Interface(x.ifn)
		if err != nil {
			tb.Fatal(err)
		}
		*x.mac = ifi.HardwareAddr
	}
	// Like a real client's NIC, the far end puts full checksums on the
	// wire; with offloads on, a veth carries only the partial sum.
	if err := far.DisableOffloads(r.farIf); err != nil {
		tb.Fatal(err)
	}
	if err := lab.AttachXDPPass(far, r.farIf); err != nil {
		tb.Fatal(err)
	}
	xskmap, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		tb.Fatalf("create xskmap: %v", err)
	}
	tb.Cleanup(func() { xskmap.Close() })
	if err := lab.AttachXDP(near, r.nearIf, redirectTCP4(tb, xskmap)); err != nil {
		tb.Fatal(err)
	}
	err = near.Run(func() error {
		r.sock, err = Open(r.nearIf, 0, cfg)
		return err
	})
	if err != nil {
		tb.Fatalf("open socket: %v", err)
	}
	tb.Cleanup(func() { r.sock.Close() })
	if err := xskmap.Put(uint32(r.sock.Queue()), uint32(r.sock.FD())); err != nil {
		tb.Fatalf("register socket in xskmap: %v", err)
	}
	return r
}

// udpFrame builds near -> far UDP frame.
func (r *rig) udpFrame(tb testing.TB, srcPort, dstPort uint16, payload []byte) []byte {
	tb.Helper()
	eth := &layers.Ethernet{SrcMAC: r.nearMAC, DstMAC: r.farMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: r.nearIP.AsSlice(), DstIP: r.farIP.AsSlice()}
	udp := &layers.UDP{SrcPort: layers.UDPPort(srcPort), DstPort: layers.UDPPort(dstPort)}
	udp.SetNetworkLayerForChecksum(ip)
	return serialize(tb, eth, ip, udp, gopacket.Payload(payload))
}

func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatalf("serialize: %v", err)
	}
	return buf.Bytes()
}

// synFrame builds a far -> near TCP SYN, the frame a SYN flood is made of.
func (r *rig) synFrame(tb testing.TB, srcPort uint16) []byte {
	tb.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
		SrcIP: r.farIP.AsSlice(), DstIP: r.nearIP.AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(srcPort), DstPort: 80, Seq: 1, SYN: true, Window: 64240}
	tcp.SetNetworkLayerForChecksum(ip)
	return serialize(tb, &layers.Ethernet{SrcMAC: r.farMAC, DstMAC: r.nearMAC, EthernetType: layers.EthernetTypeIPv4}, ip, tcp)
}

// openFar opens a socket on the far end, used to generate traffic.
func (r *rig) openFar(tb testing.TB, cfg Config) *Socket {
	tb.Helper()
	var s *Socket
	err := r.far.Run(func() error {
		var err error
		s, err = Open(r.farIf, 0, cfg)
		return err
	})
	if err != nil {
		tb.Fatalf("open far socket: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// farRxPackets reads the far interface's receive counter.
func (r *rig) farRxPackets(tb testing.TB) uint64 {
	tb.Helper()
	attrs, err := r.far.Link(r.farIf)
	if err != nil {
		tb.Fatal(err)
	}
	if attrs.Statistics == nil {
		tb.Fatalf("%s/%s: no link statistics", r.far, r.farIf)
	}
	return attrs.Statistics.RxPackets
}
