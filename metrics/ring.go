package metrics

import "github.com/prometheus/client_golang/prometheus"

// RingStats are the counters of one TC ring port: the engine's packet I/O
// on an interface whose data path is TC (a BPF ring buffer in, an
// AF_PACKET socket out), the counterpart of an AF_XDP socket's.
type RingStats struct {
	Interface string
	// Received and Transmitted count frames read from the ring and sent.
	Received, Transmitted uint64
	// Dropped: ring records the engine could not take (no free frame, or
	// a record that did not parse).
	Dropped uint64
	// TxErrors: frames the AF_PACKET socket refused.
	TxErrors uint64
}

// RingSource reports every TC ring port's counters at scrape time.
type RingSource interface {
	RingStats() []RingStats
}

var (
	dRingFrames   = desc("tc_ring_frames_total", "Frames the engine read from a TC interface's ring buffer (rx) or sent on its AF_PACKET socket (tx).", "interface", "direction")
	dRingDropped  = desc("tc_ring_dropped_total", "Ring buffer records the engine could not take: no free frame, or a record that did not parse.", "interface")
	dRingTxErrors = desc("tc_ring_tx_errors_total", "Frames a TC interface's AF_PACKET socket refused (interface down, queue full).", "interface")
)

// ringCollector exports a RingSource.
type ringCollector struct{ src RingSource }

// NewRingCollector returns a collector of the TC ring ports' counters,
// for Registry.Register.
func NewRingCollector(src RingSource) prometheus.Collector { return ringCollector{src} }

func (ringCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dRingFrames, dRingDropped, dRingTxErrors} {
		ch <- d
	}
}

func (c ringCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.src.RingStats() {
		counter(ch, dRingFrames, s.Received, s.Interface, "rx")
		counter(ch, dRingFrames, s.Transmitted, s.Interface, "tx")
		counter(ch, dRingDropped, s.Dropped, s.Interface)
		counter(ch, dRingTxErrors, s.TxErrors, s.Interface)
	}
}
