package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// SocketStats are the kernel's drop counters of one AF_XDP socket
// (XDP_STATISTICS): frames the XDP program steered to the engine that never
// reached it.
type SocketStats struct {
	Interface string
	Queue     int
	// RxDropped: frames dropped for other reasons than invalid descriptors
	// (in copy mode, mostly a full RX ring).
	RxDropped uint64
	// RxRingFull: frames dropped because the RX ring was full: the engine
	// did not keep up.
	RxRingFull uint64
	// FillRingEmpty: times a frame arrived and the fill ring had no buffer
	// for it.
	FillRingEmpty uint64
	// RxInvalid and TxInvalid: invalid descriptors on the fill and TX rings
	// (a bug, never load).
	RxInvalid, TxInvalid uint64
}

// SocketSource reports every AF_XDP socket's counters at scrape time.
type SocketSource interface {
	SocketStats() ([]SocketStats, error)
}

var (
	dAFXDPDropped   = desc("afxdp_rx_dropped_total", "Frames the kernel dropped on an AF_XDP socket for other reasons than invalid descriptors (XDP_STATISTICS rx_dropped).", "interface", "queue")
	dAFXDPRingFull  = desc("afxdp_rx_ring_full_total", "Frames dropped because an AF_XDP socket's RX ring was full: the engine did not keep up (rx_ring_full).", "interface", "queue")
	dAFXDPFillEmpty = desc("afxdp_fill_ring_empty_total", "Times a frame arrived and an AF_XDP socket's fill ring had no buffer for it (rx_fill_ring_empty_descs).", "interface", "queue")
	dAFXDPInvalid   = desc("afxdp_invalid_descs_total", "Invalid descriptors on an AF_XDP socket's rings, by ring: rx (fill) or tx (a bug, not load).", "interface", "queue", "ring")
	dAFXDPErrors    = desc("afxdp_read_errors", "AF_XDP statistics reads that failed during this scrape.")
)

// socketCollector exports a SocketSource.
type socketCollector struct{ src SocketSource }

// NewSocketCollector returns a collector of AF_XDP socket drops, for
// Registry.Register.
func NewSocketCollector(src SocketSource) prometheus.Collector { return socketCollector{src} }

func (socketCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dAFXDPDropped, dAFXDPRingFull, dAFXDPFillEmpty, dAFXDPInvalid, dAFXDPErrors} {
		ch <- d
	}
}

func (c socketCollector) Collect(ch chan<- prometheus.Metric) {
	stats, err := c.src.SocketStats()
	failed := 0
	if err != nil {
		failed = 1
	}
	for _, s := range stats {
		q := strconv.Itoa(s.Queue)
		counter(ch, dAFXDPDropped, s.RxDropped, s.Interface, q)
		counter(ch, dAFXDPRingFull, s.RxRingFull, s.Interface, q)
		counter(ch, dAFXDPFillEmpty, s.FillRingEmpty, s.Interface, q)
		counter(ch, dAFXDPInvalid, s.RxInvalid, s.Interface, q, "rx")
		counter(ch, dAFXDPInvalid, s.TxInvalid, s.Interface, q, "tx")
	}
	gauge(ch, dAFXDPErrors, failed)
}
