/* Minimal, self-contained declarations for syngate's XDP program.
 *
 * Written for this project instead of including <linux/bpf.h> and libbpf's
 * headers so that the build needs no multiarch include path and the object
 * does not change when the distribution's headers do. Only what syngate.c
 * uses is declared; every value mirrors the stable kernel UAPI.
 */
#ifndef SYNGATE_BPF_MIN_H
#define SYNGATE_BPF_MIN_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed int __s32;
typedef signed long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u16 __sum16;

#define SEC(name) __attribute__((section(name), used))
#define __always_inline inline __attribute__((always_inline))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Byte order: the BPF target here is little endian (bpfel) only. */
#define bpf_htons(x) ((__be16)__builtin_bswap16(x))
#define bpf_ntohs(x) ((__u16)__builtin_bswap16(x))
#define bpf_htonl(x) ((__be32)__builtin_bswap32(x))
#define bpf_ntohl(x) ((__u32)__builtin_bswap32(x))

/* enum bpf_map_type */
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_HASH_OF_MAPS 13
#define BPF_MAP_TYPE_SOCKMAP 15
#define BPF_MAP_TYPE_XSKMAP 17
#define BPF_MAP_TYPE_DEVMAP_HASH 25
#define BPF_MAP_TYPE_RINGBUF 27

/* map_flags */
#define BPF_F_NO_PREALLOC 1
#define BPF_F_MMAPABLE (1U << 10)

/* enum xdp_action */
#define XDP_ABORTED 0
#define XDP_DROP 1
#define XDP_PASS 2
#define XDP_TX 3
#define XDP_REDIRECT 4

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

/* struct __sk_buff up to the members the TC program reads; the offsets are
 * the UAPI's (checked below), the members it skips are padding. */
struct __sk_buff {
	__u32 len;
	__u32 pad0[2];
	__u32 queue_mapping;   /* offset 12 */
	__u32 pad0b[5];
	__u32 ingress_ifindex; /* offset 36 */
	__u32 pad1[9];
	__u32 data;            /* offset 76 */
	__u32 data_end;        /* offset 80 */
	__u32 pad2[20];
	__u32 gso_segs;        /* offset 164 */
	__u32 pad3[2];
	__u32 gso_size;        /* offset 176 */
	__u32 pad4[3];
};
_Static_assert(__builtin_offsetof(struct __sk_buff, queue_mapping) == 12, "__sk_buff.queue_mapping");
_Static_assert(__builtin_offsetof(struct __sk_buff, ingress_ifindex) == 36, "__sk_buff.ingress_ifindex");
_Static_assert(__builtin_offsetof(struct __sk_buff, data) == 76, "__sk_buff.data");
_Static_assert(__builtin_offsetof(struct __sk_buff, gso_segs) == 164, "__sk_buff.gso_segs");
_Static_assert(__builtin_offsetof(struct __sk_buff, gso_size) == 176, "__sk_buff.gso_size");
_Static_assert(sizeof(struct __sk_buff) == 192, "__sk_buff size");

/* TC actions (tcx: UNSPEC hands the packet to the next program). */
#define TC_ACT_UNSPEC (-1)
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define TC_ACT_REDIRECT 7

/* bpf_l4_csum_replace flags */
#define BPF_F_PSEUDO_HDR (1ULL << 4)
#define BPF_F_IPV6 (1ULL << 7)

/* enum bpf_fib_lookup return codes */
#define BPF_FIB_LKUP_RET_SUCCESS 0
#define BPF_FIB_LKUP_RET_BLACKHOLE 1
#define BPF_FIB_LKUP_RET_UNREACHABLE 2
#define BPF_FIB_LKUP_RET_PROHIBIT 3
#define BPF_FIB_LKUP_RET_NOT_FWDED 4
#define BPF_FIB_LKUP_RET_FWD_DISABLED 5
#define BPF_FIB_LKUP_RET_UNSUPP_LWT 6
#define BPF_FIB_LKUP_RET_NO_NEIGH 7
#define BPF_FIB_LKUP_RET_FRAG_NEEDED 8

/* struct bpf_fib_lookup, 64 bytes; unions flattened to the members used. */
struct bpf_fib_lookup {
	__u8 family;
	__u8 l4_protocol;
	__be16 sport;
	__be16 dport;
	__u16 tot_len; /* in: L3 length; out: mtu_result */
	__u32 ifindex;
	__u32 flowinfo; /* tos (v4) / flowinfo (v6) / rt_metric */
	__u32 src[4];   /* ipv4_src is src[0] */
	__u32 dst[4];   /* ipv4_dst is dst[0] */
	__u32 vlan;     /* h_vlan_proto, h_vlan_TCI / tbid */
	__u8 smac[6];
	__u8 dmac[6];
};
_Static_assert(sizeof(struct bpf_fib_lookup) == 64, "bpf_fib_lookup size");

/* Helpers, by their stable UAPI numbers. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static __u64 (*bpf_ktime_get_coarse_ns)(void) = (void *)160;
static __s64 (*bpf_csum_diff)(__be32 *from, __u32 from_size, __be32 *to, __u32 to_size, __u32 seed) = (void *)28;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)51;
static long (*bpf_xdp_adjust_tail)(struct xdp_md *ctx, int delta) = (void *)65;
static long (*bpf_fib_lookup)(void *ctx, struct bpf_fib_lookup *params, int plen, __u32 flags) = (void *)69;
static long (*bpf_skb_store_bytes)(struct __sk_buff *skb, __u32 offset, const void *from, __u32 len, __u64 flags) = (void *)9;
static long (*bpf_l4_csum_replace)(struct __sk_buff *skb, __u32 offset, __u64 from, __u64 to, __u64 flags) = (void *)11;
static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)23;
static long (*bpf_skb_pull_data)(struct __sk_buff *skb, __u32 len) = (void *)39;
static long (*bpf_skb_load_bytes)(const struct __sk_buff *skb, __u32 offset, void *to, __u32 len) = (void *)26;
static long (*bpf_skb_change_tail)(struct __sk_buff *skb, __u32 len, __u64 flags) = (void *)38;
static long (*bpf_sk_release)(void *sk) = (void *)86;
static long (*bpf_ringbuf_output)(void *ringbuf, void *data, __u64 size, __u64 flags) = (void *)130;
static long (*bpf_redirect_neigh)(__u32 ifindex, void *params, int plen, __u64 flags) = (void *)152;

#define BPF_ANY 0
#define BPF_NOEXIST 1

#endif
