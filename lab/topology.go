package lab

import (
	"errors"
	"fmt"
	"net/netip"
)

// The lab's address plan, kept here and nowhere else (but for the
// path-MTU topologies' router links, in pmtu.go). Every address comes
// from the documentation ranges (RFC 5737, RFC 3849) and is only ever
// assigned inside namespaces the lab created.
//
// Routed topology (client <-> gateway <-> backend, two veth pairs):
//
//	namespace  interface   IPv4              IPv6
//	client     eth0        192.0.2.2/24      2001:db8:1::2/64   default via gateway
//	gateway    to-client   192.0.2.1/24      2001:db8:1::1/64   ip_forward on
//	gateway    to-backend  198.51.100.1/24   2001:db8:2::1/64
//	gateway    lo          203.0.113.1/32    2001:db8:3::1/128  the service VIP
//	backend    eth0        198.51.100.2/24   2001:db8:2::2/64   default via gateway
//
// A pool of backends (AddBackendPool) adds addresses to the backend's eth0,
// one server per address: 198.51.100.3/24 and .4, 2001:db8:2::3/64 and ::4.
//
// One-arm topology (all three on one segment, joined by a bridge br0 in a
// fourth "switch" namespace whose ports are named client, gateway, backend):
//
//	namespace  interface   IPv4              IPv6
//	client     eth0        192.0.2.2/24      2001:db8:1::2/64   VIP via gateway
//	gateway    eth0        192.0.2.1/24      2001:db8:1::1/64
//	gateway    lo          203.0.113.1/32    2001:db8:3::1/128  the service VIP
//	backend    eth0        192.0.2.3/24      2001:db8:1::3/64   VIP via gateway
var (
	ClientV4         = netip.MustParsePrefix("192.0.2.2/24")
	ClientV6         = netip.MustParsePrefix("2001:db8:1::2/64")
	GatewayClientV4  = netip.MustParsePrefix("192.0.2.1/24")
	GatewayClientV6  = netip.MustParsePrefix("2001:db8:1::1/64")
	GatewayBackendV4 = netip.MustParsePrefix("198.51.100.1/24")
	GatewayBackendV6 = netip.MustParsePrefix("2001:db8:2::1/64")
	BackendV4        = netip.MustParsePrefix("198.51.100.2/24")
	BackendV6        = netip.MustParsePrefix("2001:db8:2::2/64")
	OneArmBackendV4  = netip.MustParsePrefix("192.0.2.3/24")
	OneArmBackendV6  = netip.MustParsePrefix("2001:db8:1::3/64")
	BackendPoolV4    = []netip.Prefix{netip.MustParsePrefix("198.51.100.3/24"), netip.MustParsePrefix("198.51.100.4/24")}
	BackendPoolV6    = []netip.Prefix{netip.MustParsePrefix("2001:db8:2::3/64"), netip.MustParsePrefix("2001:db8:2::4/64")}
	VIP4             = netip.MustParseAddr("203.0.113.1")
	VIP6             = netip.MustParseAddr("2001:db8:3::1")
)

// Interface names used by the topologies.
const (
	HostIf           = "eth0"       // the only interface of client and backend (and of the one-arm gateway)
	GatewayClientIf  = "to-client"  // routed gateway, client side
	GatewayBackendIf = "to-backend" // routed gateway, backend side
	BridgeIf         = "br0"        // bridge in the one-arm switch namespace
)

// Options select the topology. The zero value builds the routed one.
type Options struct {
	// OneArm puts client, gateway and backend on one segment, the gateway
	// with a single interface.
	OneArm bool
	// Prefix starts every namespace name; default "sg-".
	Prefix string
	// NoOffloads turns off checksum and segmentation offloads on every
	// host and gateway interface (see NS.DisableOffloads).
	NoOffloads bool
	// Queues gives the routed topology's links this many receive and
	// transmit queues (0: one), so a gateway opens one AF_XDP socket and
	// runs one engine loop per queue.
	Queues int
}

// Iface is one end of a veth: where it lives, its addresses and where its
// peer is (the peer is the end that needs AttachXDPPass when this end runs
// an XDP program that transmits).
type Iface struct {
	NS     *NS
	Name   string
	V4, V6 netip.Prefix // invalid when the interface has no address

	PeerNS   *NS
	PeerName string
}

// Topology is a built lab. In the one-arm variant GatewayClient and
// GatewayBackend are the same interface and Switch holds the bridge.
type Topology struct {
	Client, Gateway, Backend *NS
	Switch                   *NS // one-arm only

	ClientIf, BackendIf           Iface
	GatewayClient, GatewayBackend Iface
	VIP4, VIP6                    netip.Addr
	oneArm                        bool
	namespaces                    []*NS
}

// NewTopology builds a topology for a test and deletes it in tb.Cleanup.
func NewTopology(tb TB, opts Options) (*Topology, error) {
	tb.Helper()
	t, err := BuildTopology(opts)
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

// BuildTopology builds a topology; the caller must Close it. On error
// everything created so far is removed.
func BuildTopology(opts Options) (top *Topology, err error) {
	if opts.Prefix == "" {
		opts.Prefix = "sg-"
	}
	t := &Topology{VIP4: VIP4, VIP6: VIP6, oneArm: opts.OneArm}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	ns := func(role string) (*NS, error) {
		n, err := Create(opts.Prefix + role + "-")
		if err == nil {
			t.namespaces = append(t.namespaces, n)
		}
		return n, err
	}
	if t.Client, err = ns("cli"); err != nil {
		return nil, err
	}
	if t.Gateway, err = ns("gw"); err != nil {
		return nil, err
	}
	if t.Backend, err = ns("srv"); err != nil {
		return nil, err
	}
	if opts.OneArm {
		err = t.buildOneArm(opts.Prefix)
	} else {
		err = t.buildRouted(opts.Queues)
	}
	if err != nil {
		return nil, err
	}
	for _, p := range []netip.Prefix{netip.PrefixFrom(VIP4, 32), netip.PrefixFrom(VIP6, 128)} {
		if err := t.Gateway.AddAddr("lo", p); err != nil {
			return nil, err
		}
	}
	if opts.NoOffloads {
		for _, i := range []Iface{t.ClientIf, t.BackendIf, t.GatewayClient, t.GatewayBackend} {
			if err := i.NS.DisableOffloads(i.Name); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}

func (t *Topology) buildRouted(queues int) error {
	t.ClientIf = Iface{NS: t.Client, Name: HostIf, V4: ClientV4, V6: ClientV6, PeerNS: t.Gateway, PeerName: GatewayClientIf}
	t.GatewayClient = Iface{NS: t.Gateway, Name: GatewayClientIf, V4: GatewayClientV4, V6: GatewayClientV6, PeerNS: t.Client, PeerName: HostIf}
	t.GatewayBackend = Iface{NS: t.Gateway, Name: GatewayBackendIf, V4: GatewayBackendV4, V6: GatewayBackendV6, PeerNS: t.Backend, PeerName: HostIf}
	t.BackendIf = Iface{NS: t.Backend, Name: HostIf, V4: BackendV4, V6: BackendV6, PeerNS: t.Gateway, PeerName: GatewayBackendIf}

	if err := VethWith(t.Client, HostIf, t.Gateway, GatewayClientIf, VethOptions{Queues: queues}); err != nil {
		return err
	}
	if err := VethWith(t.Backend, HostIf, t.Gateway, GatewayBackendIf, VethOptions{Queues: queues}); err != nil {
		return err
	}
	for _, i := range []Iface{t.ClientIf, t.GatewayClient, t.GatewayBackend, t.BackendIf} {
		if err := i.addAddrs(); err != nil {
			return err
		}
	}
	for _, r := range []struct {
		ns  *NS
		via netip.Prefix
	}{
		{t.Client, GatewayClientV4}, {t.Client, GatewayClientV6},
		{t.Backend, GatewayBackendV4}, {t.Backend, GatewayBackendV6},
	} {
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if r.via.Addr().Is6() {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		if err := r.ns.AddRoute(dst, r.via.Addr()); err != nil {
			return err
		}
	}
	if err := t.Gateway.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	return t.Gateway.Sysctl("net.ipv6.conf.all.forwarding", "1")
}

func (t *Topology) buildOneArm(prefix string) error {
	var err error
	if t.Switch, err = Create(prefix + "sw-"); err != nil {
		return err
	}
	t.namespaces = append(t.namespaces, t.Switch)
	if err := t.Switch.AddBridge(BridgeIf); err != nil {
		return err
	}
	t.ClientIf = Iface{NS: t.Client, Name: HostIf, V4: ClientV4, V6: ClientV6, PeerNS: t.Switch, PeerName: "client"}
	t.GatewayClient = Iface{NS: t.Gateway, Name: HostIf, V4: GatewayClientV4, V6: GatewayClientV6, PeerNS: t.Switch, PeerName: "gateway"}
	t.GatewayBackend = t.GatewayClient
	t.BackendIf = Iface{NS: t.Backend, Name: HostIf, V4: OneArmBackendV4, V6: OneArmBackendV6, PeerNS: t.Switch, PeerName: "backend"}
	for _, i := range []Iface{t.ClientIf, t.GatewayClient, t.BackendIf} {
		if err := Veth(i.NS, i.Name, t.Switch, i.PeerName); err != nil {
			return err
		}
		if err := t.Switch.SetMaster(i.PeerName, BridgeIf); err != nil {
			return err
		}
		if err := i.addAddrs(); err != nil {
			return err
		}
	}
	for _, ns := range []*NS{t.Client, t.Backend} {
		if err := ns.AddRoute(netip.PrefixFrom(VIP4, 32), GatewayClientV4.Addr()); err != nil {
			return err
		}
		if err := ns.AddRoute(netip.PrefixFrom(VIP6, 128), GatewayClientV6.Addr()); err != nil {
			return err
		}
	}
	return nil
}

func (i Iface) addAddrs() error {
	for _, p := range []netip.Prefix{i.V4, i.V6} {
		if err := i.NS.AddAddr(i.Name, p); err != nil {
			return err
		}
	}
	return nil
}

// AddBackendPool gives the backend namespace the extra addresses of a pool
// (BackendPoolV4 and BackendPoolV6), routed topology only, and returns
// every backend address of each family, the topology's own first.
func (t *Topology) AddBackendPool() (v4, v6 []netip.Addr, err error) {
	if t.oneArm {
		return nil, nil, errors.New("backend pool: routed topology only")
	}
	v4, v6 = []netip.Addr{t.BackendIf.V4.Addr()}, []netip.Addr{t.BackendIf.V6.Addr()}
	for i := range BackendPoolV4 {
		for _, p := range []netip.Prefix{BackendPoolV4[i], BackendPoolV6[i]} {
			if err := t.Backend.AddAddr(HostIf, p); err != nil {
				return nil, nil, err
			}
		}
		v4, v6 = append(v4, BackendPoolV4[i].Addr()), append(v6, BackendPoolV6[i].Addr())
	}
	return v4, v6, nil
}

// OneArm reports whether this is the one-arm variant.
func (t *Topology) OneArm() bool { return t.oneArm }

// PrepareGatewayXDP attaches an XDP_PASS program to the peer of every
// gateway interface, so frames the gateway's XDP program sends with
// XDP_TX or redirects are accepted by the veth.
func (t *Topology) PrepareGatewayXDP() error {
	ifs := []Iface{t.GatewayClient}
	if !t.oneArm {
		ifs = append(ifs, t.GatewayBackend)
	}
	for _, i := range ifs {
		if err := AttachXDPPass(i.PeerNS, i.PeerName); err != nil {
			return err
		}
	}
	return nil
}

// Namespaces lists every namespace of the topology.
func (t *Topology) Namespaces() []*NS { return append([]*NS(nil), t.namespaces...) }

// Close deletes every namespace of the topology. It is idempotent.
func (t *Topology) Close() error {
	var errs []error
	for i := len(t.namespaces) - 1; i >= 0; i-- {
		if err := t.namespaces[i].Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("close topology: %w", errors.Join(errs...))
	}
	return nil
}
