package lab

import (
	"errors"
	"fmt"
	"net/netip"
)

// The ECMP topology: clients behind a router that spreads a VIP over N
// gateways, each announcing the VIP to the router over BGP. The router and
// the gateways share one link (a bridge br0 in a "switch" namespace, ports
// gw1..gwN and router), as next hops of an ECMP route usually do; the
// backend hangs off the router, so every gateway reaches it through the
// router (one-arm: a gateway's only interface carries client, backend and
// BGP traffic).
//
//	namespace  interface  IPv4                IPv6                 notes
//	client     eth0       192.0.2.2/24        2001:db8:1::2/64     default via the router
//	router     client     192.0.2.1/24        2001:db8:1::1/64     forwarding, L4 multipath hash (both families)
//	router     backend    198.51.100.1/29     2001:db8:2::1/64
//	router     gateways   198.51.100.65/27    2001:db8:4::1/64     port "router" of br0
//	backend    eth0       198.51.100.2/29     2001:db8:2::2/64     default via the router
//	gateway i  eth0       198.51.100.65+i/27  2001:db8:4::1+i/64   port "gw<i>" of br0, default via the router
//	gateway i  lo         203.0.113.1/32      2001:db8:3::1/128    the service VIPs (VIP4, VIP6)
var (
	ECMPClientV4  = netip.MustParsePrefix("192.0.2.2/24")
	ECMPRouterV4  = netip.MustParsePrefix("192.0.2.1/24")
	ECMPBackendV4 = netip.MustParsePrefix("198.51.100.2/29")
	ecmpRouterBk  = netip.MustParsePrefix("198.51.100.1/29")
	// ECMPRouterGwV4 is the router's address on the gateways' link.
	ECMPRouterGwV4 = netip.MustParsePrefix("198.51.100.65/27")

	ECMPClientV6  = netip.MustParsePrefix("2001:db8:1::2/64")
	ECMPRouterV6  = netip.MustParsePrefix("2001:db8:1::1/64")
	ECMPBackendV6 = netip.MustParsePrefix("2001:db8:2::2/64")
	ecmpRouterBk6 = netip.MustParsePrefix("2001:db8:2::1/64")
	// ECMPRouterGwV6 is the router's IPv6 address on the gateways' link.
	ECMPRouterGwV6 = netip.MustParsePrefix("2001:db8:4::1/64")
)

// ECMPGatewayV4 is gateway i's address (i from 1).
func ECMPGatewayV4(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(65 + i)}), 27)
}

// ECMPGatewayV6 is gateway i's IPv6 address (i from 1).
func ECMPGatewayV6(i int) netip.Prefix {
	a := ECMPRouterGwV6.Addr().As16()
	a[15] += byte(i)
	return netip.PrefixFrom(netip.AddrFrom16(a), 64)
}

// ECMPOptions shape an ECMP topology.
type ECMPOptions struct {
	Gateways int    // 1..8
	Prefix   string // namespace name prefix; default "sg-"
	// Queues gives every gateway link this many queues (0: one).
	Queues int
}

// ECMP is a built ECMP topology. The router has routes to nothing beyond
// its links: the VIP route is what BGP brings.
type ECMP struct {
	Client, Router, Backend, Switch *NS
	Gateways                        []*NS
	// GatewayIf is each gateway's interface name (HostIf).
	GatewayIf  string
	VIP4, VIP6 netip.Addr
	namespaces []*NS
}

// SwitchPort is the bridge port gateway i (from 1) is plugged into, in
// Switch: an ingress filter there cuts the gateway off.
func (e *ECMP) SwitchPort(i int) string { return fmt.Sprintf("gw%d", i) }

// NewECMP builds an ECMP topology for a test and deletes it at cleanup.
func NewECMP(tb TB, o ECMPOptions) (*ECMP, error) {
	tb.Helper()
	e, err := BuildECMP(o)
	if err != nil {
		return nil, err
	}
	tb.Cleanup(func() {
		if err := e.Close(); err != nil {
			tb.Errorf("delete ecmp topology: %v", err)
		}
	})
	return e, nil
}

// BuildECMP builds an ECMP topology; the caller must Close it.
func BuildECMP(o ECMPOptions) (_ *ECMP, err error) {
	if o.Gateways < 1 || o.Gateways > 8 {
		return nil, fmt.Errorf("ecmp: %d gateways, want 1-8", o.Gateways)
	}
	if o.Prefix == "" {
		o.Prefix = "sg-"
	}
	e := &ECMP{GatewayIf: HostIf, VIP4: VIP4, VIP6: VIP6}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	ns := func(role string) (*NS, error) {
		n, err := Create(o.Prefix + role + "-")
		if err == nil {
			e.namespaces = append(e.namespaces, n)
		}
		return n, err
	}
	if e.Client, err = ns("cli"); err != nil {
		return nil, err
	}
	if e.Router, err = ns("rtr"); err != nil {
		return nil, err
	}
	if e.Backend, err = ns("srv"); err != nil {
		return nil, err
	}
	if e.Switch, err = ns("sw"); err != nil {
		return nil, err
	}
	if err := e.Switch.AddBridge(BridgeIf); err != nil {
		return nil, err
	}
	type link struct {
		a, b         *NS
		aIf, bIf     string
		aAddr, bAddr []netip.Prefix // no bAddr: b is a bridge port
		via          []netip.Addr   // a's default routes
		queues       int
	}
	both := func(p ...netip.Prefix) []netip.Prefix { return p }
	links := []link{
		{e.Client, e.Router, HostIf, "client", both(ECMPClientV4, ECMPClientV6), both(ECMPRouterV4, ECMPRouterV6),
			[]netip.Addr{ECMPRouterV4.Addr(), ECMPRouterV6.Addr()}, 0},
		{e.Backend, e.Router, HostIf, "backend", both(ECMPBackendV4, ECMPBackendV6), both(ecmpRouterBk, ecmpRouterBk6),
			[]netip.Addr{ecmpRouterBk.Addr(), ecmpRouterBk6.Addr()}, 0},
		{e.Router, e.Switch, "gateways", "router", both(ECMPRouterGwV4, ECMPRouterGwV6), nil, nil, 0},
	}
	for i := 1; i <= o.Gateways; i++ {
		g, err := ns(fmt.Sprintf("gw%d", i))
		if err != nil {
			return nil, err
		}
		e.Gateways = append(e.Gateways, g)
		links = append(links, link{g, e.Switch, HostIf, e.SwitchPort(i), both(ECMPGatewayV4(i), ECMPGatewayV6(i)), nil,
			[]netip.Addr{ECMPRouterGwV4.Addr(), ECMPRouterGwV6.Addr()}, o.Queues})
	}
	for _, l := range links {
		if err := VethWith(l.a, l.aIf, l.b, l.bIf, VethOptions{Queues: l.queues}); err != nil {
			return nil, err
		}
		for _, p := range l.aAddr {
			if err := l.a.AddAddr(l.aIf, p); err != nil {
				return nil, err
			}
		}
		for _, p := range l.bAddr {
			if err := l.b.AddAddr(l.bIf, p); err != nil {
				return nil, err
			}
		}
		if l.bAddr == nil {
			if err := l.b.SetMaster(l.bIf, BridgeIf); err != nil {
				return nil, err
			}
		}
		for _, via := range l.via {
			def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if via.Is6() {
				def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
			if err := l.a.AddRoute(def, via); err != nil {
				return nil, err
			}
		}
		for _, end := range []struct {
			n   *NS
			if_ string
		}{{l.a, l.aIf}, {l.b, l.bIf}} {
			if err := end.n.DisableOffloads(end.if_); err != nil {
				return nil, err
			}
		}
	}
	// The gateways' XDP programs transmit into their veths: the other
	// ends need an XDP program of their own to take those frames. After
	// the offloads: XDP on a veth changes its features.
	for i := 1; i <= o.Gateways; i++ {
		if err := AttachXDPPass(e.Switch, e.SwitchPort(i)); err != nil {
			return nil, err
		}
	}
	for _, g := range e.Gateways {
		for _, p := range []netip.Prefix{netip.PrefixFrom(VIP4, 32), netip.PrefixFrom(VIP6, 128)} {
			if err := g.AddAddr("lo", p); err != nil {
				return nil, err
			}
		}
	}
	// Forward, and hash multipath routes on the 4-tuple (policy 1), as
	// routers in front of anycast gateways do: one connection, one gateway.
	// IPv6 has its own switch for each.
	for k, v := range map[string]string{
		"net.ipv4.ip_forward":                "1",
		"net.ipv4.fib_multipath_hash_policy": "1",
		"net.ipv6.conf.all.forwarding":       "1",
		"net.ipv6.fib_multipath_hash_policy": "1",
	} {
		if err := e.Router.Sysctl(k, v); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Namespaces lists every namespace of the topology.
func (e *ECMP) Namespaces() []*NS { return append([]*NS(nil), e.namespaces...) }

// Close deletes every namespace. It is idempotent.
func (e *ECMP) Close() error {
	var errs []error
	for i := len(e.namespaces) - 1; i >= 0; i-- {
		if err := e.namespaces[i].Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("close ecmp topology: %w", errors.Join(errs...))
	}
	return nil
}
