package afxdp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/syngate/syngate/pktio"
)

// TestSYNInUDPOutRSTBack: the far kernel's SYN reaches Go through the
// socket; Go answers with a UDP datagram built in a fresh frame and with a
// RST written over the SYN's own frame, and the far namespace sees both.
func TestSYNInUDPOutRSTBack(t *testing.T) {
	const frames = 64
	r := newRig(t, Config{Frames: frames})
	if r.sock.Mode() != ModeCopy {
		t.Logf("socket runs in %s mode", r.sock.Mode())
	}

	// A UDP socket in the far namespace for the datagram from Go.
	var uc *net.UDPConn
	err := r.far.Run(func() error {
		var err error
		uc, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.farIP, 0)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()

	// The far kernel connects to the near address; its SYN is redirected.
	const port = 4242
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dialErr := make(chan error, 1)
	go func() {
		dialErr <- r.far.Run(func() error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp4", netip.AddrPortFrom(r.nearIP, port).String())
			if err == nil {
				c.Close()
			}
			return err
		})
	}()

	var syn layers.TCP
	var synIP layers.IPv4
	var pkts [1]pktio.Packet
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := r.sock.Receive(pkts[:])
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			st, _ := r.sock.Stats()
			t.Fatalf("no SYN through the socket; stats %+v", st)
		}
		if _, err := r.sock.Wait(100 * time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	pkt := gopacket.NewPacket(pkts[0].Data, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if eth == nil || ip == nil || tcp == nil {
		t.Fatalf("not an Ethernet/IPv4/TCP frame: %v", pkt)
	}
	if !ip.SrcIP.Equal(r.farIP.AsSlice()) || !ip.DstIP.Equal(r.nearIP.AsSlice()) || tcp.DstPort != port || !tcp.SYN || tcp.ACK {
		t.Fatalf("expected the SYN %s -> %s:%d, got %v", r.farIP, r.nearIP, port, pkt)
	}
	if eth.SrcMAC.String() != r.farMAC.String() || eth.DstMAC.String() != r.nearMAC.String() {
		t.Fatalf("MACs %s -> %s, want %s -> %s", eth.SrcMAC, eth.DstMAC, r.farMAC, r.nearMAC)
	}
	if cap(pkts[0].Data) < 1500 {
		t.Fatalf("received frame can only grow to %d bytes", cap(pkts[0].Data))
	}
	syn, synIP = *tcp, *ip
	if !tcpChecksumOK(ip, pkts[0].Data[14+int(ip.IHL)*4:14+int(ip.Length)]) {
		t.Fatal("SYN arrived with a bad TCP checksum")
	}

	// A datagram in a fresh frame.
	if err := pktio.Send(r.sock, r.udpFrame(t, 5353, uint16(uc.LocalAddr().(*net.UDPAddr).Port), []byte("from go"))); err != nil {
		t.Fatal(err)
	}

	// The RST, written into the SYN's frame and sent from there.
	ipr := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: synIP.DstIP, DstIP: synIP.SrcIP}
	tcpr := &layers.TCP{SrcPort: syn.DstPort, DstPort: syn.SrcPort, Ack: syn.Seq + 1, RST: true, ACK: true}
	tcpr.SetNetworkLayerForChecksum(ipr)
	rst := serialize(t, &layers.Ethernet{SrcMAC: r.nearMAC, DstMAC: r.farMAC, EthernetType: layers.EthernetTypeIPv4}, ipr, tcpr)
	pkts[0].Data = append(pkts[0].Data[:0], rst...) // in place: fits, so no copy
	if n, err := r.sock.Transmit(pkts[:]); n != 1 || err != nil {
		t.Fatalf("transmit rst in place: %d, %v", n, err)
	}
	if err := r.sock.Flush(time.Second); err != nil {
		t.Fatal(err)
	}

	uc.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 64)
	n, from, err := uc.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("far namespace got no datagram: %v", err)
	}
	if string(buf[:n]) != "from go" || from != netip.AddrPortFrom(r.nearIP, 5353) {
		t.Fatalf("far namespace got %q from %s", buf[:n], from)
	}
	select {
	case err := <-dialErr:
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("connect after our RST: %v, want connection refused", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the far kernel ignored the RST")
	}

	st, err := r.sock.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats %+v", st)
	if st.RxPackets < 1 || st.TxPackets != 2 || st.TxCompleted != 2 || st.LentFrames != 0 ||
		st.FreeFrames+st.KernelFrames != frames || st.TxInvalidDescs != 0 || st.BadAddrs != 0 {
		t.Fatalf("stats after the exchange: %+v", st)
	}
}

func TestOpenErrors(t *testing.T) {
	r := newRig(t, Config{Frames: 64})
	err := r.near.Run(func() error {
		if _, err := Open("nope0", 0, Config{Frames: 64}); !errors.Is(err, ErrNoInterface) {
			t.Errorf("missing interface: %v", err)
		}
		if _, err := Open(r.nearIf, 1, Config{Frames: 64}); !errors.Is(err, ErrNoQueue) {
			t.Errorf("missing queue: %v", err)
		}
		// Queue 0 already has r.sock with a UMEM of its own.
		if s, err := Open(r.nearIf, 0, Config{Frames: 64}); err == nil {
			s.Close()
			t.Errorf("second socket bound to a busy queue")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.sock.Mode() != ModeCopy {
		t.Errorf("auto mode on veth chose %s, want copy", r.sock.Mode())
	}
	err = r.far.Run(func() error {
		// veth has no zero-copy support.
		if _, err := Open(r.farIf, 0, Config{Frames: 64, Mode: ModeZeroCopy}); !errors.Is(err, ErrZeroCopy) {
			t.Errorf("forced zero-copy on veth: %v", err)
		}
		socks, err := OpenAll(r.farIf, Config{Frames: 64})
		if err != nil {
			return err
		}
		if len(socks) != 1 || socks[0].Queue() != 0 || socks[0].FD() < 0 {
			t.Errorf("OpenAll on a one-queue veth: %d sockets", len(socks))
		}
		for _, s := range socks {
			s.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestFrameOwnership(t *testing.T) {
	const frames = 64
	r := newRig(t, Config{Frames: frames, TxSize: 16, CompSize: 16})
	pkts := make([]pktio.Packet, 40)
	if n := r.sock.Alloc(pkts); n != 32 {
		t.Fatalf("alloc %d, want the 32 frames not in the fill ring", n)
	}
	if n := r.sock.Alloc(make([]pktio.Packet, 1)); n != 0 {
		t.Fatalf("alloc beyond the free frames gave %d", n)
	}
	frame := r.udpFrame(t, 1, 9, []byte("x"))
	for i := range pkts[:32] {
		pkts[i].Data = append(pkts[i].Data, frame...)
	}
	// Outgrown: append copied the data out of the UMEM.
	pkts[3].Data = append(pkts[3].Data, make([]byte, r.sock.FrameSize())...)
	n, err := r.sock.Transmit(pkts[:32])
	if n != 3 || !errors.Is(err, pktio.ErrFrame) {
		t.Fatalf("transmit with a foreign buffer at 3: %d, %v", n, err)
	}
	// The TX ring holds 16: of the 29 left only 16 are taken, and the
	// caller keeps the rest.
	pkts[3].Data = pkts[3].Data[:0]
	r.sock.Release(pkts[3:4])
	n, err = r.sock.Transmit(pkts[4:32])
	if n > 16 || n == 0 || err != nil {
		t.Fatalf("transmit 28 into a 16-slot ring: %d, %v", n, err)
	}
	rest := pkts[4+n : 32]
	if m, err := r.sock.Transmit(pkts[4:5]); m != 0 || !errors.Is(err, pktio.ErrFrame) {
		t.Fatalf("transmit of a frame already given away: %d, %v", m, err)
	}
	if err := r.sock.Flush(time.Second); err != nil {
		t.Fatal(err)
	}
	r.sock.Release(rest)
	r.sock.Release(rest[:1]) // twice: ignored and counted
	st, err := r.sock.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.BadReleases != 1 || st.LentFrames != 0 || st.FreeFrames+st.KernelFrames != frames || st.TxCompleted != uint64(3+n) {
		t.Fatalf("stats %+v", st)
	}
}

// TestReceiveBurstKeepsFrames floods the socket from the far end with more
// frames than it has, and checks every frame it delivers is one of ours and
// that none is lost from the UMEM along the way.
func TestReceiveBurstKeepsFrames(t *testing.T) {
	const frames, burst = 128, 3000
	r := newRig(t, Config{Frames: frames})
	gen := r.openFar(t, Config{Frames: 256})
	frame := r.synFrame(t, 40000)

	genDone := make(chan error, 1)
	go func() {
		pkts := make([]pktio.Packet, 32)
		sent := 0
		for sent < burst {
			n := gen.Alloc(pkts[:min(32, burst-sent)])
			for i := range pkts[:n] {
				pkts[i].Data = append(pkts[i].Data, frame...)
				pkts[i].Data[14+20+4] = byte(sent + i) // one byte of the sequence number
			}
			m, err := gen.Transmit(pkts[:n])
			if err != nil {
				genDone <- err
				return
			}
			gen.Release(pkts[m:n])
			sent += m
			// Paced, so losses happen in the socket (and are
			// counted there), not in the veth's own queue.
			time.Sleep(200 * time.Microsecond)
		}
		genDone <- gen.Flush(5 * time.Second)
	}()

	pkts := make([]pktio.Packet, 64)
	got := 0
	idle := 0
	for idle < 5 {
		n, err := r.sock.Receive(pkts)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pkts[:n] {
			if len(p.Data) != len(frame) || string(p.Data[:14+20+4]) != string(frame[:14+20+4]) {
				t.Fatalf("unexpected frame % x", p.Data)
			}
		}
		r.sock.Release(pkts[:n])
		got += n
		if n == 0 {
			if ok, _ := r.sock.Wait(100 * time.Millisecond); !ok {
				idle++
			}
		}
	}
	if err := <-genDone; err != nil {
		t.Fatal(err)
	}
	st, err := r.sock.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("received %d of %d; stats %+v", got, burst, st)
	if got == 0 || uint64(got)+st.RxDropped+st.RxRingFull != burst {
		t.Fatalf("received %d + dropped %d + ring full %d != %d sent", got, st.RxDropped, st.RxRingFull, burst)
	}
	if st.LentFrames != 0 || st.FreeFrames+st.KernelFrames != frames || st.BadAddrs != 0 {
		t.Fatalf("frames lost: %+v", st)
	}
}

func tcpChecksumOK(ip *layers.IPv4, seg []byte) bool {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(ip.SrcIP.To4())
	add(ip.DstIP.To4())
	add([]byte{0, 6, byte(len(seg) >> 8), byte(len(seg))})
	add(seg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return sum == 0xffff
}
