package bpf

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
)

// A flow copied during a migration lags behind what the previous program
// saw; merging moves every edge forward across the 2^32 wrap and never
// back, and takes the FIN position only from a side that saw the FIN.
func TestMergeTracking(t *testing.T) {
	cur := syngateFlowVal{Flags: flowTracked, SeqEnd: 0xfffffff0, AckMax: 100, WinEnd: 5000, WinMax: 1000, TsRecent: 7}
	old := syngateFlowVal{Flags: flowTracked | flowFIN | flowTS, SeqEnd: 0x10, AckMax: 50, WinEnd: 6000, WinMax: 900, FinEnd: 0x10, TsRecent: 9}
	mergeTracking(&cur, &old)
	want := syngateFlowVal{Flags: flowTracked, SeqEnd: 0x10, AckMax: 100, WinEnd: 6000, WinMax: 1000, FinEnd: 0x10, TsRecent: 9}
	if cur != want {
		t.Fatalf("merged %+v, want %+v", cur, want)
	}
	old.Flags = flowTracked
	old.FinEnd, old.TsRecent = 0x99, 100
	mergeTracking(&cur, &old)
	if cur.FinEnd != 0x10 || cur.TsRecent != 9 {
		t.Fatalf("FIN end %#x, ts %d: taken from a side without FIN or timestamps", cur.FinEnd, cur.TsRecent)
	}
}

// TestMergeFlowsMarksResync: the merge writes back a whole value as it read
// it, losing what the new program learned meanwhile, and a copy made for a
// migration lags behind the old program: both mark the tracked state for
// resync; untracked entries are left unmarked.
func TestMergeFlowsMarksResync(t *testing.T) {
	requireRoot(t)
	mk := func() *ebpf.Map {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: uint32(binary.Size(syngateFlowKey{})),
			ValueSize: uint32(binary.Size(syngateFlowVal{})), MaxEntries: 16})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	old, cur := mk(), mk()
	tracked, plain := syngateFlowKey{Sport: 1}, syngateFlowKey{Sport: 2}
	put := func(m *ebpf.Map, k syngateFlowKey, v syngateFlowVal) {
		if err := m.Put(&k, &v); err != nil {
			t.Fatal(err)
		}
	}
	put(old, tracked, syngateFlowVal{Flags: flowTracked, SeqEnd: 500})
	put(old, plain, syngateFlowVal{Flags: flowFIN, LastSeenNs: 9})
	if _, err := copyEntries(old, cur, markResync); err != nil {
		t.Fatal(err)
	}
	get := func(k syngateFlowKey) syngateFlowVal {
		var v syngateFlowVal
		if err := cur.Lookup(&k, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := get(tracked); v.Flags != flowTracked|flowResync {
		t.Fatalf("copied tracked entry flags %#x, want resync", v.Flags)
	}
	if v := get(plain); v.Flags != flowFIN {
		t.Fatalf("copied untracked entry flags %#x", v.Flags)
	}
	// The new program learned and cleared the flag; the old one had moved
	// on too: the merge writes, and marks again.
	put(cur, tracked, syngateFlowVal{Flags: flowTracked, SeqEnd: 400})
	put(old, tracked, syngateFlowVal{Flags: flowTracked, SeqEnd: 600})
	if n, err := mergeFlows(old, cur); err != nil || n != 1 {
		t.Fatalf("merged %d, %v", n, err)
	}
	if v := get(tracked); v.Flags != flowTracked|flowResync || v.SeqEnd != 600 {
		t.Fatalf("merged entry flags %#x seq_end %d", v.Flags, v.SeqEnd)
	}
}
