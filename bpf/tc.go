package bpf

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

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

// tcLinkPinPrefix starts the pin of the TC link of one interface, followed
// by the interface's name (not linkPinPrefix: those name XDP links).
const tcLinkPinPrefix = "tclink_"

func (d *Dataplane) tcLinkPath(ifname string) string {
	return filepath.Join(d.cfg.PinPath, tcLinkPinPrefix+ifname)
}

// AttachTC puts the named interface on the TC data path: it attaches the
// TC program at the head of its tcx ingress chain, then tells the XDP
// program (attached with Attach, before or after) to pass the interface's
// spliced segments on to it untouched. In that order, no segment is ever
// spliced by XDP with a checksum it cannot read, and none meets an
// interface where nobody splices it. Needs kernel 6.6 (tcx).
//
// With Config.PinPath the TC link is pinned like the XDP links and stays
// attached after Close, so an earlier program keeps splicing while no
// syngate runs; the next AttachTC takes it over by replacing its program
// (call it before Attach, whose take-over switches the XDP side).
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
	var l link.Link
	tookOver := false
	if d.cfg.PinPath != "" {
		if l, err = d.takeOverTC(ifname, iface.Index); err != nil {
			return fmt.Errorf("attach tc to %s: %w", ifname, err)
		}
		tookOver = l != nil
	}
	if l == nil {
		// Head: the gateway's own flows must not meet another program's
		// redirect first; everything else the program hands on
		// (TC_ACT_UNSPEC is tcx's "next").
		l, err = link.AttachTCX(link.TCXOptions{
			Interface: iface.Index, Program: d.objs.SyngateTc, Attach: ebpf.AttachTCXIngress, Anchor: link.Head(),
		})
		if err != nil {
			return fmt.Errorf("attach tc to %s (tcx needs kernel 6.6): %w", ifname, classify(err))
		}
		if d.cfg.PinPath != "" {
			path := d.tcLinkPath(ifname)
			_ = os.Remove(path)
			if err := l.Pin(path); err != nil {
				_ = l.Close()
				return fmt.Errorf("attach tc to %s: pin: %w", ifname, err)
			}
		}
	}
	if err := d.objs.TcIfaces.Put(uint32(iface.Index), uint32(1)); err != nil {
		if !tookOver {
			_ = l.Unpin()
			_ = l.Close()
		}
		return fmt.Errorf("attach tc to %s: mark the interface: %w", ifname, classify(err))
	}
	if d.tc == nil {
		d.tc = make(map[int]attachment)
	}
	d.tc[iface.Index] = attachment{name: ifname, link: l, tookOver: tookOver}
	if tookOver {
		d.log.Info("tc program replaced through the pinned link", "interface", ifname)
	} else {
		d.log.Info("tc attached", "interface", ifname)
	}
	return nil
}

// takeOverTC replaces the program of the TC link an earlier syngate pinned
// for the interface; nil when there is none, or it no longer fits (then its
// pin is removed). d.mu is held.
func (d *Dataplane) takeOverTC(ifname string, ifindex int) (link.Link, error) {
	path := d.tcLinkPath(ifname)
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open pinned link %s: %w", path, err)
	}
	why := ""
	info, err := l.Info()
	switch {
	case err != nil:
		why = "unreadable: " + err.Error()
	case info.TCX() == nil || int(info.TCX().Ifindex) != ifindex:
		why = "interface gone or replaced"
	default:
		if err := l.Update(d.objs.SyngateTc); err != nil {
			why = "update failed: " + err.Error()
		} else {
			return l, nil
		}
	}
	d.log.Warn("pinned tc link replaced by a new attachment", "interface", ifname, "reason", why)
	if err := errors.Join(l.Unpin(), l.Close()); err != nil {
		return nil, fmt.Errorf("remove pinned link %s: %w", path, err)
	}
	return nil, nil
}

// PinnedTCInterfaces lists the interfaces whose TC link is pinned (by this
// syngate or an earlier one).
func (d *Dataplane) PinnedTCInterfaces() ([]string, error) {
	if d.cfg.PinPath == "" {
		return nil, nil
	}
	ents, err := os.ReadDir(d.cfg.PinPath)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", d.cfg.PinPath, err)
	}
	var out []string
	for _, e := range ents {
		if name, ok := strings.CutPrefix(e.Name(), tcLinkPinPrefix); ok {
			out = append(out, name)
		}
	}
	return out, nil
}

// DetachPinnedTC takes the named interface off the TC data path, whether
// this process or an earlier syngate attached it. Call it after Attach has
// taken over the interface's XDP link: the earlier XDP program passes
// spliced segments to the earlier TC program until then.
func (d *Dataplane) DetachPinnedTC(ifname string) error {
	d.mu.Lock()
	for idx, a := range d.tc {
		if a.name == ifname {
			err := d.detachTC(idx, a)
			d.mu.Unlock()
			return err
		}
	}
	d.mu.Unlock()
	if d.cfg.PinPath == "" {
		return fmt.Errorf("detach tc from %s: %w", ifname, ErrNotAttached)
	}
	if err := removeLink(d.tcLinkPath(ifname)); err != nil {
		return fmt.Errorf("detach tc from %s: %w", ifname, err)
	}
	d.log.Info("tc detached", "interface", ifname)
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

// detachTC unmarks, then detaches (AttachTC's order reversed), and
// removes the link's pin. d.mu is held.
func (d *Dataplane) detachTC(idx int, a attachment) error {
	delete(d.tc, idx)
	err := d.objs.TcIfaces.Delete(uint32(idx))
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		err = nil
	}
	if d.cfg.PinPath != "" {
		if uerr := a.link.Unpin(); uerr != nil && !errors.Is(uerr, os.ErrNotExist) {
			err = errors.Join(err, uerr)
		}
	}
	err = errors.Join(err, a.link.Close())
	if err != nil {
		return fmt.Errorf("detach tc from %s: %w", a.name, err)
	}
	d.log.Info("tc detached", "interface", a.name)
	return nil
}

// closeTC lets go of the TC links at Close: without a pin path they are
// detached; with one the pins keep them attached, marks and all, for the
// next syngate to take over. d.mu is held.
func (d *Dataplane) closeTC() []error {
	var errs []error
	for idx, a := range d.tc {
		if d.cfg.PinPath == "" {
			errs = append(errs, d.detachTC(idx, a))
			continue
		}
		delete(d.tc, idx)
		errs = append(errs, a.link.Close())
	}
	return errs
}
