/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * steer.bpf.c - XDP program: frames that pyfwd owns go to the AF_XDP
 * socket of the receiving queue, everything else to the kernel untouched.
 *
 * Owned: TCP/UDP to a VIP service, ICMP and fragments to a VIP address,
 * frames to a VIP address too short to tell (the core counts the drop),
 * ARP naming a VIP, neighbour solicitations and advertisements to a
 * multicast address whose target is an IPv6 VIP; for NAT, the
 * real servers' answers (from a real addr:port in steer_rsvcs); for SNAT,
 * frames to its address and port range (steer_snat); and ICMP errors that
 * quote either.  This must match the core's verdicts: a frame the core
 * would PASS is never steered, since AF_XDP cannot hand a frame back to
 * the kernel.  The same program serves both interfaces of a two-arm NAT.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "steer.h"

#define VLAN_HLEN 4
#define NH_MAX 4	/* IPv6 extension headers walked before steering */

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, STEER_QUEUES_MAX * STEER_IFACES_MAX);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* ifindex -> interface slot (0 when absent: the one-interface case) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STEER_IFACES_MAX);
	__type(key, __u32);
	__type(value, __u32);
} ifslots SEC(".maps");

/* NAT: a real server's addr:port/proto (a steer_svc) whose answers we own */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STEER_REALS_MAX);
	__type(key, struct steer_svc);
	__type(value, __u32);
} steer_rsvcs SEC(".maps");

/* SNAT: our address -> the source ports we hand out */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, struct steer_addr);
	__type(value, struct steer_ports);
} steer_snat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STEER_VIPS_MAX);
	__type(key, struct steer_addr);
	__type(value, __u32);
} steer_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STEER_VIPS_MAX);
	__type(key, struct steer_svc);
	__type(value, __u32);
} steer_svcs SEC(".maps");

static __always_inline int to_engine(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex, *slot;
	__u32 key = ctx->rx_queue_index;

	slot = bpf_map_lookup_elem(&ifslots, &ifindex);
	if (slot)
		key += *slot * STEER_QUEUES_MAX;
	/* No socket on this queue (engine gone): the kernel keeps it. */
	return bpf_redirect_map(&xsks, key, XDP_PASS);
}

static __always_inline int is_vip(const void *addr, __u8 family)
{
	struct steer_addr k = { .family = family };

	__builtin_memcpy(k.addr, addr, family == 4 ? 4 : 16);
	return bpf_map_lookup_elem(&steer_addrs, &k) != NULL;
}

/* TCP/UDP to a VIP address: steer if served, or if too short to tell. */
static __always_inline int l4_owned(const __u8 *daddr, __u8 family,
				    __u8 proto, void *l4, void *end)
{
	struct steer_svc k = { .family = family, .proto = proto };
	__be16 *ports = l4;

	if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6)
		return 1;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	if ((void *)(ports + 2) > end)
		return 1;
	__builtin_memcpy(k.addr, daddr, family == 4 ? 4 : 16);
	k.port = ports[1];
	return bpf_map_lookup_elem(&steer_svcs, &k) != NULL;
}

/* NAT: from a real server's addr:port?  SNAT: to our address and ports? */
static __always_inline int return_owned(const __u8 *saddr, const __u8 *daddr,
					__u8 family, __u8 proto,
					const __be16 *ports)
{
	struct steer_svc r = { .family = family, .proto = proto };
	struct steer_addr a = { .family = family };
	struct steer_ports *range;
	__u16 dport;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	__builtin_memcpy(r.addr, saddr, family == 4 ? 4 : 16);
	r.port = ports[0];
	if (bpf_map_lookup_elem(&steer_rsvcs, &r))
		return 1;
	__builtin_memcpy(a.addr, daddr, family == 4 ? 4 : 16);
	range = bpf_map_lookup_elem(&steer_snat, &a);
	if (!range)
		return 0;
	dport = bpf_ntohs(ports[1]);
	return dport >= range->lo && dport <= range->hi;
}

/* An ICMPv4 error quoting a packet of ours: steer it (the core decides). */
static __always_inline int icmp_err_owned(__u8 *icmp, void *end)
{
	__u8 *in = icmp + 8;
	__u32 ihl;

	if ((void *)(in + 20) > end || (icmp[0] != 3 && icmp[0] != 11))
		return 0;
	ihl = (in[0] & 0x0f) * 4;
	if (ihl < 20 || (void *)(in + ihl + 4) > end)
		return 0;
	/* the quoted packet went out from us: our answer's reverse */
	return return_owned(in + 16, in + 12, 4, in[9],
			    (const __be16 *)(in + ihl)) ||
	       return_owned(in + 12, in + 16, 4, in[9],
			    (const __be16 *)(in + ihl));
}

static __always_inline int arp_owned(__u8 *a, void *end)
{
	/* htype(2) ptype(2) hlen plen op(2) sha(6) spa(4) tha(6) tpa(4) */
	if ((void *)(a + 28) > end)
		return 0;
	return is_vip(a + 24, 4) || is_vip(a + 14, 4);
}

static __always_inline int ip4_owned(__u8 *ip, void *end)
{
	__u32 hlen;

	if ((void *)(ip + 20) > end)
		return 0;
	if (!is_vip(ip + 16, 4)) {
		hlen = (ip[0] & 0x0f) * 4;
		if (hlen < 20 || ip[6] & 0x3f || ip[7] ||
		    (void *)(ip + hlen + 8) > end)
			return 0;
		if (ip[9] == IPPROTO_ICMP)
			return icmp_err_owned(ip + hlen, end);
		return return_owned(ip + 12, ip + 16, 4, ip[9],
				    (const __be16 *)(ip + hlen));
	}
	hlen = (ip[0] & 0x0f) * 4;
	if (hlen < 20)
		return 1;	/* malformed, to a VIP: the core counts it */
	if (ip[6] & 0x3f || ip[7])
		return 1;	/* fragment to a VIP */
	return l4_owned(ip + 16, 4, ip[9], ip + hlen, end);
}

static __always_inline int ip6_owned(__u8 *ip, void *end)
{
	__u8 *l4 = ip + 40;
	__u8 nh;
	int i;

	if ((void *)(ip + 40) > end)
		return 0;
	nh = ip[6];
	if (ip[24] == 0xff) {
		/* Multicast: a neighbour solicitation or advertisement whose
		 * target is a VIP?  (Same layout: the target at 8.) */
		if (nh != IPPROTO_ICMPV6 || (void *)(l4 + 24) > end ||
		    (l4[0] != 135 && l4[0] != 136))
			return 0;
		return is_vip(l4 + 8, 6);
	}
	if (!is_vip(ip + 24, 6)) {
		if ((void *)(l4 + 4) > end)
			return 0;
		return return_owned(ip + 8, ip + 24, 6, nh,
				    (const __be16 *)l4);
	}
	for (i = 0; i < NH_MAX; i++) {
		if (nh != 0 && nh != 43 && nh != 60)
			break;
		if ((void *)(l4 + 2) > end)
			return 1;
		nh = l4[0];
		l4 += (l4[1] + 1) * 8;
	}
	if (nh == 44 || nh == 0 || nh == 43 || nh == 60)
		return 1;	/* fragment or a long chain: the core decides */
	return l4_owned(ip + 24, 6, nh, l4, end);
}

/* Does the engine own the frame at data..end? */
static __always_inline int owned(void *data, void *end)
{
	struct ethhdr *eth = data;
	__u8 *l3 = (__u8 *)(eth + 1);
	__u16 proto;

	if ((void *)l3 > end)
		return 0;
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		if ((void *)(l3 + VLAN_HLEN) > end)
			return 0;
		proto = *(__be16 *)(l3 + 2);
		l3 += VLAN_HLEN;
	}
	if (proto == bpf_htons(ETH_P_IP))
		return ip4_owned(l3, end);
	if (proto == bpf_htons(ETH_P_IPV6))
		return ip6_owned(l3, end);
	if (proto == bpf_htons(ETH_P_ARP))
		return arp_owned(l3, end);
	return 0;
}

/* AF_XDP backend: what the engine owns goes to its socket. */
SEC("xdp")
int pyfwd_steer(struct xdp_md *ctx)
{
	if (owned((void *)(long)ctx->data, (void *)(long)ctx->data_end))
		return to_engine(ctx);
	return XDP_PASS;
}

/*
 * Raw-socket backend: AF_PACKET sockets get a copy of every frame (they
 * tap, they do not steal).  Attached at tc ingress (tcx, a bpf_link that
 * dies with the engine), this drops what the engine owns after the taps
 * have their copy, so that the kernel does not act on it too: no RST for
 * SNAT's answers, no second forward of NAT's.
 */
SEC("tc")
int pyfwd_tc_owned(struct __sk_buff *skb)
{
	/* The headers must be in the linear part for direct access. */
	bpf_skb_pull_data(skb, skb->len < 256 ? skb->len : 256);
	if (owned((void *)(long)skb->data, (void *)(long)skb->data_end))
		return 2;	/* TC_ACT_SHOT */
	return 0;		/* TC_ACT_OK */
}

/*
 * Raw-socket backend, the sockets' filter: keep what the engine may own
 * (a superset is fine: the core passes the rest, and the kernel has its
 * own copy).  Socket filters have no direct packet access: load bytes.
 */
SEC("socket")
int pyfwd_sock_filter(struct __sk_buff *skb)
{
	__u8 ip[40], l4[4];
	__u16 proto;
	__u32 l3 = ETH_HLEN, hlen;

	if (bpf_skb_load_bytes(skb, 12, &proto, 2))
		return 0;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		if (bpf_skb_load_bytes(skb, 16, &proto, 2))
			return 0;
		l3 += VLAN_HLEN;
	}
	if (proto == bpf_htons(ETH_P_ARP))
		return skb->len;
	if (proto == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, l3, ip, 20))
			return 0;
		if (is_vip(ip + 16, 4) || ip[9] == IPPROTO_ICMP)
			return skb->len;
		hlen = (ip[0] & 0x0f) * 4;
		if (hlen < 20 || bpf_skb_load_bytes(skb, l3 + hlen, l4, 4))
			return 0;
		return return_owned(ip + 12, ip + 16, 4, ip[9],
				    (const __be16 *)l4) ? skb->len : 0;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, l3, ip, 40))
			return 0;
		if (ip[24] == 0xff || is_vip(ip + 24, 6) ||
		    ip[6] == IPPROTO_ICMPV6)
			return skb->len;
		if (bpf_skb_load_bytes(skb, l3 + 40, l4, 4))
			return 0;
		return return_owned(ip + 8, ip + 24, 6, ip[6],
				    (const __be16 *)l4) ? skb->len : 0;
	}
	return 0;
}

char _license[] SEC("license") = "Dual MIT/GPL";
