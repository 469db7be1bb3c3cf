package bpf

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf"
)

// TestCopyEntriesValueLayout: a value that grew at its end (a field
// appended, as to struct flow_val) keeps its leading bytes and gets zeroes
// in the new ones; one that shrank keeps the bytes that still fit.
func TestCopyEntriesValueLayout(t *testing.T) {
	requireRoot(t)
	mk := func(vs uint32) *ebpf.Map {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 4, ValueSize: vs, MaxEntries: 16})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	small, big := mk(8), mk(12)
	for i := range uint32(5) {
		if err := small.Put(i, []byte{1, 2, 3, 4, 5, 6, 7, byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := copyEntries(small, big, nil); err != nil || n != 5 {
		t.Fatalf("grow: copied %d, %v", n, err)
	}
	var v []byte
	if err := big.Lookup(uint32(3), &v); err != nil || !bytes.Equal(v, []byte{1, 2, 3, 4, 5, 6, 7, 3, 0, 0, 0, 0}) {
		t.Fatalf("grown value %v, %v", v, err)
	}
	back := mk(8)
	if n, err := copyEntries(big, back, nil); err != nil || n != 5 {
		t.Fatalf("shrink: copied %d, %v", n, err)
	}
	if err := back.Lookup(uint32(4), &v); err != nil || !bytes.Equal(v, []byte{1, 2, 3, 4, 5, 6, 7, 4}) {
		t.Fatalf("shrunk value %v, %v", v, err)
	}
}
