package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeRings []RingStats

func (f fakeRings) RingStats() []RingStats { return f }

func TestRingExposition(t *testing.T) {
	r := New("test", "abc")
	if err := r.Register(NewRingCollector(fakeRings{{Interface: "veth0", Received: 12, Transmitted: 3, Dropped: 1}})); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP syngate_tc_ring_frames_total Frames the engine read from a TC interface's ring buffer (rx) or sent on its AF_PACKET socket (tx).
# TYPE syngate_tc_ring_frames_total counter
syngate_tc_ring_frames_total{direction="rx",interface="veth0"} 12
syngate_tc_ring_frames_total{direction="tx",interface="veth0"} 3
# HELP syngate_tc_ring_dropped_total Ring buffer records the engine could not take: no free frame, or a record that did not parse.
# TYPE syngate_tc_ring_dropped_total counter
syngate_tc_ring_dropped_total{interface="veth0"} 1
# HELP syngate_tc_ring_tx_errors_total Frames a TC interface's AF_PACKET socket refused (interface down, queue full).
# TYPE syngate_tc_ring_tx_errors_total counter
syngate_tc_ring_tx_errors_total{interface="veth0"} 0
`
	if err := testutil.GatherAndCompare(r.Gatherer(), strings.NewReader(want),
		"syngate_tc_ring_frames_total", "syngate_tc_ring_dropped_total", "syngate_tc_ring_tx_errors_total"); err != nil {
		t.Error(err)
	}
}
