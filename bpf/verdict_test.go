package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/spec"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var (
	svc4    = netip.MustParseAddrPort("192.0.2.10:443")
	svc6    = netip.MustParseAddrPort("[2001:db8::10]:443")
	client4 = netip.MustParseAddrPort("203.0.113.5:12345")
	client6 = netip.MustParseAddrPort("[2001:db8:1::5]:12345")
	local4  = netip.MustParseAddr("198.51.100.1")
	local6  = netip.MustParseAddr("2001:db8:2::1")
	back4   = netip.MustParseAddrPort("198.51.100.20:8443")
	back6   = netip.MustParseAddrPort("[2001:db8:2::20]:8443")
	other4  = netip.MustParseAddrPort("192.0.2.99:443")

	localPorts = PortRange{40000, 49999}
)

// testDataplane loads the program with two services and two locals.
func testDataplane(tb testing.TB, cfg Config) *Dataplane {
	tb.Helper()
	cfg.LocalPorts = localPorts
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	d := loadTest(tb, cfg)
	for i, s := range []netip.AddrPort{svc4, svc6} {
		if err := d.SetService(spec.Entry{Listen: s, ID: uint32(i + 1)}); err != nil {
			tb.Fatal(err)
		}
	}
	for _, l := range []netip.Addr{local4, local6} {
		if err := d.AddLocal(l); err != nil {
			tb.Fatal(err)
		}
	}
	return d
}

func withSocket(tb testing.TB, d *Dataplane) {
	tb.Helper()
	if err := d.RegisterSocket(loIfindex, 0, xskSocket(tb)); err != nil {
		tb.Fatal(err)
	}
}

// Offsets in an untagged IPv4 frame.
const (
	ip4Off  = 14
	tcp4Off = 14 + 20
	tcp6Off = 14 + 40
)

func mutate(b []byte, f func([]byte)) []byte { f(b); return b }

func TestVerdicts(t *testing.T) {
	d := testDataplane(t, Config{})
	withSocket(t, d)

	syn4 := pkt{src: client4, dst: svc4, flags: "S", seq: 1000, opts: []layers.TCPOption{optMSS}}
	syn6 := pkt{src: client6, dst: svc6, flags: "S", seq: 1000, opts: []layers.TCPOption{optMSS}}
	ack4 := pkt{src: client4, dst: svc4, flags: "A", seq: 1001, ack: 5001}
	// IPv6 extension headers: hop-by-hop, routing (type 0 segments left 0),
	// destination options, each 8 bytes of padding.
	ext3 := []byte{
		43, 0, 1, 4, 0, 0, 0, 0, // hop-by-hop -> routing, PadN
		60, 0, 0, 0, 0, 0, 0, 0, // routing -> dest opts
		6, 0, 1, 4, 0, 0, 0, 0, // dest opts -> TCP
	}
	ext5 := []byte{
		60, 0, 1, 4, 0, 0, 0, 0,
		60, 0, 1, 4, 0, 0, 0, 0,
		60, 0, 1, 4, 0, 0, 0, 0,
		60, 0, 1, 4, 0, 0, 0, 0,
		6, 0, 1, 4, 0, 0, 0, 0,
	}
	frag6 := []byte{6, 0, 0, 0, 0, 0, 0, 1} // fragment header, offset 0, M=1
	frag6Later := []byte{6, 0, 0, 0x10, 0, 0, 0, 1}

	tests := []struct {
		name string
		data func(t *testing.T) []byte
		want Verdict
	}{
		{"arp", func(t *testing.T) []byte {
			b := make([]byte, 42)
			binary.BigEndian.PutUint16(b[12:], 0x0806)
			return b
		}, VerdictPassNotIP},
		{"udp to service", func(t *testing.T) []byte {
			return mutate(frame(t, syn4), func(b []byte) { b[ip4Off+9] = 17 })
		}, VerdictPassNotTCP},
		{"tcp to other port", func(t *testing.T) []byte {
			return frame(t, pkt{src: client4, dst: netip.AddrPortFrom(svc4.Addr(), 80), flags: "S"})
		}, VerdictPassNotService},
		{"tcp to other address", func(t *testing.T) []byte { return frame(t, pkt{src: client4, dst: other4, flags: "S"}) }, VerdictPassNotService},
		{"local address, port outside range", func(t *testing.T) []byte {
			return frame(t, pkt{src: back4, dst: netip.AddrPortFrom(local4, 22), flags: "SA"})
		}, VerdictPassNotService},
		{"truncated vlan", func(t *testing.T) []byte { return frame(t, pkt{src: client4, dst: svc4, vlan: true, flags: "S"})[:16] }, VerdictPassMalformedEth},
		{"truncated ipv4", func(t *testing.T) []byte { return frame(t, syn4)[:ip4Off+12] }, VerdictPassMalformedIP},
		{"ipv4 ihl below 5", func(t *testing.T) []byte { return mutate(frame(t, syn4), func(b []byte) { b[ip4Off] = 0x44 }) }, VerdictPassMalformedIP},
		{"ipv4 bad version", func(t *testing.T) []byte { return mutate(frame(t, syn4), func(b []byte) { b[ip4Off] = 0x65 }) }, VerdictPassMalformedIP},
		{"ipv4 total length past frame", func(t *testing.T) []byte {
			b := frame(t, syn4)
			binary.BigEndian.PutUint16(b[ip4Off+2:], uint16(len(b)-ip4Off+1))
			return b
		}, VerdictPassMalformedIP},
		{"truncated ipv6", func(t *testing.T) []byte { return frame(t, syn6)[:14+30] }, VerdictPassMalformedIP},
		{"ipv6 payload length past frame", func(t *testing.T) []byte {
			b := frame(t, syn6)
			return b[:len(b)-2]
		}, VerdictPassMalformedIP},
		{"tcp without ports", func(t *testing.T) []byte {
			b := frame(t, syn4)[:tcp4Off+2]
			binary.BigEndian.PutUint16(b[ip4Off+2:], 22)
			return b
		}, VerdictPassMalformedTCP},
		{"ipv6 too many extension headers", func(t *testing.T) []byte {
			p := syn6
			p.v6ext, p.v6next = ext5, 60
			return frame(t, p)
		}, VerdictPassIPv6ExtLimit},
		{"ipv6 truncated extension header", func(t *testing.T) []byte {
			p := syn6
			p.v6ext, p.v6next = ext3, 0
			b := frame(t, p)
			b = b[:tcp6Off+4]
			binary.BigEndian.PutUint16(b[18:], 4)
			return b
		}, VerdictPassMalformedIP},
		{"ipv4 later fragment to service", func(t *testing.T) []byte {
			p := ack4
			p.fragOff = 100
			return frame(t, p)
		}, VerdictPassFragment},
		{"ipv4 first fragment elsewhere", func(t *testing.T) []byte {
			return frame(t, pkt{src: client4, dst: other4, flags: "A", ipFlags: layers.IPv4MoreFragments})
		}, VerdictPassFragment},
		{"ipv6 later fragment to service", func(t *testing.T) []byte {
			p := ack4
			p.src, p.dst, p.v6ext, p.v6next = client6, svc6, frag6Later, 44
			return frame(t, p)
		}, VerdictPassFragment},
		{"syn v4", func(t *testing.T) []byte { return frame(t, syn4) }, VerdictXSKSyn},
		{"syn v6", func(t *testing.T) []byte { return frame(t, syn6) }, VerdictXSKSyn},
		{"syn vlan", func(t *testing.T) []byte {
			p := syn4
			p.vlan = true
			return frame(t, p)
		}, VerdictXSKSyn},
		{"syn v6 vlan", func(t *testing.T) []byte {
			p := syn6
			p.vlan = true
			return frame(t, p)
		}, VerdictXSKSyn},
		{"syn ipv4 options", func(t *testing.T) []byte {
			b := frame(t, syn4)
			// Insert 8 bytes of IPv4 options (NOPs, EOL) and fix IHL and length.
			opt := []byte{1, 1, 1, 1, 1, 1, 1, 0}
			nb := append(append(append([]byte{}, b[:tcp4Off]...), opt...), b[tcp4Off:]...)
			nb[ip4Off] = 0x47
			binary.BigEndian.PutUint16(nb[ip4Off+2:], uint16(len(nb)-ip4Off))
			return nb
		}, VerdictXSKSyn},
		{"syn v6 extension headers", func(t *testing.T) []byte {
			p := syn6
			p.v6ext, p.v6next = ext3, 0
			return frame(t, p)
		}, VerdictXSKSyn},
		{"syn with timestamps and sack-permitted", func(t *testing.T) []byte {
			p := syn4
			p.opts = []layers.TCPOption{optMSS, {OptionType: layers.TCPOptionKindSACKPermitted}, optTS(1, 0), optNOP, {OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{7}}}
			return frame(t, p)
		}, VerdictXSKSyn},
		{"handshake ack", func(t *testing.T) []byte { return frame(t, ack4) }, VerdictXSKHandshake},
		{"data before splice", func(t *testing.T) []byte {
			p := ack4
			p.flags, p.payload = "PA", []byte("GET / HTTP/1.1\r\n")
			return frame(t, p)
		}, VerdictXSKHandshake},
		{"syn-ack to service", func(t *testing.T) []byte {
			p := syn4
			p.flags = "SA"
			return frame(t, p)
		}, VerdictXSKHandshake},
		{"backend syn-ack to local", func(t *testing.T) []byte {
			return frame(t, pkt{src: back4, dst: netip.AddrPortFrom(local4, 40001), flags: "SA"})
		}, VerdictXSKBackend},
		{"backend rst to local v6", func(t *testing.T) []byte {
			return frame(t, pkt{src: back6, dst: netip.AddrPortFrom(local6, 49999), flags: "RA"})
		}, VerdictXSKBackend},
		{"rst unknown flow", func(t *testing.T) []byte {
			p := ack4
			p.flags = "R"
			return frame(t, p)
		}, VerdictDropRstFinUnknown},
		{"fin unknown flow (may be a peer gateway's: handed off)", func(t *testing.T) []byte {
			p := ack4
			p.flags = "FA"
			return frame(t, p)
		}, VerdictXSKHandshake},
		{"ipv4 first fragment to service", func(t *testing.T) []byte {
			p := ack4
			p.ipFlags = layers.IPv4MoreFragments
			return frame(t, p)
		}, VerdictDropFragment},
		{"ipv6 first fragment to service", func(t *testing.T) []byte {
			p := ack4
			p.src, p.dst, p.v6ext, p.v6next = client6, svc6, frag6, 44
			return frame(t, p)
		}, VerdictDropFragment},
		{"tcp truncated", func(t *testing.T) []byte {
			b := frame(t, syn4)[:tcp4Off+10]
			binary.BigEndian.PutUint16(b[ip4Off+2:], 30)
			return b
		}, VerdictDropTCPTruncated},
		{"tcp truncated v6", func(t *testing.T) []byte {
			b := frame(t, syn6)[:tcp6Off+19]
			binary.BigEndian.PutUint16(b[18:], 19)
			return b
		}, VerdictDropTCPTruncated},
		{"tcp data offset 4", func(t *testing.T) []byte { return mutate(frame(t, syn4), func(b []byte) { b[tcp4Off+12] = 4 << 4 }) }, VerdictDropTCPDoffShort},
		{"tcp data offset 0", func(t *testing.T) []byte { return mutate(frame(t, syn6), func(b []byte) { b[tcp6Off+12] = 0 }) }, VerdictDropTCPDoffShort},
		{"tcp data offset past end", func(t *testing.T) []byte { return mutate(frame(t, syn4), func(b []byte) { b[tcp4Off+12] = 15 << 4 }) }, VerdictDropTCPDoffLong},
		{"tcp option runs off header", func(t *testing.T) []byte {
			// MSS option (4 bytes) with length 6.
			return mutate(frame(t, syn4), func(b []byte) { b[tcp4Off+21] = 6 })
		}, VerdictDropTCPOptions},
		{"tcp option length 1", func(t *testing.T) []byte { return mutate(frame(t, syn4), func(b []byte) { b[tcp4Off+21] = 1 }) }, VerdictDropTCPOptions},
		{"tcp option kind without length", func(t *testing.T) []byte {
			// NOP NOP NOP MSS-kind as the last byte of the header.
			return mutate(frame(t, syn4), func(b []byte) { copy(b[tcp4Off+20:], []byte{1, 1, 1, 2}) })
		}, VerdictDropTCPOptions},
		{"timestamp option wrong length", func(t *testing.T) []byte {
			p := ack4
			p.opts = []layers.TCPOption{optNOP, optNOP, optTS(1, 2)}
			return mutate(frame(t, p), func(b []byte) { b[tcp4Off+23] = 9 })
		}, VerdictDropTCPOptions},
		{"sack option wrong length", func(t *testing.T) []byte {
			p := ack4
			p.opts = []layers.TCPOption{optNOP, optNOP, optSACK(1, 2)}
			return mutate(frame(t, p), func(b []byte) { b[tcp4Off+23] = 9 })
		}, VerdictDropTCPOptions},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRun(t, d, tc.data(t))
			if r.verdict != tc.want {
				t.Errorf("verdict %v, want %v", r.verdict, tc.want)
			}
		})
	}
}

func TestNoSocket(t *testing.T) {
	d := testDataplane(t, Config{})
	for _, p := range []pkt{
		{src: client4, dst: svc4, flags: "S"},
		{src: client6, dst: svc6, flags: "A"},
		{src: back4, dst: netip.AddrPortFrom(local4, 45000), flags: "SA"},
	} {
		if r := mustRun(t, d, frame(t, p)); r.verdict != VerdictDropNoSocket {
			t.Errorf("%v -> %v %s: verdict %v, want %v", p.src, p.dst, p.flags, r.verdict, VerdictDropNoSocket)
		}
	}
	// A socket on queue 0 fixes it; unregistering breaks it again.
	withSocket(t, d)
	syn := frame(t, pkt{src: client4, dst: svc4, flags: "S"})
	if r := mustRun(t, d, syn); r.verdict != VerdictXSKSyn {
		t.Fatalf("with socket: verdict %v", r.verdict)
	}
	if err := d.UnregisterSocket(loIfindex, 0); err != nil {
		t.Fatal(err)
	}
	if r := mustRun(t, d, syn); r.verdict != VerdictDropNoSocket {
		t.Fatalf("after unregister: verdict %v", r.verdict)
	}
	if err := d.UnregisterSocket(loIfindex, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unregister twice: %v, want ErrNotFound", err)
	}
}

// TestSocketSlots: every interface's queue 0 has its own socket; an
// interface's queues never reach another interface's slot.
func TestSocketSlots(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	ifA, ifB := addVeth(t, MaxQueues+1)
	d := testDataplane(t, Config{})
	syn := frame(t, pkt{src: client4, dst: svc4, flags: "S"})
	expect := func(step string, want map[[2]int]Verdict) {
		t.Helper()
		for iq, v := range want {
			if r := mustRunOn(t, d, append([]byte(nil), syn...), iq[0], iq[1]); r.verdict != v {
				t.Errorf("%s: ifindex %d queue %d: verdict %v, want %v", step, iq[0], iq[1], r.verdict, v)
			}
		}
	}
	slotOf := func(ifindex int) (uint32, bool) {
		var slot uint32
		err := d.objs.Ifslots.Lookup(uint32(ifindex), &slot)
		return slot, err == nil
	}

	if err := d.RegisterSocket(ifA, 0, xskSocket(t)); err != nil {
		t.Fatal(err)
	}
	expect("socket on A:0", map[[2]int]Verdict{
		{ifA, 0}: VerdictXSKSyn, {ifA, 1}: VerdictDropNoSocket,
		{ifB, 0}: VerdictDropNoSocket, {loIfindex, 0}: VerdictDropNoSocket,
	})
	if err := d.RegisterSocket(ifB, 0, xskSocket(t)); err != nil {
		t.Fatal(err)
	}
	sa, okA := slotOf(ifA)
	sb, okB := slotOf(ifB)
	if !okA || !okB || sa == sb {
		t.Fatalf("slots: A %d (%v), B %d (%v), want two distinct ones", sa, okA, sb, okB)
	}
	// Queue MaxQueues of the first slot would index the next slot's queue 0.
	expect("sockets on A:0 and B:0", map[[2]int]Verdict{
		{ifA, 0}: VerdictXSKSyn, {ifB, 0}: VerdictXSKSyn,
		{ifA, MaxQueues}: VerdictDropNoSocket, {ifB, MaxQueues}: VerdictDropNoSocket,
	})
	if err := d.RegisterSocket(ifA, 1, xskSocket(t)); err != nil {
		t.Fatal(err)
	}
	if err := d.UnregisterSocket(ifA, 0); err != nil {
		t.Fatal(err)
	}
	expect("sockets on A:1 and B:0", map[[2]int]Verdict{
		{ifA, 0}: VerdictDropNoSocket, {ifA, 1}: VerdictXSKSyn, {ifB, 0}: VerdictXSKSyn,
	})
	// The last socket of an interface frees its slot for the next one.
	if err := d.UnregisterSocket(ifA, 1); err != nil {
		t.Fatal(err)
	}
	if _, ok := slotOf(ifA); ok {
		t.Fatal("interface A keeps its slot without sockets")
	}
	expect("socket on B:0", map[[2]int]Verdict{{ifA, 1}: VerdictDropNoSocket, {ifB, 0}: VerdictXSKSyn})
	if err := d.RegisterSocket(loIfindex, 0, xskSocket(t)); err != nil {
		t.Fatal(err)
	}
	if s, _ := slotOf(loIfindex); s != sa {
		t.Fatalf("loopback got slot %d, want the freed slot %d", s, sa)
	}
	expect("sockets on lo:0 and B:0", map[[2]int]Verdict{{loIfindex, 0}: VerdictXSKSyn, {ifA, 0}: VerdictDropNoSocket, {ifB, 0}: VerdictXSKSyn})
}

// TestSocketDelivery runs the program in live-frame mode, so redirected
// frames really reach the AF_XDP socket their map slot holds: a SYN on
// queue 0 of each interface lands on that interface's socket only.
func TestSocketDelivery(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	ifA, ifB := addVeth(t, 1)
	d := testDataplane(t, Config{})
	socks := map[int]*xsk{}
	for _, ifindex := range []int{ifA, ifB} {
		x, err := openXSK(ifindex, 0)
		if err != nil {
			t.Fatalf("af_xdp socket on ifindex %d: %v", ifindex, err)
		}
		t.Cleanup(x.close)
		socks[ifindex] = x
		if err := d.RegisterSocket(ifindex, 0, x.fd); err != nil {
			t.Fatal(err)
		}
	}
	syn := frame(t, pkt{src: client4, dst: svc4, flags: "S"})
	want := map[int]uint32{}
	for _, in := range []int{ifA, ifB, ifB} {
		before, err := d.Counters()
		if err != nil {
			t.Fatal(err)
		}
		opts := ebpf.RunOptions{
			Data:    syn,
			Context: xdpMD{DataEnd: uint32(len(syn)), IngressIfindex: uint32(in)},
			Flags:   unix.BPF_F_TEST_XDP_LIVE_FRAMES,
			Repeat:  1,
		}
		if _, err := d.objs.SyngateXdp.Run(&opts); err != nil {
			t.Fatalf("live run on ifindex %d: %v", in, err)
		}
		after, err := d.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if n := after[VerdictXSKSyn].Packets - before[VerdictXSKSyn].Packets; n != 1 {
			t.Fatalf("ifindex %d: %d packets counted as %v, want 1", in, n, VerdictXSKSyn)
		}
		want[in]++
		for ifindex, x := range socks {
			if got := x.received(); got != want[ifindex] {
				t.Errorf("after a SYN on ifindex %d: socket of ifindex %d received %d frames, want %d", in, ifindex, got, want[ifindex])
			}
		}
	}
}

func TestSocketLimits(t *testing.T) {
	d := testDataplane(t, Config{})
	fd := xskSocket(t)
	for _, tc := range []struct{ ifindex, queue, fd int }{
		{0, 0, fd}, {-1, 0, fd}, {1, -1, fd}, {1, MaxQueues, fd}, {1, 0, -1},
	} {
		if err := d.RegisterSocket(tc.ifindex, tc.queue, tc.fd); !errors.Is(err, ErrInvalid) {
			t.Errorf("RegisterSocket(%d, %d, %d): %v, want ErrInvalid", tc.ifindex, tc.queue, tc.fd, err)
		}
	}
	if err := d.UnregisterSocket(1, MaxQueues); !errors.Is(err, ErrInvalid) {
		t.Errorf("UnregisterSocket(1, MaxQueues): %v, want ErrInvalid", err)
	}
	if err := d.UnregisterSocket(7, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("UnregisterSocket of an unknown interface: %v, want ErrNotFound", err)
	}
	// Slots are handed out by ifindex alone; the interfaces need not exist.
	for i := range MaxInterfaces {
		if err := d.RegisterSocket(100+i, MaxQueues-1, fd); err != nil {
			t.Fatalf("interface %d of %d: %v", i+1, MaxInterfaces, err)
		}
	}
	if err := d.RegisterSocket(100+MaxInterfaces, 0, fd); !errors.Is(err, ErrTooManyInterfaces) {
		t.Fatalf("one interface too many: %v, want ErrTooManyInterfaces", err)
	}
	if err := d.RegisterSocket(100, 0, fd); err != nil {
		t.Fatalf("another queue of a known interface: %v", err)
	}
	if err := d.UnregisterSocket(101, MaxQueues-1); err != nil {
		t.Fatal(err)
	}
	if err := d.RegisterSocket(100+MaxInterfaces, 0, fd); err != nil {
		t.Fatalf("after freeing a slot: %v", err)
	}
}

func TestServiceDeletePasses(t *testing.T) {
	d := testDataplane(t, Config{})
	syn := frame(t, pkt{src: client4, dst: svc4, flags: "S"})
	if r := mustRun(t, d, syn); r.verdict != VerdictDropNoSocket {
		t.Fatalf("verdict %v", r.verdict)
	}
	if err := d.DeleteService(svc4); err != nil {
		t.Fatal(err)
	}
	r := mustRun(t, d, syn)
	if r.verdict != VerdictPassNotService {
		t.Fatalf("after delete: verdict %v", r.verdict)
	}
	if string(r.out) != string(syn) {
		t.Fatal("passed packet was modified")
	}
	if err := d.DeleteService(svc4); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	svcs, err := d.Services()
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 1 || svcs[0] != (spec.Entry{Listen: svc6, ID: 2}) {
		t.Fatalf("services after delete: %v", svcs)
	}
}

func TestDefenses(t *testing.T) {
	d := testDataplane(t, Config{DropBadFlags: true, DropSYNPayload: true})
	withSocket(t, d)
	for _, tc := range []struct {
		flags   string
		payload string
		dst     netip.AddrPort
		want    Verdict
	}{
		{"", "", svc4, VerdictDropBadFlags},
		{"SF", "", svc4, VerdictDropBadFlags},
		{"SR", "", svc4, VerdictDropBadFlags},
		{"FRA", "", svc4, VerdictDropBadFlags},
		{"F", "", svc4, VerdictDropBadFlags},
		{"FPU", "", svc4, VerdictDropBadFlags},
		{"P", "x", svc4, VerdictDropBadFlags},
		{"SF", "", netip.AddrPortFrom(local4, 40000), VerdictDropBadFlags},
		{"SF", "", other4, VerdictPassNotService},
		{"S", "hello", svc4, VerdictDropSynPayload},
		{"S", "", svc4, VerdictXSKSyn},
		{"R", "", svc4, VerdictDropRstFinUnknown},
		{"FA", "", svc4, VerdictXSKHandshake},
		{"SA", "data", svc4, VerdictXSKHandshake},
	} {
		r := mustRun(t, d, frame(t, pkt{src: client4, dst: tc.dst, flags: tc.flags, payload: []byte(tc.payload)}))
		if r.verdict != tc.want {
			t.Errorf("flags %q payload %q to %v: verdict %v, want %v", tc.flags, tc.payload, tc.dst, r.verdict, tc.want)
		}
	}
}

func TestSYNRateLimit(t *testing.T) {
	d := testDataplane(t, Config{SYNRateLimit: RateLimit{PerSecond: 1, Burst: 3, Prefix4: 24, Prefix6: 48}})
	withSocket(t, d)
	exempt := netip.MustParseAddrPort("192.0.2.10:80")
	if err := d.SetService(spec.Entry{Listen: exempt, ID: 9, NoRateLimit: true}); err != nil {
		t.Fatal(err)
	}
	syn := func(src string, dst netip.AddrPort) []byte {
		return frame(t, pkt{src: netip.MustParseAddrPort(src), dst: dst, flags: "S"})
	}
	// Three SYNs from 203.0.113.0/24 pass, the fourth does not; the
	// refill is one per second, far slower than this loop.
	for i, want := range []Verdict{VerdictXSKSyn, VerdictXSKSyn, VerdictXSKSyn, VerdictDropSynRateLimit, VerdictDropSynRateLimit} {
		src := fmt.Sprintf("203.0.113.%d:%d", 1+i*50, 1000+i)
		if r := mustRun(t, d, syn(src, svc4)); r.verdict != want {
			t.Errorf("syn %d from %s: verdict %v, want %v", i, src, r.verdict, want)
		}
	}
	// Another /24 has its own bucket; the exempt service ignores the limit;
	// handshake ACKs are not SYNs.
	if r := mustRun(t, d, syn("203.0.114.1:1", svc4)); r.verdict != VerdictXSKSyn {
		t.Errorf("other prefix: verdict %v", r.verdict)
	}
	if r := mustRun(t, d, syn("203.0.113.7:1", exempt)); r.verdict != VerdictXSKSyn {
		t.Errorf("exempt service: verdict %v", r.verdict)
	}
	if r := mustRun(t, d, frame(t, pkt{src: client4, dst: svc4, flags: "A"})); r.verdict != VerdictXSKHandshake {
		t.Errorf("ack: verdict %v", r.verdict)
	}
	// IPv6 buckets are per /48 here.
	for i, want := range []Verdict{VerdictXSKSyn, VerdictXSKSyn, VerdictXSKSyn, VerdictDropSynRateLimit} {
		src := fmt.Sprintf("[2001:db8:1:%x::1]:1", i)
		if r := mustRun(t, d, syn(src, svc6)); r.verdict != want {
			t.Errorf("v6 syn %d: verdict %v, want %v", i, r.verdict, want)
		}
	}
	if r := mustRun(t, d, syn("[2001:db8:2::1]:1", svc6)); r.verdict != VerdictXSKSyn {
		t.Errorf("other v6 /48: verdict %v", r.verdict)
	}
}

// TestFastPathNextHop covers what happens after the rewrite: XDP_TX on the
// learned ingress interface, redirect to another attached interface, drops
// when nothing is known or the interface is not in the redirect map.
func TestFastPathNextHop(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	dummy, _ := addVeth(t, 0)
	d := testDataplane(t, Config{})
	key := flow.Key{Src: client4, Dst: svc4}
	data := frame(t, pkt{src: client4, dst: svc4, flags: "A", seq: 1, ack: 2, window: 100})
	for _, tc := range []struct {
		ifindex int
		addPort bool
		want    Verdict
	}{
		{ifindex: 1, want: VerdictFastTX},
		{ifindex: 0, want: VerdictDropFastNoNeigh},
		{ifindex: dummy, want: VerdictDropFastNoPort},
		{ifindex: dummy, addPort: true, want: VerdictFastRedirect},
	} {
		if tc.addPort {
			if err := d.objs.TxPorts.Put(uint32(dummy), uint32(dummy)); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.InstallFlow(key, flow.NAT{Src: netip.MustParseAddrPort("198.51.100.1:40000"), Dst: back4, Ifindex: tc.ifindex, SrcMAC: [6]byte{2, 0, 0, 0, 0, 1}, DstMAC: [6]byte{2, 0, 0, 0, 0, 2}}); err != nil {
			t.Fatal(err)
		}
		if r := mustRun(t, d, append([]byte(nil), data...)); r.verdict != tc.want {
			t.Errorf("learned ifindex %d (port in map %v): verdict %v, want %v", tc.ifindex, tc.addPort, r.verdict, tc.want)
		}
	}
}

// TestFastPathFIB routes with the kernel's FIB: a neighbour gives the MACs
// (the learned ones are ignored), a blackhole route drops.
func TestFastPathFIB(t *testing.T) {
	requireRoot(t)
	inNewNetns(t)
	setUp(t, "lo", nil)
	addVeth(t, 0)
	setUp(t, "sgtest1", nil)
	setUp(t, "sgtest0", net.HardwareAddr{2, 0, 0, 0, 0, 0xaa})
	if err := netlink.AddrAdd(linkByName(t, "sgtest0"), &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(198, 51, 100, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.NeighAdd(&netlink.Neigh{
		LinkIndex: ifindex(t, "sgtest0"), Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: net.IPv4(198, 51, 100, 20), HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0xbb},
	}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.RouteAdd(&netlink.Route{Type: unix.RTN_BLACKHOLE, Dst: &net.IPNet{IP: net.IPv4(10, 66, 0, 0), Mask: net.CIDRMask(16, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/all/forwarding", []byte("1"), 0); err != nil {
		t.Skipf("skipping: enable forwarding in the test namespace: %v", err)
	}
	d := testDataplane(t, Config{})
	dummy := ifindex(t, "sgtest0")
	if err := d.objs.TxPorts.Put(uint32(dummy), uint32(dummy)); err != nil {
		t.Fatal(err)
	}
	key := flow.Key{Src: client4, Dst: svc4}
	nat := flow.NAT{Src: netip.MustParseAddrPort("198.51.100.1:40000"), Dst: back4, Ifindex: 1, SrcMAC: [6]byte{2, 0, 0, 0, 0, 1}, DstMAC: [6]byte{2, 0, 0, 0, 0, 2}}
	if err := d.InstallFlow(key, nat); err != nil {
		t.Fatal(err)
	}
	r := mustRun(t, d, frame(t, pkt{src: client4, dst: svc4, flags: "A"}))
	if r.verdict != VerdictFastRedirect {
		t.Fatalf("verdict %v, want %v", r.verdict, VerdictFastRedirect)
	}
	if got, want := fmt.Sprintf("% x", r.out[:12]), "02 00 00 00 00 bb 02 00 00 00 00 aa"; got != want {
		t.Errorf("MACs from the FIB: %s, want %s", got, want)
	}
	nat.Dst = netip.MustParseAddrPort("10.66.1.1:80")
	if err := d.InstallFlow(key, nat); err != nil {
		t.Fatal(err)
	}
	if r := mustRun(t, d, frame(t, pkt{src: client4, dst: svc4, flags: "A"})); r.verdict != VerdictDropFastNoRoute {
		t.Fatalf("blackhole: verdict %v, want %v", r.verdict, VerdictDropFastNoRoute)
	}
}

func ifindex(tb testing.TB, name string) int {
	tb.Helper()
	iface, err := net.InterfaceByName(name) // netlink: sees this thread's namespace
	if err != nil {
		tb.Fatalf("ifindex of %s: %v", name, err)
	}
	return iface.Index
}
