/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * fastpath.h - the XDP fast path, #included by steer.bpf.c and called
 * first in pyfwd_xdp_steer: a packet of a flow the core has installed in
 * fast_flows (fastmap.c) is rewritten as the core rewrote that flow's
 * packet and sent back out here (XDP_TX); anything else returns FAST_CORE
 * and the steering program decides as before (to the engine's AF_XDP
 * socket, or to the kernel).
 *
 * Only what needs no decision takes this path: an untagged IPv4 (no
 * options, no fragment) or IPv6 (no extension header) TCP or UDP packet,
 * whole and consistent as classify.c checks it, without SYN, FIN or RST,
 * to our MAC, whose entry's real is unchanged since it was installed
 * (fast_gens).  On an interface that hands over unfinished L4 sums (veth),
 * an unfinished sum is completed here by csum.c's rule (fast_complete),
 * in frames of up to FAST_CSUM_FRAME_MAX bytes (longer: the core's).
 * Everything else, the first packets of every flow, state changes and
 * whatever the core counts apart, stays the core's: one behaviour, two
 * paths (tests/cases/test_fastpath_cases.py runs every case through both).
 */
#ifndef PYFWD_BPF_FASTPATH_H
#define PYFWD_BPF_FASTPATH_H

#include "fastmap.h"

#define FAST_CORE (-1)		/* not the fast path's: the steering's */
/* Frames up to this long have an unfinished L4 sum completed here (the
 * bound of fast_l4_sum's loop); longer ones are the core's. */
#define FAST_CSUM_FRAME_MAX 4608
#define FAST_CSUM_WORDS \
	((FAST_CSUM_FRAME_MAX - ETH_HDR_LEN - IP4_HDR_MIN + 3) / 4)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fast_cfg);
} fast_cfg SEC(".maps");

/* Not preallocated: the core adds entries from a syscall, one per flow,
 * and an engine with the fast path off holds none. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, FAST_FLOWS_MAX);
	__type(key, struct fast_key);
	__type(value, struct fast_val);
} fast_flows SEC(".maps");

/* Last seen (CLOCK_MONOTONIC_COARSE ns) by entry: the core's sweep reads
 * it through mmap. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, FAST_FLOWS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} fast_seen SEC(".maps");

/* By real id: bumped by the core when a real changes (halted, moved).
 * 64-bit values: an array's elements are 8-byte aligned, and the core
 * indexes the mmapped values as an array. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, FAST_REALS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} fast_gens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FAST_REAL_STATS_MAX);
	__type(key, __u32);
	__type(value, struct fast_real_stats);
} fast_reals SEC(".maps");

/* Interface slot -> ifindex: the way out of a two-arm NAT's packets. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, STEER_IFACES_MAX);
	__type(key, __u32);
	__type(value, __u32);
} fast_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fast_stats);
} fast_stats SEC(".maps");

static __always_inline __u16 fast_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* Is the L4 sum at sum the pseudo-header's, i.e. unfinished (csum.c's
 * pseudo_sum and its test, to the bit)? */
static __always_inline int fast_unfinished(const __u8 *l3, void *end,
					   __u8 family, __u8 proto,
					   __u32 l4_len, const __be16 *sum)
{
	const __be32 *a = (const __be32 *)(l3 + (family == STEER_AF_INET ?
						 IP4_SADDR_OFF :
						 IP6_SADDR_OFF));
	__u64 s = (__u64)proto + l4_len;
	int k;

	if (family == STEER_AF_INET && proto == PROTO_UDP && !*sum)
		return 0;	/* no sum (IPv4 UDP): nothing to finish */
	if (family == STEER_AF_INET) {
		s += bpf_ntohl(a[0]) + (__u64)bpf_ntohl(a[1]);
	} else {
		if ((void *)(l3 + IP6_HDR_LEN) > end)
			return 1;	/* (the verifier's: never) */
#pragma unroll
		for (k = 0; k < 8; k++)
			s += bpf_ntohl(a[k]);
	}
	return bpf_ntohs(*sum) == fast_fold(s);
}

/*
 * The ones' complement sum of the len bytes at off in ctx's frame, folded,
 * as the big-endian value on the wire (packet.h's csum_be16(csum_add(0,
 * ...)): host-order words, a last odd byte the low one of its word), or
 * -1 when they are not all in the frame (the verifier's: never).
 *
 * A global function: the verifier checks it once, on its own, rather
 * than walking its loop (up to FAST_CSUM_WORDS rounds, each with its own
 * packet bound) inside every path of fastpath_run.  It does not change
 * the packet, so the caller's packet pointers stay valid.
 */
__attribute__((noinline)) int fast_l4_sum(struct xdp_md *ctx, __u64 off,
					  __u64 len)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 s = 0, i;
	__u8 *p;

	/* 64-bit arguments: a 32-bit one is widened in a copy, whose check
	 * the verifier does not carry over to the register used */
	if (off > ETH_HDR_LEN + IP6_HDR_LEN || len > FAST_CSUM_WORDS * 4)
		return -1;
	p = data + off;
	for (i = 0; i < FAST_CSUM_WORDS; i++) {
		if (len - i * 4 < 4)
			break;
		if ((void *)(p + 4) > end)
			return -1;
		s += *(__u32 *)p;
		p += 4;
	}
	if (len & 2) {
		if ((void *)(p + 2) > end)
			return -1;
		s += *(__u16 *)p;
		p += 2;
	}
	if (len & 1) {
		if ((void *)(p + 1) > end)
			return -1;
		s += *p;
	}
	return __builtin_bswap16(fast_fold(s));
}

/*
 * csum.c's completion of an unfinished sum (the caller checked it is):
 * the complement of the segment's sum, its field (the pseudo-header sum)
 * included; a UDP sum that comes out 0 is sent as 0xffff (RFC 768).  0,
 * or -1 (the verifier's bounds: the frame goes to the core unchanged).
 */
static __always_inline int fast_complete(struct xdp_md *ctx, __u32 l4_off,
					 __u32 l4_len, __u8 proto,
					 __be16 *sum)
{
	int seg = fast_l4_sum(ctx, l4_off, l4_len);
	__u16 v;

	if (seg < 0)
		return -1;
	v = (__u16)~seg;
	if (!v && proto == PROTO_UDP)
		v = 0xffff;
	*sum = bpf_htons(v);
	return 0;
}

/* packet.h's csum_fix16, to the bit: the sum at sum when a 16-bit word
 * it covers goes from old to new_ (RFC 1624, eqn. 3). */
static __always_inline void fast_fix16(__u8 *sum, __u16 old, __u16 new_)
{
	__u32 s = (__u16)~((sum[0] << 8) | sum[1]);

	s += (__u16)~old;
	s += new_;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (__u16)~s;
	sum[0] = (__u8)(s >> 8);
	sum[1] = (__u8)s;
}

/* ~fold(~sum + delta), written back: rewrite.c's incremental update. */
static __always_inline void fast_sum_add(__u8 *sum, __u64 delta)
{
	__u64 s = (__u16)~((sum[0] << 8) | sum[1]);
	__u16 r = (__u16)~fast_fold(s + delta);

	sum[0] = (__u8)(r >> 8);
	sum[1] = (__u8)r;
}

/*
 * NAT, SNAT: as forward.c's xlat_apply on a finished sum: the TTL or hop
 * limit less one (rewrite_ttl_dec), then the addresses and ports and the
 * sums that cover them (rewrite_nat).  The caller checked the TTL.
 */
static __always_inline void fast_nat(__u8 *l3, __u8 *l4, void *end,
				     __u8 family, __u8 proto, __be16 *sum,
				     const struct fast_val *v)
{
	__u16 old;

	if (family == STEER_AF_INET) {
		old = (l3[IP4_TTL_OFF] << 8) | l3[IP4_TTL_OFF + 1];
		l3[IP4_TTL_OFF]--;
		fast_fix16(l3 + IP4_CSUM_OFF, old,
			   (l3[IP4_TTL_OFF] << 8) | l3[IP4_TTL_OFF + 1]);
		fast_sum_add(l3 + IP4_CSUM_OFF, v->daddrs);
		__builtin_memcpy(l3 + IP4_SADDR_OFF, v->saddr, 4);
		__builtin_memcpy(l3 + IP4_DADDR_OFF, v->daddr, 4);
	} else {
		if ((void *)(l3 + IP6_HDR_LEN) > end)
			return;		/* (the verifier's: never) */
		l3[IP6_HOPLIMIT_OFF]--;
		__builtin_memcpy(l3 + IP6_SADDR_OFF, v->saddr, 16);
		__builtin_memcpy(l3 + IP6_DADDR_OFF, v->daddr, 16);
	}
	((__be16 *)l4)[0] = v->sport;
	((__be16 *)l4)[1] = v->dport;
	/* IPv4 UDP without a sum keeps none */
	if (proto == PROTO_UDP && family == STEER_AF_INET && !*sum)
		return;
	fast_sum_add((__u8 *)sum, v->daddrs + v->dports);
	if (proto == PROTO_UDP && !*sum)
		*sum = 0xffff;		/* RFC 768 */
}

static __always_inline int fast_mac_eq(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b &&
	       *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

/* The fast path on one frame: XDP_TX, or FAST_CORE. */
static __always_inline int fastpath_run(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, len = (__u32)(end - data), l4_len, plen, tot;
	struct fast_key k = { .ifindex = ctx->ingress_ifindex };
	struct ethhdr *eth = data;
	struct fast_stats *st;
	struct fast_cfg *cfg;
	struct fast_val *v;
	__u8 *l3 = data + ETH_HDR_LEN, *l4;
	__be16 *sum;
	__u64 *gen, *seen, now;
	__u8 proto;

	cfg = bpf_map_lookup_elem(&fast_cfg, &zero);
	if (!cfg || !cfg->on)
		return FAST_CORE;
	if ((void *)(l3 + IP4_HDR_MIN) > end)
		return FAST_CORE;	/* too short for either: the core's */
	if (eth->h_proto == bpf_htons(ETHERTYPE_IPV4)) {
		if (l3[0] != 0x45)	/* version 4, no options */
			return FAST_CORE;
		tot = bpf_ntohs(*(__be16 *)(l3 + 2));
		if (tot < IP4_HDR_MIN || tot > len - ETH_HDR_LEN ||
		    (((l3[IP4_FRAG_OFF] << 8) | l3[IP4_FRAG_OFF + 1]) &
		     IP4_FRAG_MF_OFFSET))
			return FAST_CORE;
		proto = l3[9];
		l4 = l3 + IP4_HDR_MIN;
		l4_len = tot - IP4_HDR_MIN;
		k.family = STEER_AF_INET;
		__builtin_memcpy(k.saddr, l3 + IP4_SADDR_OFF, 4);
		__builtin_memcpy(k.daddr, l3 + IP4_DADDR_OFF, 4);
	} else if (eth->h_proto == bpf_htons(ETHERTYPE_IPV6)) {
		if ((void *)(l3 + IP6_HDR_LEN) > end || (l3[0] >> 4) != 6)
			return FAST_CORE;
		l4_len = bpf_ntohs(*(__be16 *)(l3 + 4));
		if (l4_len > len - ETH_HDR_LEN - IP6_HDR_LEN)
			return FAST_CORE;
		proto = l3[6];		/* an extension header: not TCP/UDP */
		l4 = l3 + IP6_HDR_LEN;
		k.family = STEER_AF_INET6;
		__builtin_memcpy(k.saddr, l3 + IP6_SADDR_OFF, 16);
		__builtin_memcpy(k.daddr, l3 + IP6_DADDR_OFF, 16);
	} else {
		return FAST_CORE;
	}
	/* As classify.c's tcp_udp_check: whole and consistent. */
	if (proto == PROTO_TCP) {
		if (l4_len < TCP_HDR_MIN || (void *)(l4 + TCP_HDR_MIN) > end ||
		    (l4[12] >> 4) < 5 || (__u32)(l4[12] >> 4) * 4 > l4_len ||
		    (l4[TCP_FLAGS_OFF] & (TCP_SYN | TCP_FIN | TCP_RST)))
			return FAST_CORE;
		sum = (__be16 *)(l4 + TCP_CSUM_OFF);
		plen = l4_len;
	} else if (proto == PROTO_UDP) {
		if (l4_len < UDP_HDR_LEN || (void *)(l4 + UDP_HDR_LEN) > end)
			return FAST_CORE;
		plen = bpf_ntohs(*(__be16 *)(l4 + 4));
		if (plen < UDP_HDR_LEN || plen > l4_len)
			return FAST_CORE;
		sum = (__be16 *)(l4 + UDP_CSUM_OFF);
	} else {
		return FAST_CORE;
	}
	k.proto = proto;
	k.sport = ((__be16 *)l4)[0];
	k.dport = ((__be16 *)l4)[1];
	v = bpf_map_lookup_elem(&fast_flows, &k);
	if (!v)
		return FAST_CORE;
	if (len > v->max_frame || !fast_mac_eq(eth->h_dest, v->mymac))
		return FAST_CORE;
	/* a routed hop: the core drops what has no hop left */
	if (v->action == FAST_NAT &&
	    l3[k.family == STEER_AF_INET ? IP4_TTL_OFF : IP6_HOPLIMIT_OFF] <= 1)
		return FAST_CORE;
	st = bpf_map_lookup_elem(&fast_stats, &zero);
	gen = bpf_map_lookup_elem(&fast_gens, &(__u32){ v->real });
	if (!st || !gen)
		return FAST_CORE;
	if ((__u32)*gen != v->gen) {
		st->stale++;	/* the core reschedules, or reinstalls */
		return FAST_CORE;
	}
	/* csum.c's rule: an unfinished sum is completed before NAT's
	 * incremental update, which then starts from it */
	if (v->csum_check &&
	    fast_unfinished(l3, end, k.family, proto, plen, sum)) {
		if (len > FAST_CSUM_FRAME_MAX ||
		    fast_complete(ctx, (__u32)(l4 - (__u8 *)data), plen, proto,
				  sum))
			return FAST_CORE;
		st->csum_completed++;
	}
	seen = bpf_map_lookup_elem(&fast_seen, &v->seen);
	if (seen) {
		now = bpf_ktime_get_coarse_ns();
		if (*seen != now)	/* a coarse clock: mostly the same */
			*seen = now;
	}
	if (v->action == FAST_NAT)
		fast_nat(l3, l4, end, k.family, proto, sum, v);
	__builtin_memcpy(eth->h_dest, v->dmac, 6);
	__builtin_memcpy(eth->h_source, v->smac, 6);
	st->frames++;
	st->bytes += len;
	if (v->reply) {
		st->forward_reply++;
	} else {
		/* to its real, as forward_vip counts it */
		struct fast_real_stats *rs =
			bpf_map_lookup_elem(&fast_reals, &(__u32){ v->real });

		st->forward++;
		if (rs) {
			rs->frames++;
			rs->bytes += len;
		}
	}
	if (v->out_ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect_map(&fast_ports, v->out_slot, 0);
}

#endif /* PYFWD_BPF_FASTPATH_H */
