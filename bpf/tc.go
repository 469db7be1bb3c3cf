package bpf

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Datapath is where an interface's spliced segments are rewritten.
type Datapath int

const (
	// DatapathXDP splices in the XDP program, before the kernel allocates
	// an skb: the fastest per packet, but it sees neither checksum offload
	// state nor GRO aggregates, so it needs frames with complete checksums.
	DatapathXDP Datapath = iota
	// DatapathTC splices in the TC program at tcx ingress, after GRO: it
	// rewrites aggregates once and keeps partial checksums correct (veth,
	// tun/tap and other links that carry a local socket's segments).
	// The XDP program still runs there for handshakes and cookies.
	DatapathTC
)

// String returns "xdp" or "tc".
func (p Datapath) String() string {
	switch p {
	case DatapathXDP:
		return "xdp"
	case DatapathTC:
		return "tc"
	}
	return fmt.Sprintf("datapath(%d)", int(p))
}

// MaxTCInterfaces mirrors MAX_TC_IFACES in syngate.c: at most this many
// interfaces can be on the TC data path at a time.
const MaxTCInterfaces = 64

// AttachTC puts the named interface on the TC data path: it attaches the
// TC program at the head of its tcx ingress chain, then tells the XDP
// program (attached with Attach, before or after) to pass the interface's
// spliced segments on to it untouched. In that order, no segment is ever
// spliced by XDP with a checksum it cannot read, and none meets an
// interface where nobody splices it. Needs kernel 6.6 (tcx).
func (d *Dataplane) AttachTC(ifname string) error {
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("attach tc to %s: %w: %w", ifname, ErrUnknownInterface, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.tc[iface.Index]; ok {
		return fmt.Errorf("attach tc to %s: %w", ifname, ErrAlreadyAttached)
	}
	// Head: the gateway's own flows must not meet another program's
	// redirect first; everything else the program hands on (TC_ACT_UNSPEC
	// is tcx's "next").
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: iface.Index, Program: d.objs.SyngateTc, Attach: ebpf.AttachTCXIngress, Anchor: link.Head(),
	})
	if err != nil {
		return fmt.Errorf("attach tc to %s (tcx needs kernel 6.6): %w", ifname, classify(err))
	}
	if err := d.objs.TcIfaces.Put(uint32(iface.Index), uint32(1)); err != nil {
		_ = l.Close()
		return fmt.Errorf("attach tc to %s: mark the interface: %w", ifname, classify(err))
	}
	if d.tc == nil {
		d.tc = make(map[int]attachment)
	}
	d.tc[iface.Index] = attachment{name: ifname, link: l}
	d.log.Info("tc attached", "interface", ifname)
	return nil
}

// AttachedTC returns the names of the interfaces on the TC data path.
func (d *Dataplane) AttachedTC() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.tc))
	for _, a := range d.tc {
		out = append(out, a.name)
	}
	return out
}

// DetachTC takes the named interface off the TC data path: the XDP
// program splices its segments again from then on.
func (d *Dataplane) DetachTC(ifname string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for idx, a := range d.tc {
		if a.name == ifname {
			return d.detachTC(idx, a)
		}
	}
	return fmt.Errorf("detach tc from %s: %w", ifname, ErrNotAttached)
}

// detachTC unmarks, then detaches (AttachTC's order reversed). d.mu is held.
func (d *Dataplane) detachTC(idx int, a attachment) error {
	delete(d.tc, idx)
	err := d.objs.TcIfaces.Delete(uint32(idx))
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		err = nil
	}
	err = errors.Join(err, a.link.Close())
	if err != nil {
		return fmt.Errorf("detach tc from %s: %w", a.name, err)
	}
	d.log.Info("tc detached", "interface", a.name)
	return nil
}
