package afxdp

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

func setsockopt(fd, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), size, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// getsockopt reads an SOL_XDP option and returns the length the kernel wrote.
func getsockopt(fd, opt int, p unsafe.Pointer, size uintptr) (uintptr, error) {
	l := uint32(size)
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return 0, errno
	}
	return uintptr(l), nil
}

// kick asks the kernel to process the TX ring (and in copy mode, to send).
// Errors that only mean "busy, call again later" are swallowed.
func kickTx(fd int) error {
	_, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	switch errno {
	case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS, unix.EINTR:
		return nil
	}
	return errno
}

// kickRx asks the kernel to refill the driver from the fill ring.
func kickRx(fd int) error {
	_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	switch errno {
	case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS, unix.EINTR:
		return nil
	}
	return errno
}

// ethtoolChannels mirrors struct ethtool_channels.
type ethtoolChannels struct {
	Cmd                                         uint32
	MaxRx, MaxTx, MaxOther, MaxCombined         uint32
	RxCount, TxCount, OtherCount, CombinedCount uint32
}

// ifreqData is struct ifreq with ifr_data.
type ifreqData struct {
	Name [unix.IFNAMSIZ]byte
	Data unsafe.Pointer
	_    [16]byte
}

// QueueCount returns how many receive queues ifname (in the calling
// thread's network namespace) has, which is how many sockets it takes to
// see all of its traffic. Drivers that do not report channels count as one
// queue.
func QueueCount(ifname string) (int, error) {
	if len(ifname) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q too long: %w", ifname, ErrNoInterface)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	ch := &ethtoolChannels{Cmd: unix.ETHTOOL_GCHANNELS}
	ifr := &ifreqData{Data: unsafe.Pointer(ch)}
	copy(ifr.Name[:], ifname)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(ifr)))
	runtime.KeepAlive(ifr)
	runtime.KeepAlive(ch)
	switch {
	case errno == unix.ENODEV:
		return 0, fmt.Errorf("interface %s: %w", ifname, ErrNoInterface)
	case errors.Is(errno, unix.EOPNOTSUPP):
		return 1, nil
	case errno != 0:
		return 0, fmt.Errorf("ethtool channels of %s: %w", ifname, errno)
	}
	return max(1, int(ch.RxCount+ch.CombinedCount)), nil
}
