package lab

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// PMTUSide says where the narrow link of a path-MTU topology is.
type PMTUSide int

const (
	// NarrowClientSide: client - r1 = r2 - gateway - backend.
	NarrowClientSide PMTUSide = iota
	// NarrowBackendSide: client - gateway - r1 = r2 - backend.
	NarrowBackendSide
)

// PMTUOptions build a path-MTU topology.
type PMTUOptions struct {
	Side PMTUSide
	// MTU of the path between the two routers; default 1200. IPv6 needs
	// 1280 on every link (RFC 8200), so below that the link itself gets
	// 1280 and the routers' IPv4 routes across it carry MTU: IPv4 sees
	// MTU, IPv6 1280.
	MTU int
	// Prefix starts every namespace name; default "sgi-".
	Prefix string
	// NoOffloads as in Options, on every interface of the lab.
	NoOffloads bool
}

// The path-MTU topologies put two routers, r1 and r2, between the gateway
// and one side, joined by the narrow link (= above). Neither the endpoints
// nor the gateway have an interface on it: a router must send the ICMP
// "fragmentation needed" / "packet too big", as on the Internet, and the
// endpoints' SYNs announce a full-size MSS. Addresses (documentation
// ranges, split where the routed topology has one /24):
//
//	narrow client side                   IPv4              IPv6
//	client   eth0 - r1 c                 192.0.2.2/28 .1   2001:db8:1::2 ::1 /64
//	r1       n    = r2 n                 192.0.2.17/28 .18 2001:db8:4::1 ::2 /64
//	r2       g    - gateway to-client    192.0.2.33/28 .34 2001:db8:5::1 ::2 /64
//	gateway  to-backend - backend eth0   as in the routed topology
//
//	narrow backend side
//	client   eth0 - gateway to-client    as in the routed topology
//	gateway  to-backend - r1 g           198.51.100.1/28 .2   2001:db8:2::1 ::2 /64
//	r1       n    = r2 n                 198.51.100.17/28 .18 2001:db8:4::1 ::2 /64
//	r2       s    - backend eth0         198.51.100.33/28 .34 2001:db8:6::1 ::2 /64
//
// The VIPs sit on the gateway's lo, as in the routed topology.
type pmtuLink struct {
	a, b         *NS
	aName, bName string
	aV4, bV4     netip.Prefix
	aV6, bV6     netip.Prefix
	mtu          int
}

type pmtuRoute struct {
	ns  *NS
	dst netip.Prefix
	via netip.Addr
}

// ipv6MinMTU is the smallest link MTU IPv6 runs on.
const ipv6MinMTU = 1280

var (
	pmtuDefault4 = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	pmtuDefault6 = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// PMTUTopology is a built path-MTU topology. Its Topology works with
// everything that takes the routed one (Client, Gateway and Backend, their
// interfaces, the VIPs, Close); R1 and R2 are the routers.
type PMTUTopology struct {
	*Topology
	R1, R2 *NS
}

// NewPMTUTopology builds a path-MTU topology for a test and deletes it in
// tb.Cleanup.
func NewPMTUTopology(tb TB, o PMTUOptions) (*PMTUTopology, error) {
	tb.Helper()
	t, err := BuildPMTUTopology(o)
	if err != nil {
		return nil, err
	}
	tb.Cleanup(func() {
		if err := t.Close(); err != nil {
			tb.Errorf("delete topology: %v", err)
		}
	})
	return t, nil
}

// BuildPMTUTopology builds a path-MTU topology; the caller must Close it.
func BuildPMTUTopology(o PMTUOptions) (top *PMTUTopology, err error) {
	if o.Prefix == "" {
		o.Prefix = "sgi-"
	}
	if o.MTU == 0 {
		o.MTU = 1200
	}
	t := &Topology{VIP4: VIP4, VIP6: VIP6}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	ns := func(role string) (*NS, error) {
		n, err := Create(o.Prefix + role + "-")
		if err == nil {
			t.namespaces = append(t.namespaces, n)
		}
		return n, err
	}
	roles := []**NS{&t.Client, &t.Gateway, &t.Backend}
	for i, role := range []string{"cli", "gw", "srv"} {
		if *roles[i], err = ns(role); err != nil {
			return nil, err
		}
	}
	r1, err := ns("r1")
	if err != nil {
		return nil, err
	}
	r2, err := ns("r2")
	if err != nil {
		return nil, err
	}

	var links []pmtuLink
	var routes []pmtuRoute
	if o.Side == NarrowClientSide {
		links = []pmtuLink{
			{t.Client, r1, HostIf, "c", pfx("192.0.2.2/28"), pfx("192.0.2.1/28"), pfx("2001:db8:1::2/64"), pfx("2001:db8:1::1/64"), 0},
			{r1, r2, "n", "n", pfx("192.0.2.17/28"), pfx("192.0.2.18/28"), pfx("2001:db8:4::1/64"), pfx("2001:db8:4::2/64"), o.MTU},
			{r2, t.Gateway, "g", GatewayClientIf, pfx("192.0.2.33/28"), pfx("192.0.2.34/28"), pfx("2001:db8:5::1/64"), pfx("2001:db8:5::2/64"), 0},
			{t.Gateway, t.Backend, GatewayBackendIf, HostIf, GatewayBackendV4, BackendV4, GatewayBackendV6, BackendV6, 0},
		}
		routes = []pmtuRoute{
			{t.Client, pmtuDefault4, links[0].bV4.Addr()}, {t.Client, pmtuDefault6, links[0].bV6.Addr()},
			{r1, pmtuDefault4, links[1].bV4.Addr()}, {r1, pmtuDefault6, links[1].bV6.Addr()},
			{r2, pmtuDefault4, links[2].bV4.Addr()}, {r2, pmtuDefault6, links[2].bV6.Addr()},
			{r2, links[0].aV4.Masked(), links[1].aV4.Addr()}, {r2, links[0].aV6.Masked(), links[1].aV6.Addr()},
			{t.Gateway, links[0].aV4.Masked(), links[2].aV4.Addr()}, {t.Gateway, links[0].aV6.Masked(), links[2].aV6.Addr()},
			{t.Gateway, links[1].aV4.Masked(), links[2].aV4.Addr()}, {t.Gateway, links[1].aV6.Masked(), links[2].aV6.Addr()},
			{t.Backend, pmtuDefault4, GatewayBackendV4.Addr()}, {t.Backend, pmtuDefault6, GatewayBackendV6.Addr()},
		}
		t.ClientIf = Iface{NS: t.Client, Name: HostIf, V4: links[0].aV4, V6: links[0].aV6, PeerNS: r1, PeerName: "c"}
		t.GatewayClient = Iface{NS: t.Gateway, Name: GatewayClientIf, V4: links[2].bV4, V6: links[2].bV6, PeerNS: r2, PeerName: "g"}
		t.GatewayBackend = Iface{NS: t.Gateway, Name: GatewayBackendIf, V4: GatewayBackendV4, V6: GatewayBackendV6, PeerNS: t.Backend, PeerName: HostIf}
		t.BackendIf = Iface{NS: t.Backend, Name: HostIf, V4: BackendV4, V6: BackendV6, PeerNS: t.Gateway, PeerName: GatewayBackendIf}
	} else {
		links = []pmtuLink{
			{t.Client, t.Gateway, HostIf, GatewayClientIf, ClientV4, GatewayClientV4, ClientV6, GatewayClientV6, 0},
			{t.Gateway, r1, GatewayBackendIf, "g", pfx("198.51.100.1/28"), pfx("198.51.100.2/28"), pfx("2001:db8:2::1/64"), pfx("2001:db8:2::2/64"), 0},
			{r1, r2, "n", "n", pfx("198.51.100.17/28"), pfx("198.51.100.18/28"), pfx("2001:db8:4::1/64"), pfx("2001:db8:4::2/64"), o.MTU},
			{r2, t.Backend, "s", HostIf, pfx("198.51.100.33/28"), pfx("198.51.100.34/28"), pfx("2001:db8:6::1/64"), pfx("2001:db8:6::2/64"), 0},
		}
		routes = []pmtuRoute{
			{t.Client, pmtuDefault4, GatewayClientV4.Addr()}, {t.Client, pmtuDefault6, GatewayClientV6.Addr()},
			{t.Gateway, links[3].bV4.Masked(), links[1].bV4.Addr()}, {t.Gateway, links[3].bV6.Masked(), links[1].bV6.Addr()},
			{t.Gateway, links[2].aV4.Masked(), links[1].bV4.Addr()}, {t.Gateway, links[2].aV6.Masked(), links[1].bV6.Addr()},
			{r1, pmtuDefault4, links[1].aV4.Addr()}, {r1, pmtuDefault6, links[1].aV6.Addr()},
			{r1, links[3].bV4.Masked(), links[2].bV4.Addr()}, {r1, links[3].bV6.Masked(), links[2].bV6.Addr()},
			{r2, pmtuDefault4, links[2].aV4.Addr()}, {r2, pmtuDefault6, links[2].aV6.Addr()},
			{t.Backend, pmtuDefault4, links[3].aV4.Addr()}, {t.Backend, pmtuDefault6, links[3].aV6.Addr()},
		}
		t.ClientIf = Iface{NS: t.Client, Name: HostIf, V4: ClientV4, V6: ClientV6, PeerNS: t.Gateway, PeerName: GatewayClientIf}
		t.GatewayClient = Iface{NS: t.Gateway, Name: GatewayClientIf, V4: GatewayClientV4, V6: GatewayClientV6, PeerNS: t.Client, PeerName: HostIf}
		t.GatewayBackend = Iface{NS: t.Gateway, Name: GatewayBackendIf, V4: links[1].aV4, V6: links[1].aV6, PeerNS: r1, PeerName: "g"}
		t.BackendIf = Iface{NS: t.Backend, Name: HostIf, V4: links[3].bV4, V6: links[3].bV6, PeerNS: r2, PeerName: "s"}
	}
	var narrow pmtuLink
	for _, l := range links {
		if l.mtu != 0 {
			narrow = l
			l.mtu = max(l.mtu, ipv6MinMTU)
		}
		if err := l.build(); err != nil {
			return nil, err
		}
	}
	for _, r := range routes {
		mtu := 0
		if r.via.Is4() && narrow.aV4.Contains(r.via) && o.MTU < ipv6MinMTU {
			mtu = o.MTU
		}
		if err := r.ns.addRouteMTU(r.dst, r.via, mtu); err != nil {
			return nil, err
		}
	}
	for _, n := range []*NS{t.Gateway, r1, r2} {
		if err := n.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
			return nil, err
		}
		if err := n.Sysctl("net.ipv6.conf.all.forwarding", "1"); err != nil {
			return nil, err
		}
	}
	for _, p := range []netip.Prefix{netip.PrefixFrom(VIP4, 32), netip.PrefixFrom(VIP6, 128)} {
		if err := t.Gateway.AddAddr("lo", p); err != nil {
			return nil, err
		}
	}
	if o.NoOffloads {
		for _, l := range links {
			if err := l.a.DisableOffloads(l.aName); err != nil {
				return nil, err
			}
			if err := l.b.DisableOffloads(l.bName); err != nil {
				return nil, err
			}
		}
	}
	return &PMTUTopology{Topology: t, R1: r1, R2: r2}, nil
}

// build creates the veth pair, sets its MTU (0: the default) and assigns
// the addresses.
func (l pmtuLink) build() error {
	if err := Veth(l.a, l.aName, l.b, l.bName); err != nil {
		return err
	}
	for _, end := range []struct {
		ns     *NS
		name   string
		v4, v6 netip.Prefix
	}{{l.a, l.aName, l.aV4, l.aV6}, {l.b, l.bName, l.bV4, l.bV6}} {
		if l.mtu != 0 {
			if err := end.ns.SetMTU(end.name, l.mtu); err != nil {
				return err
			}
		}
		for _, p := range []netip.Prefix{end.v4, end.v6} {
			if err := end.ns.AddAddr(end.name, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// addRouteMTU is AddRoute with an MTU metric, unless mtu is 0.
func (ns *NS) addRouteMTU(dst netip.Prefix, via netip.Addr, mtu int) error {
	err := ns.Netlink(func(h *netlink.Handle) error {
		return h.RouteAdd(&netlink.Route{Dst: ipNet(dst), Gw: net.IP(via.AsSlice()), MTU: mtu})
	})
	if err != nil {
		return fmt.Errorf("%s: add route %v via %v mtu %d: %w", ns, dst, via, mtu, err)
	}
	return nil
}
