package flood

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/syngate/syngate/lab"
)

// ErrNoNeighbour is returned when the next hop's MAC cannot be resolved.
var ErrNoNeighbour = errors.New("flood: next hop not resolved")

// resolveMAC finds the MAC of the next hop towards target from inside ns:
// the route gives the next hop (and must leave through iface), the
// neighbour table its address. An unresolved neighbour is resolved by
// sending the next hop one UDP datagram, which makes the kernel run ARP or
// neighbour discovery.
func resolveMAC(ctx context.Context, ns *lab.NS, iface string, target netip.Addr) (net.HardwareAddr, error) {
	dev, gw, err := ns.RouteGet(target)
	if err != nil {
		return nil, err
	}
	if dev != iface {
		return nil, fmt.Errorf("flood: %s routes %v through %q, not %q", ns, target, dev, iface)
	}
	nh := target
	if gw.IsValid() {
		nh = gw
	}
	deadline := time.Now().Add(2 * time.Second)
	for probed := false; ; {
		mac, err := ns.Neighbour(iface, nh)
		if err != nil || mac != nil {
			if err == nil && len(mac) != 6 {
				err = fmt.Errorf("flood: neighbour %v has MAC %v", nh, mac)
			}
			return mac, err
		}
		if !probed {
			probed = true
			if err := probe(ns, nh); err != nil {
				return nil, err
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: %v on %s/%s", ErrNoNeighbour, nh, ns, iface)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// probe sends nh a one-byte datagram to the discard port.
func probe(ns *lab.NS, nh netip.Addr) error {
	return ns.Run(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(nh, 9)))
		if err != nil {
			return fmt.Errorf("probe next hop %v: %w", nh, err)
		}
		defer c.Close()
		c.Write([]byte{0}) // only the resolution it triggers matters
		return nil
	})
}
