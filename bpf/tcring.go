package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
)

// TCRingSize mirrors TC_RING_SIZE in syngate_tc.h: the bytes of each TC
// interface's ring buffer to the engine.
const TCRingSize = 4 << 20

// TCSnap mirrors TC_SNAP: the longest frame (or aggregate) a ring record
// carries whole.
const TCSnap = 16384

// RingHeaderLen is the length of the header before each ring record's
// frame (struct tc_rec_hdr).
const RingHeaderLen = 16

// RingFlagHeaders mirrors TC_REC_HEADERS: the record's frame was cut after
// its TCP header (a frame or aggregate longer than TCSnap).
const RingFlagHeaders = 0x1

// RingHeader is the header of a ring record (struct tc_rec_hdr).
type RingHeader struct {
	Ifindex uint32
	Queue   uint32
	Len     uint32
	Flags   uint32
}

// ParseRingRecord splits a ring record into its header and frame. A frame
// cut after its TCP header gets its IP length set to what is left, so the
// engine reads it as the segment without its payload.
func ParseRingRecord(rec []byte) (RingHeader, []byte, error) {
	if len(rec) < RingHeaderLen {
		return RingHeader{}, nil, fmt.Errorf("ring record of %d bytes: %w", len(rec), ErrInvalid)
	}
	h := RingHeader{
		Ifindex: binary.NativeEndian.Uint32(rec[0:]),
		Queue:   binary.NativeEndian.Uint32(rec[4:]),
		Len:     binary.NativeEndian.Uint32(rec[8:]),
		Flags:   binary.NativeEndian.Uint32(rec[12:]),
	}
	f := rec[RingHeaderLen:]
	if int(h.Len) > len(f) {
		return h, nil, fmt.Errorf("ring record claims %d bytes, has %d: %w", h.Len, len(f), ErrInvalid)
	}
	f = f[:h.Len]
	if h.Flags&RingFlagHeaders != 0 {
		if err := trimToHeaders(f); err != nil {
			return h, nil, fmt.Errorf("ring record cut after its headers: %w", err)
		}
	}
	return h, f, nil
}

// OpenTCRing creates the ring buffer through which the TC program hands
// the named interface's handshake packets to the engine, and puts it in
// the program's tc_rings map. The caller reads it (package ringport) and
// calls CloseTCRing when done; closing the returned map does not take it
// out of tc_rings.
func (d *Dataplane) OpenTCRing(ifname string) (*ebpf.Map, error) {
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("open tc ring of %s: %w: %w", ifname, ErrUnknownInterface, err)
	}
	ring, err := ebpf.NewMap(&ebpf.MapSpec{Name: "tc_ring", Type: ebpf.RingBuf, MaxEntries: TCRingSize})
	if err != nil {
		return nil, fmt.Errorf("open tc ring of %s: %w", ifname, classify(err))
	}
	if err := d.objs.TcRings.Put(uint32(iface.Index), ring); err != nil {
		ring.Close()
		return nil, fmt.Errorf("open tc ring of %s: %w", ifname, classify(err))
	}
	return ring, nil
}

// CloseTCRing takes the named interface's ring out of tc_rings: from then
// on its packets for the engine are dropped as having no engine.
func (d *Dataplane) CloseTCRing(ifindex int) error {
	err := d.objs.TcRings.Delete(uint32(ifindex))
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("close tc ring of interface %d: %w", ifindex, err)
	}
	return nil
}

// RegisterEngine tells the TC program that an engine runs, by putting a
// socket of the engine's (fd: a bound UDP socket, which a sockmap takes)
// in its tc_engine map. The kernel removes the socket from the map when it
// is closed, however the process ends, and the program then answers SYNs
// with standby cookies and keeps handshake ACKs, as the XDP program does
// when the engine's AF_XDP sockets are gone.
func (d *Dataplane) RegisterEngine(fd int) error {
	if err := d.objs.TcEngine.Put(uint32(0), uint64(fd)); err != nil {
		return fmt.Errorf("register the engine with the tc program: %w", classify(err))
	}
	return nil
}
