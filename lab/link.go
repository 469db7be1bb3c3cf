package lab

import (
	"fmt"
	"net"
	"net/netip"
)

// Veth creates a veth pair with one end, aName, in a and the other, bName,
// in b, and brings both ends up. The names only need to be unique inside
// their own namespace.
func Veth(a *NS, aName string, b *NS, bName string) error {
	if err := a.IP("link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name()); err != nil {
		return fmt.Errorf("create veth %s/%s - %s/%s: %w", a, aName, b, bName, err)
	}
	if err := a.SetUp(aName); err != nil {
		return err
	}
	return b.SetUp(bName)
}

// SetUp brings an interface up.
func (ns *NS) SetUp(ifname string) error {
	return ns.IP("link", "set", "dev", ifname, "up")
}

// AddAddr assigns an address with its prefix length to an interface.
// IPv6 addresses skip duplicate address detection (nodad) so they are
// usable at once instead of after a second or so of DAD.
func (ns *NS) AddAddr(ifname string, p netip.Prefix) error {
	args := []string{"addr", "add", p.String(), "dev", ifname}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	return ns.IP(args...)
}

// AddRoute adds a route to dst through the gateway via.
func (ns *NS) AddRoute(dst netip.Prefix, via netip.Addr) error {
	args := []string{"route", "add", dst.String(), "via", via.String()}
	if dst.Addr().Is6() {
		args = append([]string{"-6"}, args...)
	}
	return ns.IP(args...)
}

// AddNeigh adds a permanent neighbour entry, for tests whose XDP program
// would otherwise swallow ARP or neighbour discovery.
func (ns *NS) AddNeigh(ifname string, addr netip.Addr, mac net.HardwareAddr) error {
	return ns.IP("neigh", "replace", addr.String(), "lladdr", mac.String(), "dev", ifname, "nud", "permanent")
}

// Interface looks up an interface inside the namespace.
func (ns *NS) Interface(ifname string) (*net.Interface, error) {
	var ifi *net.Interface
	err := ns.Run(func() error {
		var err error
		ifi, err = net.InterfaceByName(ifname)
		if err != nil {
			return fmt.Errorf("%s: interface %s: %w", ns, ifname, err)
		}
		return nil
	})
	return ifi, err
}

// DisableOffloads turns off checksum offload and segmentation offloads on
// an interface. Frames the kernel sends over a veth otherwise carry only a
// partial TCP/UDP checksum (the pseudo-header sum), which is fine for the
// kernel on the other end but wrong for anything that reads the frame from
// XDP or AF_XDP and forwards it as is.
func (ns *NS) DisableOffloads(ifname string) error {
	_, err := ns.Exec("ethtool", "-K", ifname, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off")
	return err
}
