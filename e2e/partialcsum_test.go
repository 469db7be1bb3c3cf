package e2e

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/lab"
	"github.com/syngate/syngate/packet"
)

// TestPartialChecksumSynAck: with the veth defaults a client's SYN reaches
// the gateway with a partial checksum (CHECKSUM_PARTIAL), and the TC
// program's cookie SYN-ACK, sent back out of the same veth, must carry a
// partial checksum too: the pseudo-header's sum, which the receiving stack
// or a NIC completes. A complete checksum there would be wrong once
// completed, yet the client's stack trusts a partial checksum without
// reading it; so the test reads the frame itself, from an AF_PACKET socket
// with PACKET_AUXDATA in the client's namespace, where the kernel marks it
// TP_STATUS_CSUMNOTREADY.
func TestPartialChecksumSynAck(t *testing.T) {
	o := labOptions{cookies: "always"}
	top := newLab(t, o)
	echoServer(t, top)
	g := startSyngate(t, top, o)
	const ethPIP = 0x0800
	proto := int(ethPIP>>8 | (ethPIP&0xff)<<8) // network order
	var fd int
	if err := top.Client.Run(func() error {
		ifi, err := net.InterfaceByName(lab.HostIf)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index}); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			return err
		}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	vip := netip.AddrPortFrom(top.VIP4, servicePort)
	c, err := dial(top.Client, vip, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	buf, oob := make([]byte, 2048), make([]byte, 256)
	for {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
		if err != nil {
			t.Fatalf("no SYN-ACK from %v seen: %v", vip, err)
		}
		f := buf[:n]
		if n < 14+20+20 || binary.BigEndian.Uint16(f[12:]) != ethPIP || f[14+9] != 6 || f[14] != 0x45 {
			continue
		}
		ip, tcp := f[14:], f[14+20:]
		src := netip.AddrFrom4([4]byte(ip[12:16]))
		if src != top.VIP4 || binary.BigEndian.Uint16(tcp[0:]) != servicePort || tcp[13]&0x12 != 0x12 {
			continue
		}
		var status uint32
		var found bool
		cms, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			t.Fatal(err)
		}
		for _, cm := range cms {
			if cm.Header.Level == unix.SOL_PACKET && cm.Header.Type == unix.PACKET_AUXDATA && len(cm.Data) >= 4 {
				status, found = binary.NativeEndian.Uint32(cm.Data), true
			}
		}
		if !found {
			t.Fatal("no PACKET_AUXDATA")
		}
		tcpLen := int(binary.BigEndian.Uint16(ip[2:])) - 20
		dst := netip.AddrFrom4([4]byte(ip[16:20]))
		field := binary.BigEndian.Uint16(tcp[16:])
		pseudo := packet.PseudoHeaderSum(src, dst, 6, tcpLen)
		t.Logf("SYN-ACK status %#x, checksum field %#04x, pseudo-header sum %#04x", status, field, pseudo)
		if status&unix.TP_STATUS_CSUMNOTREADY == 0 {
			t.Fatalf("the SYN-ACK arrived with status %#x: not partial, as the client's SYN was", status)
		}
		if field != pseudo {
			t.Fatalf("partial SYN-ACK's checksum field %#04x, want the pseudo-header sum %#04x", field, pseudo)
		}
		break
	}
	if got := g.metrics().Sum("syngate_xdp_packets_total", `reason="tx_synack_cookie"`); got < 1 {
		t.Errorf("cookie SYN-ACKs sent by the TC program: %v", got)
	}
}
