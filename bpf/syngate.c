//go:build ignore

/* syngate's XDP program: steer handshakes of protected services to AF_XDP,
 * splice established flows in place, pass everything else untouched.
 *
 * Decision table (mirrored by the Go reference classifier in the tests):
 *
 *   not IPv4/IPv6, not TCP, not for a service or local port  -> PASS
 *   malformed below the point where the destination port is known -> PASS
 *   malformed TCP to a service/local (truncated, bad data offset, options
 *   overrunning the header), fragments to a service/local      -> DROP
 *   early defenses (optional, see struct config)               -> DROP
 *   service: SYN without ACK                                   -> XSK
 *   service/local: 4-tuple in the flow table                   -> fast path
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
	R_MAX,
};

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

struct svc_val {
	__u32 id;
	__u32 flags;
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

#define FLOW_F_FIN 0x1
#define FLOW_F_RST 0x2

/* The translation for one direction of a spliced connection. The first part
 * is written by Go; flags, last_seen_ns, packets and bytes by this program. */
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

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
	__uint(max_entries, 262144);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct rl_key);
	__type(value, struct rl_val);
	__uint(max_entries, 65536);
} ratelimit SEC(".maps");

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

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 64);
} tx_ports SEC(".maps");

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

static __always_inline int count(__u32 r, __u64 bytes, int action)
{
	struct counter *c = bpf_map_lookup_elem(&counters, &r);
	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
	return action;
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

static __always_inline int to_xsk(struct xdp_md *ctx, __u32 reason, __u64 bytes)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 q = ctx->rx_queue_index;
	__u32 *slot = bpf_map_lookup_elem(&ifslots, &ifindex);
	if (!slot || *slot >= MAX_IFACES || q >= MAX_QUEUES)
		return count(R_DROP_NO_SOCKET, bytes, XDP_DROP);
	__u32 idx = *slot * MAX_QUEUES + q;
	if (!bpf_map_lookup_elem(&xsks, &idx))
		return count(R_DROP_NO_SOCKET, bytes, XDP_DROP);
	long ret = bpf_redirect_map(&xsks, idx, XDP_DROP);
	if (ret != XDP_REDIRECT)
		return count(R_DROP_NO_SOCKET, bytes, XDP_DROP);
	return count(reason, bytes, XDP_REDIRECT);
}

/* The option walks are global functions so that the verifier checks each once
 * with unknown arguments, instead of once per path that reaches them.
 * tcp_off is the TCP header's offset in the packet, doff its length. */

/* Options must be well-formed TLVs inside the header; timestamps and SACK
 * must have their only valid lengths. */
__attribute__((noinline)) int tcp_options_valid(struct xdp_md *ctx, __u32 tcp_off, __u32 doff)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
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

/* Adds the deltas to TSval/TSecr and, on ACKs, to SACK block edges.
 * pos packs tcp_off (16 bits), doff (8) and the TCP flags (8). Returns the
 * TCP checksum delta, folded to 16 bits. */
__attribute__((noinline)) __u32 tcp_options_rewrite(struct xdp_md *ctx, __u32 pos, __u32 ack_delta,
						     __u32 tsval_delta, __u32 tsecr_delta)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 tcp_off = pos & 0xffff, doff = (pos >> 16) & 0xff, tf = pos >> 24;
	if (tcp_off > TCP_OFF_MAX || doff > 60)
		return 0;
	__u8 *tcp = data + tcp_off;
	__u32 acc = 0;
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
	return csum_fold(acc);
}

SEC("xdp")
int syngate_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = data_end - data;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return count(R_PASS_MALFORMED_ETH, bytes, XDP_PASS);
	__be16 proto = eth->proto;
	void *l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		struct vlanhdr *vh = l3;
		if ((void *)(vh + 1) > data_end)
			return count(R_PASS_MALFORMED_ETH, bytes, XDP_PASS);
		proto = vh->proto;
		l3 = vh + 1;
	}

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
		if (ip4->protocol != IPPROTO_TCP)
			return count(R_PASS_NOT_TCP, bytes, XDP_PASS);
		__u16 fo = bpf_ntohs(ip4->frag_off);
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

	/* Is it for us? One hash lookup for everything that is not. */
	struct svc_key sk = {};
	copy16(sk.addr, fk.daddr);
	sk.port = fk.dport;
	sk.family = fk.family;
	struct svc_val *svc = bpf_map_lookup_elem(&services, &sk);
	if (!svc) {
		__u16 dport = bpf_ntohs(fk.dport);
		if (dport < cfg.local_port_min || dport > cfg.local_port_max)
			return count(frag ? R_PASS_FRAGMENT : R_PASS_NOT_SERVICE, bytes, XDP_PASS);
		struct local_key lk = {};
		copy16(lk.addr, fk.daddr);
		lk.family = fk.family;
		if (!bpf_map_lookup_elem(&locals, &lk))
			return count(frag ? R_PASS_FRAGMENT : R_PASS_NOT_SERVICE, bytes, XDP_PASS);
	}

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

	__u8 tf = tcp->flags;
	if ((cfg.flags & CFG_DROP_BAD_FLAGS) && bad_flags(tf))
		return count(R_DROP_BAD_FLAGS, bytes, XDP_DROP);

	if (svc && (tf & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		if ((cfg.flags & CFG_DROP_SYN_PAYLOAD) && (void *)tcp + doff < l4_end)
			return count(R_DROP_SYN_PAYLOAD, bytes, XDP_DROP);
		if ((cfg.flags & CFG_SYN_RATELIMIT) && !(svc->flags & SVC_F_NO_RATELIMIT) &&
		    !ratelimit_allow(fk.saddr, fk.family))
			return count(R_DROP_SYN_RATELIMIT, bytes, XDP_DROP);
		return to_xsk(ctx, R_XSK_SYN, bytes);
	}

	struct flow_val *fv = bpf_map_lookup_elem(&flows, &fk);
	if (!fv) {
		if (!svc)
			return to_xsk(ctx, R_XSK_BACKEND, bytes);
		if (tf & (TCP_RST | TCP_FIN))
			return count(R_DROP_RST_FIN_UNKNOWN, bytes, XDP_DROP);
		return to_xsk(ctx, R_XSK_HANDSHAKE, bytes);
	}

	/* Fast path: account, rewrite, forward. */
	fv->last_seen_ns = bpf_ktime_get_ns();
	__sync_fetch_and_add(&fv->packets, 1);
	__sync_fetch_and_add(&fv->bytes, bytes);
	if ((tf & TCP_FIN) && !(fv->flags & FLOW_F_FIN))
		fv->flags |= FLOW_F_FIN;
	if ((tf & TCP_RST) && !(fv->flags & FLOW_F_RST))
		fv->flags |= FLOW_F_RST;

	__u32 acc = 0; /* TCP checksum delta */
	struct bpf_fib_lookup fib = {};
	fib.l4_protocol = IPPROTO_TCP;
	fib.sport = fv->sport;
	fib.dport = fv->dport;
	fib.ifindex = ctx->ingress_ifindex;

	if (ip4) {
		__be32 ns = ((__u32 *)fv->saddr)[3];
		__be32 nd = ((__u32 *)fv->daddr)[3];
		__u32 iacc = 0;
		iacc = csum_add32(iacc, bpf_ntohl(ip4->saddr), bpf_ntohl(ns));
		iacc = csum_add32(iacc, bpf_ntohl(ip4->daddr), bpf_ntohl(nd));
		ip4->saddr = ns;
		ip4->daddr = nd;
		csum_apply(&ip4->check, iacc);
		acc = iacc;
		fib.family = AF_INET;
		fib.tot_len = bpf_ntohs(ip4->tot_len);
		fib.src[0] = ns;
		fib.dst[0] = nd;
	} else if (ip6) {
		__u32 *os = (__u32 *)ip6->saddr;
		__u32 *od = (__u32 *)ip6->daddr;
		__u32 *ns = (__u32 *)fv->saddr;
		__u32 *nd = (__u32 *)fv->daddr;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			acc = csum_add32(acc, bpf_ntohl(os[i]), bpf_ntohl(ns[i]));
			acc = csum_add32(acc, bpf_ntohl(od[i]), bpf_ntohl(nd[i]));
			os[i] = ns[i];
			od[i] = nd[i];
			fib.src[i] = ns[i];
			fib.dst[i] = nd[i];
		}
		fib.family = AF_INET6;
		fib.tot_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
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

	/* Timestamps and SACK blocks. */
	acc += tcp_options_rewrite(ctx, ((void *)tcp - data) | (doff << 16) | ((__u32)tf << 24),
				   fv->ack_delta, fv->tsval_delta, fv->tsecr_delta);
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

	if (oif == ctx->ingress_ifindex)
		return count(R_FAST_TX, bytes, XDP_TX);
	if (bpf_redirect_map(&tx_ports, oif, XDP_DROP) != XDP_REDIRECT)
		return count(R_DROP_FAST_NO_PORT, bytes, XDP_DROP);
	return count(R_FAST_REDIRECT, bytes, XDP_REDIRECT);
}

char __license[] SEC("license") = "Dual MIT/GPL";
