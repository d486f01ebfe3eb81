/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * steer.bpf.c - the steering programs of both backends.  AF_XDP: the XDP
 * program pyfwd_xdp_steer sends the frames that pyfwd owns to the AF_XDP
 * socket of the receiving queue, everything else to the kernel untouched.
 * AF_PACKET: pyfwd_sock_filter and pyfwd_tc_owned (below).
 *
 * Owned: TCP/UDP to a VIP service (one look-up: steer_vips holds each
 * VIP address with the ports served on it), ICMP and fragments to a VIP
 * address, frames to a VIP address too short to tell (the core counts the
 * drop), ARP requests for a VIP and ARP from one, neighbour solicitations
 * and advertisements to a multicast address whose target is an IPv6 VIP.
 * Not owned: the rest to a VIP address (other ports, ARP replies and
 * neighbour advertisements answering the kernel): an L7 VIP may share
 * the address, and the kernel's HAProxy serves it.  For NAT, the
 * real servers' answers (from a real addr:port in steer_rsvcs); for SNAT,
 * frames to its address and port range (steer_snat); and ICMP errors that
 * quote either (ICMP errors to a VIP are owned as any ICMP to it: in
 * DR they follow their flow to its real).  This must match the core's
 * verdicts: a frame the core would PASS is never steered, since AF_XDP
 * cannot hand a frame back to the kernel.  The same program serves both
 * interfaces of a two-arm NAT.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "proto.h"	/* csrc/: the core reads frames the same way */
#include "steer.h"
#include "fastpath.h"	/* established flows, sent from here */

#define NH_MAX 4	/* IPv6 extension headers walked before steering */

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, STEER_QUEUES_MAX * STEER_IFACES_MAX);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* interface slot -> its ifindex (an array: the verifier inlines the
 * look-up; slot 1's is 0 with one interface) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STEER_IFACES_MAX);
	__type(key, __u32);
	__type(value, __u32);
} steer_ifaces SEC(".maps");

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

/* VIP address -> the ports served on it: the one look-up of the VIP path
 * (entries are 16 KiB: allocated as VIP addresses come, not up front) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STEER_VIPS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct steer_addr);
	__type(value, struct steer_vip);
} steer_vips SEC(".maps");

static __always_inline int to_engine(struct xdp_md *ctx)
{
	__u32 key = ctx->rx_queue_index, one = 1, *second;

	second = bpf_map_lookup_elem(&steer_ifaces, &one);
	if (second && *second && *second == ctx->ingress_ifindex)
		key += STEER_QUEUES_MAX;
	/* No socket on this queue (engine gone): the kernel keeps it. */
	return bpf_redirect_map(&xsks, key, XDP_PASS);
}

/* The VIP at addr and the ports it serves, or NULL: not a VIP. */
static __always_inline struct steer_vip *vip_of(const void *addr,
						__u8 family)
{
	struct steer_addr k = { .family = family };

	__builtin_memcpy(k.addr, addr, family == STEER_AF_INET ? 4 : 16);
	return bpf_map_lookup_elem(&steer_vips, &k);
}

static __always_inline int is_vip(const void *addr, __u8 family)
{
	return vip_of(addr, family) != NULL;
}

/* Is TCP/UDP port `port` (as on the wire) served on VIP v? */
static __always_inline int vip_serves(const struct steer_vip *v, __u8 proto,
				      __be16 port)
{
	__u32 p = bpf_ntohs(port);
	const __u64 *bits = proto == PROTO_TCP ? v->tcp : v->udp;

	return (bits[(p >> 6) & (STEER_PORT_WORDS - 1)] >> (p & 63)) & 1;
}

/* To VIP v: TCP/UDP steered if served, or if too short to tell. */
static __always_inline int l4_owned(const struct steer_vip *v, __u8 proto,
				    void *l4, void *end)
{
	__be16 *ports = l4;
	__u8 *icmp = l4;

	/* As the core: an advertisement for another target is the kernel's */
	if (proto == PROTO_ICMPV6 && (void *)(icmp + NDP_MSG_MIN) <= end &&
	    icmp[0] == NDP_NEIGH_ADVERT)
		return is_vip(icmp + NDP_TARGET_OFF, STEER_AF_INET6);
	if (proto == PROTO_ICMP || proto == PROTO_ICMPV6)
		return 1;
	if (proto != PROTO_TCP && proto != PROTO_UDP)
		return 0;
	if ((void *)(ports + 2) > end)
		return 1;
	return vip_serves(v, proto, ports[1]);
}

/*
 * NAT: from a real server's addr:port?  SNAT: to our address and ports?
 * sport and dport as on the wire.
 */
static __always_inline int return_owned(const __u8 *saddr, const __u8 *daddr,
					__u8 family, __u8 proto, __be16 sport,
					__be16 dport)
{
	struct steer_svc r = { .family = family, .proto = proto };
	struct steer_addr a = { .family = family };
	struct steer_ports *range;
	__u16 port;

	if (proto != PROTO_TCP && proto != PROTO_UDP)
		return 0;
	__builtin_memcpy(r.addr, saddr, family == STEER_AF_INET ? 4 : 16);
	r.port = sport;
	if (bpf_map_lookup_elem(&steer_rsvcs, &r))
		return 1;
	__builtin_memcpy(a.addr, daddr, family == STEER_AF_INET ? 4 : 16);
	range = bpf_map_lookup_elem(&steer_snat, &a);
	if (!range)
		return 0;
	port = bpf_ntohs(dport);
	return port >= range->lo && port <= range->hi;
}

/* An ICMPv4 error quoting a packet of ours: steer it (the core decides). */
static __always_inline int icmp_err_owned(__u8 *icmp, void *end)
{
	__u8 *in = icmp + ICMP4_HDR_LEN;
	const __be16 *ports;
	__u32 ihl;

	if ((void *)(in + IP4_HDR_MIN) > end || !ICMP4_IS_ERROR(icmp[0]))
		return 0;
	ihl = IP4_IHL(in);
	if (ihl < IP4_HDR_MIN || (void *)(in + ihl + 4) > end)
		return 0;
	ports = (const __be16 *)(in + ihl);
	/* the quoted packet went out from us: our answer's reverse, its
	 * addresses and its ports swapped */
	return return_owned(in + IP4_DADDR_OFF, in + IP4_SADDR_OFF,
			    STEER_AF_INET, in[9], ports[1], ports[0]) ||
	       return_owned(in + IP4_SADDR_OFF, in + IP4_DADDR_OFF,
			    STEER_AF_INET, in[9], ports[0], ports[1]);
}

/* The same for ICMPv6 (NAT's IPv6 returns: an error to the client). */
static __always_inline int icmp6_err_owned(__u8 *icmp, void *end)
{
	__u8 *in = icmp + ICMP6_ERR_HDR_LEN;
	const __be16 *ports = (const __be16 *)(in + IP6_HDR_LEN);

	if ((void *)(ports + 2) > end || !ICMP6_IS_ERROR(icmp[0]))
		return 0;
	return return_owned(in + IP6_DADDR_OFF, in + IP6_SADDR_OFF,
			    STEER_AF_INET6, in[6], ports[1], ports[0]) ||
	       return_owned(in + IP6_SADDR_OFF, in + IP6_DADDR_OFF,
			    STEER_AF_INET6, in[6], ports[0], ports[1]);
}

/* As the core: a request for a VIP, or a sender claiming one. */
static __always_inline int arp_owned(__u8 *a, void *end)
{
	if ((void *)(a + ARP_LEN) > end)
		return 0;
	return (a[ARP_OP_OFF] == 0 && a[ARP_OP_OFF + 1] == ARP_OP_REQUEST &&
		is_vip(a + ARP_TPA_OFF, STEER_AF_INET)) ||
	       is_vip(a + ARP_SPA_OFF, STEER_AF_INET);
}

/* MF set or an offset: a fragment (the ports are not in this frame). */
static __always_inline int ip4_fragment(const __u8 *ip)
{
	return ((ip[IP4_FRAG_OFF] << 8) | ip[IP4_FRAG_OFF + 1]) &
	       IP4_FRAG_MF_OFFSET;
}

static __always_inline int ip4_owned(__u8 *ip, void *end)
{
	struct steer_vip *v;
	__u32 hlen;

	if ((void *)(ip + IP4_HDR_MIN) > end)
		return 0;
	hlen = IP4_IHL(ip);
	v = vip_of(ip + IP4_DADDR_OFF, STEER_AF_INET);
	if (!v) {
		if (hlen < IP4_HDR_MIN || ip4_fragment(ip) ||
		    (void *)(ip + hlen + 8) > end)
			return 0;
		if (ip[9] == PROTO_ICMP)
			return icmp_err_owned(ip + hlen, end);
		return return_owned(ip + IP4_SADDR_OFF, ip + IP4_DADDR_OFF,
				    STEER_AF_INET, ip[9],
				    ((const __be16 *)(ip + hlen))[0],
				    ((const __be16 *)(ip + hlen))[1]);
	}
	if (hlen < IP4_HDR_MIN)
		return 1;	/* malformed, to a VIP: the core counts it */
	if (ip4_fragment(ip))
		return 1;	/* fragment to a VIP */
	return l4_owned(v, ip[9], ip + hlen, end);
}

static __always_inline int ip6_owned(__u8 *ip, void *end)
{
	__u8 *l4 = ip + IP6_HDR_LEN;
	struct steer_vip *v;
	__u8 nh;
	int i;

	if ((void *)(ip + IP6_HDR_LEN) > end)
		return 0;
	nh = ip[6];
	if (ip[IP6_DADDR_OFF] == IP6_MULTICAST) {
		/* Multicast: a neighbour solicitation or advertisement whose
		 * target is a VIP? */
		if (nh != PROTO_ICMPV6 || (void *)(l4 + NDP_MSG_MIN) > end ||
		    !NDP_IS_NS_OR_NA(l4[0]))
			return 0;
		return is_vip(l4 + NDP_TARGET_OFF, STEER_AF_INET6);
	}
	v = vip_of(ip + IP6_DADDR_OFF, STEER_AF_INET6);
	if (!v) {
		if ((void *)(l4 + 4) > end)
			return 0;
		if (nh == PROTO_ICMPV6)
			return icmp6_err_owned(l4, end);
		return return_owned(ip + IP6_SADDR_OFF, ip + IP6_DADDR_OFF,
				    STEER_AF_INET6, nh, ((const __be16 *)l4)[0],
				    ((const __be16 *)l4)[1]);
	}
	for (i = 0; i < NH_MAX; i++) {
		if (!IP6_EXTHDR_WALKED(nh))
			break;
		if ((void *)(l4 + 2) > end)
			return 1;
		nh = l4[0];
		l4 += IP6_EXTHDR_LEN(l4);
	}
	if (nh == PROTO_FRAGMENT || IP6_EXTHDR_WALKED(nh))
		return 1;	/* fragment or a long chain: the core decides */
	return l4_owned(v, nh, l4, end);
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
	if (proto == bpf_htons(ETHERTYPE_VLAN) ||
	    proto == bpf_htons(ETHERTYPE_QINQ)) {
		if ((void *)(l3 + VLAN_HDR_LEN) > end)
			return 0;
		proto = *(__be16 *)(l3 + 2);
		l3 += VLAN_HDR_LEN;
	}
	if (proto == bpf_htons(ETHERTYPE_IPV4))
		return ip4_owned(l3, end);
	if (proto == bpf_htons(ETHERTYPE_IPV6))
		return ip6_owned(l3, end);
	if (proto == bpf_htons(ETHERTYPE_ARP))
		return arp_owned(l3, end);
	return 0;
}

/* AF_XDP backend: what the engine owns goes to its socket. */
SEC("xdp")
int pyfwd_xdp_steer(struct xdp_md *ctx)
{
	int fast = fastpath_run(ctx);

	if (fast != FAST_CORE)
		return fast;
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
	__u8 ip[IP6_HDR_LEN], l4[4];
	__u16 proto;
	__u32 l3 = ETH_HDR_LEN, hlen;

	if (bpf_skb_load_bytes(skb, ETH_TYPE_OFF, &proto, 2))
		return 0;
	if (proto == bpf_htons(ETHERTYPE_VLAN) ||
	    proto == bpf_htons(ETHERTYPE_QINQ)) {
		if (bpf_skb_load_bytes(skb, ETH_HDR_LEN + 2, &proto, 2))
			return 0;
		l3 += VLAN_HDR_LEN;
	}
	if (proto == bpf_htons(ETHERTYPE_ARP))
		return skb->len;
	if (proto == bpf_htons(ETHERTYPE_IPV4)) {
		if (bpf_skb_load_bytes(skb, l3, ip, IP4_HDR_MIN))
			return 0;
		if (is_vip(ip + IP4_DADDR_OFF, STEER_AF_INET) ||
		    ip[9] == PROTO_ICMP)
			return skb->len;
		hlen = IP4_IHL(ip);
		if (hlen < IP4_HDR_MIN ||
		    bpf_skb_load_bytes(skb, l3 + hlen, l4, 4))
			return 0;
		return return_owned(ip + IP4_SADDR_OFF, ip + IP4_DADDR_OFF,
				    STEER_AF_INET, ip[9],
				    ((const __be16 *)l4)[0],
				    ((const __be16 *)l4)[1]) ? skb->len : 0;
	}
	if (proto == bpf_htons(ETHERTYPE_IPV6)) {
		if (bpf_skb_load_bytes(skb, l3, ip, IP6_HDR_LEN))
			return 0;
		if (ip[IP6_DADDR_OFF] == IP6_MULTICAST ||
		    is_vip(ip + IP6_DADDR_OFF, STEER_AF_INET6) ||
		    ip[6] == PROTO_ICMPV6)
			return skb->len;
		if (bpf_skb_load_bytes(skb, l3 + IP6_HDR_LEN, l4, 4))
			return 0;
		return return_owned(ip + IP6_SADDR_OFF, ip + IP6_DADDR_OFF,
				    STEER_AF_INET6, ip[6],
				    ((const __be16 *)l4)[0],
				    ((const __be16 *)l4)[1]) ? skb->len : 0;
	}
	return 0;
}

char _license[] SEC("license") = "Dual MIT/GPL";
