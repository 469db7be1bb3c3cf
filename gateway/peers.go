package gateway

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
)

// peerLinks implements proxy.Handoff from the config's peer addresses: it
// learns their MAC addresses from the kernel's neighbour table, refreshed
// every second, and asks the kernel to resolve the missing ones.
type peerLinks struct {
	addrs  []netip.Addr
	byLink atomic.Pointer[map[int][][6]byte]
	all    atomic.Pointer[map[[6]byte]bool]
}

func newPeerLinks(addrs []netip.Addr) *peerLinks {
	p := &peerLinks{addrs: addrs}
	p.byLink.Store(&map[int][][6]byte{})
	p.all.Store(&map[[6]byte]bool{})
	return p
}

// Peers implements proxy.Handoff.
func (p *peerLinks) Peers(ifindex int) [][6]byte { return (*p.byLink.Load())[ifindex] }

// IsPeer implements proxy.Handoff.
func (p *peerLinks) IsPeer(mac [6]byte) bool { return (*p.all.Load())[mac] }

// refresh reads the neighbour table once.
func (p *peerLinks) refresh(log *slog.Logger) {
	want := map[netip.Addr]bool{}
	for _, a := range p.addrs {
		want[a] = true
	}
	byLink := map[int][][6]byte{}
	all := map[[6]byte]bool{}
	found := map[netip.Addr]bool{}
	neighs, err := netlink.NeighList(0, netlink.FAMILY_ALL)
	if err != nil {
		log.Warn("peers: read the neighbour table", "err", err)
		return
	}
	for _, n := range neighs {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok || !want[a.Unmap()] || len(n.HardwareAddr) != 6 || n.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) != 0 {
			continue
		}
		var mac [6]byte
		copy(mac[:], n.HardwareAddr)
		byLink[n.LinkIndex] = append(byLink[n.LinkIndex], mac)
		all[mac] = true
		found[a.Unmap()] = true
	}
	p.byLink.Store(&byLink)
	p.all.Store(&all)
	// A datagram to the discard port makes the kernel resolve a peer it
	// has not talked to (or keeps a stale entry fresh).
	for _, a := range p.addrs {
		if found[a] {
			continue
		}
		if c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 9))); err == nil {
			c.Write([]byte{0})
			c.Close()
		}
	}
}

func (p *peerLinks) run(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		p.refresh(log)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
