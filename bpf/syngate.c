//go:build ignore

/* syngate's XDP program: steer handshakes of protected services to AF_XDP,
 * splice established flows in place, pass everything else untouched; and
 * its TC program (syngate_tc, in syngate_tc.h), which does the same alone
 * on interfaces whose frames carry partial checksums or arrive as GRO
 * aggregates (no XDP program runs there), with the same rewrite, cookies
 * and ICMP translation.
 *
 * Decision table (mirrored by the Go reference classifier in the tests):
 *
 *   ICMP/ICMPv6 error quoting a packet of a spliced flow, sent
 *   to its translated sender (a VIP or a local address)       -> TX or REDIRECT
 *     (translated as a NAT does, towards the original sender; see
 *     icmp_error; over the rate limit, or no way out -> DROP)
 *   not IPv4/IPv6, not TCP, not for a service or local port  -> PASS
 *   malformed below the point where the destination port is known -> PASS
 *   malformed TCP to a service/local (truncated, bad data offset, options
 *   overrunning the header), fragments to a service/local      -> DROP
 *   early defenses (optional, see struct config; a SYN with data
 *   and a TCP Fast Open option passes the payload filter)      -> DROP
 *   service with XDP cookies (or standby cookies and no AF_XDP
 *   socket): SYN without ACK, no flow, key fresh, plain IP
 *   header, well-formed options                             -> TX (cookie SYN-ACK)
 *   service: SYN without ACK                                   -> XSK
 *   service/local: 4-tuple in the flow table                   -> fast path,
 *     judged by the flow's tracked sequence state (RFC 5961, conntrack):
 *     RST at exactly the expected sequence number           -> fast path (marks the flow)
 *     RST otherwise inside the receiver's window            -> XSK (the engine forwards it:
 *                                                              the endpoint sends a challenge ACK)
 *     RST outside the window                                -> DROP
 *     SYN (from the backend side; a service's go to the engine
 *     before the flow lookup)                               -> XSK (challenge ACK)
 *     old duplicate (all its data acked, below the window)  -> fast path, not learned from
 *     other segment outside the window                      -> fast path, not learned from
 *     on a TC-datapath interface (tc_ifaces: an earlier syngate's
 *     XDP program, until the take-over detaches it), judged the
 *     same, where the fast path would forward               -> PASS untouched: syngate_tc,
 *                                                              at tcx ingress after GRO,
 *                                                              rewrites and forwards it
 *   service: RST or FIN for an unknown flow                    -> DROP
 *   service/local: anything else                               -> XSK
 *   XSK with no socket on the (interface, receive queue)       -> DROP
 *
 * Every verdict is counted under one reason (enum reason, mirrored in Go).
 */

#include "include/bpf_min.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define IPPROTO_TCP 6
#define IPPROTO_ICMP 1
#define IPPROTO_ICMPV6 58
#define AF_INET 2
#define AF_INET6 10

#define IPV6_EXT_MAX 4
/* Bound on the TCP header's offset the option walks accept: the verifier
 * needs packet offsets well below 64 KiB, and headers never sit this deep. */
#define TCP_OFF_MAX 1024

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_URG 0x20
#define TCP_ECE 0x40
#define TCP_CWR 0x80

/* Verdict reasons; the Go type Verdict mirrors this list. */
enum reason {
	R_PASS_NOT_IP = 0,
	R_PASS_NOT_TCP,
	R_PASS_NOT_SERVICE,
	R_PASS_MALFORMED_ETH,
	R_PASS_MALFORMED_IP,
	R_PASS_MALFORMED_TCP,
	R_PASS_IPV6_EXT_LIMIT,
	R_PASS_FRAGMENT,
	R_XSK_SYN,
	R_XSK_HANDSHAKE,
	R_XSK_BACKEND,
	R_FAST_TX,
	R_FAST_REDIRECT,
	R_DROP_NO_SOCKET,
	R_DROP_RST_FIN_UNKNOWN,
	R_DROP_BAD_FLAGS,
	R_DROP_SYN_PAYLOAD,
	R_DROP_SYN_RATELIMIT,
	R_DROP_FRAGMENT,
	R_DROP_TCP_TRUNCATED,
	R_DROP_TCP_DOFF_SHORT,
	R_DROP_TCP_DOFF_LONG,
	R_DROP_TCP_OPTIONS,
	R_DROP_FAST_NO_ROUTE,
	R_DROP_FAST_NO_NEIGH,
	R_DROP_FAST_NO_PORT,
	R_TX_SYNACK_COOKIE,
	R_ICMP_TX,
	R_ICMP_REDIRECT,
	R_PASS_ICMP_NO_FLOW,
	R_DROP_ICMP_RATELIMIT,
	R_DROP_ICMP_NO_NEIGH,
	R_DROP_ICMP_NO_PORT,
	R_DROP_RST_OUT_OF_WINDOW,
	R_XSK_RST_IN_WINDOW,
	R_FAST_TX_OUT_OF_WINDOW,
	R_FAST_REDIRECT_OUT_OF_WINDOW,
	R_XSK_SYN_IN_FLOW,
	R_PASS_TC_FLOW,     /* spliced segment on a TC-datapath interface: left to syngate_tc */
	R_TC_REDIRECT,      /* TC: spliced, redirected with the FIB's (or learned) next hop */
	R_TC_REDIRECT_NEIGH, /* TC: spliced, redirected; the kernel resolves the neighbour */
	R_DROP_TC_CSUM,     /* TC: the checksum helper refused the segment */
	R_PASS_TC_OUT_OF_WINDOW, /* as R_PASS_TC_FLOW, a segment outside the window (not learned from) */
	R_DROP_RST_CLOSED,  /* spliced, a closed end's RST answering a late duplicate (see track) */
	R_MAX,
};

/* The fast path picks the REDIRECT reason of a pair as TX + 1. */
_Static_assert(R_FAST_REDIRECT == R_FAST_TX + 1 && R_FAST_REDIRECT_OUT_OF_WINDOW == R_FAST_TX_OUT_OF_WINDOW + 1,
	       "forwarding reasons must come in (TX, REDIRECT) pairs");

/* Configuration fixed at load time (rodata): the verifier prunes disabled
 * defenses, so they cost nothing when off. */
#define CFG_DROP_SYN_PAYLOAD 0x1
#define CFG_DROP_BAD_FLAGS 0x2
#define CFG_SYN_RATELIMIT 0x4

struct config {
	__u32 flags;
	__u16 local_port_min; /* host order, inclusive */
	__u16 local_port_max; /* host order, inclusive; 0 disables locals */
	__u8 rl_prefix4;      /* source prefix length for the SYN rate limit */
	__u8 rl_prefix6;
	__u16 pad0;
	__u32 pad1;
	__u64 rl_rate_per_sec; /* tokens per second */
	__u64 rl_burst;        /* bucket size in tokens */
	__u64 rl_fill_ns;      /* ns to refill an empty bucket: burst*1e9/rate */
};

volatile const struct config cfg = {};

/* Addresses are 16 bytes; IPv4 is stored v4-mapped (::ffff:a.b.c.d), the
 * same form as Go's netip.Addr.As16. Ports are in network byte order. */
struct svc_key {
	__u8 addr[16];
	__be16 port;
	__u8 family;
	__u8 pad;
} __attribute__((aligned(4)));

#define SVC_F_NO_RATELIMIT 0x1
#define SVC_F_XDP_COOKIES 0x2 /* answer SYNs here with cookie SYN-ACKs */
/* Answer SYNs here with cookie SYN-ACKs while no engine has a socket for the
 * (interface, queue) they arrived on: between an engine's exit (its AF_XDP
 * sockets leave xsks by themselves, even on SIGKILL) and the next engine's
 * link update. */
#define SVC_F_STANDBY_COOKIES 0x4

#define ANN_SACK 0x1
#define ANN_TS 0x2
#define ANN_ECN 0x4 /* the backend does ECN: answer an ECN-setup SYN with ECE */
#define WSCALE_NONE 0xff

/* A service, and what its cookie SYN-ACKs announce (host byte order). */
struct svc_val {
	__u32 id;
	__u32 flags;
	__u16 ann_mss;    /* 0: the cookie's MSS table entry */
	__u16 ann_window;
	__u8 ann_wscale;  /* WSCALE_NONE: window scaling not offered */
	__u8 ann_flags;   /* ANN_* */
	__u16 pad;
};

/* What the cookie path needs from cookie.Jar, written by Go (SetCookieKey).
 * Go rewrites the whole value each time but only ever changes the slot that
 * active does not point to, then flips active in a second write: a reader
 * never sees a half-written key. */
struct cookie_slot {
	__u64 k0, k1;         /* SipHash-2-4 key of the current epoch */
	__u64 tick;           /* full tick number */
	__u64 clock_off_ns;   /* CLOCK_REALTIME - CLOCK_MONOTONIC, mod 2^64 */
	__u64 valid_until_ns; /* CLOCK_MONOTONIC; mint only before this */
};

struct cookie_state {
	__u32 active;
	__u32 pad;
	struct cookie_slot slot[2];
};

struct local_key {
	__u8 addr[16];
	__u32 family;
};

struct rl_key {
	__u8 addr[16]; /* source masked to the configured prefix */
	__u32 family;
};

struct rl_val {
	__u64 tokens; /* in nano-tokens: 1e9 is one SYN */
	__u64 last_ns;
};

struct flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u32 family;
};

#define FLOW_F_FIN 0x1     /* the sender's FIN was seen (in window); fin_end is valid */
#define FLOW_F_RST 0x2     /* the sender sent a RST at exactly the expected sequence */
#define FLOW_F_TRACKED 0x4 /* Go gave the sequence state below: segments are judged */
#define FLOW_F_TS 0x8      /* ts_recent is valid */
/* The tracked state may lag behind the connection: Go wrote it from a copy
 * taken while another program still moved the original on (a migration of
 * the flow table, or the merge after it). Judged against such a state, a
 * busy connection's segments in both directions ack data the other
 * direction's state never saw, are never at exactly its seq_end, and stay
 * out of window for good: its FINs are never learned. So while either
 * direction has the flag, a segment out of window is learned from anyway,
 * and one in window clears its own direction's flag (see resync). */
#define FLOW_F_RESYNC 0x10

/* The translation for one direction of a spliced connection, and the
 * sequence state of its sender, conntrack's tcp_in_window in brief. The
 * translation is written by Go; the tracked state is seeded by Go from the
 * handshake and then moved forward by this program, only by segments inside
 * the window, so a blind attacker cannot move it. Sequence numbers are in
 * the space the sender's segments arrive in; acknowledgements after
 * ack_delta, i.e. in the space the receiver's segments arrive in.
 * The map is pinned and taken over by the next version: add fields at the
 * end only (a migration copies the leading bytes and zeroes the rest, which
 * leaves a migrated entry untracked); any other change must bump the map's
 * generation in layoutGen (bpf/pin.go). */
struct flow_val {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u32 seq_delta;
	__u32 ack_delta;   /* also applied to SACK block edges */
	__u32 tsval_delta;
	__u32 tsecr_delta;
	__u32 ifindex;     /* learned egress, used when the FIB has no neighbour */
	__u8 smac[6];
	__u8 dmac[6];
	__u8 in_shift;
	__u8 out_shift;
	__u8 flags;
	__u8 pad;
	__u64 last_seen_ns;
	__u64 packets;
	__u64 bytes;
	__u32 seq_end; /* highest seq + length the sender sent: its SND.NXT */
	__u32 ack_max; /* highest ack the sender sent: the receiver's SND.UNA */
	__u32 win_end; /* highest ack + window the sender announced: right edge */
	__u32 win_max; /* largest window the sender announced, in bytes */
	__u32 fin_end; /* seq + length of the sender's FIN (with FLOW_F_FIN) */
	__u8 wscale;   /* the sender's window scale shift */
	__u8 pad2[3];
	__u32 ts_recent; /* the sender's latest TSval (with FLOW_F_TS) */
	__u32 pad3;
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct svc_key);
	__type(value, struct svc_val);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct local_key);
	__type(value, __u32);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} locals SEC(".maps");

/* A plain hash, not an LRU: an LRU would silently evict an established
 * flow to make room. Full, an insert fails and the engine refuses the new
 * connection instead. Entries are allocated on demand, so a table sized for
 * a million connections costs memory only as they come. The loader sets
 * the size (flows.max, or spec.DefaultFlowsMax); this one is a placeholder. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
	__uint(max_entries, 2097152);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} flows SEC(".maps");

/* flow_hint counts flow entries by a hash of their source address and
 * ports (flow_hint_index): a SYN whose slot holds zero has no flow entry
 * and skips the flow table. Under a flood of random sources that lookup
 * misses the CPU caches on every SYN (the table's 2M buckets are 32 MiB);
 * the counts (512 KiB) mostly stay cached. 64-bit counts: an mmapable
 * array lays its values out 8 bytes apart anyway. The Go side keeps them, in the
 * mmapped array with atomics: up before an entry is added, down after one
 * is removed, so a zero is never wrong. Slot FLOW_HINT_ON turns the hint
 * on once the counts were built from the table; zero (a fresh map) means
 * every SYN looks the table up. */
#define FLOW_HINT_BITS 16
#define FLOW_HINT_ON (1u << FLOW_HINT_BITS)
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, FLOW_HINT_ON + 1);
	__uint(map_flags, BPF_F_MMAPABLE);
} flow_hint SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct rl_key);
	__type(value, struct rl_val);
	__uint(max_entries, 65536);
} ratelimit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct cookie_state);
	__uint(max_entries, 1);
} cookie_keys SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, enum reason);
	__type(value, struct counter);
	__uint(max_entries, R_MAX);
} counters SEC(".maps");

/* AF_XDP sockets, one per (interface, receive queue): every interface the
 * program serves has its own queue 0, so the queue alone cannot be the key.
 * Go gives each interface with sockets a slot in ifslots (ifindex -> slot);
 * the socket of queue q sits at slot * MAX_QUEUES + q in xsks. The Go
 * constants MaxQueues and MaxInterfaces mirror these. */
#define MAX_QUEUES 64
#define MAX_IFACES 16

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, MAX_IFACES);
} ifslots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, MAX_IFACES * MAX_QUEUES);
} xsks SEC(".maps");

/* Interfaces on the TC data path (ifindex -> 1, written by Go): their
 * links deliver partial checksums and GRO aggregates, which the XDP program
 * cannot rewrite correctly, so it passes their spliced segments on untouched
 * and syngate_tc splices them after GRO. */
#define MAX_TC_IFACES 64

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, MAX_TC_IFACES);
} tc_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 64);
} tx_ports SEC(".maps");

/* Handshake ACKs that arrived while no engine had a socket for their queue
 * (standby, see SVC_F_STANDBY_COOKIES), kept for the next engine to
 * validate: the frame's headers up to the end of the TCP header (the
 * payload, if any, is retransmitted by the client), the interface it came
 * in on and when. Keyed by the 4-tuple, so a retransmission replaces the
 * entry. Pinned: the old program writes it, the new engine reads it. */
#define STANDBY_FRAME 192

struct standby_ack {
	__u64 at_ns;   /* bpf_ktime_get_ns */
	__u32 ifindex; /* ingress */
	__u32 len;     /* bytes of frame */
	__u8 frame[STANDBY_FRAME];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow_key);
	__type(value, struct standby_ack);
	__uint(max_entries, 16384);
} standby_acks SEC(".maps");

/* Room to build a standby_acks entry, and its key (per CPU). */
struct standby_buf {
	struct flow_key key;
	struct standby_ack ack;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct standby_buf);
	__uint(max_entries, 1);
} standby_scratch SEC(".maps");

struct ethhdr {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct vlanhdr {
	__be16 tci;
	__be16 proto;
};

struct iphdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ipv6hdr {
	__be32 vtc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct tcphdr {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u8 doff_res;
	__u8 flags;
	__be16 window;
	__sum16 check;
	__be16 urg_ptr;
};

static __always_inline int count_n(__u32 r, __u64 packets, __u64 bytes, int action)
{
	struct counter *c = bpf_map_lookup_elem(&counters, &r);
	if (c) {
		c->packets += packets;
		c->bytes += bytes;
	}
	return action;
}

static __always_inline int count(__u32 r, __u64 bytes, int action)
{
	return count_n(r, 1, bytes, action);
}

/* --- incremental checksum (RFC 1624), on big-endian 16-bit words --- */

static __always_inline __u32 csum_add16(__u32 acc, __u16 from, __u16 to)
{
	return acc + (__u16)~from + to;
}

static __always_inline __u32 csum_add32(__u32 acc, __u32 from, __u32 to)
{
	acc = csum_add16(acc, from >> 16, to >> 16);
	return csum_add16(acc, from & 0xffff, to & 0xffff);
}

static __always_inline __u16 csum_fold(__u32 acc)
{
	acc = (acc & 0xffff) + (acc >> 16);
	acc = (acc & 0xffff) + (acc >> 16);
	return acc;
}

/* A field at an odd offset from the start of the checksummed data adds its
 * bytes to the opposite halves of the words: the sum is byte-swapped. */
static __always_inline __u32 csum_odd(__u32 acc, int odd)
{
	if (!odd)
		return acc;
	__u16 f = csum_fold(acc);
	return (__u16)((f << 8) | (f >> 8));
}

static __always_inline void csum_apply(__sum16 *field, __u32 acc)
{
	__u16 c = bpf_ntohs(*field);
	__u32 s = (__u16)~c + (__u32)csum_fold(acc);
	*field = bpf_htons((__u16)~csum_fold(s));
}

static __always_inline __u32 ld32(__u8 *p)
{
	return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

/* flow_hint_index is the flow_hint slot of a flow key; bpf.flowHintIndex
 * computes the same. */
static __always_inline __u32 flow_hint_index(struct flow_key *fk)
{
	__u32 h = ld32(fk->saddr) ^ ld32(fk->saddr + 4) ^ ld32(fk->saddr + 8) ^ ld32(fk->saddr + 12) ^
		  ((__u32)fk->sport | (__u32)fk->dport << 16);
	return (h * 0x9e3779b1u) >> (32 - FLOW_HINT_BITS);
}

/* may_have_flow is false only when fk surely has no flow entry. */
static __always_inline int may_have_flow(struct flow_key *fk)
{
	__u32 slot = FLOW_HINT_ON;
	__u64 *on = bpf_map_lookup_elem(&flow_hint, &slot);
	if (!on || !*on)
		return 1;
	slot = flow_hint_index(fk);
	__u64 *n = bpf_map_lookup_elem(&flow_hint, &slot);
	return !n || *n;
}

static __always_inline void st32(__u8 *p, __u32 v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static __always_inline void set_mapped4(__u8 *a16, __be32 a)
{
	__u32 *w = (__u32 *)a16;
	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0x0000ffff);
	w[3] = a;
}

static __always_inline void copy16(__u8 *dst, const __u8 *src)
{
	__builtin_memcpy(dst, src, 16);
}

/* l2_skip returns where the IP header starts, past Ethernet and at most
 * one 802.1Q tag, with its EtherType in *proto; 0 when the frame is too
 * short for them. Both programs parse the link layer with it. */
static __always_inline void *l2_skip(void *data, void *data_end, __be16 *proto)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return 0;
	*proto = eth->proto;
	void *l3 = eth + 1;
	if (*proto == bpf_htons(ETH_P_8021Q)) {
		struct vlanhdr *vh = l3;
		if ((void *)(vh + 1) > data_end)
			return 0;
		*proto = vh->proto;
		l3 = vh + 1;
	}
	return l3;
}

/* dst_protected says whether a segment to fk's destination is syngate's:
 * *svc is its service's entry, or NULL for one of syngate's source ports
 * on a local address (a backend leg). 0: neither, leave it to the kernel.
 * Both programs ask it before anything else: one hash lookup for
 * everything that is not theirs. */
static __always_inline int dst_protected(const struct flow_key *fk, struct svc_val **svc)
{
	struct svc_key sk = {};
	copy16(sk.addr, fk->daddr);
	sk.port = fk->dport;
	sk.family = fk->family;
	*svc = bpf_map_lookup_elem(&services, &sk);
	if (*svc)
		return 1;
	__u16 dport = bpf_ntohs(fk->dport);
	if (dport < cfg.local_port_min || dport > cfg.local_port_max)
		return 0;
	struct local_key lk = {};
	copy16(lk.addr, fk->daddr);
	lk.family = fk->family;
	return bpf_map_lookup_elem(&locals, &lk) != 0;
}

/* Token bucket per source prefix; returns 1 when the SYN may pass. */
static __always_inline int ratelimit_allow(const __u8 *saddr16, __u32 family)
{
	struct rl_key k = {};
	__u32 *src = (__u32 *)saddr16;
	__u32 *dst = (__u32 *)k.addr;
	__u32 plen = family == AF_INET ? 96 + cfg.rl_prefix4 : cfg.rl_prefix6;

#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u32 bits = plen > 32 * i ? plen - 32 * i : 0;
		__u32 mask = bits >= 32 ? 0xffffffff : bits == 0 ? 0 : ~(0xffffffffu >> bits);
		dst[i] = src[i] & bpf_htonl(mask);
	}
	k.family = family;

	__u64 now = bpf_ktime_get_ns();
	__u64 full = cfg.rl_burst * 1000000000ull;
	struct rl_val *b = bpf_map_lookup_elem(&ratelimit, &k);
	if (!b) {
		struct rl_val nb = { .tokens = full - 1000000000ull, .last_ns = now };
		bpf_map_update_elem(&ratelimit, &k, &nb, BPF_NOEXIST);
		return 1;
	}
	__u64 tokens = b->tokens;
	__u64 elapsed = now > b->last_ns ? now - b->last_ns : 0;
	if (elapsed >= cfg.rl_fill_ns)
		tokens = full;
	else
		tokens += elapsed * cfg.rl_rate_per_sec;
	if (tokens > full)
		tokens = full;
	b->last_ns = now;
	if (tokens < 1000000000ull) {
		b->tokens = tokens;
		return 0;
	}
	b->tokens = tokens - 1000000000ull;
	return 1;
}

static __always_inline int bad_flags(__u8 f)
{
	if (!(f & (TCP_FIN | TCP_SYN | TCP_RST | TCP_PSH | TCP_ACK | TCP_URG)))
		return 1; /* null scan */
	if ((f & (TCP_SYN | TCP_FIN)) == (TCP_SYN | TCP_FIN))
		return 1;
	if ((f & (TCP_SYN | TCP_RST)) == (TCP_SYN | TCP_RST))
		return 1;
	if ((f & (TCP_FIN | TCP_RST)) == (TCP_FIN | TCP_RST))
		return 1;
	if (!(f & TCP_ACK) && (f & (TCP_FIN | TCP_PSH | TCP_URG)))
		return 1; /* FIN/PSH/URG are only valid on a synchronized connection */
	return 0;
}

/* The xsks index of the socket for the packet's (interface, receive queue),
 * or -1 when no socket is registered there (no engine). */
static __always_inline long xsk_index(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 q = ctx->rx_queue_index;
	__u32 *slot = bpf_map_lookup_elem(&ifslots, &ifindex);
	if (!slot || *slot >= MAX_IFACES || q >= MAX_QUEUES)
		return -1;
	__u32 idx = *slot * MAX_QUEUES + q;
	if (!bpf_map_lookup_elem(&xsks, &idx))
		return -1;
	return idx;
}

static __always_inline int to_xsk(struct xdp_md *ctx, __u32 reason, __u64 bytes)
{
	long idx = xsk_index(ctx);
	if (idx < 0)
		return count(R_DROP_NO_SOCKET, bytes, XDP_DROP);
	long ret = bpf_redirect_map(&xsks, (__u32)idx, XDP_DROP);
	if (ret != XDP_REDIRECT)
		return count(R_DROP_NO_SOCKET, bytes, XDP_DROP);
	return count(reason, bytes, XDP_REDIRECT);
}

/* standby_store keeps the first len bytes of the frame (a handshake ACK
 * with no engine to take it) in standby_acks under the key the caller left
 * in standby_scratch. Returns 1 when stored. A global function, so its
 * byte loop is verified once. */
__attribute__((noinline)) int standby_store(struct xdp_md *ctx, __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct standby_buf *b = bpf_map_lookup_elem(&standby_scratch, &zero);
	if (!b || len > STANDBY_FRAME)
		return 0;
	/* Byte by byte: bpf_xdp_load_bytes would need Linux 5.18. */
	for (__u32 i = 0; i < STANDBY_FRAME; i++) {
		if (i >= len)
			break;
		__u8 *p = data + i;
		if ((void *)(p + 1) > data_end)
			return 0;
		b->ack.frame[i] = *p;
	}
	b->ack.len = len;
	b->ack.ifindex = ctx->ingress_ifindex;
	b->ack.at_ns = bpf_ktime_get_ns();
	return bpf_map_update_elem(&standby_acks, &b->key, &b->ack, BPF_ANY) == 0;
}

/* keep_standby_ack stores a handshake ACK for the next engine and drops it
 * (counted as having no socket, which is the case). */
static __always_inline int keep_standby_ack(struct xdp_md *ctx, struct flow_key *fk, __u32 hdr_len, __u64 bytes)
{
	__u32 zero = 0;
	struct standby_buf *b = bpf_map_lookup_elem(&standby_scratch, &zero);
	if (b) {
		__builtin_memcpy(&b->key, fk, sizeof(*fk));
		standby_store(ctx, hdr_len);
	}
	return count(R_DROP_NO_SOCKET, bytes, XDP_DROP);
}

/* The option walks are global functions so that the verifier checks each once
 * with unknown arguments, instead of once per path that reaches them.
 * tcp_off is the TCP header's offset in the packet, doff its length. */

/* Options must be well-formed TLVs inside the header; timestamps and SACK
 * must have their only valid lengths. */
static __always_inline int options_valid(void *data, void *data_end, __u32 tcp_off, __u32 doff)
{
	if (tcp_off > TCP_OFF_MAX || doff > 60)
		return 0;
	__u8 *tcp = data + tcp_off;
	__u32 off = 20;
	/* off grows every turn and stops at doff <= 60: the loop is bounded. */
#pragma clang loop unroll(disable)
	while (off < doff) {
		__u8 *o = tcp + off;
		if ((void *)(o + 1) > data_end)
			return 0;
		__u8 kind = o[0];
		if (kind == 0)
			break;
		if (kind == 1) {
			off++;
			continue;
		}
		if (off + 2 > doff || (void *)(o + 2) > data_end)
			return 0;
		__u32 len = o[1];
		if (len < 2 || off + len > doff)
			return 0;
		if (kind == 8 && len != 10)
			return 0;
		if (kind == 5 && len != 10 && len != 18 && len != 26 && len != 34)
			return 0;
		off += len;
	}
	return 1;
}

__attribute__((noinline)) int tcp_options_valid(struct xdp_md *ctx, __u32 tcp_off, __u32 doff)
{
	return options_valid((void *)(long)ctx->data, (void *)(long)ctx->data_end, tcp_off, doff);
}

__attribute__((noinline)) int tcp_options_valid_tc(struct __sk_buff *skb, __u32 tcp_off, __u32 doff)
{
	return options_valid((void *)(long)skb->data, (void *)(long)skb->data_end, tcp_off, doff);
}

/* Bit 16 of tcp_options_rewrite's result: the segment had a timestamp,
 * whose TSval as received is in the upper 32 bits. */
#define OPT_HAS_TS 0x10000

/* Adds the deltas to TSval/TSecr and, on ACKs, to SACK block edges.
 * pos packs tcp_off (16 bits), doff (8) and the TCP flags (8). Returns the
 * TCP checksum delta, folded to 16 bits, and the received TSval (see
 * OPT_HAS_TS). Shared by both programs through the two global wrappers
 * below (a global function's context has one type). */
static __always_inline __u64 options_rewrite(void *data, void *data_end, __u32 pos, __u32 ack_delta,
					     __u32 tsval_delta, __u32 tsecr_delta)
{
	__u32 tcp_off = pos & 0xffff, doff = (pos >> 16) & 0xff, tf = pos >> 24;
	if (tcp_off > TCP_OFF_MAX || doff > 60)
		return 0;
	__u8 *tcp = data + tcp_off;
	__u32 acc = 0;
	__u64 ts = 0;
	__u32 off = 20;
	/* off grows every turn and stops at doff <= 60: the loop is bounded. */
#pragma clang loop unroll(disable)
	while (off < doff) {
		__u8 *o = tcp + off;
		if ((void *)(o + 2) > data_end)
			break;
		__u8 kind = o[0];
		if (kind == 0)
			break;
		if (kind == 1) {
			off++;
			continue;
		}
		__u32 len = o[1];
		if (len < 2)
			break;
		if (kind == 8 && (void *)(o + 10) <= data_end) {
			__u32 v = ld32(o + 2), e = ld32(o + 6);
			__u32 nv = v + tsval_delta, ne = e + tsecr_delta;
			__u32 t = csum_add32(0, v, nv);
			t = csum_add32(t, e, ne);
			acc += csum_odd(t, off & 1);
			ts = (__u64)v << 32 | OPT_HAS_TS;
			st32(o + 2, nv);
			st32(o + 6, ne);
		} else if (kind == 5 && (tf & TCP_ACK)) {
			__u32 t = 0;
			__u32 nblk = (len - 2) / 8;
#pragma unroll
			for (int j = 0; j < 4; j++) {
				__u8 *e = o + 2 + 8 * j;
				if (j < nblk && (void *)(e + 8) <= data_end) {
					__u32 l = ld32(e), r = ld32(e + 4);
					__u32 nl = l + ack_delta, nr = r + ack_delta;
					t = csum_add32(t, l, nl);
					t = csum_add32(t, r, nr);
					st32(e, nl);
					st32(e + 4, nr);
				}
			}
			acc += csum_odd(t, off & 1);
		}
		off += len;
	}
	return ts | csum_fold(acc);
}

__attribute__((noinline)) __u64 tcp_options_rewrite(struct xdp_md *ctx, __u32 pos, __u32 ack_delta,
						     __u32 tsval_delta, __u32 tsecr_delta)
{
	return options_rewrite((void *)(long)ctx->data, (void *)(long)ctx->data_end, pos, ack_delta,
			       tsval_delta, tsecr_delta);
}

__attribute__((noinline)) __u64 tcp_options_rewrite_tc(struct __sk_buff *skb, __u32 pos, __u32 ack_delta,
							__u32 tsval_delta, __u32 tsecr_delta)
{
	return options_rewrite((void *)(long)skb->data, (void *)(long)skb->data_end, pos, ack_delta,
			       tsval_delta, tsecr_delta);
}

/* --- the splice, shared by the XDP and the TC program --- */

/* Per-flow accounting, for the packets segments of one skb (FIN and RST
 * are judge's, in the XDP program, which sees every segment before GRO). */
static __always_inline void flow_account(struct flow_val *fv, __u64 packets, __u64 bytes)
{
	fv->last_seen_ns = bpf_ktime_get_ns();
	__sync_fetch_and_add(&fv->packets, packets);
	__sync_fetch_and_add(&fv->bytes, bytes);
}

/* Learns the sender's latest timestamp from a segment inside the window
 * (opt is tcp_options_rewrite's result): the engine compares a new SYN's
 * with it (TIME_WAIT's rule). */
static __always_inline void learn_ts(struct flow_val *fv, __u64 opt)
{
	if ((opt & OPT_HAS_TS) && (fv->flags & FLOW_F_TRACKED) &&
	    (!(fv->flags & FLOW_F_TS) || (__s32)((__u32)(opt >> 32) - fv->ts_recent) >= 0)) {
		fv->ts_recent = opt >> 32;
		fv->flags |= FLOW_F_TS;
	}
}

/* Rewrites a spliced segment's addresses, ports, sequence and
 * acknowledgement numbers and window in place (the options are
 * options_rewrite's), fixing the IPv4 header checksum, which is always
 * complete. The TCP checksum is left to the caller, in two parts, both
 * unfolded 16-bit one's complement sums: the address (pseudo-header) delta
 * in the upper 32 bits of the result, the rest in the lower. XDP adds both
 * to a complete checksum; TC hands them to bpf_l4_csum_replace, which also
 * knows partial checksums, where only the pseudo-header part applies.
 * Fills fib for the next hop, all but tot_len and ifindex. Not inlined:
 * inlined, its spills pushed syngate_xdp's frame plus syn_options' past the
 * verifier's 512 bytes of stack. */
static __attribute__((noinline)) __u64 splice_rewrite(struct iphdr *ip4, struct ipv6hdr *ip6,
						     struct tcphdr *tcp, struct flow_val *fv,
						     struct bpf_fib_lookup *fib)
{
	__u32 acc = 0, pseudo = 0;
	__u8 tf = tcp->flags;
	fib->l4_protocol = IPPROTO_TCP;
	fib->sport = fv->sport;
	fib->dport = fv->dport;
	if (ip4) {
		__be32 ns = ((__u32 *)fv->saddr)[3];
		__be32 nd = ((__u32 *)fv->daddr)[3];
		__u32 iacc = 0;
		iacc = csum_add32(iacc, bpf_ntohl(ip4->saddr), bpf_ntohl(ns));
		iacc = csum_add32(iacc, bpf_ntohl(ip4->daddr), bpf_ntohl(nd));
		ip4->saddr = ns;
		ip4->daddr = nd;
		csum_apply(&ip4->check, iacc);
		pseudo = iacc;
		fib->family = AF_INET;
		fib->src[0] = ns;
		fib->dst[0] = nd;
	} else if (ip6) {
		__u32 *os = (__u32 *)ip6->saddr;
		__u32 *od = (__u32 *)ip6->daddr;
		__u32 *ns = (__u32 *)fv->saddr;
		__u32 *nd = (__u32 *)fv->daddr;
		__u32 pacc = 0;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			pacc = csum_add32(pacc, bpf_ntohl(os[i]), bpf_ntohl(ns[i]));
			pacc = csum_add32(pacc, bpf_ntohl(od[i]), bpf_ntohl(nd[i]));
			os[i] = ns[i];
			od[i] = nd[i];
			fib->src[i] = ns[i];
			fib->dst[i] = nd[i];
		}
		pseudo = pacc;
		fib->family = AF_INET6;
	}

	acc = csum_add16(acc, bpf_ntohs(tcp->source), bpf_ntohs(fv->sport));
	acc = csum_add16(acc, bpf_ntohs(tcp->dest), bpf_ntohs(fv->dport));
	tcp->source = fv->sport;
	tcp->dest = fv->dport;

	__u32 seq = bpf_ntohl(tcp->seq), nseq = seq + fv->seq_delta;
	acc = csum_add32(acc, seq, nseq);
	tcp->seq = bpf_htonl(nseq);
	if (tf & TCP_ACK) {
		__u32 ack = bpf_ntohl(tcp->ack_seq), nack = ack + fv->ack_delta;
		acc = csum_add32(acc, ack, nack);
		tcp->ack_seq = bpf_htonl(nack);
	}
	if (!(tf & TCP_SYN)) {
		__u16 win = bpf_ntohs(tcp->window);
		__u32 w = ((__u32)win << (fv->in_shift & 15)) >> (fv->out_shift & 15);
		if (w > 65535)
			w = 65535;
		acc = csum_add16(acc, win, w);
		tcp->window = bpf_htons(w);
	}
	return (__u64)pseudo << 32 | acc;
}

/* --- SYN cookies, minted exactly as cookie.Jar.Make does --- */

#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
	do {                                                                                       \
		v0 += v1;                                                                          \
		v1 = ROTL64(v1, 13) ^ v0;                                                          \
		v0 = ROTL64(v0, 32);                                                               \
		v2 += v3;                                                                          \
		v3 = ROTL64(v3, 16) ^ v2;                                                          \
		v0 += v3;                                                                          \
		v3 = ROTL64(v3, 21) ^ v0;                                                          \
		v2 += v1;                                                                          \
		v1 = ROTL64(v1, 17) ^ v2;                                                          \
		v2 = ROTL64(v2, 32);                                                               \
	} while (0)
#define SIPWORD(m)                                                                                 \
	do {                                                                                       \
		v3 ^= (m);                                                                         \
		SIPROUND;                                                                          \
		SIPROUND;                                                                          \
		v0 ^= (m);                                                                         \
	} while (0)

/* SipHash-2-4 of the 48-byte message m0..m5 (little-endian words), straight
 * line: no loop for the verifier to walk. */
static __always_inline __u64 siphash6(__u64 k0, __u64 k1, __u64 m0, __u64 m1, __u64 m2, __u64 m3,
				      __u64 m4, __u64 m5)
{
	__u64 v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
	SIPWORD(m0);
	SIPWORD(m1);
	SIPWORD(m2);
	SIPWORD(m3);
	SIPWORD(m4);
	SIPWORD(m5);
	SIPWORD(48ULL << 56);
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

static __always_inline __u64 ld64be(const __u8 *p)
{
	__u64 v;
	__builtin_memcpy(&v, p, 8);
	return __builtin_bswap64(v);
}

#define SO_SACK (1ULL << 24)
#define SO_TS (1ULL << 25)
#define SO_OK (1ULL << 26)
#define SO_TFO (1ULL << 27)
#define TCPOPT_FASTOPEN 34     /* RFC 7413 */
#define TCPOPT_EXP 254         /* RFC 6994 experimental option ... */
#define TCPOPT_FASTOPEN_MAGIC 0xF989 /* ... with the pre-RFC TFO magic */

/* syn_options reads a SYN's options as packet.Parse does (a repeated
 * option overrides the earlier one) and packs them: MSS (bits 0-15, 0 when
 * absent), window scale capped at 14 (16-23, WSCALE_NONE when absent),
 * SO_SACK, SO_TS, SO_TFO (a TCP Fast Open option), the TSval (32-63) and
 * SO_OK. Without SO_OK the options
 * are not ones the engine's parser accepts. A global function, so that the
 * walk's state does not multiply with its caller's. */
static __always_inline __u64 syn_options_at(void *data, void *data_end, __u32 tcp_off, __u32 doff)
{
	if (tcp_off > TCP_OFF_MAX || doff > 60)
		return 0;
	__u8 *tcp = data + tcp_off;
	__u64 r = WSCALE_NONE << 16;
	__u32 off = 20;
	/* off grows every turn and stops at doff <= 60: the loop is bounded. */
#pragma clang loop unroll(disable)
	while (off < doff) {
		__u8 *o = tcp + off;
		if ((void *)(o + 1) > data_end)
			return 0;
		__u8 kind = o[0];
		if (kind == 0)
			break;
		if (kind == 1) {
			off++;
			continue;
		}
		if ((void *)(o + 2) > data_end)
			return 0;
		__u32 len = o[1];
		if (len < 2 || off + len > doff)
			return 0;
		if (kind == 2) {
			if (len != 4 || (void *)(o + 4) > data_end)
				return 0;
			r = (r & ~0xffffULL) | ((__u32)o[2] << 8 | o[3]);
		} else if (kind == 3) {
			if (len != 3 || (void *)(o + 3) > data_end)
				return 0;
			__u64 ws = o[2];
			if (ws > 14)
				ws = 14;
			r = (r & ~0xff0000ULL) | ws << 16;
		} else if (kind == 4) {
			if (len != 2)
				return 0;
			r |= SO_SACK;
		} else if (kind == 8) {
			if (len != 10 || (void *)(o + 10) > data_end)
				return 0;
			r = (r & 0xffffffffULL) | SO_TS | (__u64)ld32(o + 2) << 32;
		} else if (kind == TCPOPT_FASTOPEN) {
			r |= SO_TFO;
		} else if (kind == TCPOPT_EXP && len >= 4 && (void *)(o + 4) <= data_end &&
			   ((__u32)o[2] << 8 | o[3]) == TCPOPT_FASTOPEN_MAGIC) {
			r |= SO_TFO;
		}
		off += len;
	}
	return r | SO_OK;
}

__attribute__((noinline)) __u64 syn_options(struct xdp_md *ctx, __u32 tcp_off, __u32 doff)
{
	return syn_options_at((void *)(long)ctx->data, (void *)(long)ctx->data_end, tcp_off, doff);
}

__attribute__((noinline)) __u64 syn_options_tc(struct __sk_buff *skb, __u32 tcp_off, __u32 doff)
{
	return syn_options_at((void *)(long)skb->data, (void *)(long)skb->data_end, tcp_off, doff);
}

/* The reply's pseudo-header and TCP header with options, laid out for one
 * bpf_csum_diff: unused bytes stay zero and add nothing to the sum. */
struct synack_buf {
	__u8 ph[40]; /* new source (16), new destination (16), TCP length (4), 0, 0, 0, protocol */
	struct tcphdr th;
	__u32 opt[5];
} __attribute__((aligned(8)));

/* The reply being built, and where it goes in the frame: what
 * synack_locate finds and synack_build decides, for synack_write after the
 * program resized the frame its own way. */
struct synack_work {
	struct synack_buf b;
	__u32 l3off;
	__u32 tcp_off;
	__u32 tcplen;
	__u32 is6;
};

/* Per-CPU room for the reply being built: the stack is nearly all taken
 * by syngate_xdp, whose frame counts against this function's. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct synack_work);
	__uint(max_entries, 1);
} synack_scratch SEC(".maps");

/* The current cookie key slot while it may mint (now is set), else 0. */
static __always_inline struct cookie_slot *cookie_fresh(__u64 *now)
{
	__u32 zero = 0;
	struct cookie_state *cs = bpf_map_lookup_elem(&cookie_keys, &zero);
	if (!cs)
		return 0;
	struct cookie_slot *ck = &cs->slot[cs->active & 1];
	/* The coarse clock (the last tick's time) reads no clock source,
	 * which in a VM (kvm-clock) costs tens of ns per flood SYN. It lags by
	 * at most a tick: the key's validity has seconds of grace, and the
	 * timestamp below may only lag the engine's clock, never lead it. */
	*now = bpf_ktime_get_coarse_ns();
	if (*now >= ck->valid_until_ns)
		return 0;
	return ck;
}

/* synack_locate finds a SYN's headers for the cookie reply: it zeroes w,
 * records the IP and TCP header offsets and puts the reply's addresses in
 * the pseudo-header. Returns the TCP header length, 0 when the engine
 * must answer (IPv4 options, IPv6 extension headers). It keeps the link
 * layer's offset as a constant sum rather than use l2_skip: taken as a
 * pointer difference, the offset loses its bounds and the verifier
 * rejects syngate_tc's later header accesses through it. */
static __always_inline __u32 synack_locate(void *data, void *data_end, struct synack_work *w)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return 0;
	__u32 l3off = sizeof(*eth);
	__be16 proto = eth->proto;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		struct vlanhdr *vh = (void *)(eth + 1);
		if ((void *)(vh + 1) > data_end)
			return 0;
		proto = vh->proto;
		l3off += sizeof(*vh);
	}

	__builtin_memset(w, 0, sizeof(*w));
	struct synack_buf *b = &w->b;
	struct tcphdr *tcp;
	int is6 = proto == bpf_htons(ETH_P_IPV6);
	if (is6) {
		struct ipv6hdr *ip6 = data + l3off;
		if ((void *)(ip6 + 1) > data_end || ip6->nexthdr != IPPROTO_TCP)
			return 0;
		__builtin_memcpy(b->ph, ip6->daddr, 16);
		__builtin_memcpy(b->ph + 16, ip6->saddr, 16);
		tcp = (void *)(ip6 + 1);
	} else {
		struct iphdr *ip4 = data + l3off;
		if ((void *)(ip4 + 1) > data_end || ip4->ver_ihl != 0x45)
			return 0;
		__builtin_memcpy(b->ph, &ip4->daddr, 4);
		__builtin_memcpy(b->ph + 16, &ip4->saddr, 4);
		tcp = (void *)(ip4 + 1);
	}
	if ((void *)(tcp + 1) > data_end)
		return 0;
	__u32 doff = (tcp->doff_res >> 4) * 4;
	if (doff > 60 || doff < sizeof(*tcp))
		return 0;
	w->l3off = l3off;
	w->is6 = is6;
	w->tcp_off = (void *)tcp - data;
	return doff;
}

/* synack_build puts the cookie SYN-ACK that packet.ReplySynAck would build
 * for the located SYN into w: TCP header and options, with a complete
 * checksum. so is syn_options' reading of the SYN, ann the service's
 * announce values (see synack_cookie). Returns 1 when w holds the reply, 0
 * when the engine must answer. */
static __always_inline int synack_build(void *data, void *data_end, __u64 so, __u64 ann, struct cookie_slot *ck,
					__u64 now, struct synack_work *w)
{
	struct synack_buf *b = &w->b;
	if (!(so & SO_OK))
		return 0;
	/* Masked, not compared: clang compares in 32 bits and adds in 64,
	 * which leaves the verifier an unbounded offset. synack_locate's
	 * offsets are below 256. */
	struct tcphdr *tcp = data + (w->tcp_off & 0xff);
	if ((void *)(tcp + 1) > data_end)
		return 0;
	int is6 = w->is6;
	__u16 t1, t2, t3; /* the MSS table above its first entry */
	if (is6)
		t1 = 1420, t2 = 1440, t3 = 8940;
	else
		t1 = 1300, t2 = 1440, t3 = 1460;
	__u16 c_mss = so;
	__u8 c_ws = so >> 16;

	/* The reply's TCP header and options, in packet.ReplySynAck's layout;
	 * the sequence number and checksum come last. Timestamps count only
	 * if the service offers them too: otherwise the ACK cannot bring the
	 * option bits back. */
	b->th.source = tcp->dest;
	b->th.dest = tcp->source;
	__u32 cisn = bpf_ntohl(tcp->seq);
	b->th.ack_seq = bpf_htonl(cisn + 1);
	b->th.flags = TCP_SYN | TCP_ACK;
	b->th.window = bpf_htons((__u16)ann);
	__u32 idx = c_mss >= t3 ? 3 : c_mss >= t2 ? 2 : c_mss >= t1 ? 1 : 0;
	__u16 tmss = idx == 3 ? t3 : idx == 2 ? t2 : idx == 1 ? t1 : (is6 ? 1220 : 536);
	__u16 amss = ann >> 16;
	if (!amss || amss > tmss)
		amss = tmss;
	b->opt[0] = bpf_htonl(0x02040000 | amss);
	__u32 tcplen = 24;
	__u8 aflags = ann >> 40;
	__u64 tag_in = 0;
	if ((so & SO_TS) && (aflags & ANN_TS)) {
		__u32 bits = c_ws == WSCALE_NONE ? 0xf : c_ws;
		if (so & SO_SACK)
			bits |= 0x10;
		if ((tcp->flags & (TCP_SYN | TCP_ACK | TCP_ECE | TCP_CWR)) == (TCP_SYN | TCP_ECE | TCP_CWR)) {
			/* The cookie keeps the client's request; the SYN-ACK
			 * agrees only when the backend does ECN too (RFC 3168
			 * 6.1.1), and the engine decides the same way. */
			bits |= 0x20;
			if (aflags & ANN_ECN)
				b->th.flags |= TCP_ECE;
		}
		tag_in = 64 | bits;
		__u32 clk = (now + ck->clock_off_ns) / 1000000;
		__u32 tsval = (clk & ~63u) | bits;
		if ((__s32)(tsval - clk) > 0)
			tsval -= 64; /* never ahead of the clock */
		b->opt[1] = bpf_htonl((so & SO_SACK) && (aflags & ANN_SACK) ? 0x0402080a : 0x0101080a);
		b->opt[2] = bpf_htonl(tsval);
		b->opt[3] = bpf_htonl(so >> 32);
		tcplen = 36;
		__u8 aws = ann >> 32;
		if (c_ws != WSCALE_NONE && aws != WSCALE_NONE) {
			b->opt[4] = bpf_htonl(0x01030300 | (aws > 14 ? 14 : aws));
			tcplen = 40;
		}
	}
	b->th.doff_res = (tcplen / 4) << 4;
	b->ph[34] = tcplen >> 8;
	b->ph[35] = tcplen;
	b->ph[39] = IPPROTO_TCP;
	w->tcplen = tcplen;

	/* The cookie: the hash sees IPv4 addresses as ::ffff:a.b.c.d. */
	__u64 m0, m1, m2, m3;
	if (is6) {
		m0 = ld64be(b->ph + 16); /* client */
		m1 = ld64be(b->ph + 24);
		m2 = ld64be(b->ph); /* service */
		m3 = ld64be(b->ph + 8);
		if (m0 == 0 && (m1 >> 32) == 0xffff)
			return 0; /* an IPv4-mapped source: the engine's parser refuses it */
	} else {
		m0 = m2 = 0;
		m1 = 0xffff00000000ULL | ld32(b->ph + 16);
		m3 = 0xffff00000000ULL | ld32(b->ph);
	}
	__u64 tick = ck->tick;
	__u64 h = siphash6(ck->k0, ck->k1, m0, m1, m2, m3,
			   (__u64)bpf_ntohs(b->th.dest) << 48 | (__u64)bpf_ntohs(b->th.source) << 32 | cisn,
			   tick << 8 | idx);
	__u64 ta = (h >> 19) & 0x3fffff, tb = (h >> 41) & 0x3fffff;
	__u32 tag = ((ta * tag_in + tb) & 0x3fffff) >> 14;
	b->th.seq = bpf_htonl((__u32)(tick & 7) << 29 | idx << 27 | (__u32)(h & 0x7ffff) << 8 | tag);
	__s64 sum = bpf_csum_diff(0, 0, (__be32 *)b, sizeof(*b), 0);
	b->th.check = ~csum_fold((__u32)sum);
	return 1;
}

/* synack_write turns the frame, already resized to the reply's length,
 * into the reply w holds: MACs, addresses and ports swapped, VLAN tag
 * kept, TTL 64, IPv4 ID and TOS 0 with DF, IPv6 traffic class and flow
 * label 0. Returns 1, or -1 when the frame is too short (cannot happen
 * after the resize: the checks are for the verifier). */
static __always_inline int synack_write(void *data, void *data_end, struct synack_work *w)
{
	struct synack_buf *b = &w->b;
	__u32 tcplen = w->tcplen & 0x3f, l3off = w->l3off & 0x1f; /* masked: see synack_build */
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end || tcplen > 40)
		return -1;
	__u32 mac0 = *(__u32 *)eth->dst;
	__u16 mac1 = *(__u16 *)(eth->dst + 4);
	__builtin_memcpy(eth->dst, eth->src, 6);
	*(__u32 *)eth->src = mac0;
	*(__u16 *)(eth->src + 4) = mac1;
	struct tcphdr *tcp;
	if (w->is6) {
		struct ipv6hdr *ip6 = data + l3off;
		if ((void *)(ip6 + 1) > data_end)
			return -1;
		ip6->vtc_flow = bpf_htonl(6 << 28);
		ip6->payload_len = bpf_htons(tcplen);
		ip6->hop_limit = 64;
		__builtin_memcpy(ip6->saddr, b->ph, 16);
		__builtin_memcpy(ip6->daddr, b->ph + 16, 16);
		tcp = (void *)(ip6 + 1);
	} else {
		struct iphdr *ip4 = data + l3off;
		if ((void *)(ip4 + 1) > data_end)
			return -1;
		__u32 s = ld32(b->ph), d = ld32(b->ph + 16);
		ip4->tos = 0;
		ip4->tot_len = bpf_htons(20 + tcplen);
		ip4->id = 0;
		ip4->frag_off = bpf_htons(0x4000);
		ip4->ttl = 64;
		ip4->saddr = bpf_htonl(s);
		ip4->daddr = bpf_htonl(d);
		__u32 isum = 0x4500 + 20 + tcplen + 0x4000 + (64 << 8 | IPPROTO_TCP) + (s >> 16) +
			     (s & 0xffff) + (d >> 16) + (d & 0xffff);
		ip4->check = bpf_htons((__u16)~csum_fold(isum));
		tcp = (void *)(ip4 + 1);
	}
	__u32 *src = (__u32 *)&b->th, *dst = (__u32 *)tcp;
	__u32 nw = tcplen / 4;
#pragma unroll
	for (int i = 0; i < 10; i++) {
		if (i < nw) {
			if ((void *)(dst + i + 1) > data_end)
				return -1;
			dst[i] = src[i];
		}
	}
	return 1;
}

/* synack_cookie turns the SYN in the frame into the cookie SYN-ACK that
 * packet.ReplySynAck would build for it (see synack_build and
 * synack_write): payload and other options dropped.
 *
 * ann packs the service's announce values: window (bits 0-15), MSS
 * (16-31), window scale (32-39), ANN_* flags (40-47).
 *
 * Returns 1 when the frame holds the reply, 0 when it is untouched and
 * the engine must answer (no fresh key, IPv4 options, IPv6 extension
 * headers, an MSS/window scale/SACK-permitted option of the wrong length,
 * which the engine's parser rejects), -1 when the frame is damaged (cannot
 * happen). A global function, so the verifier checks it once. */
__attribute__((noinline)) int synack_cookie(struct xdp_md *ctx, __u64 ann)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	__u64 now = 0;
	struct cookie_slot *ck = cookie_fresh(&now);
	struct synack_work *w = bpf_map_lookup_elem(&synack_scratch, &zero);
	if (!ck || !w)
		return 0;
	__u32 doff = synack_locate(data, data_end, w);
	if (!doff)
		return 0;
	__u64 so = syn_options(ctx, w->tcp_off, doff);
	if (!synack_build(data, data_end, so, ann, ck, now, w))
		return 0;

	/* Resize: the headers stay where they are, the tail (options, payload,
	 * Ethernet padding) goes or grows. Nothing is written before this
	 * succeeds, so a failure leaves the SYN to the engine. */
	int delta = (int)(w->tcp_off + w->tcplen) - (int)(data_end - data);
	if (delta && bpf_xdp_adjust_tail(ctx, delta))
		return 0;
	return synack_write((void *)(long)ctx->data, (void *)(long)ctx->data_end, w);
}

/* --- sequence tracking of spliced flows --- */

static __always_inline int seq_before(__u32 a, __u32 b)
{
	return (__s32)(a - b) < 0;
}

static __always_inline int seq_after(__u32 a, __u32 b)
{
	return (__s32)(a - b) > 0;
}

/* conntrack's MAXACKWINDOW floor: an ACK may trail the data sent by this much
 * even before the receiver announced a window that large. */
#define ACK_WINDOW_MIN 66000

/* Above the TCP flags in syngate_xdp's tf: the segment was outside the
 * window; or an old duplicate, forwarded as in the window but not learned
 * from (its timestamp neither). */
#define TF_OUT_OF_WIN 0x100
#define TF_OLD 0x200

enum track {
	T_LEARN,       /* in the window: forwarded, the state moves on */
	T_OUT_OF_WIN,  /* not a RST, outside the window: forwarded, not learned */
	T_OLD,         /* an old duplicate below the window: forwarded, not learned */
	T_RST_EXACT,   /* RST at the expected sequence number: forwarded, flow ends */
	T_RST_WINDOW,  /* RST inside the window, not exact: to the engine */
	T_RST_DROP,    /* RST outside the window: dropped */
	T_RST_CLOSED,  /* RST just below the window of an end whose FIN was acked: dropped */
	T_SYN,         /* SYN into the flow: to the engine, never forwarded */
};

/* Moves fv's sender state on with a segment ending at end (FIN counted)
 * that acks ack (in the receiver's space). */
static __always_inline void learn(struct flow_val *fv, struct tcphdr *tcp, __u8 tf, __u32 end, __u32 ack)
{
	__u32 win = (__u32)bpf_ntohs(tcp->window) << (fv->wscale & 15);
	if (seq_after(end, fv->seq_end))
		fv->seq_end = end;
	if (seq_after(ack, fv->ack_max))
		fv->ack_max = ack;
	if (seq_after(ack + win, fv->win_end))
		fv->win_end = ack + win;
	if (win > fv->win_max)
		fv->win_max = win;
	if ((tf & TCP_FIN) && !(fv->flags & FLOW_F_FIN)) {
		fv->fin_end = end;
		fv->flags |= FLOW_F_FIN;
	}
}

/* Judges a segment of fv's sender against rv, the reverse direction (its
 * receiver), and learns from it when it is inside the window. plen is the
 * payload length. A RST ends the flow only at exactly the receiver's
 * RCV.NXT as far as we can know it: the highest ack the receiver sent, or
 * the sender's own SND.NXT (the receiver may not have acked yet). */
static __always_inline int track(struct flow_val *fv, struct flow_val *rv, struct tcphdr *tcp, __u8 tf,
				 __u32 plen)
{
	__u32 seq = bpf_ntohl(tcp->seq);
	if (tf & TCP_RST) {
		if (seq == rv->ack_max || seq == fv->seq_end)
			return T_RST_EXACT;
		if (!seq_before(seq, rv->ack_max) && !seq_after(seq, rv->win_end))
			return T_RST_WINDOW;
		/* An end that closed (its FIN acked, so it may be gone) answers a
		 * late duplicate of an old ACK, which the network may deliver,
		 * with a RST at that ACK's number: below the window by at most
		 * what the receiver ever let it have in flight. The receiver
		 * would discard it too; it is dropped like any other, but
		 * counted apart from blind RSTs, which are an attack's sign. */
		if ((fv->flags & FLOW_F_FIN) && !seq_before(rv->ack_max, fv->fin_end) && seq_before(seq, fv->fin_end) &&
		    !seq_before(seq, fv->fin_end - rv->win_max))
			return T_RST_CLOSED;
		return T_RST_DROP;
	}
	/* A SYN never reaches the other end: an endpoint without RFC 5961
	 * would reset the connection for one in its window. The engine answers
	 * it (a challenge ACK, or our ACK again for a retransmitted SYN-ACK). */
	if (tf & TCP_SYN)
		return T_SYN;
	/* Every segment after the handshake carries an ACK; one without moves
	 * nothing. */
	if (!(tf & TCP_ACK))
		return T_OUT_OF_WIN;
	__u32 end = seq + plen + ((tf & TCP_FIN) ? 1 : 0);
	__u32 ack = bpf_ntohl(tcp->ack_seq) + fv->ack_delta;
	__u32 ackwin = fv->win_max > ACK_WINDOW_MIN ? fv->win_max : ACK_WINDOW_MIN;
	/* Below the window, but every byte of it acknowledged by the receiver
	 * within its largest window (RFC 5961's bound for ACKs, on the data)
	 * and acking nothing unseen: an old duplicate, a retransmission that
	 * reordering on the way here delivered after newer segments (its ack
	 * is as old as its send time). A sender has at most the receiver's
	 * window in flight, but a late copy can trail the newest segment by
	 * more. Like conntrack since Linux 5.19 ("SEQ is under lower bound
	 * (already ACKed data retransmitted)": ignored, not INVALID) it is
	 * forwarded and says nothing about the connection now, so nothing is
	 * learned from it. Data not yet acknowledged below the window still
	 * means the tracking lost step. */
	if (seq_before(end, fv->seq_end - rv->win_max) && !seq_after(end, rv->ack_max) &&
	    !seq_before(end, rv->ack_max - rv->win_max) && !seq_after(ack, rv->seq_end))
		return T_OLD;
	if (seq_after(seq, rv->win_end) || seq_before(end, fv->seq_end - rv->win_max) ||
	    seq_before(ack, rv->seq_end - ackwin))
		return T_OUT_OF_WIN;
	if (seq_after(ack, rv->seq_end)) {
		/* It acks data this program did not see: the engine forwards the
		 * few segments that raced the flow's install. Believe it only from
		 * a segment at exactly the sender's next sequence number, which an
		 * off-path attacker knows no better than an exact RST's. */
		if (seq != fv->seq_end || seq_after(ack, rv->seq_end + ackwin))
			return T_OUT_OF_WIN;
		rv->seq_end = ack;
	}

	learn(fv, tcp, tf, end, ack);
	return T_LEARN;
}

/* resync judges a segment of a flow whose state may lag (FLOW_F_RESYNC on
 * either direction), after track gave verdict tk. A segment track accepted
 * shows this direction's state in step: its flag is cleared. One it judged
 * out of window is learned from all the same, as conntrack picks up a
 * connection it did not see open: the reverse direction's seq_end moves to
 * what it acks, this direction's state to the segment, and the flag stays
 * until a segment is in window. A RST outside a window that may be stale
 * goes to the engine, which forwards it for the receiver to judge; it is
 * never dropped. For an off-path attacker this is a window of a few
 * segments after a migration. */
static __always_inline int resync(struct flow_val *fv, struct flow_val *rv, struct tcphdr *tcp, __u8 tf,
				  __u32 plen, int tk)
{
	if (tk == T_LEARN) {
		fv->flags &= ~FLOW_F_RESYNC;
		return T_LEARN;
	}
	if (tk == T_RST_DROP || tk == T_RST_CLOSED)
		return T_RST_WINDOW;
	if (tk != T_OUT_OF_WIN || !(tf & TCP_ACK) || (tf & TCP_SYN))
		return tk;
	__u32 end = bpf_ntohl(tcp->seq) + plen + ((tf & TCP_FIN) ? 1 : 0);
	__u32 ack = bpf_ntohl(tcp->ack_seq) + fv->ack_delta;
	if (seq_after(ack, rv->seq_end))
		rv->seq_end = ack;
	learn(fv, tcp, tf, end, ack);
	return T_LEARN;
}

/* Judges a segment of the flow fv (whose key is *fk) against the reverse
 * direction, and marks FIN and RST. tf holds the TCP flags, plen the
 * payload length (an aggregate's whole payload on the TC path). Untracked entries (installed without sequence state)
 * keep the old rule: any FIN or RST marks the flow. fk is turned into the
 * reverse key: syngate_xdp's stack has no room for two. Not inlined, so
 * that its locals stay out of syngate_xdp's frame. */
static __attribute__((noinline)) int judge(struct flow_val *fv, struct flow_key *fk, struct tcphdr *tcp,
					   __u32 plen, __u32 tf)
{
	struct flow_val *rv = 0;
	if (fv->flags & FLOW_F_TRACKED) {
		copy16(fk->saddr, fv->daddr);
		copy16(fk->daddr, fv->saddr);
		fk->sport = fv->dport;
		fk->dport = fv->sport;
		rv = bpf_map_lookup_elem(&flows, fk);
	}
	if (!rv || !(rv->flags & FLOW_F_TRACKED)) {
		if ((tf & TCP_FIN) && !(fv->flags & FLOW_F_FIN))
			fv->flags |= FLOW_F_FIN;
		if ((tf & TCP_RST) && !(fv->flags & FLOW_F_RST))
			fv->flags |= FLOW_F_RST;
		return T_LEARN;
	}
	int tk = track(fv, rv, tcp, tf, plen);
	if ((fv->flags | rv->flags) & FLOW_F_RESYNC)
		tk = resync(fv, rv, tcp, tf, plen, tk);
	if (tk == T_RST_EXACT && !(fv->flags & FLOW_F_RST))
		fv->flags |= FLOW_F_RST;
	return tk;
}

/* --- ICMP errors about spliced flows, translated as a NAT does --- */

#define ICMP_DEST_UNREACH 3 /* includes code 4, fragmentation needed */
#define ICMP_TIME_EXCEEDED 11
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
/* Translated errors per second and CPU, and the burst: Linux's defaults of
 * net.ipv4.icmp_msgs_per_sec and icmp_msgs_burst. A translated error is
 * one for one, never an amplification; the bound is against a flood of
 * forged errors quoting guessed tuples reaching the backends. */
#define ICMP_RATE 1000
#define ICMP_BURST 50
/* Bound on the ICMP header's offset, for the verifier. */
#define ICMP_OFF_MAX 256
#define ICMP_V6 (1u << 24)

struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 check;
	__be32 rest; /* unused, or the next-hop MTU */
};

struct icmp_bucket {
	__u64 tokens; /* in nano-tokens: 1e9 is one error */
	__u64 last_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct icmp_bucket);
	__uint(max_entries, 1);
} icmp_bucket SEC(".maps");

/* Per-CPU room for icmp_error's key and FIB query: syngate_xdp's frame
 * leaves too little stack for them (the verifier adds the two frames). */
struct icmp_scratch {
	struct flow_key fk;
	struct bpf_fib_lookup fib;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct icmp_scratch);
	__uint(max_entries, 1);
} icmp_scratch SEC(".maps");

static __always_inline int icmp_allow(void)
{
	__u32 zero = 0;
	struct icmp_bucket *b = bpf_map_lookup_elem(&icmp_bucket, &zero);
	if (!b)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 full = ICMP_BURST * 1000000000ull;
	__u64 elapsed = now - b->last_ns;
	__u64 tokens = b->tokens;
	/* Per CPU: no other writer. The first call finds last_ns 0. */
	if (elapsed >= full / ICMP_RATE)
		tokens = full;
	else
		tokens += elapsed * ICMP_RATE;
	if (tokens > full)
		tokens = full;
	b->last_ns = now;
	if (tokens < 1000000000ull) {
		b->tokens = tokens;
		return 0;
	}
	b->tokens = tokens - 1000000000ull;
	return 1;
}

/* Adds to acc the change of a 16-byte address from old to new, and
 * writes new over old. */
static __always_inline __u32 csum_addr16(__u32 acc, __u8 *old, const __u8 *new)
{
	__u32 *o = (__u32 *)old;
	const __u32 *n = (const __u32 *)new;
	/* Not unrolled: four copies of this for four addresses spill enough
	 * registers to overflow the stack syngate_xdp leaves. */
#pragma clang loop unroll(disable)
	for (int i = 0; i < 4; i++) {
		acc = csum_add32(acc, bpf_ntohl(o[i]), bpf_ntohl(n[i]));
		o[i] = n[i];
	}
	return acc;
}

/* icmp_translate's result: forward the translated error, or pass or drop
 * it untouched with a reason. */
#define ICMP_FORWARD 0
#define ICMP_PASS(r) ((r) << 1)
#define ICMP_DROP(r) ((r) << 1 | 1)

/* icmp_error handles an ICMP (or ICMPv6) message to a service or local
 * address. An error (destination unreachable, fragmentation needed /
 * packet too big, time exceeded) quoting a packet of a spliced flow, as
 * that flow's translation sent it, is turned into the error its original
 * sender would get behind a NAT: outer addresses the flow's (the peer's
 * side address as source, the sender as destination), the quoted IP and
 * TCP headers' addresses, ports and sequence and acknowledgement numbers
 * back in the sender's spaces, the checksums fixed (ICMP, with the
 * pseudo-header for ICMPv6; the quoted IPv4 header; the quoted TCP
 * checksum when the quote holds the whole header). It is then forwarded
 * as the flow's packets are. Anything else passes to the kernel.
 *
 * pos packs the ICMP header's offset (bits 0-15), the IP header's (16-23)
 * and ICMP_V6. icmp_translate does the translation, shared by both
 * programs: it fills sc->fib for the next hop and returns ICMP_FORWARD
 * with *fvp the flow, else ICMP_PASS or ICMP_DROP with the reason; the
 * programs' wrappers forward (icmp_error, icmp_error_tc). */
static __always_inline __u32 icmp_translate(void *data, void *data_end, __u32 pos, __u32 ifindex,
					    struct icmp_scratch *sc, struct flow_val **fvp)
{
	__u32 off = pos & 0xffff, l3off = (pos >> 16) & 0xff;
	int is6 = !!(pos & ICMP_V6);
	if (off > ICMP_OFF_MAX || l3off > 32)
		return ICMP_PASS(R_PASS_NOT_TCP);
	/* end: where the IP packet ends. The frame may go on with Ethernet
	 * padding, which is no part of the quote nor of the checksum. */
	struct iphdr *o4 = 0, *i4 = 0;
	struct ipv6hdr *o6 = 0, *i6 = 0;
	__u32 end;
	if (is6) {
		o6 = data + l3off;
		if ((void *)(o6 + 1) > data_end)
			return ICMP_PASS(R_PASS_NOT_TCP);
		end = l3off + sizeof(*o6) + bpf_ntohs(o6->payload_len);
	} else {
		o4 = data + l3off;
		if ((void *)(o4 + 1) > data_end)
			return ICMP_PASS(R_PASS_NOT_TCP);
		end = l3off + bpf_ntohs(o4->tot_len);
	}
	struct icmphdr *ic = data + off;
	if ((void *)(ic + 1) > data_end || off + sizeof(*ic) > end)
		return ICMP_PASS(R_PASS_NOT_TCP);
	if (is6 ? ic->type != ICMPV6_DEST_UNREACH && ic->type != ICMPV6_PKT_TOOBIG &&
			  ic->type != ICMPV6_TIME_EXCEED
		: ic->type != ICMP_DEST_UNREACH && ic->type != ICMP_TIME_EXCEEDED)
		return ICMP_PASS(R_PASS_NOT_TCP);

	/* The quoted packet went from the flow's translated source to its
	 * translated destination: the reverse direction's key, which also
	 * holds the way back to the sender. */
	struct flow_key *fk = &sc->fk;
	struct bpf_fib_lookup *fib = &sc->fib;
	__builtin_memset(sc, 0, sizeof(*sc));
	struct tcphdr *itcp;
	__u32 itcp_off; /* the quoted TCP header's offset */
	if (is6) {
		i6 = (void *)(ic + 1);
		itcp_off = off + sizeof(*ic) + sizeof(*i6);
		if ((void *)(i6 + 1) > data_end || itcp_off > end || i6->nexthdr != IPPROTO_TCP)
			return ICMP_PASS(R_PASS_NOT_TCP);
		__u32 *a = (__u32 *)o6->daddr, *b = (__u32 *)i6->saddr;
		if ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]))
			return ICMP_PASS(R_PASS_ICMP_NO_FLOW);
		itcp = (void *)(i6 + 1);
		fk->family = AF_INET6;
		copy16(fk->saddr, i6->daddr);
		copy16(fk->daddr, i6->saddr);
	} else {
		i4 = (void *)(ic + 1);
		if ((void *)(i4 + 1) > data_end || off + sizeof(*ic) + sizeof(*i4) > end ||
		    (i4->ver_ihl >> 4) != 4 || i4->protocol != IPPROTO_TCP || (bpf_ntohs(i4->frag_off) & 0x1fff))
			return ICMP_PASS(R_PASS_NOT_TCP);
		__u32 ihl = (i4->ver_ihl & 0x0f) * 4;
		if (ihl < sizeof(*i4))
			return ICMP_PASS(R_PASS_NOT_TCP);
		itcp_off = off + sizeof(*ic) + ihl;
		if (o4->daddr != i4->saddr)
			return ICMP_PASS(R_PASS_ICMP_NO_FLOW);
		itcp = (void *)i4 + ihl;
		fk->family = AF_INET;
		set_mapped4(fk->saddr, i4->daddr);
		set_mapped4(fk->daddr, i4->saddr);
	}
	/* RFC 792 quotes at least the first 8 bytes: ports and sequence. */
	if ((void *)itcp + 8 > data_end || itcp_off + 8 > end)
		return ICMP_PASS(R_PASS_NOT_TCP);
	fk->sport = itcp->dest;
	fk->dport = itcp->source;
	struct flow_val *fv = bpf_map_lookup_elem(&flows, fk);
	if (!fv)
		return ICMP_PASS(R_PASS_ICMP_NO_FLOW);
	if (!icmp_allow())
		return ICMP_DROP(R_DROP_ICMP_RATELIMIT);

	/* The sender's view: it sent from fv->daddr:dport to fv->saddr:sport,
	 * its sequence numbers are ours minus the forward delta, which is the
	 * reverse flow's ack delta, and its acks ours minus the forward ack
	 * delta, the reverse flow's seq delta. */
	__u32 cacc = 0; /* the ICMP checksum's delta */
	__u32 tacc = 0; /* the quoted TCP checksum's delta */
	__u32 ocs;
	fib->ifindex = ifindex;
	if (is6) {
		/* Outer: the pseudo-header is in the ICMPv6 checksum. */
		cacc = csum_addr16(cacc, o6->saddr, fv->saddr);
		cacc = csum_addr16(cacc, o6->daddr, fv->daddr);
		tacc = csum_addr16(tacc, i6->saddr, fv->daddr);
		tacc = csum_addr16(tacc, i6->daddr, fv->saddr);
		cacc += tacc;
		fib->family = AF_INET6;
		fib->l4_protocol = IPPROTO_ICMPV6;
		fib->tot_len = sizeof(*o6) + bpf_ntohs(o6->payload_len);
		copy16((__u8 *)fib->src, o6->saddr);
		copy16((__u8 *)fib->dst, o6->daddr);
	} else {
		__be32 ns = ((__u32 *)fv->saddr)[3], nd = ((__u32 *)fv->daddr)[3];
		__u32 oacc = csum_add32(0, bpf_ntohl(o4->saddr), bpf_ntohl(ns));
		oacc = csum_add32(oacc, bpf_ntohl(o4->daddr), bpf_ntohl(nd));
		o4->saddr = ns;
		o4->daddr = nd;
		csum_apply(&o4->check, oacc);
		tacc = csum_add32(tacc, bpf_ntohl(i4->saddr), bpf_ntohl(nd));
		tacc = csum_add32(tacc, bpf_ntohl(i4->daddr), bpf_ntohl(ns));
		i4->saddr = nd;
		i4->daddr = ns;
		ocs = bpf_ntohs(i4->check);
		csum_apply(&i4->check, tacc);
		cacc = tacc + csum_add16(0, ocs, bpf_ntohs(i4->check));
		fib->family = AF_INET;
		fib->l4_protocol = IPPROTO_ICMP;
		fib->tot_len = bpf_ntohs(o4->tot_len);
		fib->src[0] = ns;
		fib->dst[0] = nd;
	}
	__u32 t = csum_add16(0, bpf_ntohs(itcp->source), bpf_ntohs(fv->dport));
	t = csum_add16(t, bpf_ntohs(itcp->dest), bpf_ntohs(fv->sport));
	itcp->source = fv->dport;
	itcp->dest = fv->sport;
	__u32 seq = bpf_ntohl(itcp->seq), nseq = seq + fv->ack_delta;
	t = csum_add32(t, seq, nseq);
	itcp->seq = bpf_htonl(nseq);
	if ((void *)(itcp + 1) <= data_end && itcp_off + sizeof(*itcp) <= end) {
		/* The whole header is quoted: its ack and checksum too. */
		if (itcp->flags & TCP_ACK) {
			__u32 ack = bpf_ntohl(itcp->ack_seq), nack = ack + fv->seq_delta;
			t = csum_add32(t, ack, nack);
			itcp->ack_seq = bpf_htonl(nack);
		}
		ocs = bpf_ntohs(itcp->check);
		csum_apply(&itcp->check, tacc + t);
		t = csum_add16(t, ocs, bpf_ntohs(itcp->check));
	}
	csum_apply(&ic->check, cacc + t);

	*fvp = fv;
	return ICMP_FORWARD;
}

/* The XDP side of icmp_error: translate, then forward like the flow's
 * packets. A global function, so the verifier checks it once. */
__attribute__((noinline)) int icmp_error(struct xdp_md *ctx, __u32 pos)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = data_end - data;
	__u32 zero = 0;
	struct icmp_scratch *sc = bpf_map_lookup_elem(&icmp_scratch, &zero);
	if (!sc)
		return count(R_PASS_NOT_TCP, bytes, XDP_PASS);
	struct flow_val *fv = 0;
	__u32 v = icmp_translate(data, data_end, pos, ctx->ingress_ifindex, sc, &fv);
	if (v != ICMP_FORWARD || !fv)
		return count(v >> 1, bytes, (v & 1) ? XDP_DROP : XDP_PASS);
	struct bpf_fib_lookup *fib = &sc->fib;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return count(R_PASS_NOT_TCP, bytes, XDP_PASS); /* cannot happen: l3off > 0 */
	__u32 oif;
	long rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(eth->dst, fib->dmac, 6);
		__builtin_memcpy(eth->src, fib->smac, 6);
		oif = fib->ifindex;
	} else {
		if (!fv->ifindex)
			return count(R_DROP_ICMP_NO_NEIGH, bytes, XDP_DROP);
		__builtin_memcpy(eth->dst, fv->dmac, 6);
		__builtin_memcpy(eth->src, fv->smac, 6);
		oif = fv->ifindex;
	}
	if (oif == ctx->ingress_ifindex)
		return count(R_ICMP_TX, bytes, XDP_TX);
	if (bpf_redirect_map(&tx_ports, oif, XDP_DROP) != XDP_REDIRECT)
		return count(R_DROP_ICMP_NO_PORT, bytes, XDP_DROP);
	return count(R_ICMP_REDIRECT, bytes, XDP_REDIRECT);
}

SEC("xdp")
int syngate_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = data_end - data;

	__be16 proto;
	void *l3 = l2_skip(data, data_end, &proto);
	if (!l3)
		return count(R_PASS_MALFORMED_ETH, bytes, XDP_PASS);
	struct ethhdr *eth = data; /* in bounds: l2_skip checked it */

	struct flow_key fk = {};
	struct iphdr *ip4 = 0;
	struct ipv6hdr *ip6 = 0;
	struct tcphdr *tcp;
	void *l4_end;
	int frag = 0, first_frag = 1;

	if (proto == bpf_htons(ETH_P_IP)) {
		ip4 = l3;
		if ((void *)(ip4 + 1) > data_end)
			return count(R_PASS_MALFORMED_IP, bytes, XDP_PASS);
		__u32 ihl = (ip4->ver_ihl & 0x0f) * 4;
		if ((ip4->ver_ihl >> 4) != 4 || ihl < sizeof(*ip4))
			return count(R_PASS_MALFORMED_IP, bytes, XDP_PASS);
		__u32 tot = bpf_ntohs(ip4->tot_len);
		if (tot < ihl || l3 + tot > data_end)
			return count(R_PASS_MALFORMED_IP, bytes, XDP_PASS);
		__u16 fo = bpf_ntohs(ip4->frag_off);
		if (ip4->protocol == IPPROTO_ICMP && !(fo & 0x3fff))
			return icmp_error(ctx, ((void *)ip4 + ihl - data) | (l3 - data) << 16);
		if (ip4->protocol != IPPROTO_TCP)
			return count(R_PASS_NOT_TCP, bytes, XDP_PASS);
		if (fo & 0x3fff) {
			frag = 1;
			first_frag = (fo & 0x1fff) == 0;
		}
		tcp = l3 + ihl;
		l4_end = l3 + tot;
		fk.family = AF_INET;
		set_mapped4(fk.saddr, ip4->saddr);
		set_mapped4(fk.daddr, ip4->daddr);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		ip6 = l3;
		if ((void *)(ip6 + 1) > data_end)
			return count(R_PASS_MALFORMED_IP, bytes, XDP_PASS);
		if ((bpf_ntohl(ip6->vtc_flow) >> 28) != 6)
			return count(R_PASS_MALFORMED_IP, bytes, XDP_PASS);
		__u32 plen = bpf_ntohs(ip6->payload_len);
		l4_end = (void *)(ip6 + 1) + plen;
		if (l4_end > data_end)
			return count(R_PASS_MALFORMED_IP, bytes, XDP_PASS);
		__u8 nh = ip6->nexthdr;
		void *p = ip6 + 1;
#pragma unroll
		for (int i = 0; i < IPV6_EXT_MAX; i++) {
			if (nh != 0 && nh != 43 && nh != 60 && nh != 44)
				break;
			__u8 *h = p;
			if ((void *)(h + 8) > l4_end || (void *)(h + 8) > data_end)
				return count(R_PASS_MALFORMED_IP, bytes, XDP_PASS);
			if (nh == 44) {
				__u16 fo = ((__u16)h[2] << 8) | h[3];
				frag = 1;
				first_frag = (fo & 0xfff8) == 0;
				p = h + 8;
			} else {
				p = h + ((__u32)h[1] + 1) * 8;
			}
			nh = h[0];
		}
		if (nh == 0 || nh == 43 || nh == 60 || nh == 44)
			return count(R_PASS_IPV6_EXT_LIMIT, bytes, XDP_PASS);
		if (p > l4_end)
			return count(R_PASS_MALFORMED_IP, bytes, XDP_PASS);
		if (nh == IPPROTO_ICMPV6 && !frag)
			return icmp_error(ctx, (p - data) | (l3 - data) << 16 | ICMP_V6);
		if (nh != IPPROTO_TCP)
			return count(R_PASS_NOT_TCP, bytes, XDP_PASS);
		tcp = p;
		fk.family = AF_INET6;
		copy16(fk.saddr, ip6->saddr);
		copy16(fk.daddr, ip6->daddr);
	} else {
		return count(R_PASS_NOT_IP, bytes, XDP_PASS);
	}

	if (frag && !first_frag)
		return count(R_PASS_FRAGMENT, bytes, XDP_PASS);
	if ((void *)tcp + 4 > l4_end || (void *)tcp + 4 > data_end)
		return count(R_PASS_MALFORMED_TCP, bytes, XDP_PASS);
	fk.sport = tcp->source;
	fk.dport = tcp->dest;

	/* Is it for us? */
	struct svc_val *svc;
	if (!dst_protected(&fk, &svc))
		return count(frag ? R_PASS_FRAGMENT : R_PASS_NOT_SERVICE, bytes, XDP_PASS);

	/* Protected from here on: malformed means drop. */
	if (frag)
		return count(R_DROP_FRAGMENT, bytes, XDP_DROP);
	if ((void *)(tcp + 1) > l4_end || (void *)(tcp + 1) > data_end)
		return count(R_DROP_TCP_TRUNCATED, bytes, XDP_DROP);
	__u32 doff = (tcp->doff_res >> 4) * 4;
	if (doff < sizeof(*tcp))
		return count(R_DROP_TCP_DOFF_SHORT, bytes, XDP_DROP);
	if ((void *)tcp + doff > l4_end)
		return count(R_DROP_TCP_DOFF_LONG, bytes, XDP_DROP);

	if (!tcp_options_valid(ctx, (void *)tcp - data, doff))
		return count(R_DROP_TCP_OPTIONS, bytes, XDP_DROP);

	/* TCP flags; bit 8 is set below for a segment outside the window. */
	__u32 tf = tcp->flags;
	if ((cfg.flags & CFG_DROP_BAD_FLAGS) && bad_flags(tf))
		return count(R_DROP_BAD_FLAGS, bytes, XDP_DROP);

	if (svc && (tf & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		/* A SYN with data and a Fast Open option is a TFO client (RFC
		 * 7413): it is answered like any SYN, with a SYN-ACK that
		 * acknowledges only the SYN, and the client sends its data again
		 * at once. Dropping it would cost the client a SYN timeout. */
		if ((cfg.flags & CFG_DROP_SYN_PAYLOAD) && (void *)tcp + doff < l4_end &&
		    !(syn_options(ctx, (void *)tcp - data, doff) & SO_TFO))
			return count(R_DROP_SYN_PAYLOAD, bytes, XDP_DROP);
		if ((cfg.flags & CFG_SYN_RATELIMIT) && !(svc->flags & SVC_F_NO_RATELIMIT) &&
		    !ratelimit_allow(fk.saddr, fk.family))
			return count(R_DROP_SYN_RATELIMIT, bytes, XDP_DROP);
		/* A SYN for a spliced 4-tuple is the engine's to judge. */
		int mint = (svc->flags & SVC_F_XDP_COOKIES) ||
			   ((svc->flags & SVC_F_STANDBY_COOKIES) && xsk_index(ctx) < 0);
		if (mint && !(may_have_flow(&fk) && bpf_map_lookup_elem(&flows, &fk))) {
			__u64 ann = svc->ann_window | (__u64)svc->ann_mss << 16 |
				    (__u64)svc->ann_wscale << 32 | (__u64)svc->ann_flags << 40;
			int rc = synack_cookie(ctx, ann);
			if (rc > 0)
				return count(R_TX_SYNACK_COOKIE, bytes, XDP_TX);
			if (rc < 0)
				return count(R_DROP_TCP_TRUNCATED, bytes, XDP_DROP);
		}
		return to_xsk(ctx, R_XSK_SYN, bytes);
	}

	struct flow_val *fv = bpf_map_lookup_elem(&flows, &fk);
	if (!fv) {
		if (!svc)
			return to_xsk(ctx, R_XSK_BACKEND, bytes);
		/* A FIN of a connection this gateway does not know may be one a
		 * peer gateway splices (an ECMP change moved it here): the engine
		 * hands it off like the connection's other segments. RSTs are
		 * still dropped. */
		if (tf & TCP_RST)
			return count(R_DROP_RST_FIN_UNKNOWN, bytes, XDP_DROP);
		if ((svc->flags & SVC_F_STANDBY_COOKIES) && (tf & (TCP_SYN | TCP_ACK)) == TCP_ACK &&
		    xsk_index(ctx) < 0)
			return keep_standby_ack(ctx, &fk, (void *)tcp + doff - data, bytes);
		return to_xsk(ctx, R_XSK_HANDSHAKE, bytes);
	}

	long l4len = (long)l4_end - (long)tcp;
	/* Keep the pointer difference 64-bit: clang would narrow it to 32-bit
	 * arithmetic, which the verifier refuses on pointers. */
	asm volatile("" : "+r"(l4len));
	int tk = judge(fv, &fk, tcp, (__u32)l4len - doff, tf);
	if (tk == T_RST_DROP)
		return count(R_DROP_RST_OUT_OF_WINDOW, bytes, XDP_DROP);
	if (tk == T_RST_CLOSED)
		return count(R_DROP_RST_CLOSED, bytes, XDP_DROP);
	if (tk == T_RST_WINDOW)
		return to_xsk(ctx, R_XSK_RST_IN_WINDOW, bytes);
	if (tk == T_SYN)
		return to_xsk(ctx, R_XSK_SYN_IN_FLOW, bytes);
	/* Carried in tf, not a variable of its own: one more value live across
	 * the rewrite spills past the stack the verifier allows together with
	 * synack_cookie's frame. */
	if (tk == T_OUT_OF_WIN)
		tf |= TF_OUT_OF_WIN;
	if (tk == T_OLD)
		tf |= TF_OLD;

	struct bpf_fib_lookup fib = {};
	fib.ifindex = ctx->ingress_ifindex;
	/* A TC-datapath interface: its segment may carry a partial checksum
	 * (and GRO has yet to merge it); syngate_tc splices it after GRO.
	 * Judged above like any segment (here each arrives on its own); the
	 * sender's timestamp is learned here too, where the window verdict is
	 * known: the options walk with zero deltas reads it and changes
	 * nothing. fib.ifindex doubles as the key: the stack is at its limit. */
	if (bpf_map_lookup_elem(&tc_ifaces, &fib.ifindex)) {
		if (!(tf & (TF_OUT_OF_WIN | TF_OLD)) && (fv->flags & FLOW_F_TRACKED))
			learn_ts(fv, tcp_options_rewrite(ctx, ((void *)tcp - data) | (doff << 16) |
								  ((__u32)tf << 24), 0, 0, 0));
		return count((tf & TF_OUT_OF_WIN) ? R_PASS_TC_OUT_OF_WINDOW : R_PASS_TC_FLOW, bytes, XDP_PASS);
	}

	/* Fast path: account, rewrite, forward. */
	flow_account(fv, 1, bytes);
	if (ip4)
		fib.tot_len = bpf_ntohs(ip4->tot_len);
	else if (ip6)
		fib.tot_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	__u64 deltas = splice_rewrite(ip4, ip6, tcp, fv, &fib);
	__u32 acc = (__u32)deltas + (__u32)(deltas >> 32);
	/* Timestamps and SACK blocks. */
	__u64 opt = tcp_options_rewrite(ctx, ((void *)tcp - data) | (doff << 16) | ((__u32)tf << 24),
					fv->ack_delta, fv->tsval_delta, fv->tsecr_delta);
	acc += (__u16)opt;
	if (!(tf & (TF_OUT_OF_WIN | TF_OLD)))
		learn_ts(fv, opt);
	csum_apply(&tcp->check, acc);

	/* Next hop. */
	__u32 oif;
	long rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(eth->dst, fib.dmac, 6);
		__builtin_memcpy(eth->src, fib.smac, 6);
		oif = fib.ifindex;
	} else if (rc == BPF_FIB_LKUP_RET_BLACKHOLE || rc == BPF_FIB_LKUP_RET_UNREACHABLE ||
		   rc == BPF_FIB_LKUP_RET_PROHIBIT || rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		return count(R_DROP_FAST_NO_ROUTE, bytes, XDP_DROP);
	} else {
		/* No neighbour (or forwarding disabled, or the lookup cannot
		 * decide): use what the handshake taught us. */
		if (!fv->ifindex)
			return count(R_DROP_FAST_NO_NEIGH, bytes, XDP_DROP);
		__builtin_memcpy(eth->dst, fv->dmac, 6);
		__builtin_memcpy(eth->src, fv->smac, 6);
		oif = fv->ifindex;
	}

	/* The forwarding reasons come in (TX, REDIRECT) pairs. */
	__u32 fwd = (tf & TF_OUT_OF_WIN) ? R_FAST_TX_OUT_OF_WINDOW : R_FAST_TX;
	if (oif == ctx->ingress_ifindex)
		return count(fwd, bytes, XDP_TX);
	if (bpf_redirect_map(&tx_ports, oif, XDP_DROP) != XDP_REDIRECT)
		return count(R_DROP_FAST_NO_PORT, bytes, XDP_DROP);
	return count(fwd + 1, bytes, XDP_REDIRECT);
}

/* --- the TC data path --- */

/* How much of a segment syngate_tc needs in the skb's linear area: Ethernet,
 * a VLAN tag, an IPv6 header with a few extension headers, a full TCP
 * header. Longer headers pass on to the next program or the kernel. */
#define TC_PULL_LEN 256

/* Folds a 16-bit host-order one's complement sum into the __wsum the
 * checksum helpers take (network-order words in memory). */
static __always_inline __u64 to_wsum(__u32 acc)
{
	return (__u64)bpf_htons(csum_fold(acc));
}

/* Applies a splice's TCP checksum deltas through the helper, which knows
 * the skb's checksum state: with CHECKSUM_PARTIAL (a segment from a local
 * socket over veth) the field holds only the pseudo-header sum and only the
 * address delta applies; otherwise both do, and with CHECKSUM_COMPLETE
 * skb->csum follows. BPF_F_IPV6 (kernel 6.16+) keeps a complete IPv6
 * skb->csum right; older kernels refuse the flag and get the call without. */
static __always_inline long tc_csum(struct __sk_buff *skb, __u32 check_off, __u32 pseudo, __u32 l4, int is6)
{
	long rc = bpf_l4_csum_replace(skb, check_off, 0, to_wsum(pseudo),
				      BPF_F_PSEUDO_HDR | (is6 ? BPF_F_IPV6 : 0));
	if (rc && is6)
		rc = bpf_l4_csum_replace(skb, check_off, 0, to_wsum(pseudo), BPF_F_PSEUDO_HDR);
	if (rc)
		return rc;
	return bpf_l4_csum_replace(skb, check_off, 0, to_wsum(l4), 0);
}

static __always_inline long tc_set_macs(struct __sk_buff *skb, const __u8 *dmac, const __u8 *smac)
{
	long rc = bpf_skb_store_bytes(skb, 0, dmac, 6, 0);
	if (!rc)
		rc = bpf_skb_store_bytes(skb, 6, smac, 6, 0);
	return rc;
}

#include "syngate_tc.h"

char __license[] SEC("license") = "Dual MIT/GPL";
