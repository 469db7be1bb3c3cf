package metrics

import (
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
)

// BGPPeer is one BGP session, as ScaleoutSource reports it.
type BGPPeer struct {
	Address     netip.Addr
	State       string // the BGP FSM state
	Established bool
}

// ScaleoutSource is what a gateway among several reports: its BGP
// speaker's sessions and announced prefixes (none without BGP), and its
// drain state (`syngate drain`) with the connections it still serves.
type ScaleoutSource interface {
	BGP() (peers []BGPPeer, announced []netip.Prefix)
	Draining() bool
	ConnectionsOpen() int
}

var (
	dBGPSession   = desc("bgp_session_established", "1 while the BGP session with the peer is established.", "peer", "state")
	dBGPAnnounced = desc("bgp_announced", "1 for every prefix the BGP speaker announces.", "prefix")
	dBGPPrefixes  = desc("bgp_announced_prefixes", "Prefixes the BGP speaker announces (0 without BGP).")
	dDraining     = desc("draining", "1 after `syngate drain`: VIPs withdrawn, existing connections still served.")
	dConnsOpen    = desc("connections_open", "Connections the engine tracks (opening and spliced); what a drain waits for.")
)

// scaleoutCollector exports a ScaleoutSource.
type scaleoutCollector struct{ src ScaleoutSource }

// NewScaleoutCollector returns a collector of BGP and drain state, for
// Registry.Register.
func NewScaleoutCollector(src ScaleoutSource) prometheus.Collector {
	return scaleoutCollector{src}
}

func (scaleoutCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dBGPSession, dBGPAnnounced, dBGPPrefixes, dDraining, dConnsOpen} {
		ch <- d
	}
}

func (c scaleoutCollector) Collect(ch chan<- prometheus.Metric) {
	d := 0.0
	if c.src.Draining() {
		d = 1
	}
	ch <- prometheus.MustNewConstMetric(dDraining, prometheus.GaugeValue, d)
	ch <- prometheus.MustNewConstMetric(dConnsOpen, prometheus.GaugeValue, float64(c.src.ConnectionsOpen()))
	peers, announced := c.src.BGP()
	for _, p := range peers {
		v := 0.0
		if p.Established {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(dBGPSession, prometheus.GaugeValue, v, p.Address.String(), p.State)
	}
	for _, p := range announced {
		ch <- prometheus.MustNewConstMetric(dBGPAnnounced, prometheus.GaugeValue, 1, p.String())
	}
	ch <- prometheus.MustNewConstMetric(dBGPPrefixes, prometheus.GaugeValue, float64(len(announced)))
}
