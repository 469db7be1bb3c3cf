/* syngate_tc: the whole program of a TC-datapath interface (included by
 * syngate.c, whose helpers it shares).
 *
 * On an interface with `datapath: tc` no XDP program runs: native XDP on a
 * veth turns the peer's TSO off and copies every frame before GRO, which
 * costs routed and spliced traffic alike. This program, at the head of the
 * interface's tcx ingress, after GRO, applies the XDP program's decision
 * table itself (see the table in syngate.c), with these differences:
 *
 *   - "XSK" (to the engine) is a copy into the interface's ring buffer
 *     (tc_rings), read by the engine (package ringport), and the packet is
 *     dropped. A frame or aggregate that fits TC_SNAP is copied whole (the
 *     engine cuts held data to the leg's MSS); a longer one is copied up
 *     to the end of its TCP header (TC_REC_HEADERS): its payload is lost,
 *     and the sender retransmits it, by then to a splice.
 *   - "no socket" is "no engine": tc_engine holds no socket (the engine
 *     keeps one there while it lives; the kernel removes it when the
 *     process ends, however it ends), or the copy failed (the ring is
 *     full: the engine is stuck or gone). Standby cookies and kept ACKs
 *     apply then, as in XDP.
 *   - TX (a cookie SYN-ACK, an ICMP error back out) is a redirect to the
 *     egress of the same interface; the checksum state of the skb is kept
 *     right (see tc_synack).
 *   - Segments of spliced flows are judged as one segment per skb: an
 *     aggregate's sequence range is its head's sequence number and its
 *     whole payload.
 *
 * Anything not for a service or a local port goes on untouched
 * (TC_ACT_UNSPEC: tcx's next program, then the kernel). */

/* The engine's packets of one TC interface: a ring buffer each, keyed by
 * ifindex, created and read by the engine (Go: ringport). */
#define TC_RING_SIZE (4 << 20)

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, MAX_TC_IFACES);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_RINGBUF);
		__uint(max_entries, TC_RING_SIZE);
	});
} tc_rings SEC(".maps");

/* A socket of the running engine at key 0 (any socket a sockmap takes: a
 * bound UDP socket). The kernel deletes it from the map when it is closed,
 * so an empty slot means no engine. Not pinned: it lives with the engine. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} tc_engine SEC(".maps");

/* A record of tc_rings: this header, then len bytes of the frame from its
 * Ethernet header on. Mirrored by ringport.Header. */
/* A local sender's first flight after the handshake comes as one
 * aggregate: an initial window of ten 1448-byte segments (14,480 bytes and
 * headers) fits, as does a 9000-byte MTU's frame with a VLAN tag. */
#define TC_SNAP 16384
#define TC_REC_HEADERS 0x1 /* the payload was cut off after the TCP header */

struct tc_rec_hdr {
	__u32 ifindex;
	__u32 queue;  /* skb->queue_mapping */
	__u32 len;    /* bytes of frame that follow */
	__u32 flags;  /* TC_REC_* */
};

struct tc_rec {
	struct tc_rec_hdr hdr;
	__u8 frame[TC_SNAP];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct tc_rec);
	__uint(max_entries, 1);
} tc_scratch SEC(".maps");

/* Whether an engine runs (see tc_engine). */
static __always_inline int tc_engine_alive(void)
{
	__u32 zero = 0;
	void *sk = bpf_map_lookup_elem(&tc_engine, &zero);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* tc_to_engine copies the skb's frame into its interface's ring (the whole
 * frame, or its headers up to hdr_len, see TC_REC_HEADERS). Returns 1 when
 * the engine will see it. A global function, so the verifier checks the
 * copy once. */
__attribute__((noinline)) int tc_to_engine(struct __sk_buff *skb, __u32 hdr_len)
{
	__u32 zero = 0, ifindex = skb->ingress_ifindex;
	struct tc_rec *r = bpf_map_lookup_elem(&tc_scratch, &zero);
	void *ring = bpf_map_lookup_elem(&tc_rings, &ifindex);
	if (!r || !ring)
		return 0;
	__u32 len = skb->len, flags = 0;
	if (len > TC_SNAP) {
		len = hdr_len;
		flags = TC_REC_HEADERS;
	}
	if (len < 1 || len > TC_SNAP)
		return 0;
	if (bpf_skb_load_bytes(skb, 0, r->frame, len))
		return 0;
	r->hdr.ifindex = ifindex;
	r->hdr.queue = skb->queue_mapping;
	r->hdr.len = len;
	r->hdr.flags = flags;
	return bpf_ringbuf_output(ring, r, sizeof(r->hdr) + len, 0) == 0;
}

static __always_inline int tc_steer(struct __sk_buff *skb, __u32 reason, __u32 hdr_len, __u32 segs, __u64 bytes)
{
	if (!tc_to_engine(skb, hdr_len))
		return count_n(R_DROP_NO_SOCKET, segs, bytes, TC_ACT_SHOT);
	return count_n(reason, segs, bytes, TC_ACT_SHOT);
}

/* tc_keep_standby_ack is keep_standby_ack for an skb: the headers up to
 * hdr_len, loaded with bpf_skb_load_bytes. */
static __always_inline int tc_keep_standby_ack(struct __sk_buff *skb, struct flow_key *fk, __u32 hdr_len,
					       __u64 bytes)
{
	__u32 zero = 0;
	struct standby_buf *b = bpf_map_lookup_elem(&standby_scratch, &zero);
	if (b && hdr_len >= 1 && hdr_len <= STANDBY_FRAME && !bpf_skb_load_bytes(skb, 0, b->ack.frame, hdr_len)) {
		__builtin_memcpy(&b->key, fk, sizeof(*fk));
		b->ack.len = hdr_len;
		b->ack.ifindex = skb->ingress_ifindex;
		b->ack.at_ns = bpf_ktime_get_ns();
		bpf_map_update_elem(&standby_acks, &b->key, &b->ack, BPF_ANY);
	}
	return count(R_DROP_NO_SOCKET, bytes, TC_ACT_SHOT);
}

/* tc_synack turns the SYN into its cookie SYN-ACK (synack_cookie's reply)
 * and sends it back out of the interface it came in on. Returns 1 when
 * sent, 0 when the engine must answer, -1 when the skb could not be
 * rewritten.
 *
 * The checksum, for each state the skb may be in: the TCP checksum field
 * is written as a partial checksum (the pseudo-header's sum), then the
 * rest of the sum is added through bpf_l4_csum_replace without
 * BPF_F_PSEUDO_HDR, which the kernel applies to every state but
 * CHECKSUM_PARTIAL. So a SYN from a local socket over veth (partial) leaves
 * as a partial SYN-ACK that the peer's stack, or a NIC, completes, and any
 * other leaves with a complete checksum. A CHECKSUM_COMPLETE skb->csum
 * would no longer match the frame: bpf_skb_change_tail drops that state
 * (to CHECKSUM_NONE) whenever it changes the length, so the length is
 * changed twice when the reply is as long as the SYN. A global function,
 * so the verifier checks it once. */
__attribute__((noinline)) int tc_synack(struct __sk_buff *skb, __u64 ann)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 zero = 0;
	__u64 now = 0;
	struct cookie_slot *ck = cookie_fresh(&now);
	struct synack_work *w = bpf_map_lookup_elem(&synack_scratch, &zero);
	if (!ck || !w)
		return 0;
	__u32 doff = synack_locate(data, data_end, w);
	if (!doff)
		return 0;
	__u64 so = syn_options_tc(skb, w->tcp_off, doff);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (!synack_build(data, data_end, so, ann, ck, now, w))
		return 0;
	__u16 full = ~w->b.th.check; /* the complete sum, folded */
	__u16 pseudo = csum_fold((__u32)bpf_csum_diff(0, 0, (__be32 *)w->b.ph, sizeof(w->b.ph), 0));
	w->b.th.check = pseudo;

	__u32 len = w->tcp_off + w->tcplen;
	if (len == skb->len && bpf_skb_change_tail(skb, len + 1, 0))
		return 0;
	if (bpf_skb_change_tail(skb, len, 0))
		return -1;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (synack_write(data, data_end, w) != 1)
		return -1;
	if (bpf_l4_csum_replace(skb, w->tcp_off + 16, 0, (__u32)full + pseudo, 0))
		return -1;
	return 1;
}

/* tc_forward sends a rewritten skb on with the FIB's next hop (fib filled
 * by the caller), or the kernel's neighbour resolution, or what the
 * handshake taught the flow. ok and neigh are the reasons of the first
 * two ways. */
static __always_inline int tc_forward(struct __sk_buff *skb, struct bpf_fib_lookup *fib, struct flow_val *fv,
				      __u32 segs, __u64 bytes, __u32 ok, __u32 neigh)
{
	long rc = bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (tc_set_macs(skb, fib->dmac, fib->smac))
			return count_n(R_DROP_TC_CSUM, segs, bytes, TC_ACT_SHOT);
		return count_n(ok, segs, bytes, bpf_redirect(fib->ifindex, 0));
	}
	if (rc == BPF_FIB_LKUP_RET_BLACKHOLE || rc == BPF_FIB_LKUP_RET_UNREACHABLE ||
	    rc == BPF_FIB_LKUP_RET_PROHIBIT || rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return count_n(R_DROP_FAST_NO_ROUTE, segs, bytes, TC_ACT_SHOT);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return count_n(neigh, segs, bytes, bpf_redirect_neigh(fib->ifindex, 0, 0, 0));
	/* Forwarding disabled, or the lookup cannot decide: use what the
	 * handshake taught us, as the XDP path does. */
	if (!fv->ifindex)
		return count_n(R_DROP_FAST_NO_NEIGH, segs, bytes, TC_ACT_SHOT);
	__u32 oif = fv->ifindex;
	if (tc_set_macs(skb, fv->dmac, fv->smac))
		return count_n(R_DROP_TC_CSUM, segs, bytes, TC_ACT_SHOT);
	return count_n(ok, segs, bytes, bpf_redirect(oif, 0));
}

/* icmp_error for an skb: translate, then forward like the flow's packets.
 * ICMP errors are built whole by the routers that send them (no partial
 * checksum), so the direct rewrite holds. A global function, so the
 * verifier checks it once. */
__attribute__((noinline)) int icmp_error_tc(struct __sk_buff *skb, __u32 pos)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u64 bytes = skb->len;
	__u32 zero = 0;
	struct icmp_scratch *sc = bpf_map_lookup_elem(&icmp_scratch, &zero);
	if (!sc)
		return count(R_PASS_NOT_TCP, bytes, TC_ACT_UNSPEC);
	struct flow_val *fv = 0;
	__u32 v = icmp_translate(data, data_end, pos, skb->ingress_ifindex, sc, &fv);
	if (v != ICMP_FORWARD || !fv)
		return count(v >> 1, bytes, (v & 1) ? TC_ACT_SHOT : TC_ACT_UNSPEC);
	return tc_forward(skb, &sc->fib, fv, 1, bytes, R_ICMP_REDIRECT, R_ICMP_REDIRECT);
}

/* tc_splice rewrites a spliced flow's skb (one segment or an aggregate:
 * rewriting its head is enough, segmentation copies the head's addresses,
 * ports, window and options and numbers each segment from the head's
 * sequence) and forwards it. The checksum deltas go through
 * bpf_l4_csum_replace, which knows the skb's checksum state (tc_csum). */
static __always_inline int tc_splice(struct __sk_buff *skb, struct iphdr *ip4, struct ipv6hdr *ip6,
				     struct tcphdr *tcp, struct flow_val *fv, __u32 pos, int learn)
{
	__u32 tcp_off = pos & 0xffff, doff = (pos >> 16) & 0xff;
	/* An aggregate stands for gso_segs segments, each with its own headers. */
	__u32 segs = skb->gso_segs ? skb->gso_segs : 1;
	__u64 bytes = skb->len + (__u64)(segs - 1) * (tcp_off + doff);
	flow_account(fv, segs, bytes);

	struct bpf_fib_lookup fib = {};
	fib.ifindex = skb->ingress_ifindex;
	/* tot_len 0: the helper checks the egress MTU against the skb, which
	 * lets an aggregate through (segmentation makes it fit). */
	fib.tot_len = 0;
	__u64 deltas = splice_rewrite(ip4, ip6, tcp, fv, &fib);
	__u32 pseudo = deltas >> 32, l4 = (__u32)deltas;
	__u32 check_off = tcp_off + __builtin_offsetof(struct tcphdr, check);
	int is6 = ip6 != 0;
	__u64 opt = tcp_options_rewrite_tc(skb, pos, fv->ack_delta, fv->tsval_delta, fv->tsecr_delta);
	l4 += (__u16)opt;
	if (learn)
		learn_ts(fv, opt);
	/* The helpers below may move the packet: no packet pointer after this. */
	if (tc_csum(skb, check_off, pseudo, l4, is6))
		return count_n(R_DROP_TC_CSUM, segs, bytes, TC_ACT_SHOT);
	return tc_forward(skb, &fib, fv, segs, bytes, R_TC_REDIRECT, R_TC_REDIRECT_NEIGH);
}

/* Whether the skb's linear area lacks some of the headers syngate_tc reads:
 * Ethernet, a VLAN tag, the IP header, the TCP header with its options (an
 * ICMP error's quote, or IPv6 extension headers, count as lacking: they are
 * not sized here). Pulling costs a copy, and for an aggregate from a local
 * socket, whose headers are linear and payload in page fragments, often a
 * new head: on every segment of every connection, spliced or routed, that
 * is most of what the program would cost. So only when needed. */
static __always_inline int tc_short_headers(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return 1;
	__be16 proto = eth->proto;
	void *l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		struct vlanhdr *vh = l3;
		if ((void *)(vh + 1) > data_end)
			return 1;
		proto = vh->proto;
		l3 = vh + 1;
	}
	struct tcphdr *tcp;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip4 = l3;
		if ((void *)(ip4 + 1) > data_end)
			return 1;
		if (ip4->protocol == IPPROTO_ICMP)
			return 1;
		if (ip4->protocol != IPPROTO_TCP)
			return 0;
		tcp = l3 + (ip4->ver_ihl & 0x0f) * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > data_end)
			return 1;
		if (ip6->nexthdr != IPPROTO_TCP)
			return 1;
		tcp = (void *)(ip6 + 1);
	} else {
		return 0;
	}
	if ((void *)(tcp + 1) > data_end)
		return 1;
	return (void *)tcp + (tcp->doff_res >> 4) * 4 > data_end;
}

SEC("tc")
int syngate_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (skb->len > data_end - data && tc_short_headers(data, data_end)) {
		bpf_skb_pull_data(skb, skb->len < TC_PULL_LEN ? skb->len : TC_PULL_LEN);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	__u64 bytes = skb->len;

	__be16 proto;
	void *l3 = l2_skip(data, data_end, &proto);
	if (!l3)
		return count(R_PASS_MALFORMED_ETH, bytes, TC_ACT_UNSPEC);

	struct flow_key fk = {};
	struct iphdr *ip4 = 0;
	struct ipv6hdr *ip6 = 0;
	struct tcphdr *tcp;
	__u32 l3_len; /* the IP packet's length: the skb's, less Ethernet padding */
	__u32 l3off = l3 - data;
	__u32 frame_l3 = skb->len - l3off;
	int frag = 0, first_frag = 1;

	if (proto == bpf_htons(ETH_P_IP)) {
		ip4 = l3;
		if ((void *)(ip4 + 1) > data_end)
			return count(R_PASS_MALFORMED_IP, bytes, TC_ACT_UNSPEC);
		__u32 ihl = (ip4->ver_ihl & 0x0f) * 4;
		if ((ip4->ver_ihl >> 4) != 4 || ihl < sizeof(*ip4))
			return count(R_PASS_MALFORMED_IP, bytes, TC_ACT_UNSPEC);
		/* An aggregate's tot_len is its whole length, or 0 beyond 64 KiB
		 * (BIG TCP): then the skb's length is the packet's. */
		__u32 tot = bpf_ntohs(ip4->tot_len);
		l3_len = tot ? tot : frame_l3;
		if (l3_len < ihl || l3_len > frame_l3)
			return count(R_PASS_MALFORMED_IP, bytes, TC_ACT_UNSPEC);
		__u16 fo = bpf_ntohs(ip4->frag_off);
		if (ip4->protocol == IPPROTO_ICMP && !(fo & 0x3fff))
			return icmp_error_tc(skb, (l3off + ihl) | l3off << 16);
		if (ip4->protocol != IPPROTO_TCP)
			return count(R_PASS_NOT_TCP, bytes, TC_ACT_UNSPEC);
		if (fo & 0x3fff) {
			frag = 1;
			first_frag = (fo & 0x1fff) == 0;
		}
		tcp = l3 + ihl;
		fk.family = AF_INET;
		set_mapped4(fk.saddr, ip4->saddr);
		set_mapped4(fk.daddr, ip4->daddr);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		ip6 = l3;
		if ((void *)(ip6 + 1) > data_end || (bpf_ntohl(ip6->vtc_flow) >> 28) != 6)
			return count(R_PASS_MALFORMED_IP, bytes, TC_ACT_UNSPEC);
		__u32 plen = bpf_ntohs(ip6->payload_len);
		l3_len = plen ? sizeof(*ip6) + plen : frame_l3;
		if (l3_len > frame_l3)
			return count(R_PASS_MALFORMED_IP, bytes, TC_ACT_UNSPEC);
		__u8 nh = ip6->nexthdr;
		void *p = ip6 + 1;
#pragma unroll
		for (int i = 0; i < IPV6_EXT_MAX; i++) {
			if (nh != 0 && nh != 43 && nh != 60 && nh != 44)
				break;
			__u8 *h = p;
			if ((void *)(h + 8) > data_end)
				return count(R_PASS_MALFORMED_IP, bytes, TC_ACT_UNSPEC);
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
			return count(R_PASS_IPV6_EXT_LIMIT, bytes, TC_ACT_UNSPEC);
		long l4off = (long)p - (long)data;
		/* 64-bit, see judge's caller in syngate_xdp. */
		asm volatile("" : "+r"(l4off));
		if (l4off > l3off + l3_len)
			return count(R_PASS_MALFORMED_IP, bytes, TC_ACT_UNSPEC);
		if (nh == IPPROTO_ICMPV6 && !frag)
			return icmp_error_tc(skb, (__u32)l4off | l3off << 16 | ICMP_V6);
		if (nh != IPPROTO_TCP)
			return count(R_PASS_NOT_TCP, bytes, TC_ACT_UNSPEC);
		tcp = p;
		fk.family = AF_INET6;
		copy16(fk.saddr, ip6->saddr);
		copy16(fk.daddr, ip6->daddr);
	} else {
		return count(R_PASS_NOT_IP, bytes, TC_ACT_UNSPEC);
	}

	if (frag && !first_frag)
		return count(R_PASS_FRAGMENT, bytes, TC_ACT_UNSPEC);
	__u32 tcp_off = (void *)tcp - data;
	if ((void *)tcp + 4 > data_end || tcp_off > TCP_OFF_MAX)
		return count(R_PASS_MALFORMED_TCP, bytes, TC_ACT_UNSPEC);
	/* The TCP segment's length: the IP packet's beyond the TCP header. */
	__u32 l4_len = l3off + l3_len - tcp_off;
	if (l4_len > l3off + l3_len) /* the headers overran the packet */
		return count(R_PASS_MALFORMED_TCP, bytes, TC_ACT_UNSPEC);
	fk.sport = tcp->source;
	fk.dport = tcp->dest;

	/* Is it for us? */
	struct svc_val *svc;
	if (!dst_protected(&fk, &svc))
		return count(frag ? R_PASS_FRAGMENT : R_PASS_NOT_SERVICE, bytes, TC_ACT_UNSPEC);

	/* Protected from here on: malformed means drop. */
	if (frag)
		return count(R_DROP_FRAGMENT, bytes, TC_ACT_SHOT);
	if ((void *)(tcp + 1) > data_end || l4_len < sizeof(*tcp))
		return count(R_DROP_TCP_TRUNCATED, bytes, TC_ACT_SHOT);
	__u32 doff = (tcp->doff_res >> 4) * 4;
	if (doff < sizeof(*tcp))
		return count(R_DROP_TCP_DOFF_SHORT, bytes, TC_ACT_SHOT);
	if (doff > l4_len || (void *)tcp + doff > data_end)
		return count(R_DROP_TCP_DOFF_LONG, bytes, TC_ACT_SHOT);
	if (!tcp_options_valid_tc(skb, tcp_off, doff))
		return count(R_DROP_TCP_OPTIONS, bytes, TC_ACT_SHOT);
	__u32 plen = l4_len - doff;
	__u32 hdr_len = tcp_off + doff;

	__u32 tf = tcp->flags;
	if ((cfg.flags & CFG_DROP_BAD_FLAGS) && bad_flags(tf))
		return count(R_DROP_BAD_FLAGS, bytes, TC_ACT_SHOT);

	if (svc && (tf & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		if ((cfg.flags & CFG_DROP_SYN_PAYLOAD) && plen && !(syn_options_tc(skb, tcp_off, doff) & SO_TFO))
			return count(R_DROP_SYN_PAYLOAD, bytes, TC_ACT_SHOT);
		if ((cfg.flags & CFG_SYN_RATELIMIT) && !(svc->flags & SVC_F_NO_RATELIMIT) &&
		    !ratelimit_allow(fk.saddr, fk.family))
			return count(R_DROP_SYN_RATELIMIT, bytes, TC_ACT_SHOT);
		__u32 flags = svc->flags;
		__u64 ann = svc->ann_window | (__u64)svc->ann_mss << 16 | (__u64)svc->ann_wscale << 32 |
			    (__u64)svc->ann_flags << 40;
		/* A SYN for a spliced 4-tuple is the engine's to judge. The
		 * flow hint spares a flood SYN the table lookup (see flow_hint). */
		if (may_have_flow(&fk) && bpf_map_lookup_elem(&flows, &fk))
			return tc_steer(skb, R_XSK_SYN, hdr_len, 1, bytes);
		int mint = (flags & SVC_F_XDP_COOKIES) || ((flags & SVC_F_STANDBY_COOKIES) && !tc_engine_alive());
		if (!mint) {
			if (tc_to_engine(skb, hdr_len))
				return count(R_XSK_SYN, bytes, TC_ACT_SHOT);
			/* The ring is full: the engine is stuck or gone. */
			if (!(flags & SVC_F_STANDBY_COOKIES))
				return count(R_DROP_NO_SOCKET, bytes, TC_ACT_SHOT);
		}
		int rc = tc_synack(skb, ann);
		if (rc > 0)
			return count(R_TX_SYNACK_COOKIE, bytes, bpf_redirect(skb->ingress_ifindex, 0));
		if (rc < 0)
			return count(R_DROP_TCP_TRUNCATED, bytes, TC_ACT_SHOT);
		return tc_steer(skb, R_XSK_SYN, hdr_len, 1, bytes);
	}

	struct flow_val *fv = bpf_map_lookup_elem(&flows, &fk);
	if (!fv) {
		if (!svc)
			return tc_steer(skb, R_XSK_BACKEND, hdr_len, 1, bytes);
		/* See syngate_xdp: a FIN may be a peer gateway's; RSTs are dropped. */
		if (tf & TCP_RST)
			return count(R_DROP_RST_FIN_UNKNOWN, bytes, TC_ACT_SHOT);
		if ((svc->flags & SVC_F_STANDBY_COOKIES) && (tf & (TCP_SYN | TCP_ACK)) == TCP_ACK &&
		    !tc_engine_alive())
			return tc_keep_standby_ack(skb, &fk, hdr_len, bytes);
		if (tc_to_engine(skb, hdr_len))
			return count(R_XSK_HANDSHAKE, bytes, TC_ACT_SHOT);
		if ((svc->flags & SVC_F_STANDBY_COOKIES) && (tf & (TCP_SYN | TCP_ACK)) == TCP_ACK)
			return tc_keep_standby_ack(skb, &fk, hdr_len, bytes);
		return count(R_DROP_NO_SOCKET, bytes, TC_ACT_SHOT);
	}

	int tk = judge(fv, &fk, tcp, plen, tf);
	if (tk == T_RST_DROP)
		return count(R_DROP_RST_OUT_OF_WINDOW, bytes, TC_ACT_SHOT);
	if (tk == T_RST_CLOSED)
		return count(R_DROP_RST_CLOSED, bytes, TC_ACT_SHOT);
	if (tk == T_RST_WINDOW)
		return tc_steer(skb, R_XSK_RST_IN_WINDOW, hdr_len, 1, bytes);
	if (tk == T_SYN)
		return tc_steer(skb, R_XSK_SYN_IN_FLOW, hdr_len, 1, bytes);
	/* Old duplicates are forwarded but, like segments outside the window,
	 * teach nothing (see judge). */
	return tc_splice(skb, ip4, ip6, tcp, fv, tcp_off | doff << 16 | tf << 24, tk != T_OUT_OF_WIN && tk != T_OLD);
}
