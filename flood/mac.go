package flood

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
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
	out, err := ns.Exec("ip", "-j", "route", "get", target.String())
	if err != nil {
		return nil, fmt.Errorf("route to %v: %w", target, err)
	}
	var routes []struct {
		Dst     string `json:"dst"`
		Gateway string `json:"gateway"`
		Dev     string `json:"dev"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil || len(routes) == 0 {
		return nil, fmt.Errorf("parse route to %v: %q: %v", target, out, err)
	}
	r := routes[0]
	if r.Dev != iface {
		return nil, fmt.Errorf("flood: %s routes %v through %q, not %q", ns, target, r.Dev, iface)
	}
	nh := target
	if r.Gateway != "" {
		if nh, err = netip.ParseAddr(r.Gateway); err != nil {
			return nil, fmt.Errorf("parse next hop %q: %w", r.Gateway, err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for probed := false; ; {
		mac, err := neighbour(ns, iface, nh)
		if err != nil || mac != nil {
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

// neighbour returns nh's MAC from the neighbour table, or nil while it is
// not resolved.
func neighbour(ns *lab.NS, iface string, nh netip.Addr) (net.HardwareAddr, error) {
	out, err := ns.Exec("ip", "-j", "neigh", "show", "to", nh.String(), "dev", iface)
	if err != nil {
		return nil, fmt.Errorf("neighbour %v: %w", nh, err)
	}
	var neighs []struct {
		LLAddr string   `json:"lladdr"`
		State  []string `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &neighs); err != nil {
		return nil, fmt.Errorf("parse neighbour %v: %q: %w", nh, out, err)
	}
	for _, n := range neighs {
		if n.LLAddr == "" || slices.Contains(n.State, "FAILED") || slices.Contains(n.State, "INCOMPLETE") {
			continue
		}
		mac, err := net.ParseMAC(n.LLAddr)
		if err != nil || len(mac) != 6 {
			return nil, fmt.Errorf("neighbour %v has MAC %q", nh, n.LLAddr)
		}
		return mac, nil
	}
	return nil, nil
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
