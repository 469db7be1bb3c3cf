package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/flow"
	"github.com/syngate/syngate/packet"
)

// Option bits of tcp_info.tcpi_options (include/uapi/linux/tcp.h).
const (
	tcpiOptTimestamps = 1
	tcpiOptSACK       = 2
	tcpiOptWScale     = 4
)

// tsOptionLen is what the timestamps option takes from every segment; the
// kernel's snd_mss has it subtracted, the MSS option does not.
const tsOptionLen = 12

// ProbeBackend learns what a backend's TCP stack offers in its SYN-ACK (MSS,
// window scale, SACK, timestamps) with one ordinary kernel handshake from
// source (invalid: chosen by the route). The connection is closed at once.
//
// The kernel reports the options it negotiated, which are the backend's
// when our own stack offers everything, as Linux does by default. The MSS
// is the one the path allows: the backend's or less.
//
// preamble, if any, is sent before the close: the PROXY protocol header of
// a local connection for a backend that expects one (see package health).
func ProbeBackend(ctx context.Context, backend netip.AddrPort, source netip.Addr, preamble []byte) (flow.SynOptions, error) {
	d := net.Dialer{}
	if source.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(source, 0))
	}
	c, err := d.DialContext(ctx, "tcp", backend.String())
	if err != nil {
		return flow.SynOptions{}, fmt.Errorf("probe backend %s: %w", backend, err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return flow.SynOptions{}, fmt.Errorf("probe backend %s: %w", backend, err)
	}
	var info [104]byte
	var serr error
	err = raw.Control(func(fd uintptr) {
		n := uint32(len(info))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.IPPROTO_TCP, unix.TCP_INFO,
			uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&n)), 0)
		if e != 0 {
			serr = e
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return flow.SynOptions{}, fmt.Errorf("probe backend %s: tcp_info: %w", backend, err)
	}
	if len(preamble) > 0 {
		if dl, ok := ctx.Deadline(); ok {
			c.SetWriteDeadline(dl)
		}
		c.Write(preamble) // a courtesy to the backend's log: the options are known
	}
	return parseTCPInfo(info[:]), nil
}

// parseTCPInfo reads the negotiated options out of struct tcp_info. The
// window scales are bitfields Go's x/sys struct cannot show: byte 6 holds
// tcpi_snd_wscale in its low nibble.
func parseTCPInfo(info []byte) flow.SynOptions {
	opts := info[5]
	o := flow.SynOptions{WScale: flow.NoWScale}
	o.SACK = opts&tcpiOptSACK != 0
	o.Timestamps = opts&tcpiOptTimestamps != 0
	if opts&tcpiOptWScale != 0 {
		o.WScale = info[6] & 0x0f
	}
	mss := binary.NativeEndian.Uint32(info[16:20]) // tcpi_snd_mss
	if o.Timestamps {
		mss += tsOptionLen
	}
	o.MSS = uint16(min(mss, 65535))
	return o
}

// probeECNTimeout bounds how long ProbeECN waits for the SYN-ACK when ctx
// has no earlier deadline.
const probeECNTimeout = 3 * time.Second

// ProbeECN learns whether a backend answers an ECN-setup SYN (ECE and CWR,
// RFC 3168 6.1.1) with an ECN-setup SYN-ACK (ECE without CWR). The
// kernel's own sockets ask for ECN only with net.ipv4.tcp_ecn=1, which is
// the host's setting and not ours to change, so the SYN is built here and
// sent on a raw socket from source, the SYN-ACK read on another, and the
// half-open connection reset. The source port is reserved from the kernel
// (an unconnected bound socket), outside syngate's backend ports: the XDP
// program passes the SYN-ACK to the kernel, which also answers it with a
// RST.
func ProbeECN(ctx context.Context, backend netip.AddrPort, source netip.Addr) (bool, error) {
	fail := func(err error) (bool, error) { return false, fmt.Errorf("probe ecn of %s: %w", backend, err) }
	is6 := !backend.Addr().Is4() && !backend.Addr().Is4In6()
	fam := unix.AF_INET
	if is6 {
		fam = unix.AF_INET6
	}
	res, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(res)
	if err := unix.Bind(res, sockaddr(netip.AddrPortFrom(source, 0))); err != nil {
		return fail(fmt.Errorf("reserve a port on %v: %w", source, err))
	}
	sa, err := unix.Getsockname(res)
	if err != nil {
		return fail(err)
	}
	var port int
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	}
	src := netip.AddrPortFrom(source, uint16(port))

	rx, err := unix.Socket(fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(rx)
	tx, err := unix.Socket(fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(tx)
	dst := sockaddr(netip.AddrPortFrom(backend.Addr(), 0)) // raw IPv6 sockets want port 0
	send := func(build func([]byte, *packet.Fields) (int, error), f *packet.Fields) error {
		var buf [256]byte
		n, err := build(buf[:], f)
		if err != nil {
			return err
		}
		return unix.Sendto(tx, buf[ethHeaderLen:n], 0, dst)
	}

	isn := rand.Uint32()
	mss := uint16(1460)
	if is6 {
		mss = 1440
	}
	syn := packet.Fields{Src: src, Dst: backend, Seq: isn, Flags: packet.SYN, Window: 64240,
		Options: flow.SynOptions{MSS: mss, WScale: 7, SACK: true, Timestamps: true, TSval: rand.Uint32(), ECN: true}}
	if err := send(packet.BuildSyn, &syn); err != nil {
		return fail(fmt.Errorf("send syn: %w", err))
	}
	deadline := time.Now().Add(probeECNTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fail(err)
	}
	var buf [1500]byte
	for time.Now().Before(deadline) && ctx.Err() == nil {
		n, from, err := unix.Recvfrom(rx, buf[:], 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return fail(err)
		}
		flags, ack, ok := probeReply(buf[:n], from, is6, backend, src)
		if !ok {
			continue
		}
		if flags&packet.RST != 0 {
			return fail(errors.New("refused"))
		}
		if flags&(packet.SYN|packet.ACK) != packet.SYN|packet.ACK || ack != isn+1 {
			continue
		}
		rst := packet.Fields{Src: src, Dst: backend, Seq: isn + 1, Flags: packet.RST}
		if err := send(packet.Build, &rst); err != nil {
			return fail(fmt.Errorf("send rst: %w", err))
		}
		return flags&(packet.ECE|packet.CWR) == packet.ECE, nil
	}
	return fail(errors.New("no SYN-ACK"))
}

// probeReply picks the flags and ack of a segment from backend to src out
// of what a raw TCP socket read: the IPv4 packet, or the bare IPv6 TCP
// segment with the sender in from.
func probeReply(b []byte, from unix.Sockaddr, is6 bool, backend, src netip.AddrPort) (packet.Flags, uint32, bool) {
	var sender netip.Addr
	if is6 {
		a, ok := from.(*unix.SockaddrInet6)
		if !ok {
			return 0, 0, false
		}
		sender = netip.AddrFrom16(a.Addr)
	} else {
		if len(b) < 20 || b[0]>>4 != 4 {
			return 0, 0, false
		}
		ihl := int(b[0]&0x0f) * 4
		sender = netip.AddrFrom4([4]byte(b[12:16]))
		if len(b) < ihl {
			return 0, 0, false
		}
		b = b[ihl:]
	}
	if len(b) < 20 || sender != backend.Addr().Unmap() && sender != backend.Addr() ||
		binary.BigEndian.Uint16(b[0:]) != backend.Port() || binary.BigEndian.Uint16(b[2:]) != src.Port() {
		return 0, 0, false
	}
	return packet.Flags(b[13]), binary.BigEndian.Uint32(b[8:]), true
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if a := ap.Addr(); a.Is4() || a.Is4In6() {
		return &unix.SockaddrInet4{Addr: a.Unmap().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}
