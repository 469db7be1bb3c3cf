// Package bpf is syngate's XDP dataplane: the program that steers handshakes
// of protected services to AF_XDP and splices established flows in the
// driver, and the Go API that loads, attaches and feeds it.
//
//	dp, err := bpf.Load(bpf.Config{PinPath: "/sys/fs/bpf/syngate", DropBadFlags: true})
//	if err != nil { ... }
//	defer dp.Close()
//	err = dp.AttachTC("veth0")                            // the TC data path: no Attach there
//	ring, err := dp.OpenTCRing("veth0")                   // the engine reads it (package ringport)
//	err = dp.Attach("eth0", bpf.ModeAuto)
//	err = dp.SetService(spec.Entry{Listen: netip.MustParseAddrPort("192.0.2.10:443"), ID: 1})
//	err = dp.SetCookieKey(jar.DataplaneKey(time.Now()))   // every second, if any entry has Offload or Standby
//	err = dp.RegisterSocket(ifindex, queue, xskFD)        // one AF_XDP socket per interface rx queue
//	err = dp.InstallTrackedFlow(flow.ClientKey(tuple), clientToBackend, clientTrack) // and the reverse direction
//	counters, err := dp.Counters()
//
// # What the program does
//
// Packets that are not TCP to a service (SetService) or to a local
// backend-side address (AddLocal) within Config.LocalPorts leave with
// XDP_PASS after one hash lookup. For those that are: SYNs go to the AF_XDP
// socket of the interface and receive queue they arrived on; segments of an installed flow are rewritten
// (addresses, ports, seq/ack, SACK edges, timestamps, window, checksums
// updated incrementally) and sent on via the FIB or the MACs learned from
// the handshake; RST/FIN to a service without a flow are dropped; the rest
// go to AF_XDP. Malformed TCP to a service is dropped; malformed packets
// whose destination port cannot be known are passed (the kernel drops them
// itself). Every packet is counted under one Verdict.
//
// # Sequence tracking
//
// A flow installed with InstallTrackedFlow (both directions) is judged like
// conntrack's tcp_in_window and RFC 5961 would: each entry keeps its
// sender's next sequence number, highest acknowledgement, right window edge
// and largest window (flow.Track), and only segments inside the reverse
// direction's window move them. A RST at exactly the expected sequence
// number (the receiver's highest ack, or the sender's next sequence number
// when the receiver has not acked yet) is forwarded and marks the flow; an
// inexact RST inside the window goes to AF_XDP for the engine to forward
// (VerdictXSKRstInWindow), so that the endpoint answers it with a challenge
// ACK; a RST outside the window is dropped (VerdictDropRstOutOfWindow, or
// VerdictDropRstClosed when its sender's FIN was acked and it lies within
// a window below that FIN: a closed end answering a late duplicate ACK).
// A SYN goes to AF_XDP too (VerdictXSKSynInFlow), never to the other end: an
// endpoint without RFC 5961 would reset the connection for one in its
// window; the engine answers with a challenge ACK instead.
// Other segments outside the window are forwarded but not learned from
// (VerdictFastTXOutOfWindow, VerdictFastRedirectOutOfWindow): the endpoint
// judges them, and a blind attacker cannot shift what an exact RST is. A FIN
// inside the window marks its direction with its sequence number
// (flow.State.FinEnd), so the engine can tell a half-closed connection from a
// closed one (flow.State.FINAcked). Each direction also keeps its sender's
// latest timestamp from segments inside the window (flow.State.TSRecent), for
// TIME_WAIT's rule on a new SYN. Flows installed with InstallFlow are not
// judged: any FIN or RST marks them.
//
// The fast path keeps the VLAN tag and the TTL/hop limit as they are (a
// spliced segment is syngate's own, not a routed one). It never touches
// TCP options other than timestamps and SACK. Packets whose TCP header sits
// deeper than 1024 bytes (huge IPv6 extension headers) count as malformed
// options when they are for a service.
//
// # The TC data path
//
// On an interface put on the TC data path (AttachTC, and no Attach) a
// second program, at the head of the interface's tcx ingress, does all of
// the XDP program's work, after GRO: it sees the skb's checksum state
// (partial checksums from a local sender over veth or tun/tap are kept
// right by bpf_l4_csum_replace, for the splice and the cookie SYN-ACK
// alike) and rewrites a GRO aggregate once at its head, counting it as its
// segments. It sends cookie SYN-ACKs back out with bpf_redirect, and the
// engine's packets into the interface's ring buffer (OpenTCRing; read with
// ParseRingRecord) instead of AF_XDP; RegisterEngine tells it an engine
// runs. Everything not for a service or a local port it hands to the next
// tcx program untouched. An interface left with the XDP program too (an
// earlier syngate's, until the take-over detaches it) gets its spliced
// segments passed on by the XDP program (VerdictPassTCFlow).
//
// Addresses are stored 16 bytes wide, IPv4 as ::ffff:a.b.c.d (the form of
// netip.Addr.As16), next to an address family; ports in network order.
// IPv4-mapped IPv6 addresses given to the API are treated as IPv4.
//
// # Cookie SYN-ACKs in XDP
//
// For a service entry with Offload, SYNs are answered in the program
// itself: it mints the cookie cookie.Jar.Make would (SipHash-2-4 with the key
// and tick of the last SetCookieKey, same ISN layout, MSS tables and TSval
// option bits), turns the frame into the SYN-ACK packet.ReplySynAck would
// build for it with the service's Announce values, and sends it back with
// XDP_TX (VerdictTXSynAckCookie). Under a SYN flood nothing then crosses
// to user space but the ACKs, which the engine validates with Jar.Check.
// SYNs for a 4-tuple with a flow, with IPv4 options or IPv6 extension
// headers, from an IPv4-mapped IPv6 source, or with an MSS, window scale or
// SACK-permitted option of the wrong length still go to AF_XDP, as do all
// SYNs while there is no fresh key (none set, or CookieKeyGrace past its
// Expires). Window scale and SACK-permitted are offered only with
// timestamps, the only place a cookie keeps them; timestamps only when the
// service offers them too, in which case the cookie is minted as for a SYN
// without them.
//
// The TSval clock is wall-clock milliseconds mod 2^32, as the engine's
// uint32(now.UnixMilli()): the program adds to bpf_ktime_get_ns
// (CLOCK_MONOTONIC) the offset CLOCK_REALTIME - CLOCK_MONOTONIC that each
// SetCookieKey measures, so a step of the wall clock reaches it within a
// second. (bpf_ktime_get_tai_ns would track the wall clock by itself but
// is off by the TAI-UTC offset, which would need correcting from Go all the
// same, and needs Linux 6.1.)
//
// # State and restarts
//
// With Config.PinPath everything the data path needs outlives the process
// (the layout cloudflare/tubular uses): the maps holding state, the XDP
// link of every interface (link_<ifname>) and the program (program) are
// pinned there, and Close leaves them attached. Spliced connections keep
// flowing with no process at all:
//
//	services   VIP:port -> service id, flags, announce   written by Go
//	locals     backend-side source addresses              written by Go
//	flows      4-tuple as received -> translation         Go installs; XDP updates last-seen, FIN/RST, sequence state, counters
//	           (a hash allocated on demand, never an LRU: full, an install fails; nothing is evicted)
//	ratelimit  source prefix -> SYN token bucket         XDP only
//	counters   verdict -> packets, bytes (per CPU)        XDP only
//	standby_acks  4-tuple -> handshake ACK kept with no engine  XDP writes, Go takes
//	meta       layout generation of each map, XDP mode of each link
//
// Not pinned, each program has its own, kept alive by the program:
//
//	ifslots         ifindex -> slot (< MaxInterfaces)      RegisterSocket/UnregisterSocket
//	xsks            slot*MaxQueues + rx queue -> AF_XDP    RegisterSocket/UnregisterSocket
//	tx_ports        ifindex -> ifindex (DEVMAP_HASH)       Attach
//	cookie_keys     cookie key, tick, TSval clock offset   SetCookieKey
//	flow_hint       flow entries per hash of source address and ports (mmapped counts) so a flood SYN
//	                whose count is zero skips the flow table; Load rebuilds it from flows   Go (atomics)
//	synack_scratch  room to build a SYN-ACK (per CPU)      XDP only
//	icmp_bucket     ICMP translation token bucket (per CPU) XDP only
//	icmp_scratch    room for the ICMP path's key and FIB query (per CPU) XDP only
//
// Every interface has its own queue 0, so sockets are keyed by (interface,
// queue): an interface takes a slot with its first socket and frees it with
// its last. A packet steered to AF_XDP from an interface without a slot,
// from a queue at or above MaxQueues, or from a queue without a socket is
// dropped as VerdictDropNoSocket. AF_XDP sockets die with the process that
// owns them, and the kernel takes them out of xsks then, however the
// process ended: that is how the program knows no engine is there. A
// service entry with Standby then has its SYNs answered by the
// program's cookies (with the last key, as long as it is fresh: at least
// CookieKeyGrace past the process's end). A handshake ACK to such a
// service is kept (headers only) in the pinned standby_acks map and the
// frame dropped; the next engine takes them (TakeStandbyACKs) and
// validates them as cookies. Client data is dropped until then and
// retransmitted by the client.
//
// Load takes an exclusive flock on the pin directory before it reads or
// writes anything there, held until Close (or the process's death): a
// second instance fails with ErrLocked and changes nothing. It then opens
// the pinned maps; one whose size or value length differs from the new
// program's (another flows.max, a field appended to a value) is copied into
// a map of the new shape, pinned in its place, before the program is
// loaded against it (see layoutGen); a layout generation it does not know
// is refused with ErrPinnedIncompatible, naming `syngate reset`. (The
// counters map changes shape with every verdict added; it is migrated by
// index like the others.) Attach
// then finds the interface's pinned link and replaces its program with
// link update: the kernel swaps the program pointer, so every packet sees
// the old program or the new one and no spliced packet reaches the kernel
// during the switch. The new program's own maps (sockets, redirect ports,
// cookie key) are filled before the swap.
//
// Without PinPath nothing is pinned and Close detaches. Unpin (and Reset,
// which takes the lock itself) detaches every pinned link and removes the
// directory's contents: an uninstall.
//
// The program is compiled by bpf2go from syngate.c with clang 14 and the
// object is committed; `go generate ./bpf` reproduces it byte for byte.
package bpf
