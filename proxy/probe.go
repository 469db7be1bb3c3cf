package proxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/flow"
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
