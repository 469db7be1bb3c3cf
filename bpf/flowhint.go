package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// flowHintBits and flowHintOn are FLOW_HINT_BITS and FLOW_HINT_ON of
// bpf/syngate.c: 2^16 counting slots, then the slot that turns the hint on.
const (
	flowHintBits = 16
	flowHintOn   = 1 << flowHintBits
)

// flowHint keeps the program's flow_hint counts: how many flow entries
// hash to each slot (flowHintIndex). A SYN whose slot is zero skips the
// flow table lookup, which under a spoofed flood misses the CPU caches on
// every SYN. The counts live in the map's memory, mapped here, and change
// with atomic adds: no system call per flow. Every change of the flow
// table goes through the Dataplane, which raises a count before an entry
// is added and lowers it after one is removed, so a zero is never wrong;
// a count too high only costs a lookup.
type flowHint struct {
	mu     sync.RWMutex // Close (write) against the adds (read)
	mem    []byte
	counts []uint64 // aliases mem; nil once closed or when unavailable
}

// flowHintIndex is flow_hint_index of bpf/syngate.c for a key as the
// program sees it (addresses and ports in network order).
func flowHintIndex(k *syngateFlowKey) uint32 {
	be := binary.BigEndian
	h := be.Uint32(k.Saddr[0:]) ^ be.Uint32(k.Saddr[4:]) ^ be.Uint32(k.Saddr[8:]) ^ be.Uint32(k.Saddr[12:]) ^
		(uint32(k.Sport) | uint32(k.Dport)<<16)
	return (h * 0x9e3779b1) >> (32 - flowHintBits)
}

// openFlowHint maps m, counts the entries flows already holds (pinned ones
// of an earlier process) and turns the hint on. Nothing may change flows
// meanwhile: Load calls it before the engine can. On failure the hint
// stays off (the program then always looks the table up) and a nil hint
// is returned, which every method accepts.
func openFlowHint(m, flows *ebpf.Map) (*flowHint, error) {
	size := int(m.MaxEntries()) * 8
	if m.MaxEntries() != flowHintOn+1 || m.ValueSize() != 8 {
		return nil, fmt.Errorf("flow_hint map of %d entries of %d bytes: %w", m.MaxEntries(), m.ValueSize(), ErrInvalid)
	}
	mem, err := unix.Mmap(m.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map flow_hint: %w", err)
	}
	h := &flowHint{mem: mem, counts: unsafe.Slice((*uint64)(unsafe.Pointer(&mem[0])), flowHintOn+1)}
	keys := make([]syngateFlowKey, flowBatch)
	vals := make([]syngateFlowVal, flowBatch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := flows.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			h.counts[flowHintIndex(&keys[i])]++
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			h.close()
			return nil, fmt.Errorf("count flows for flow_hint: %w", err)
		}
	}
	atomic.StoreUint64(&h.counts[flowHintOn], 1)
	return h, nil
}

// add raises k's count and returns its slot, for sub.
func (h *flowHint) add(k *syngateFlowKey) uint32 {
	i := flowHintIndex(k)
	if h != nil {
		h.mu.RLock()
		if h.counts != nil {
			atomic.AddUint64(&h.counts[i], 1)
		}
		h.mu.RUnlock()
	}
	return i
}

// sub lowers the count of slot i.
func (h *flowHint) sub(i uint32) {
	if h == nil {
		return
	}
	h.mu.RLock()
	if h.counts != nil {
		atomic.AddUint64(&h.counts[i], ^uint64(0))
	}
	h.mu.RUnlock()
}

// mayHave is false only when k surely has no flow entry. An entry being
// added counts before it exists, so a false is never contradicted by an
// install that began before it.
func (h *flowHint) mayHave(k *syngateFlowKey) bool {
	if h == nil {
		return true
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.counts == nil || atomic.LoadUint64(&h.counts[flowHintOn]) == 0 ||
		atomic.LoadUint64(&h.counts[flowHintIndex(k)]) != 0
}

// close unmaps the counts; later adds and subs do nothing.
func (h *flowHint) close() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.counts == nil {
		return nil
	}
	h.counts = nil
	return unix.Munmap(h.mem)
}
