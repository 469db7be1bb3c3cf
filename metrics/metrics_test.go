package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeService ServiceStats

func (f *fakeService) ServiceStats() ServiceStats { return ServiceStats(*f) }

type fakeDataplane struct {
	verdicts []VerdictCount
	flows    FlowStats
	err      error
}

func (f *fakeDataplane) Verdicts() ([]VerdictCount, error) { return f.verdicts, f.err }
func (f *fakeDataplane) Flows() (FlowStats, error)         { return f.flows, f.err }

func TestServiceExposition(t *testing.T) {
	r := New("test", "unknown")
	svc := &fakeService{
		Name: "web", SynReceived: 10, SynAckQueued: 4, SynAckCookie: 5, SynAckResent: 1, SynAckRetrans: 2,
		HalfOpenTimeout: 1, SynQueueFullCookie: 5, SynDropAcceptFull: 1,
		AckQueue: 3, AckCookie: 4, AckRejected: map[string]uint64{"bad_hash": 7, "expired": 1},
		AcceptOverflowReset: 2, Spliced: 6, BackendFailures: map[string]uint64{"timeout": 1},
		HalfOpen: 3, HalfOpenLimit: 4096, Accept: 1, AcceptLimit: 128,
		SourcePortWaited: 3, SourcePortFailed: 1,
	}
	r.AddService(svc)
	want := `
# HELP syngate_ack_rejected_total Handshake ACKs refused, by reason (cookie reasons add up to SyncookiesFailed).
# TYPE syngate_ack_rejected_total counter
syngate_ack_rejected_total{reason="bad_hash",service="web"} 7
syngate_ack_rejected_total{reason="expired",service="web"} 1
# HELP syngate_queue_depth Entries in a service's queue: syn (half-open) or accept.
# TYPE syngate_queue_depth gauge
syngate_queue_depth{queue="accept",service="web"} 1
syngate_queue_depth{queue="syn",service="web"} 3
# HELP syngate_synack_sent_total SYN-ACKs sent, by kind: queue (half-open entry), cookie (SyncookiesSent), resent (for a retransmitted SYN), retransmit (timer, TCPSynRetrans).
# TYPE syngate_synack_sent_total counter
syngate_synack_sent_total{kind="cookie",service="web"} 5
syngate_synack_sent_total{kind="queue",service="web"} 4
syngate_synack_sent_total{kind="resent",service="web"} 1
syngate_synack_sent_total{kind="retransmit",service="web"} 2
# HELP syngate_syn_dropped_total SYNs dropped by the engine, by reason: syn_queue_full, accept_queue_full (both in ListenDrops), established (the 4-tuple of a live connection).
# TYPE syngate_syn_dropped_total counter
syngate_syn_dropped_total{reason="accept_queue_full",service="web"} 1
syngate_syn_dropped_total{reason="established",service="web"} 0
syngate_syn_dropped_total{reason="syn_queue_full",service="web"} 0
# HELP syngate_source_port_waits_total Backend legs that found no free source port toward their backend, by outcome: waited (got one later) or failed (gave up at the connect timeout; the client was reset).
# TYPE syngate_source_port_waits_total counter
syngate_source_port_waits_total{outcome="failed",service="web"} 1
syngate_source_port_waits_total{outcome="waited",service="web"} 3
`
	if err := testutil.GatherAndCompare(r.Gatherer(), strings.NewReader(want),
		"syngate_ack_rejected_total", "syngate_queue_depth", "syngate_synack_sent_total", "syngate_syn_dropped_total", "syngate_source_port_waits_total"); err != nil {
		t.Error(err)
	}
	// Values are read at scrape time, not copied at registration.
	svc.SynReceived = 11
	want = `
# HELP syngate_syn_received_total SYNs for the service that reached the handshake engine.
# TYPE syngate_syn_received_total counter
syngate_syn_received_total{service="web"} 11
`
	if err := testutil.GatherAndCompare(r.Gatherer(), strings.NewReader(want), "syngate_syn_received_total"); err != nil {
		t.Errorf("after update: %v", err)
	}
}

func TestDataplaneExposition(t *testing.T) {
	r := New("test", "unknown")
	dp := &fakeDataplane{
		verdicts: []VerdictCount{{"pass", "not_service", 100}, {"xsk", "syn", 42}, {"drop", "malformed_tcp", 3}},
		flows:    FlowStats{Active: 4, Limit: 1024, Expired: map[string]uint64{"idle": 2}, FastPackets: 900, FastBytes: 1 << 20},
	}
	r.SetDataplane(dp)
	want := `
# HELP syngate_xdp_packets_total Packets seen by the XDP program, by verdict and reason.
# TYPE syngate_xdp_packets_total counter
syngate_xdp_packets_total{reason="malformed_tcp",verdict="drop"} 3
syngate_xdp_packets_total{reason="not_service",verdict="pass"} 100
syngate_xdp_packets_total{reason="syn",verdict="xsk"} 42
# HELP syngate_flows Entries in the XDP flow table (one per direction).
# TYPE syngate_flows gauge
syngate_flows 4
# HELP syngate_fastpath_packets_total Data packets of spliced flows forwarded by the XDP or TC program without reaching user space (a GRO aggregate counts its segments).
# TYPE syngate_fastpath_packets_total counter
syngate_fastpath_packets_total 900
`
	if err := testutil.GatherAndCompare(r.Gatherer(), strings.NewReader(want),
		"syngate_xdp_packets_total", "syngate_flows", "syngate_fastpath_packets_total"); err != nil {
		t.Error(err)
	}
	dp.err = errors.New("map gone")
	want = `
# HELP syngate_dataplane_read_errors Data plane reads that failed during this scrape, by source (1: the series of that source are missing).
# TYPE syngate_dataplane_read_errors gauge
syngate_dataplane_read_errors{source="flows"} 1
syngate_dataplane_read_errors{source="verdicts"} 1
`
	if err := testutil.GatherAndCompare(r.Gatherer(), strings.NewReader(want), "syngate_dataplane_read_errors", "syngate_flows"); err != nil {
		t.Error(err)
	}
}

func TestLint(t *testing.T) {
	r := New("test", "unknown")
	r.AddService(&fakeService{Name: "a", AckRejected: map[string]uint64{"bad_hash": 1}, BackendFailures: map[string]uint64{"refused": 1}})
	r.SetDataplane(&fakeDataplane{verdicts: []VerdictCount{{"pass", "not_service", 1}}, flows: FlowStats{Expired: map[string]uint64{"idle": 1}}})
	problems, err := testutil.GatherAndLint(r.Gatherer())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestHandlerServesBuildInfo(t *testing.T) {
	r := New("v1.2.3", "0123456789ab-dirty")
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if !strings.Contains(string(body), `syngate_build_info{goversion="`) || !strings.Contains(string(body), `revision="0123456789ab-dirty",version="v1.2.3"} 1`) {
		t.Errorf("build_info missing:\n%.2000s", body)
	}
}

func TestParseTextRoundTrip(t *testing.T) {
	r := New("test", "unknown")
	r.AddService(&fakeService{Name: "web", SynAckCookie: 9, AckRejected: map[string]uint64{"bad_hash": 2}})
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	s, err := ParseText(rec.Body.String())
	if err != nil {
		t.Fatal(err)
	}
	if got := s[`syngate_synack_sent_total{kind="cookie",service="web"}`]; got != 9 {
		t.Errorf("cookie SYN-ACKs = %v, want 9", got)
	}
	if got := s.Sum("syngate_synack_sent_total", `service="web"`); got != 9 {
		t.Errorf("sum of SYN-ACKs = %v, want 9", got)
	}
	if got := s.Sum("syngate_ack_rejected_total"); got != 2 {
		t.Errorf("sum of rejections = %v, want 2", got)
	}
	if _, err := ParseText("not a metric line {"); err == nil {
		t.Error("garbage parsed")
	}
}
