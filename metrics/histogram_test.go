package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestHistogramBuckets(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{50 * time.Microsecond, 100 * time.Microsecond, 3 * time.Millisecond, 10 * time.Second} {
		h.Observe(d)
	}
	s := h.Snapshot()
	if s.Count != 4 || s.Buckets[0.0001] != 2 || s.Buckets[0.001] != 2 || s.Buckets[0.005] != 3 || s.Buckets[5] != 3 {
		t.Errorf("snapshot = %+v", s)
	}
	if s.Sum < 10.003 || s.Sum > 10.004 {
		t.Errorf("sum = %v", s.Sum)
	}
}

type fakeSockets []SocketStats

func (f fakeSockets) SocketStats() ([]SocketStats, error) { return f, nil }

func TestSocketAndConnectExposition(t *testing.T) {
	r := New("test", "abc")
	svc := &fakeService{Name: "web"}
	var h Histogram
	h.Observe(2 * time.Millisecond)
	svc.BackendConnect = h.Snapshot()
	r.AddService(svc)
	if err := r.Register(NewSocketCollector(fakeSockets{{Interface: "eth0", Queue: 1, RxRingFull: 7, FillRingEmpty: 3}})); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP syngate_afxdp_rx_ring_full_total Frames dropped because an AF_XDP socket's RX ring was full: the engine did not keep up (rx_ring_full).
# TYPE syngate_afxdp_rx_ring_full_total counter
syngate_afxdp_rx_ring_full_total{interface="eth0",queue="1"} 7
# HELP syngate_afxdp_fill_ring_empty_total Times a frame arrived and an AF_XDP socket's fill ring had no buffer for it (rx_fill_ring_empty_descs).
# TYPE syngate_afxdp_fill_ring_empty_total counter
syngate_afxdp_fill_ring_empty_total{interface="eth0",queue="1"} 3
`
	if err := testutil.GatherAndCompare(r.Gatherer(), strings.NewReader(want), "syngate_afxdp_rx_ring_full_total", "syngate_afxdp_fill_ring_empty_total"); err != nil {
		t.Error(err)
	}
	n, err := testutil.GatherAndCount(r.Gatherer(), "syngate_backend_connect_seconds")
	if err != nil || n != 1 {
		t.Errorf("backend_connect_seconds series: %d, %v", n, err)
	}
	if c := testutil.CollectAndCount(NewSocketCollector(fakeSockets{{Queue: 0}, {Queue: 1}})); c != 2*5+1 {
		t.Errorf("socket collector: %d metrics", c)
	}
}
