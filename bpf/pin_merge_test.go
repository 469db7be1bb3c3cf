package bpf

import "testing"

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
