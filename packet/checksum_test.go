package packet

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// refSum is RFC 1071's reference loop: 16 bits at a time, fold at the end.
func refSum(b []byte, initial uint16) uint16 {
	acc := uint32(initial)
	for len(b) >= 2 {
		acc += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}

func TestSumRFC1071Example(t *testing.T) {
	// RFC 1071 section 3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if s := Sum(b, 0); s != 0xddf2 {
		t.Errorf("Sum = %#04x, want 0xddf2", s)
	}
	if c := Checksum(b, 0); c != 0x220d {
		t.Errorf("Checksum = %#04x, want 0x220d", c)
	}
}

// TestSumMatchesReferenceAndGopacket compares the 8-bytes-at-a-time loop
// with the 16-bit reference and with gopacket over every length up to 300,
// unaligned starts, worst-case carries and chained calls.
func TestSumMatchesReferenceAndGopacket(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 400)
	ones := make([]byte, 400)
	for i := range ones {
		ones[i] = 0xff
	}
	for round := 0; round < 20; round++ {
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		for _, buf := range [][]byte{data, ones} {
			for off := 0; off < 8; off++ {
				for n := 0; n+off <= 300; n++ {
					b := buf[off : off+n]
					init := uint16(r.Uint32())
					if got, want := Sum(b, init), refSum(b, init); got != want {
						t.Fatalf("Sum(len %d, off %d, init %#x) = %#04x, want %#04x", n, off, init, got, want)
					}
					if got, want := Checksum(b, 0), gopacket.FoldChecksum(gopacket.ComputeChecksum(b, 0)); got != want {
						t.Fatalf("Checksum(len %d) = %#04x, gopacket %#04x", n, got, want)
					}
					if n%2 == 0 && n >= 2 {
						// Chaining over an even split equals one call.
						k := (n / 2) &^ 1
						if Sum(b[k:], Sum(b[:k], init)) != Sum(b, init) {
							t.Fatalf("chained Sum differs at len %d split %d", n, k)
						}
					}
				}
			}
		}
	}
}

// TestChecksumsMatchGopacket builds IPv4 and IPv6 TCP frames with gopacket's
// ComputeChecksums and recomputes both checksums with ours.
func TestChecksumsMatchGopacket(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200; i++ {
		v6 := i%2 == 1
		var src, dst netip.Addr
		if v6 {
			var a, b [16]byte
			for j := range a {
				a[j], b[j] = byte(r.Uint32()), byte(r.Uint32())
			}
			a[0], b[0] = 0x20, 0x20 // keep them out of the v4-mapped range
			src, dst = netip.AddrFrom16(a), netip.AddrFrom16(b)
		} else {
			src = netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
			dst = netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
		}
		payload := make([]byte, r.IntN(1500))
		for j := range payload {
			payload[j] = byte(r.Uint32())
		}
		tcp := &layers.TCP{Seq: r.Uint32(), Ack: r.Uint32(), Window: uint16(r.Uint32()), ACK: true, PSH: i%3 == 0,
			Options: []layers.TCPOption{nop, nop, tstamp(r.Uint32(), r.Uint32())}}
		frame := gopacketFrame(t, i%4 == 0, netip.AddrPortFrom(src, uint16(r.Uint32())), netip.AddrPortFrom(dst, uint16(r.Uint32())), nil, tcp, payload)
		var s Segment
		if err := Parse(frame, &s); err != nil {
			t.Fatal(err)
		}
		tcpSeg := frame[s.TCPOffset:s.IPEnd()]
		if got := TCPChecksum(src, dst, tcpSeg); got != tcp.Checksum {
			t.Fatalf("TCPChecksum = %#04x, gopacket %#04x (v6=%v len=%d)", got, tcp.Checksum, v6, len(tcpSeg))
		}
		if !v6 {
			hdr := frame[s.IPOffset:s.TCPOffset]
			if got, want := IPv4HeaderChecksum(hdr), binary.BigEndian.Uint16(hdr[10:]); got != want {
				t.Fatalf("IPv4HeaderChecksum = %#04x, gopacket %#04x", got, want)
			}
		}
	}
}

// TestIncrementalUpdate rewrites fields the way a splice does and checks
// that the RFC 1624 update equals a full recomputation.
func TestIncrementalUpdate(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	buf := make([]byte, 0, 2048)
	for i := 0; i < 500; i++ {
		f := Fields{Src: ap(client4, 40000), Dst: ap(service4, 80), Seq: r.Uint32(), Ack: r.Uint32(),
			Flags: ACK, Window: uint16(r.Uint32()), Payload: make([]byte, r.IntN(64))}
		f.Options.Timestamps, f.Options.TSval, f.Options.TSecr = true, r.Uint32(), r.Uint32()
		if i%2 == 1 {
			f.Src, f.Dst = ap(client6, 40000), ap(service6, 80)
		}
		n, err := Build(buf, &f)
		if err != nil {
			t.Fatal(err)
		}
		frame := buf[:n]
		var s Segment
		if err := Parse(frame, &s); err != nil {
			t.Fatal(err)
		}
		tcp := frame[s.TCPOffset:s.IPEnd()]
		check := binary.BigEndian.Uint16(tcp[16:])

		// 16-bit: the window (and the destination port).
		newWin := uint16(r.Uint32())
		check = Update16(check, binary.BigEndian.Uint16(tcp[14:]), newWin)
		binary.BigEndian.PutUint16(tcp[14:], newWin)
		newPort := uint16(r.Uint32())
		check = Update16(check, binary.BigEndian.Uint16(tcp[2:]), newPort)
		binary.BigEndian.PutUint16(tcp[2:], newPort)
		// 32-bit: sequence number and TSecr.
		newSeq := r.Uint32()
		check = Update32(check, binary.BigEndian.Uint32(tcp[4:]), newSeq)
		binary.BigEndian.PutUint32(tcp[4:], newSeq)
		newTSecr := r.Uint32()
		check = Update32(check, binary.BigEndian.Uint32(frame[s.TSOffset+4:]), newTSecr)
		binary.BigEndian.PutUint32(frame[s.TSOffset+4:], newTSecr)
		// Address: pseudo-header for TCP, plus the IPv4 header checksum.
		var newDst netip.Addr
		if s.Is6() {
			var a [16]byte
			for j := range a {
				a[j] = byte(r.Uint32())
			}
			a[0] = 0xfd
			newDst = netip.AddrFrom16(a)
			copy(frame[s.IPOffset+24:], a[:])
		} else {
			a := [4]byte{10, byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}
			newDst = netip.AddrFrom4(a)
			copy(frame[s.IPOffset+16:], a[:])
			ip := frame[s.IPOffset:]
			binary.BigEndian.PutUint16(ip[10:], UpdateAddr(binary.BigEndian.Uint16(ip[10:]), s.Dst.Addr(), newDst))
			if got, want := binary.BigEndian.Uint16(ip[10:]), IPv4HeaderChecksum(ip[:20]); got != want {
				t.Fatalf("incremental ipv4 header checksum %#04x, full %#04x", got, want)
			}
		}
		check = UpdateAddr(check, s.Dst.Addr(), newDst)

		if want := TCPChecksum(s.Src.Addr(), newDst, tcp); check != want {
			t.Fatalf("round %d: incremental tcp checksum %#04x, full %#04x", i, check, want)
		}
	}
}

func TestPseudoHeaderMapped(t *testing.T) {
	m := netip.AddrFrom16(client4.As16())
	if PseudoHeaderSum(m, service4, 6, 20) != PseudoHeaderSum(client4, service4, 6, 20) {
		t.Error("an IPv4-mapped address must sum like the IPv4 address")
	}
}
