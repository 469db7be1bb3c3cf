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
