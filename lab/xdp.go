package lab

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// AttachXDPPass attaches a program that passes every frame to ifname in ns.
// A veth only takes frames sent with XDP_TX or redirected into it when its
// peer has an XDP program too, so the lab puts this on the far end of every
// veth whose near end runs syngate's program. The program stays attached
// until ns is closed.
func AttachXDPPass(ns *NS, ifname string) error {
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; a no-op since.
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("lift memlock limit for xdp program: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "lab_xdp_pass",
		Type:    ebpf.XDP,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 2), // XDP_PASS
			asm.Return(),
		},
	})
	if err != nil {
		return fmt.Errorf("load xdp pass program: %w", err)
	}
	defer prog.Close() // the link holds its own reference
	return AttachXDP(ns, ifname, prog)
}

// AttachXDP attaches prog to ifname inside ns (native mode when the driver
// has it, which veth does) and keeps the link until ns is closed.
func AttachXDP(ns *NS, ifname string, prog *ebpf.Program) error {
	var l link.Link
	err := ns.Run(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return fmt.Errorf("interface %s: %w", ifname, err)
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index})
		return err
	})
	if err != nil {
		return fmt.Errorf("attach xdp to %s/%s: %w", ns, ifname, err)
	}
	ns.onClose(func() error {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("detach xdp from %s/%s: %w", ns, ifname, err)
		}
		return nil
	})
	return nil
}
