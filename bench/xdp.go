package main

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"

	"github.com/syngate/syngate/lab"
)

// XDP verdicts used by the bench's programs.
const (
	xdpDrop = 1
	xdpPass = 2
	xdpTX   = 3
)

// spoofNet and spoofMask match the first two bytes of an IPv4 address in
// flood.SpoofV4 (198.18.0.0/15), loaded as a little-endian half-word.
const (
	spoofNet  = 0x12c6 // 198, 18
	spoofMask = 0xfeff // the /15: the second byte's low bit is host
)

// counterProg is a tiny XDP program built at run time with a per-CPU array
// of counters: slot 0 counts every frame, slot 1 IPv4 TCP frames with SYN
// and ACK set. The bench uses three variants: a pass-through SYN-ACK
// counter on the client side (how many SYN-ACKs reached the "internet"),
// and the XDP_DROP and XDP_TX ceilings on the gateway.
type counterProg struct {
	prog *ebpf.Program
	m    *ebpf.Map
}

// progKind selects what the program does with a frame after counting it.
type progKind int

const (
	progCountPass progKind = iota // count, XDP_PASS (SYN-ACKs of the spoofed range: XDP_DROP)
	progDrop                      // count, XDP_DROP
	progBounce                    // count, swap MACs, set ACK on TCP, XDP_TX
)

func newCounterProg(kind progKind) (*counterProg, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("lift memlock limit: %w", err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "bench_cnt",
		Type:       ebpf.PerCPUArray,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: 2,
	})
	if err != nil {
		return nil, fmt.Errorf("create counter map: %w", err)
	}
	verdict := int32(xdpPass)
	switch kind {
	case progDrop:
		verdict = xdpDrop
	case progBounce:
		verdict = xdpTX
	}
	// incr emits map[slot]++ (per-CPU, so no atomics needed). It clobbers
	// R0-R5 and keeps the context pointer in R6.
	incr := func(slot int32, skip string) asm.Instructions {
		return asm.Instructions{
			asm.StoreImm(asm.RFP, -4, int64(slot), asm.Word),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, skip),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		}
	}
	// loadPkt reloads data into R2 and data_end into R3 and checks that
	// n bytes are readable, else jumps to out.
	loadPkt := func(n int32, out string) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R6, 0, asm.Word),
			asm.LoadMem(asm.R3, asm.R6, 4, asm.Word),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, n),
			asm.JGT.Reg(asm.R4, asm.R3, out),
		}
	}
	var insns asm.Instructions
	insns = append(insns, asm.Mov.Reg(asm.R6, asm.R1))
	insns = append(insns, incr(0, "tcp")...)
	// Is it IPv4 (no options) TCP with SYN and ACK?
	insns = append(insns, withSymbol(loadPkt(48, "mangle"), "tcp")...)
	insns = append(insns,
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JNE.Imm(asm.R5, 0x0008, "mangle"), // ETH_P_IP in network order
		asm.LoadMem(asm.R5, asm.R2, 14, asm.Byte),
		asm.JNE.Imm(asm.R5, 0x45, "mangle"),
		asm.LoadMem(asm.R5, asm.R2, 23, asm.Byte),
		asm.JNE.Imm(asm.R5, 6, "mangle"),
	)
	if kind == progBounce {
		// Turn the SYN into a "SYN-ACK" (flags only; the checksum is not
		// fixed, the far end only counts it).
		insns = append(insns,
			asm.LoadMem(asm.R5, asm.R2, 47, asm.Byte),
			asm.Or.Imm(asm.R5, 0x10),
			asm.StoreMem(asm.R2, 47, asm.R5, asm.Byte),
		)
	}
	insns = append(insns,
		asm.LoadMem(asm.R5, asm.R2, 47, asm.Byte),
		asm.And.Imm(asm.R5, 0x12),
		asm.JNE.Imm(asm.R5, 0x12, "mangle"),
	)
	insns = append(insns, incr(1, "mangle")...)
	if kind == progBounce {
		// Swap destination and source MAC so the peer accepts the frame.
		insns = append(insns, withSymbol(loadPkt(14, "out"), "mangle")...)
		insns = append(insns,
			asm.LoadMem(asm.R4, asm.R2, 0, asm.Word),
			asm.LoadMem(asm.R5, asm.R2, 6, asm.Word),
			asm.StoreMem(asm.R2, 0, asm.R5, asm.Word),
			asm.StoreMem(asm.R2, 6, asm.R4, asm.Word),
			asm.LoadMem(asm.R4, asm.R2, 4, asm.Half),
			asm.LoadMem(asm.R5, asm.R2, 10, asm.Half),
			asm.StoreMem(asm.R2, 4, asm.R5, asm.Half),
			asm.StoreMem(asm.R2, 10, asm.R4, asm.Half),
		)
	} else {
		if kind == progCountPass {
			// A SYN-ACK from or to the spoofed range is one the site
			// sends "to the internet": counted, then dropped here, so
			// the client namespace's kernel (whose socket tables hold
			// the earlier phases' TIME_WAIT connections) does not
			// charge its work on them to the defense's softirq time.
			insns = append(insns, loadPkt(34, "mangle")...)
			for _, off := range []int16{26, 30} { // IPv4 source, destination
				insns = append(insns,
					asm.LoadMem(asm.R5, asm.R2, off, asm.Half),
					asm.And.Imm(asm.R5, spoofMask),
					asm.JEq.Imm(asm.R5, spoofNet, "drop"),
				)
			}
			insns = append(insns, asm.Ja.Label("mangle"),
				asm.Mov.Imm(asm.R0, xdpDrop).WithSymbol("drop"),
				asm.Return(),
			)
		}
		insns = append(insns, asm.Mov.Imm(asm.R0, 0).WithSymbol("mangle"))
	}
	insns = append(insns,
		asm.Mov.Imm(asm.R0, verdict).WithSymbol("out"),
		asm.Return(),
	)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "bench_xdp",
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: insns,
	})
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("load xdp program: %w", err)
	}
	return &counterProg{prog: prog, m: m}, nil
}

// attach attaches the program to ifname in ns until ns is closed.
func (c *counterProg) attach(ns *lab.NS, ifname string) error {
	return lab.AttachXDP(ns, ifname, c.prog)
}

// read returns the two counters summed over CPUs: all frames, SYN-ACKs.
func (c *counterProg) read() (frames, synacks uint64, err error) {
	var vals []uint64
	for slot, dst := range []*uint64{&frames, &synacks} {
		if err := c.m.Lookup(uint32(slot), &vals); err != nil {
			return 0, 0, fmt.Errorf("read xdp counter %d: %w", slot, err)
		}
		for _, v := range vals {
			*dst += v
		}
	}
	return frames, synacks, nil
}

// Close releases the program and map (the link keeps its own reference).
func (c *counterProg) Close() error {
	c.prog.Close()
	return c.m.Close()
}

// withSymbol labels the first instruction of a block as a jump target.
func withSymbol(b asm.Instructions, sym string) asm.Instructions {
	b[0] = b[0].WithSymbol(sym)
	return b
}
