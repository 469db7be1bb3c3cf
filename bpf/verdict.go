package bpf

// Verdict is why the XDP program did what it did with one packet. It mirrors
// enum reason in syngate.c value for value; String gives a name usable as a
// Prometheus label value and Action the XDP action it implies.
type Verdict uint32

// The verdicts, in the order of enum reason.
const (
	VerdictPassNotIP               Verdict = iota // not IPv4/IPv6
	VerdictPassNotTCP                             // IP but not TCP
	VerdictPassNotService                         // TCP not for a service or a local port
	VerdictPassMalformedEth                       // truncated Ethernet or VLAN header
	VerdictPassMalformedIP                        // bad IP header: the destination port is unknown
	VerdictPassMalformedTCP                       // too short to hold the TCP ports
	VerdictPassIPv6ExtLimit                       // more IPv6 extension headers than parsed
	VerdictPassFragment                           // fragment not for a service (or not the first)
	VerdictXSKSyn                                 // SYN to a service, sent to AF_XDP
	VerdictXSKHandshake                           // other segment to a service without a flow
	VerdictXSKBackend                             // backend segment to a local port without a flow
	VerdictFastTX                                 // spliced, sent back out of the ingress interface
	VerdictFastRedirect                           // spliced, redirected to another interface
	VerdictDropNoSocket                           // for AF_XDP, but no socket on that interface and queue
	VerdictDropRstFinUnknown                      // RST to a service without a flow (a FIN goes to the engine, which may hand it to a peer gateway)
	VerdictDropBadFlags                           // impossible flag combination (defense)
	VerdictDropSynPayload                         // SYN carrying data (defense)
	VerdictDropSynRateLimit                       // SYN over its source prefix's rate (defense)
	VerdictDropFragment                           // IP fragment to a service or local port
	VerdictDropTCPTruncated                       // TCP header shorter than 20 bytes
	VerdictDropTCPDoffShort                       // TCP data offset below 5
	VerdictDropTCPDoffLong                        // TCP data offset past the segment end
	VerdictDropTCPOptions                         // TCP options running off the header
	VerdictDropFastNoRoute                        // spliced, but the route blackholes/rejects it
	VerdictDropFastNoNeigh                        // spliced, no neighbour and nothing learned
	VerdictDropFastNoPort                         // spliced, egress interface not attached
	VerdictTXSynAckCookie                         // SYN answered in XDP with a cookie SYN-ACK (spec.Entry.Offload)
	VerdictICMPTX                                 // ICMP error about a spliced flow, translated, sent back out the ingress interface
	VerdictICMPRedirect                           // ICMP error about a spliced flow, translated, redirected to another interface
	VerdictPassICMPNoFlow                         // ICMP error quoting a TCP packet of no spliced flow (the kernel's)
	VerdictDropICMPRateLimit                      // ICMP error about a spliced flow over the translation rate limit
	VerdictDropICMPNoNeigh                        // ICMP error about a spliced flow, no route/neighbour and nothing learned
	VerdictDropICMPNoPort                         // ICMP error about a spliced flow, egress interface not attached
	VerdictDropRstOutOfWindow                     // spliced, RST outside the receiver's window (RFC 5961 3.2)
	VerdictXSKRstInWindow                         // spliced, RST in the window but not exact: the engine forwards it
	VerdictFastTXOutOfWindow                      // as VerdictFastTX, a segment outside the window (not learned from)
	VerdictFastRedirectOutOfWindow                // as VerdictFastRedirect, a segment outside the window
	VerdictXSKSynInFlow                           // spliced, a SYN: to the engine, which answers it; never forwarded
	VerdictPassTCFlow                             // spliced segment on a TC-datapath interface, passed to the TC program
	VerdictTCRedirect                             // TC: spliced, redirected to the next hop
	VerdictTCRedirectNeigh                        // TC: spliced, redirected; the kernel resolves the neighbour
	VerdictDropTCCsum                             // TC: the checksum or store helper failed on a spliced segment
	VerdictPassTCOutOfWindow                      // as VerdictPassTCFlow, a segment outside the window (not learned from)
	VerdictDropRstClosed                          // spliced, RST below the window from an end whose FIN was acked: a closed end answering a late duplicate

	// NumVerdicts is the number of verdicts; Counters has one slot each.
	NumVerdicts = iota
)

var verdictNames = [NumVerdicts]string{
	"pass_not_ip",
	"pass_not_tcp",
	"pass_not_service",
	"pass_malformed_eth",
	"pass_malformed_ip",
	"pass_malformed_tcp",
	"pass_ipv6_ext_limit",
	"pass_fragment",
	"xsk_syn",
	"xsk_handshake",
	"xsk_backend",
	"fast_tx",
	"fast_redirect",
	"drop_no_socket",
	"drop_rst_fin_unknown",
	"drop_bad_flags",
	"drop_syn_payload",
	"drop_syn_ratelimit",
	"drop_fragment",
	"drop_tcp_truncated",
	"drop_tcp_doff_short",
	"drop_tcp_doff_long",
	"drop_tcp_options",
	"drop_fast_no_route",
	"drop_fast_no_neigh",
	"drop_fast_no_port",
	"tx_synack_cookie",
	"fast_icmp_tx",
	"fast_icmp_redirect",
	"pass_icmp_no_flow",
	"drop_icmp_ratelimit",
	"drop_icmp_no_neigh",
	"drop_icmp_no_port",
	"drop_rst_out_of_window",
	"xsk_rst_in_window",
	"fast_tx_out_of_window",
	"fast_redirect_out_of_window",
	"xsk_syn_in_flow",
	"pass_tc_flow",
	"fast_tc_redirect",
	"fast_tc_redirect_neigh",
	"drop_tc_csum",
	"pass_tc_out_of_window",
	"drop_rst_closed",
}

// String returns the snake_case name, stable for use as a metric label.
func (v Verdict) String() string {
	if v < NumVerdicts {
		return verdictNames[v]
	}
	return "unknown"
}

// Action is the XDP action a verdict ends in.
type Action uint8

// XDP actions, as the kernel numbers them.
const (
	ActionAborted  Action = 0
	ActionDrop     Action = 1
	ActionPass     Action = 2
	ActionTX       Action = 3
	ActionRedirect Action = 4
)

// String returns the lower-case action name.
func (a Action) String() string {
	switch a {
	case ActionAborted:
		return "aborted"
	case ActionDrop:
		return "drop"
	case ActionPass:
		return "pass"
	case ActionTX:
		return "tx"
	case ActionRedirect:
		return "redirect"
	}
	return "unknown"
}

// Action returns the XDP action the program returns with this verdict
// (AF_XDP and fast-path redirects are both ActionRedirect; the TC program's
// verdicts map to the XDP action of the same meaning).
func (v Verdict) Action() Action {
	switch {
	case v <= VerdictPassFragment, v == VerdictPassICMPNoFlow, v == VerdictPassTCFlow, v == VerdictPassTCOutOfWindow:
		return ActionPass
	case v == VerdictTCRedirect, v == VerdictTCRedirectNeigh:
		return ActionRedirect
	case v == VerdictFastTX, v == VerdictTXSynAckCookie, v == VerdictICMPTX, v == VerdictFastTXOutOfWindow:
		return ActionTX
	case v <= VerdictFastRedirect, v == VerdictICMPRedirect, v == VerdictXSKRstInWindow, v == VerdictFastRedirectOutOfWindow,
		v == VerdictXSKSynInFlow:
		return ActionRedirect
	case v < NumVerdicts:
		return ActionDrop
	}
	return ActionAborted
}

// Count is a packet and byte count (bytes are whole frames, as received).
type Count struct {
	Packets uint64
	Bytes   uint64
}

// Counters holds one Count per Verdict, summed over CPUs.
type Counters [NumVerdicts]Count
