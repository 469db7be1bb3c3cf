package gateway

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/syngate/syngate/bpf"
	"github.com/syngate/syngate/config"
)

// tcDrivers are the drivers whose received frames can come straight from a
// socket on this host, with the checksum left to "hardware" that never
// computes it (CHECKSUM_PARTIAL) and as GSO aggregates: containers (veth,
// netkit) and VMs or tunnels (tun/tap). XDP on them sees frames whose TCP
// checksum it cannot rewrite; the TC data path sees the skb's state.
// Physical NICs receive from the wire, where checksums are complete.
var tcDrivers = map[string]bool{"veth": true, "tun": true, "netkit": true}

// chooseDatapath resolves an interface's configured data path, with the
// reason for the log.
func chooseDatapath(in config.Interface) (bpf.Datapath, string) {
	switch in.Datapath {
	case config.DatapathXDP:
		return bpf.DatapathXDP, "configured"
	case config.DatapathTC:
		return bpf.DatapathTC, "configured"
	}
	drv, err := driverName(in.Name)
	if err != nil {
		return bpf.DatapathXDP, fmt.Sprintf("auto: driver unknown (%v)", err)
	}
	if tcDrivers[drv] {
		return bpf.DatapathTC, "auto: driver " + drv + " delivers partial checksums and GRO aggregates"
	}
	return bpf.DatapathXDP, "auto: driver " + drv
}

// driverName asks the kernel for the interface's driver (ETHTOOL_GDRVINFO,
// what `ethtool -i` prints).
func driverName(ifname string) (string, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("driver of %s: %w", ifname, err)
	}
	defer unix.Close(fd)
	info, err := unix.IoctlGetEthtoolDrvinfo(fd, ifname)
	if err != nil {
		return "", fmt.Errorf("driver of %s: %w", ifname, err)
	}
	return unix.ByteSliceToString(info.Driver[:]), nil
}
