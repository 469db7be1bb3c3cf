package lab

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Offload is one of the offloads DisableOffloads turns off, with the
// legacy ethtool ioctl commands that read and set it (the same settings
// `ethtool -K` changes; the kernel maps them onto its feature bits and
// drops the features that depend on them, such as TSO without checksum
// offload).
type Offload struct {
	Name     string // as ethtool -k names it
	get, set uint32
}

// Offloads are the settings DisableOffloads turns off.
var Offloads = []Offload{
	{"tx-checksumming", unix.ETHTOOL_GTXCSUM, unix.ETHTOOL_STXCSUM},
	{"rx-checksumming", unix.ETHTOOL_GRXCSUM, unix.ETHTOOL_SRXCSUM},
	{"tcp-segmentation-offload", unix.ETHTOOL_GTSO, unix.ETHTOOL_STSO},
	{"generic-segmentation-offload", unix.ETHTOOL_GGSO, unix.ETHTOOL_SGSO},
	{"generic-receive-offload", unix.ETHTOOL_GGRO, unix.ETHTOOL_SGRO},
}

// DisableOffloads turns off checksum offload and segmentation offloads on
// an interface. Frames the kernel sends over a veth otherwise carry only a
// partial TCP/UDP checksum (the pseudo-header sum), which is fine for the
// kernel on the other end but wrong for anything that reads the frame from
// XDP or AF_XDP and forwards it as is.
func (ns *NS) DisableOffloads(ifname string) error {
	return ns.ethtool(ifname, func(fd int) error {
		for _, o := range Offloads {
			if _, err := ethtoolValue(fd, ifname, o.set, 0); err != nil {
				return fmt.Errorf("%s off: %w", o.Name, err)
			}
		}
		return nil
	})
}

// OffloadsOn lists the offloads of Offloads that are on for an interface.
func (ns *NS) OffloadsOn(ifname string) ([]string, error) {
	var on []string
	err := ns.ethtool(ifname, func(fd int) error {
		for _, o := range Offloads {
			v, err := ethtoolValue(fd, ifname, o.get, 0)
			if err != nil {
				return fmt.Errorf("read %s: %w", o.Name, err)
			}
			if v != 0 {
				on = append(on, o.Name)
			}
		}
		return nil
	})
	return on, err
}

// ethtool calls fn with a socket in the namespace to issue SIOCETHTOOL on.
func (ns *NS) ethtool(ifname string, fn func(fd int) error) error {
	err := ns.Run(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("ethtool socket: %w", err)
		}
		defer unix.Close(fd)
		return fn(fd)
	})
	if err != nil {
		return fmt.Errorf("ethtool %s: %w", ifname, err)
	}
	return nil
}

// ifreqData is struct ifreq with its union holding ifr_data.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ethtoolValue issues an ethtool command that takes a struct
// ethtool_value and returns the value the kernel left in it.
func ethtoolValue(fd int, ifname string, cmd, data uint32) (uint32, error) {
	if len(ifname) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q too long", ifname)
	}
	v := struct{ cmd, data uint32 }{cmd, data}
	var ifr ifreqData
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&v)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(&v)
	if errno != 0 {
		return 0, errno
	}
	return v.data, nil
}
