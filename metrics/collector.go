package metrics

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

const ns = "syngate"

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(ns+"_"+name, help, labels, nil)
}

// The descriptors, one per metric name. README.md's metrics reference lists
// the same names; TestReferenceInReadme keeps the two in step.
var (
	dSynReceived = desc("syn_received_total", "SYNs for the service that reached the handshake engine.", "service")
	dSynAckSent  = desc("synack_sent_total",
		"SYN-ACKs sent, by kind: queue (half-open entry), cookie (SyncookiesSent), resent (for a retransmitted SYN), retransmit (timer, TCPSynRetrans).",
		"service", "kind")
	dSynQueueFull = desc("syn_queue_full_total",
		"SYNs that found the half-open queue full, by action: cookie (TCPReqQFullDoCookies) or drop (TCPReqQFullDrop).",
		"service", "action")
	dSynDropped = desc("syn_dropped_total",
		"SYNs dropped by the engine, by reason: syn_queue_full, accept_queue_full (both in ListenDrops), established (the 4-tuple of a live connection).",
		"service", "reason")
	dHalfOpenTimeout = desc("half_open_timeouts_total", "Half-open entries dropped after the last SYN-ACK retransmission.", "service")
	dAckValidated    = desc("ack_validated_total", "Handshake ACKs accepted, by path: queue, cookie (SyncookiesRecv) or peer_cookie (a cookie another gateway sharing the secret minted).", "service", "path")
	dAckRejected     = desc("ack_rejected_total", "Handshake ACKs refused, by reason (cookie reasons add up to SyncookiesFailed).", "service", "reason")
	dAcceptOverflow  = desc("accept_queue_overflows_total",
		"Validated connections that found the accept queue full (ListenOverflows), by action: drop or reset (tcp_abort_on_overflow).",
		"service", "action")
	dSpliced      = desc("connections_spliced_total", "Connections whose backend leg opened and that were handed to the XDP fast path.", "service")
	dSlowPath     = desc("slowpath_packets_total", "Packets of spliced connections that reached the engine instead of the XDP fast path (forwarded by the engine).", "service")
	dBackendTW    = desc("backend_timewait_resets_total", "Backend legs whose source port the backend still held in TIME_WAIT, cleared with a RST before the SYN was sent again.", "service")
	dSynAckRepeat = desc("backend_synack_repeats_total", "Backend SYN-ACKs repeated into a spliced leg (the handshake's ACK to the backend was lost), answered with that ACK again.", "service")
	dChallengeACK = desc("challenge_acks_total",
		"Challenge ACKs (RFC 5961 4.2) answering SYNs, from either side, for the 4-tuple of a live connection, by result: sent or rate_limited (TCPChallengeACK).",
		"service", "result")
	dRSTInWindow = desc("rst_in_window_total",
		"RSTs of spliced connections inside the window but not at the exact sequence number, forwarded by the engine for the endpoint's challenge ACK (RFC 5961 3.2).",
		"service")
	dResetsSent = desc("flow_resets_sent_total",
		"RSTs sent to the client and the backend of spliced connections syngate ended itself (idle expiry, a flow entry deleted under it), each at the end's next expected sequence number.",
		"service")
	dBackendFailures = desc("backend_failures_total", "Backend legs that failed, by reason: refused, timeout, ...", "service", "reason")
	dPortWaits       = desc("source_port_waits_total",
		"Backend legs that found no free source port toward their backend, by outcome: waited (got one later) or failed (gave up at the connect timeout; the client was reset).",
		"service", "outcome")
	dNoBackend      = desc("no_backend_total", "SYNs and validated connections of the service that found no usable backend (answered by on_no_backend: reset or drop).", "service")
	dRedispatch     = desc("backend_redispatched_total", "Backend legs refused by one backend and opened again toward another member of the pool.", "service")
	dHeaderRetx     = desc("proxy_header_retransmits_total", "PROXY protocol headers sent again because the backend had not acknowledged them.", "service")
	dBackendUp      = desc("backend_up", "1 when the backend takes new connections (active checks pass, not ejected by passive checks, weight above 0), else 0.", "service", "backend")
	dBackendHC      = desc("backend_check_up", "The active health checks' verdict on the backend: 1 up, 0 down.", "service", "backend")
	dBackendW       = desc("backend_weight", "The backend's weight in the service's pool (0: draining).", "service", "backend")
	dBackendAct     = desc("backend_connections", "Spliced connections to the backend now.", "service", "backend")
	dBackendTot     = desc("backend_connections_total", "Connections spliced to the backend.", "service", "backend")
	dBackendErr     = desc("backend_leg_failures_total", "Backend legs to the backend that failed, by reason (the passive checks' input).", "service", "backend", "reason")
	dChecks         = desc("backend_checks_total", "Active health checks of the backend, by result: ok or failed.", "service", "backend", "result")
	dCheckLat       = desc("backend_check_latency_seconds", "Duration of the backend's last active health check.", "service", "backend")
	dSynData        = desc("syn_data_total", "SYNs carrying data (TCP Fast Open) answered by the engine with a SYN-ACK acknowledging only the SYN; the client sends the data again.", "service")
	dECN            = desc("ecn_total", "Clients' ECN requests, by result at the splice: negotiated (both legs), not_offered (the backend is not known to do ECN), backend_refused (agreed with the client, refused by the backend).", "service", "result")
	dMSSClamped     = desc("mss_clamped_total", "MSS lowered to fit the gateway's smallest interface MTU, by leg: client (the SYN-ACK) or backend (the backend SYN).", "service", "leg")
	dQueueDepth     = desc("queue_depth", "Entries in a service's queue: syn (half-open) or accept.", "service", "queue")
	dQueueLimit     = desc("queue_limit", "Bound of a service's queue: syn (max_syn_backlog) or accept (min(backlog, somaxconn)).", "service", "queue")
	dBackendConnect = desc("backend_connect_seconds", "Time from the backend SYN to the backend's SYN-ACK, of the backend legs that opened.", "service")

	dXDPPackets      = desc("xdp_packets_total", "Packets seen by the XDP program, by verdict and reason.", "verdict", "reason")
	dFlows           = desc("flows", "Entries in the XDP flow table (one per direction).")
	dFlowsLimit      = desc("flows_limit", "Size of the XDP flow table.")
	dFlowsExpired    = desc("flows_expired_total", "Flows removed from the XDP flow table, by reason.", "reason")
	dFastPackets     = desc("fastpath_packets_total", "Data packets of spliced flows forwarded by the XDP or TC program without reaching user space (a GRO aggregate counts its segments).")
	dFastBytes       = desc("fastpath_bytes_total", "Bytes of spliced flows forwarded by the XDP or TC program.")
	dHandedOff       = desc("handed_off_total", "Segments of connections this gateway does not know, passed to the peer gateways on the link (a drain moved them here).", "service")
	dScrapeErrors    = desc("dataplane_read_errors", "Data plane reads that failed during this scrape, by source (1: the series of that source are missing).", "source")
	dReloadSuccesses = desc("reload_successes_total", "Configuration reloads (SIGHUP, syngate reload) applied.")
	dReloadFailures  = desc("reload_failures_total", "Configuration reloads refused (an invalid file, a key only a restart changes, a failed apply): nothing of the file was applied.")
	dReloadLastOK    = desc("reload_last_success_timestamp_seconds", "When the running configuration was last loaded successfully (at start, then at each applied reload), in seconds since the epoch.")
	allDescriptors   = []*prometheus.Desc{
		dSynReceived, dSynAckSent, dSynQueueFull, dSynDropped, dHalfOpenTimeout, dAckValidated, dAckRejected,
		dAcceptOverflow, dSpliced, dSlowPath, dBackendTW, dSynAckRepeat, dChallengeACK, dRSTInWindow, dResetsSent, dBackendFailures, dPortWaits,
		dSynData, dECN, dMSSClamped, dQueueDepth, dQueueLimit, dBackendConnect,
		dNoBackend, dRedispatch, dHeaderRetx, dBackendUp, dBackendHC, dBackendW, dBackendAct, dBackendTot, dBackendErr, dChecks, dCheckLat,
		dXDPPackets, dFlows, dFlowsLimit, dFlowsExpired, dFastPackets, dFastBytes, dScrapeErrors, dHandedOff,
		dReloadSuccesses, dReloadFailures, dReloadLastOK,
	}
)

// collector reads every source at scrape time.
type collector Registry

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescriptors {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	services := append([]ServiceSource(nil), c.services...)
	dp := c.dataplane
	c.mu.Unlock()

	for _, src := range services {
		collectService(ch, src.ServiceStats())
	}
	if dp != nil {
		collectDataplane(ch, dp)
	}
	counter(ch, dReloadSuccesses, c.reloadOK.Load())
	counter(ch, dReloadFailures, c.reloadFailed.Load())
	ch <- prometheus.MustNewConstMetric(dReloadLastOK, prometheus.GaugeValue, float64(c.lastLoad.Load())/1e9)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v int, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
}

func collectService(ch chan<- prometheus.Metric, s ServiceStats) {
	n := s.Name
	counter(ch, dSynReceived, s.SynReceived, n)
	counter(ch, dSynAckSent, s.SynAckQueued, n, "queue")
	counter(ch, dSynAckSent, s.SynAckCookie, n, "cookie")
	counter(ch, dSynAckSent, s.SynAckResent, n, "resent")
	counter(ch, dSynAckSent, s.SynAckRetrans, n, "retransmit")
	counter(ch, dSynQueueFull, s.SynQueueFullCookie, n, "cookie")
	counter(ch, dSynQueueFull, s.SynQueueFullDrop, n, "drop")
	counter(ch, dSynDropped, s.SynQueueFullDrop, n, "syn_queue_full")
	counter(ch, dSynDropped, s.SynDropAcceptFull, n, "accept_queue_full")
	counter(ch, dSynDropped, s.SynDropEstablished, n, "established")
	counter(ch, dHalfOpenTimeout, s.HalfOpenTimeout, n)
	counter(ch, dAckValidated, s.AckQueue, n, "queue")
	counter(ch, dAckValidated, s.AckCookie, n, "cookie")
	counter(ch, dAckValidated, s.AckPeerCookie, n, "peer_cookie")
	for _, k := range sortedKeys(s.AckRejected) {
		counter(ch, dAckRejected, s.AckRejected[k], n, k)
	}
	counter(ch, dAcceptOverflow, s.AcceptOverflowDrop, n, "drop")
	counter(ch, dAcceptOverflow, s.AcceptOverflowReset, n, "reset")
	counter(ch, dSpliced, s.Spliced, n)
	counter(ch, dSlowPath, s.SlowPath, n)
	counter(ch, dBackendTW, s.BackendTimeWait, n)
	counter(ch, dSynAckRepeat, s.BackendSynAckRepeat, n)
	counter(ch, dChallengeACK, s.ChallengeACKSent, n, "sent")
	counter(ch, dChallengeACK, s.ChallengeACKLimited, n, "rate_limited")
	counter(ch, dRSTInWindow, s.RSTInWindow, n)
	counter(ch, dResetsSent, s.ResetsSent, n)
	counter(ch, dHandedOff, s.HandedOff, n)
	for _, k := range sortedKeys(s.BackendFailures) {
		counter(ch, dBackendFailures, s.BackendFailures[k], n, k)
	}
	counter(ch, dPortWaits, s.SourcePortWaited, n, "waited")
	counter(ch, dPortWaits, s.SourcePortFailed, n, "failed")
	counter(ch, dSynData, s.SynData, n)
	for _, k := range sortedKeys(s.ECN) {
		counter(ch, dECN, s.ECN[k], n, k)
	}
	for _, k := range sortedKeys(s.MSSClamped) {
		counter(ch, dMSSClamped, s.MSSClamped[k], n, k)
	}
	gauge(ch, dQueueDepth, s.HalfOpen, n, "syn")
	gauge(ch, dQueueDepth, s.Accept, n, "accept")
	gauge(ch, dQueueLimit, s.HalfOpenLimit, n, "syn")
	gauge(ch, dQueueLimit, s.AcceptLimit, n, "accept")
	bc := s.BackendConnect
	if bc.Buckets == nil {
		bc = new(Histogram).Snapshot()
	}
	ch <- prometheus.MustNewConstHistogram(dBackendConnect, bc.Count, bc.Sum, bc.Buckets, n)
	counter(ch, dNoBackend, s.NoBackend, n)
	counter(ch, dRedispatch, s.Redispatched, n)
	counter(ch, dHeaderRetx, s.HeaderRetransmits, n)
	for _, b := range s.Backends {
		gauge(ch, dBackendUp, b2i(b.Usable), n, b.Addr)
		gauge(ch, dBackendHC, b2i(b.Up), n, b.Addr)
		gauge(ch, dBackendW, b.Weight, n, b.Addr)
		gauge(ch, dBackendAct, b.Active, n, b.Addr)
		counter(ch, dBackendTot, b.Total, n, b.Addr)
		for _, k := range sortedKeys(b.Failures) {
			counter(ch, dBackendErr, b.Failures[k], n, b.Addr, k)
		}
		counter(ch, dChecks, b.ChecksOK, n, b.Addr, "ok")
		counter(ch, dChecks, b.Checks-b.ChecksOK, n, b.Addr, "failed")
		ch <- prometheus.MustNewConstMetric(dCheckLat, prometheus.GaugeValue, b.CheckLatency.Seconds(), n, b.Addr)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func collectDataplane(ch chan<- prometheus.Metric, dp DataplaneSource) {
	var errs [2]uint64
	if vs, err := dp.Verdicts(); err != nil {
		errs[0]++
	} else {
		for _, v := range vs {
			counter(ch, dXDPPackets, v.Packets, v.Verdict, v.Reason)
		}
	}
	if fs, err := dp.Flows(); err != nil {
		errs[1]++
	} else {
		gauge(ch, dFlows, fs.Active)
		gauge(ch, dFlowsLimit, fs.Limit)
		for _, k := range sortedKeys(fs.Expired) {
			counter(ch, dFlowsExpired, fs.Expired[k], k)
		}
		counter(ch, dFastPackets, fs.FastPackets)
		counter(ch, dFastBytes, fs.FastBytes)
	}
	// A gauge of this scrape's failures: Prometheus sees the series vanish
	// or reappear, and a failing read is visible without breaking /metrics.
	ch <- prometheus.MustNewConstMetric(dScrapeErrors, prometheus.GaugeValue, float64(errs[0]), "verdicts")
	ch <- prometheus.MustNewConstMetric(dScrapeErrors, prometheus.GaugeValue, float64(errs[1]), "flows")
}

func sortedKeys(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
