package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/lab"
)

// The attacker of the tests: a sniffer that learns where each connection's
// sequence numbers are (so a test can aim a RST inside the window on
// purpose) and a crafter that sends spoofed TCP segments (IPv4 or IPv6)
// from raw sockets. Both live in a lab namespace; nothing leaves it.

// seqView is what one end's own segments tell about a connection: its
// next sequence number and the last ack it sent.
type seqView struct {
	nxt, ack uint32
	seen     bool
}

// ports is a connection's source and destination port as one end sends.
type ports struct{ src, dst uint16 }

// sniffer reads every frame on one interface of a namespace (AF_PACKET) and
// keeps a seqView per connection of the segments one address sends.
type sniffer struct {
	fd   int
	from netip.Addr
	stop chan struct{}
	done chan struct{}

	mu    sync.Mutex
	views map[ports]seqView
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sniff starts a sniffer on ifname in ns for the segments from sends.
func sniff(ns *lab.NS, ifname string, from netip.Addr) (*sniffer, error) {
	ifi, err := ns.Interface(ifname)
	if err != nil {
		return nil, err
	}
	s := &sniffer{from: from, stop: make(chan struct{}), done: make(chan struct{}), views: map[ports]seqView{}}
	err = ns.Run(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		s.fd = fd
		tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return fmt.Errorf("packet socket timeout: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind packet socket to %s: %w", ifname, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	go s.loop()
	return s, nil
}

func (s *sniffer) loop() {
	defer close(s.done)
	buf := make([]byte, 65536)
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			continue // timeout: look at stop again
		}
		s.learn(buf[:n])
	}
}

// learn takes the watched end's data and ACK segments; SYNs and RSTs (the
// attacker's own among them) teach nothing. The lab sends no IPv4 options
// and no IPv6 extension headers.
func (s *sniffer) learn(f []byte) {
	if len(f) < 14+20+20 {
		return
	}
	ip := f[14:]
	var tcp []byte
	var tcpLen int
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		ihl := int(ip[0]&0x0f) * 4
		if ip[9] != 6 || len(ip) < ihl+20 || netip.AddrFrom4([4]byte(ip[12:16])) != s.from {
			return
		}
		tcp, tcpLen = ip[ihl:], int(binary.BigEndian.Uint16(ip[2:]))-ihl
	case 0x86dd:
		if len(ip) < 40+20 || ip[6] != 6 || netip.AddrFrom16([16]byte(ip[8:24])) != s.from {
			return
		}
		tcp, tcpLen = ip[40:], int(binary.BigEndian.Uint16(ip[4:]))
	default:
		return
	}
	flags := tcp[13]
	if flags&(0x02|0x04) != 0 || flags&0x10 == 0 {
		return
	}
	doff := int(tcp[12]>>4) * 4
	end := binary.BigEndian.Uint32(tcp[4:]) + uint32(tcpLen-doff)
	if flags&0x01 != 0 {
		end++
	}
	port := ports{binary.BigEndian.Uint16(tcp[0:]), binary.BigEndian.Uint16(tcp[2:])}
	s.mu.Lock()
	v := s.views[port]
	if !v.seen || int32(end-v.nxt) > 0 {
		v.nxt = end
	}
	v.ack, v.seen = binary.BigEndian.Uint32(tcp[8:]), true
	s.views[port] = v
	s.mu.Unlock()
}

// view returns what the sniffer knows of the connection p.
func (s *sniffer) view(p ports) (seqView, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.views[p]
	if !v.seen {
		return v, fmt.Errorf("no segment %v:%d -> %d seen", s.from, p.src, p.dst)
	}
	return v, nil
}

// conns lists the connections seen from source port src.
func (s *sniffer) conns(src uint16) []ports {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ports
	for p := range s.views {
		if p.src == src {
			out = append(out, p)
		}
	}
	return out
}

func (s *sniffer) close() {
	close(s.stop)
	<-s.done
	unix.Close(s.fd)
}

// crafter sends hand-made TCP segments from raw sockets (IPPROTO_RAW: the
// header is ours) in a namespace; the kernel routes them.
type crafter struct{ fd4, fd6 int }

func newCrafter(ns *lab.NS) (*crafter, error) {
	c := &crafter{fd4: -1, fd6: -1}
	err := ns.Run(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		c.fd4 = fd
		if fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			unix.Close(c.fd4)
			return fmt.Errorf("raw IPv6 socket: %w", err)
		}
		c.fd6 = fd
		return nil
	})
	return c, err
}

// segment is one spoofed TCP segment.
type segment struct {
	src, dst netip.AddrPort
	flags    string // of "SAFRP"
	seq, ack uint32
	window   uint16
}

func (c *crafter) send(sg segment) error {
	if sg.src.Addr().Is4() != sg.dst.Addr().Is4() {
		return errors.New("crafter: mixed address families")
	}
	tcp := &layers.TCP{
		SrcPort: layers.TCPPort(sg.src.Port()), DstPort: layers.TCPPort(sg.dst.Port()),
		Seq: sg.seq, Ack: sg.ack, Window: sg.window,
	}
	for _, f := range sg.flags {
		switch f {
		case 'S':
			tcp.SYN = true
			tcp.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}
		case 'A':
			tcp.ACK = true
		case 'F':
			tcp.FIN = true
		case 'R':
			tcp.RST = true
		case 'P':
			tcp.PSH = true
		}
	}
	var (
		ip interface {
			gopacket.NetworkLayer
			gopacket.SerializableLayer
		}
		fd int
		to unix.Sockaddr
	)
	if sg.src.Addr().Is4() {
		ip = &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP,
			SrcIP: sg.src.Addr().AsSlice(), DstIP: sg.dst.Addr().AsSlice()}
		fd, to = c.fd4, &unix.SockaddrInet4{Addr: sg.dst.Addr().As4()}
	} else {
		ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: sg.src.Addr().AsSlice(), DstIP: sg.dst.Addr().AsSlice()}
		fd, to = c.fd6, &unix.SockaddrInet6{Addr: sg.dst.Addr().As16()}
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		return err
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, tcp); err != nil {
		return fmt.Errorf("build segment: %w", err)
	}
	if err := unix.Sendto(fd, buf.Bytes(), 0, to); err != nil {
		return fmt.Errorf("send %s %v -> %v: %w", sg.flags, sg.src, sg.dst, err)
	}
	return nil
}

func (c *crafter) close() {
	unix.Close(c.fd4)
	unix.Close(c.fd6)
}
