package bpf

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
)

// These helpers set up links with netlink from the calling thread's network
// namespace (the test's own, see inNewNetns): the package-level netlink
// functions open their socket on the calling thread.

// addVeth creates the veth pair sgtest0/sgtest1 with rxQueues receive
// queues each (0: the default) and returns their ifindexes.
func addVeth(tb testing.TB, rxQueues int) (int, int) {
	tb.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: "sgtest1"}
	v.Name = "sgtest0"
	if rxQueues > 0 {
		v.NumRxQueues, v.PeerNumRxQueues = rxQueues, uint32(rxQueues)
	}
	if err := netlink.LinkAdd(v); err != nil {
		tb.Fatalf("create veth sgtest0/sgtest1 in the test namespace: %v", err)
	}
	return ifindex(tb, "sgtest0"), ifindex(tb, "sgtest1")
}

// linkByName looks an interface up by name.
func linkByName(tb testing.TB, name string) netlink.Link {
	tb.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		tb.Fatalf("interface %s: %v", name, err)
	}
	return l
}

// setUp brings an interface up, optionally with a MAC address first.
func setUp(tb testing.TB, name string, mac net.HardwareAddr) {
	tb.Helper()
	l := linkByName(tb, name)
	if mac != nil {
		if err := netlink.LinkSetHardwareAddr(l, mac); err != nil {
			tb.Fatalf("set %s address %v: %v", name, mac, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		tb.Fatalf("set %s up: %v", name, err)
	}
}

// xdpMode is how the kernel reports the XDP program on an interface:
// "native", "generic" or "" for none.
func xdpMode(tb testing.TB, name string) string {
	tb.Helper()
	xdp := linkByName(tb, name).Attrs().Xdp
	if xdp == nil || !xdp.Attached {
		return ""
	}
	// enum XDP_ATTACHED_* of linux/if_link.h
	const attachedDrv, attachedSkb = 1, 2
	switch xdp.AttachMode {
	case attachedDrv:
		return "native"
	case attachedSkb:
		return "generic"
	}
	return "other"
}
