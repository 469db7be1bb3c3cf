package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netlink calls fn with a route netlink handle whose socket lives in the
// namespace. The handle is only valid during fn.
func (ns *NS) Netlink(fn func(h *netlink.Handle) error) error {
	fd, err := ns.fd()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	h, err := netlink.NewHandleAt(netns.NsHandle(fd), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("%s: netlink: %w", ns.name, err)
	}
	defer h.Close()
	return fn(h)
}

// withLink calls fn with the interface ifname of the namespace.
func (ns *NS) withLink(ifname, what string, fn func(h *netlink.Handle, l netlink.Link) error) error {
	err := ns.Netlink(func(h *netlink.Handle) error {
		l, err := h.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("interface %s: %w", ifname, err)
		}
		return fn(h, l)
	})
	if err != nil {
		return fmt.Errorf("%s: %s: %w", ns.name, what, err)
	}
	return nil
}

// VethOptions are the less common settings of a veth pair.
type VethOptions struct {
	// Queues, if set, gives both ends this many receive and transmit
	// queues (an AF_XDP socket binds one queue).
	Queues int
}

// Veth creates a veth pair with one end, aName, in a and the other, bName,
// in b, and brings both ends up. The names only need to be unique inside
// their own namespace.
func Veth(a *NS, aName string, b *NS, bName string) error {
	return VethWith(a, aName, b, bName, VethOptions{})
}

// VethWith is Veth with options.
func VethWith(a *NS, aName string, b *NS, bName string, o VethOptions) error {
	bfd, err := b.fd()
	if err != nil {
		return err
	}
	defer unix.Close(bfd)
	err = a.Netlink(func(h *netlink.Handle) error {
		v := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: bName, PeerNamespace: netlink.NsFd(bfd)}
		v.Name = aName
		if o.Queues > 0 {
			v.NumRxQueues, v.NumTxQueues = o.Queues, o.Queues
			v.PeerNumRxQueues, v.PeerNumTxQueues = uint32(o.Queues), uint32(o.Queues)
		}
		return h.LinkAdd(v)
	})
	if err != nil {
		return fmt.Errorf("create veth %s/%s - %s/%s: %w", a, aName, b, bName, err)
	}
	if err := a.SetUp(aName); err != nil {
		return err
	}
	return b.SetUp(bName)
}

// AddBridge creates a bridge and brings it up.
func (ns *NS) AddBridge(name string) error {
	err := ns.Netlink(func(h *netlink.Handle) error {
		br := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
		br.Name = name
		return h.LinkAdd(br)
	})
	if err != nil {
		return fmt.Errorf("%s: create bridge %s: %w", ns, name, err)
	}
	return ns.SetUp(name)
}

// SetMaster enslaves an interface to a bridge.
func (ns *NS) SetMaster(ifname, master string) error {
	return ns.withLink(ifname, "set master "+master, func(h *netlink.Handle, l netlink.Link) error {
		m, err := h.LinkByName(master)
		if err != nil {
			return fmt.Errorf("interface %s: %w", master, err)
		}
		return h.LinkSetMaster(l, m)
	})
}

// SetUp brings an interface up.
func (ns *NS) SetUp(ifname string) error {
	return ns.withLink(ifname, "set up", func(h *netlink.Handle, l netlink.Link) error {
		return h.LinkSetUp(l)
	})
}

// SetMTU sets an interface's MTU.
func (ns *NS) SetMTU(ifname string, mtu int) error {
	return ns.withLink(ifname, fmt.Sprintf("set mtu %d", mtu), func(h *netlink.Handle, l netlink.Link) error {
		return h.LinkSetMTU(l, mtu)
	})
}

// AddAddr assigns an address with its prefix length to an interface.
// IPv6 addresses skip duplicate address detection (nodad) so they are
// usable at once instead of after a second or so of DAD.
func (ns *NS) AddAddr(ifname string, p netip.Prefix) error {
	return ns.withLink(ifname, "add address "+p.String(), func(h *netlink.Handle, l netlink.Link) error {
		a := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		return h.AddrAdd(l, a)
	})
}

// DelAddr removes an address from an interface.
func (ns *NS) DelAddr(ifname string, p netip.Prefix) error {
	return ns.withLink(ifname, "delete address "+p.String(), func(h *netlink.Handle, l netlink.Link) error {
		return h.AddrDel(l, &netlink.Addr{IPNet: ipNet(p)})
	})
}

// AddRoute adds a route to dst through the gateway via.
func (ns *NS) AddRoute(dst netip.Prefix, via netip.Addr) error {
	err := ns.Netlink(func(h *netlink.Handle) error {
		return h.RouteAdd(&netlink.Route{Dst: ipNet(dst), Gw: net.IP(via.AsSlice())})
	})
	if err != nil {
		return fmt.Errorf("%s: add route %v via %v: %w", ns, dst, via, err)
	}
	return nil
}

// RouteGet asks the kernel which route a packet to dst takes, as
// `ip route get` does: the interface and, for a routed destination, the
// gateway (invalid when dst is on link).
func (ns *NS) RouteGet(dst netip.Addr) (ifname string, gateway netip.Addr, err error) {
	err = ns.Netlink(func(h *netlink.Handle) error {
		rs, err := h.RouteGet(net.IP(dst.AsSlice()))
		if err != nil {
			return err
		}
		if len(rs) == 0 {
			return errors.New("no route")
		}
		l, err := h.LinkByIndex(rs[0].LinkIndex)
		if err != nil {
			return fmt.Errorf("interface %d: %w", rs[0].LinkIndex, err)
		}
		ifname = l.Attrs().Name
		if gw, ok := netip.AddrFromSlice(rs[0].Gw); ok {
			gateway = gw.Unmap()
		}
		return nil
	})
	if err != nil {
		return "", netip.Addr{}, fmt.Errorf("%s: route to %v: %w", ns, dst, err)
	}
	return ifname, gateway, nil
}

// Neighbour returns the link-layer address the neighbour table holds for
// addr on ifname, or nil while it is not resolved (no entry, or one that is
// incomplete or failed).
func (ns *NS) Neighbour(ifname string, addr netip.Addr) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := ns.withLink(ifname, fmt.Sprintf("neighbour %v", addr), func(h *netlink.Handle, l netlink.Link) error {
		fam := netlink.FAMILY_V4
		if addr.Is6() {
			fam = netlink.FAMILY_V6
		}
		neighs, err := h.NeighList(l.Attrs().Index, fam)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
		for _, n := range neighs {
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok || ip.Unmap() != addr || n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) != 0 || len(n.HardwareAddr) == 0 {
				continue
			}
			mac = n.HardwareAddr
			return nil
		}
		return nil
	})
	return mac, err
}

// AddNeigh adds a permanent neighbour entry, for tests whose XDP program
// would otherwise swallow ARP or neighbour discovery.
func (ns *NS) AddNeigh(ifname string, addr netip.Addr, mac net.HardwareAddr) error {
	return ns.withLink(ifname, fmt.Sprintf("neighbour %v lladdr %v", addr, mac), func(h *netlink.Handle, l netlink.Link) error {
		fam := netlink.FAMILY_V4
		if addr.Is6() {
			fam = netlink.FAMILY_V6
		}
		return h.NeighSet(&netlink.Neigh{
			LinkIndex: l.Attrs().Index, Family: fam, State: netlink.NUD_PERMANENT,
			IP: net.IP(addr.AsSlice()), HardwareAddr: mac,
		})
	})
}

// Link returns what netlink knows about an interface: its attributes,
// statistics and XDP attachment.
func (ns *NS) Link(ifname string) (*netlink.LinkAttrs, error) {
	var attrs *netlink.LinkAttrs
	err := ns.withLink(ifname, "show", func(_ *netlink.Handle, l netlink.Link) error {
		attrs = l.Attrs()
		return nil
	})
	return attrs, err
}

// Interface looks up an interface inside the namespace.
func (ns *NS) Interface(ifname string) (*net.Interface, error) {
	var ifi *net.Interface
	err := ns.Run(func() error {
		var err error
		ifi, err = net.InterfaceByName(ifname)
		if err != nil {
			return fmt.Errorf("interface %s: %w", ifname, err)
		}
		return nil
	})
	return ifi, err
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
