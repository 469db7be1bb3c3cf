package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"

	"github.com/syngate/syngate/flow"
)

// TakeStandbyACKs returns the kept ACKs and removes them from the map.
func (d *Dataplane) TakeStandbyACKs() ([]flow.StandbyACK, error) {
	var (
		k   syngateFlowKey
		v   syngateStandbyAck
		out []flow.StandbyACK
		ks  []syngateFlowKey
	)
	now := flow.Monotonic()
	it := d.objs.StandbyAcks.Iterate()
	for it.Next(&k, &v) {
		ks = append(ks, k)
		if v.Len > uint32(len(v.Frame)) {
			continue
		}
		f := append([]byte(nil), v.Frame[:v.Len]...)
		if err := trimToHeaders(f); err != nil {
			continue
		}
		out = append(out, flow.StandbyACK{Frame: f, Ifindex: int(v.Ifindex), Age: now - time.Duration(v.AtNs)})
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("read standby acks: %w", err)
	}
	for _, k := range ks {
		if err := d.objs.StandbyAcks.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, fmt.Errorf("delete standby ack: %w", err)
		}
	}
	return out, nil
}

// trimToHeaders sets the IP length of a frame cut after its TCP header to
// what is left.
func trimToHeaders(f []byte) error {
	off := 14
	if len(f) < off {
		return ErrInvalid
	}
	typ := binary.BigEndian.Uint16(f[12:])
	if typ == 0x8100 {
		if len(f) < off+4 {
			return ErrInvalid
		}
		typ = binary.BigEndian.Uint16(f[16:])
		off += 4
	}
	switch typ {
	case 0x0800:
		if len(f) < off+20 {
			return ErrInvalid
		}
		binary.BigEndian.PutUint16(f[off+2:], uint16(len(f)-off))
	case 0x86dd:
		if len(f) < off+40 {
			return ErrInvalid
		}
		binary.BigEndian.PutUint16(f[off+4:], uint16(len(f)-off-40))
	default:
		return ErrInvalid
	}
	return nil
}
