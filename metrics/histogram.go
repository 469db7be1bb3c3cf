package metrics

import (
	"sync/atomic"
	"time"
)

// ConnectBuckets are the upper bounds, in seconds, of the backend connect
// time histogram: from a backend on the same host (tens of microseconds)
// to the default connect timeout (3 s).
var ConnectBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// Histogram is a fixed-bucket histogram of durations that the packet path
// updates with atomic adds only; the collector reads it at scrape time. The
// zero value uses ConnectBuckets.
type Histogram struct {
	counts [16]atomic.Uint64 // one per ConnectBuckets bound, then +Inf
	sumNs  atomic.Uint64
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(ConnectBuckets) && s > ConnectBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(uint64(max(d, 0)))
}

// HistogramSnapshot is a Histogram read at one time: cumulative counts per
// upper bound, as Prometheus wants them.
type HistogramSnapshot struct {
	Count   uint64
	Sum     float64 // seconds
	Buckets map[float64]uint64
}

// Snapshot reads h. Concurrent observations may land in the count but not
// yet the sum, or the reverse; a scrape tolerates that.
func (h *Histogram) Snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Buckets: make(map[float64]uint64, len(ConnectBuckets))}
	var cum uint64
	for i, b := range ConnectBuckets {
		cum += h.counts[i].Load()
		s.Buckets[b] = cum
	}
	s.Count = cum + h.counts[len(ConnectBuckets)].Load()
	s.Sum = float64(h.sumNs.Load()) / 1e9
	return s
}
