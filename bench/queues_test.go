package main

import "testing"

// TestXPSMask: every transmit queue has a CPU, every CPU a queue, and with
// at least as many queues as CPUs a queue has exactly one CPU.
func TestXPSMask(t *testing.T) {
	for _, tc := range []struct {
		queues, cpus int
		want         []uint64
	}{
		{1, 2, []uint64{0b11}},
		{2, 2, []uint64{0b01, 0b10}},
		{4, 2, []uint64{0b01, 0b10, 0b01, 0b10}},
		{2, 4, []uint64{0b0101, 0b1010}},
		{4, 4, []uint64{0b0001, 0b0010, 0b0100, 0b1000}},
	} {
		for q, want := range tc.want {
			if got := xpsMask(q, tc.queues, tc.cpus); got != want {
				t.Errorf("xpsMask(queue %d of %d, %d CPUs) = %b, want %b", q, tc.queues, tc.cpus, got, want)
			}
		}
	}
}
