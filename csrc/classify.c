/* SPDX-License-Identifier: MIT */
/*
 * classify.c - parse and classify one frame: which VIP, service or flow
 * it may belong to, and why (a PYFWD_R_* reason).  burst.c calls it for
 * every frame, then forward.c does the rest for the FORWARD* ones.
 *
 * Every read is bounds-checked against the frame's length before it is
 * made; a frame that ends early is dropped with a reason, never read past.
 * Protocol numbers and layouts come from proto.h, which the BPF programs
 * that steer frames here read too.
 */
#include "rewrite.h"
#include "tables.h"

/* The 5-tuple of the TCP/UDP header at l4 into key (bounds checked). */
static inline void fill_key(struct flow_key *key, const uint8_t *saddr,
			    const uint8_t *daddr, uint8_t family,
			    uint8_t proto, const uint8_t *l4)
{
	if (family == PYFWD_AF_INET) {
		/* Five whole-word stores: flow_hash and the compare read them
		 * back as words (a narrow store would stall those loads). */
		uint64_t s = ld_u32(saddr), d = ld_u32(daddr), z = 0;
		uint64_t t = ld_be16(l4) | (uint32_t)ld_be16(l4 + 2) << 16 |
			     (uint64_t)proto << 32 | (uint64_t)family << 40;

		memcpy(key->saddr, &s, 8);
		memcpy(key->saddr + 8, &z, 8);
		memcpy(key->daddr, &d, 8);
		memcpy(key->daddr + 8, &z, 8);
		memcpy(&key->sport, &t, 8);
		return;
	}
	memcpy(key->saddr, saddr, 16);
	memcpy(key->daddr, daddr, 16);
	key->sport = ld_be16(l4);
	key->dport = ld_be16(l4 + 2);
	key->proto = proto;
	key->family = family;
	key->pad[0] = key->pad[1] = 0;
}

/*
 * An ICMP error (v4: unreachable, time exceeded; v6: unreachable, packet
 * too big, time exceeded) at l4: 0 if it is not one, or not to the sender
 * of the packet it quotes; FORWARD_ICMP if it quotes a whole IP header (no
 * IPv6 extension header) and 8 bytes of TCP or UDP, with where and the
 * quoted tuple noted; else DROP_ICMP_QUOTE.
 */
static uint32_t icmp_error_parse(struct parse *ps, uint32_t l4,
				 uint8_t family, uint8_t proto)
{
	/* Both kinds' headers are 8 bytes, then the quoted packet. */
	const uint8_t *h = ps->p + l4, *in = h + ICMP4_HDR_LEN, *qsrc;
	uint32_t avail = ps->l3_end - l4, ihl;
	uint8_t qproto;
	int v4;

	if (unlikely(avail < ICMP6_HDR_MIN))
		return 0;	/* the return path has not looked */
	if (family == PYFWD_AF_INET && proto == PROTO_ICMP &&
	    ICMP4_IS_ERROR(h[0])) {
		if (unlikely(avail < ICMP4_HDR_LEN + IP4_HDR_MIN))
			return PYFWD_R_DROP_ICMP_QUOTE;
		ihl = IP4_IHL(in);
		if (unlikely((in[0] >> 4) != 4 || ihl < IP4_HDR_MIN ||
			     avail < ICMP4_HDR_LEN + ihl + 8))
			return PYFWD_R_DROP_ICMP_QUOTE;
		/* a later fragment quotes no ports */
		if (unlikely(ld_be16(in + IP4_FRAG_OFF) & IP4_FRAG_OFFSET))
			return PYFWD_R_DROP_ICMP_QUOTE;
		qproto = in[9];
	} else if (family == PYFWD_AF_INET6 && proto == PROTO_ICMPV6 &&
		   ICMP6_IS_ERROR(h[0])) {
		ihl = IP6_HDR_LEN;
		if (unlikely(avail < ICMP6_ERR_HDR_LEN + ihl + 8 ||
			     (in[0] >> 4) != 6))
			return PYFWD_R_DROP_ICMP_QUOTE;
		qproto = in[6];
	} else {
		return 0;
	}
	if (unlikely(qproto != PROTO_TCP && qproto != PROTO_UDP))
		return PYFWD_R_DROP_ICMP_QUOTE;
	v4 = family == PYFWD_AF_INET;
	qsrc = in + (v4 ? IP4_SADDR_OFF : IP6_SADDR_OFF);
	/* An error goes to the sender of what it quotes: else not ours. */
	if (memcmp(ps->p + ps->r->l3_off + (v4 ? IP4_DADDR_OFF : IP6_DADDR_OFF),
		   qsrc, v4 ? 4 : 16))
		return 0;
	fill_key(&ps->key, qsrc, in + (v4 ? IP4_DADDR_OFF : IP6_DADDR_OFF),
		 family, qproto, in + ihl);
	ps->inner_l3 = l4 + ICMP4_HDR_LEN;
	ps->inner_l4 = l4 + ICMP4_HDR_LEN + ihl;
	ps->inner_len = avail - ICMP4_HDR_LEN;
	return PYFWD_R_FORWARD_ICMP;
}

/*
 * An ICMP error to a VIP address: about a VIP service's packet (the
 * quoted source is the service: a DR real's or NAT's reply, as it went
 * out) it follows the packet's flow (forward.c); about anything else
 * (an L7 VIP's, say) it is Python's, as any ICMP to a VIP.
 */
static uint32_t icmp_error_vip(struct parse *ps, uint32_t why)
{
	int32_t vip;

	if (why != PYFWD_R_FORWARD_ICMP)
		return why;
	vip = vip_svc_lookup(ps->b, ps->key.saddr, ps->key.family,
			     ps->key.proto, ps->key.sport);
	if (vip < 0)
		return PYFWD_R_PUNT_ICMP;
	ps->r->vip = vip;
	return PYFWD_R_FORWARD_ICMP;
}

static uint32_t classify_arp(struct parse *ps)
{
	const uint8_t *a = ps->p + ps->r->l3_off;
	uint8_t spa[16] = { 0 }, tpa[16] = { 0 };
	int32_t vip;

	ps->r->family = PYFWD_AF_ARP;
	if (unlikely(ps->len - ps->r->l3_off < ARP_LEN))
		return PYFWD_R_DROP_ARP_TRUNC;
	/* Only Ethernet/IPv4 ARP can name a VIP. */
	if (ld_be16(a) != ARP_HTYPE_ETHER || ld_be16(a + 2) != ETHERTYPE_IPV4 ||
	    a[4] != 6 || a[5] != 4)
		return PYFWD_R_PASS_ARP;
	memcpy(spa, a + ARP_SPA_OFF, 4);
	memcpy(tpa, a + ARP_TPA_OFF, 4);
	/* A request for a VIP, or anyone claiming one (the ARP problem).  A
	 * reply to a VIP claiming none answers the kernel: it asks from an
	 * address that an L7 VIP shares with this one. */
	vip = -1;
	if (ld_be16(a + ARP_OP_OFF) == ARP_OP_REQUEST)
		vip = vip_addr_lookup(ps->b, tpa, PYFWD_AF_INET);
	if (vip < 0)
		vip = vip_addr_lookup(ps->b, spa, PYFWD_AF_INET);
	if (vip < 0)
		return PYFWD_R_PASS_ARP;
	ps->r->vip = vip;
	return PYFWD_R_PUNT_ARP;
}

/*
 * A TCP or UDP header at h with avail bytes of L4 packet: 0 if whole and
 * consistent, else the drop reason.
 */
static inline uint32_t tcp_udp_check(const uint8_t *h, uint32_t avail,
				     uint8_t proto)
{
	if (proto == PROTO_TCP) {
		if (unlikely(avail < TCP_HDR_MIN))
			return PYFWD_R_DROP_L4_TRUNC;
		if (unlikely((h[12] >> 4) < 5 ||
			     (uint32_t)(h[12] >> 4) * 4 > avail))
			return PYFWD_R_DROP_TCP_DOFF;
		return 0;
	}
	if (unlikely(avail < UDP_HDR_LEN))
		return PYFWD_R_DROP_L4_TRUNC;
	if (unlikely(ld_be16(h + 4) < UDP_HDR_LEN || ld_be16(h + 4) > avail))
		return PYFWD_R_DROP_UDP_LEN;
	return 0;
}

/* A flow's packet: its tuple and TCP flags, for forward.c. */
static inline void tcp_udp_take(struct parse *ps, const uint8_t *saddr,
				const uint8_t *daddr, uint8_t family,
				uint8_t proto, const uint8_t *h)
{
	fill_key(&ps->key, saddr, daddr, family, proto, h);
	ps->tcp_flags = proto == PROTO_TCP ? h[TCP_FLAGS_OFF] : 0;
}

/*
 * L4 of a packet to a VIP address.  l4 is its offset; the L3 length has
 * already been checked to lie within the frame.
 */
static uint32_t classify_l4(struct parse *ps, const uint8_t *saddr,
			    const uint8_t *daddr, uint8_t family, uint8_t proto,
			    uint32_t l4)
{
	const uint8_t *h = ps->p + l4;
	uint32_t avail = ps->l3_end - l4, why;
	int32_t vip;

	ps->r->l4proto = proto;
	ps->r->l4_off = (uint16_t)l4;
	switch (proto) {
	case PROTO_TCP:
	case PROTO_UDP:
		why = tcp_udp_check(h, avail, proto);
		if (unlikely(why))
			return why;
		break;
	case PROTO_ICMP:
	case PROTO_ICMPV6:
		if (unlikely(avail < (proto == PROTO_ICMP ? ICMP4_HDR_LEN :
							    ICMP6_HDR_MIN)))
			return PYFWD_R_DROP_L4_TRUNC;
		/* An error about a flow's packet? */
		why = icmp_error_parse(ps, l4, family, proto);
		if (why)
			return icmp_error_vip(ps, why);
		/* A neighbour advertisement to the VIP for another target
		 * answers the kernel (as ARP replies do: classify_arp). */
		if (proto == PROTO_ICMPV6 && avail >= NDP_MSG_MIN &&
		    h[0] == NDP_NEIGH_ADVERT &&
		    vip_addr_lookup(ps->b, h + NDP_TARGET_OFF,
				    PYFWD_AF_INET6) < 0)
			return PYFWD_R_PASS_VIP_OTHER;
		return PYFWD_R_PUNT_ICMP;
	default:
		return PYFWD_R_PASS_VIP_OTHER;
	}
	/* The address's first VIP is often the service itself. */
	vip = ps->r->vip;
	if (ps->b->vips[vip].proto != proto ||
	    ps->b->vips[vip].port != ld_be16(h + 2))
		vip = vip_svc_lookup(ps->b, daddr, family, proto,
				     ld_be16(h + 2));
	if (vip < 0)
		return PYFWD_R_PASS_VIP_OTHER;
	ps->r->vip = vip;
	/* NAT/SNAT route (rewrite_ttl_dec): a router drops it here. */
	if (mode_paired(ps->b->vips[vip].mode) &&
	    unlikely(ip_ttl(ps->p + ps->r->l3_off, family) <= 1))
		return PYFWD_R_DROP_TTL_EXPIRED;
	tcp_udp_take(ps, saddr, daddr, family, proto, h);
	return PYFWD_R_FORWARD;
}

/*
 * IP not to a VIP: may be a real server's answer (NAT, SNAT) or an ICMP
 * error about a flow.  Tentative: forward.c passes it if no flow has it;
 * and what is not a whole TCP/UDP header passes too (it is not to a VIP).
 */
static uint32_t classify_return(struct parse *ps, const uint8_t *saddr,
				const uint8_t *daddr, uint8_t family,
				uint8_t proto, uint32_t l4)
{
	const uint8_t *h = ps->p + l4;

	ps->r->l4proto = proto;
	ps->r->l4_off = (uint16_t)l4;
	switch (proto) {
	case PROTO_TCP:
	case PROTO_UDP:
		if (tcp_udp_check(h, ps->l3_end - l4, proto))
			return PYFWD_R_PASS_NOT_VIP;
		tcp_udp_take(ps, saddr, daddr, family, proto, h);
		return PYFWD_R_FORWARD_REPLY;
	case PROTO_ICMP:
	case PROTO_ICMPV6:
		return icmp_error_parse(ps, l4, family, proto) ==
		       PYFWD_R_FORWARD_ICMP ? PYFWD_R_FORWARD_ICMP :
					      PYFWD_R_PASS_NOT_VIP;
	default:
		return PYFWD_R_PASS_NOT_VIP;
	}
}

static uint32_t classify_ip4(struct parse *ps)
{
	uint32_t l3 = ps->r->l3_off, hlen, totlen;
	const uint8_t *ip = ps->p + l3;
	uint8_t daddr[16] = { 0 };
	int32_t vip;

	ps->r->family = PYFWD_AF_INET;
	if (unlikely(ps->len - l3 < IP4_HDR_MIN))
		return PYFWD_R_DROP_IP4_TRUNC;
	if (unlikely((ip[0] >> 4) != 4))
		return PYFWD_R_DROP_IP4_VERSION;
	hlen = IP4_IHL(ip);
	if (unlikely(hlen < IP4_HDR_MIN))
		return PYFWD_R_DROP_IP4_IHL;
	if (unlikely(ps->len - l3 < hlen))
		return PYFWD_R_DROP_IP4_TRUNC;
	totlen = ld_be16(ip + 2);
	if (unlikely(totlen < hlen || totlen > ps->len - l3))
		return PYFWD_R_DROP_IP4_TOTLEN;
	ps->l3_end = l3 + totlen;	/* Ethernet padding is not ours */
	if (hlen > IP4_HDR_MIN)
		ps->r->flags |= PYFWD_F_IP_OPTIONS;

	memcpy(daddr, ip + IP4_DADDR_OFF, 4);
	vip = vip_addr_lookup(ps->b, daddr, PYFWD_AF_INET);
	if (vip < 0) {
		if (!ps->b->nat_vips ||
		    ld_be16(ip + IP4_FRAG_OFF) & IP4_FRAG_MF_OFFSET)
			return PYFWD_R_PASS_NOT_VIP;
		return classify_return(ps, ip + IP4_SADDR_OFF, daddr,
				       PYFWD_AF_INET, ip[9], l3 + hlen);
	}
	ps->r->vip = vip;
	/* MF set or an offset: the ports are not in this frame (or lie). */
	if (unlikely(ld_be16(ip + IP4_FRAG_OFF) & IP4_FRAG_MF_OFFSET)) {
		ps->r->flags |= PYFWD_F_FRAGMENT;
		return PYFWD_R_DROP_FRAGMENT;
	}
	return classify_l4(ps, ip + IP4_SADDR_OFF, daddr, PYFWD_AF_INET, ip[9],
			   l3 + hlen);
}

/*
 * Walk IPv6 extension headers from *off with next header *nh.  Returns 0
 * with *nh and *off at the upper-layer header, or a drop reason.
 */
static uint32_t ip6_skip_exthdrs(struct parse *ps, uint8_t *nh, uint32_t *off)
{
	int i;

	for (i = 0; i < IP6_EXTHDR_MAX; i++) {
		const uint8_t *h = ps->p + *off;
		uint32_t avail = ps->l3_end - *off;

		if (*nh == PROTO_FRAGMENT) {
			if (unlikely(avail < 8))
				return PYFWD_R_DROP_IP6_EXTHDR;
			ps->r->flags |= PYFWD_F_FRAGMENT;
			return PYFWD_R_DROP_FRAGMENT;
		}
		if (!IP6_EXTHDR_WALKED(*nh))
			return 0;
		if (unlikely(avail < 8 || avail < IP6_EXTHDR_LEN(h)))
			return PYFWD_R_DROP_IP6_EXTHDR;
		ps->r->flags |= PYFWD_F_IP_OPTIONS;
		*nh = h[0];
		*off += IP6_EXTHDR_LEN(h);
	}
	return PYFWD_R_DROP_IP6_EXTHDR;
}

/*
 * An NDP message to a multicast address (ff00::/8): a neighbour
 * solicitation (to the target's solicited-node group) or advertisement
 * (unsolicited: to all nodes) whose target is a VIP is punted: Python
 * answers the first and spots another owner in the second.  Any other
 * multicast is not ours.
 */
static uint32_t classify_ndp(struct parse *ps, uint8_t nh, uint32_t off)
{
	const uint8_t *h;
	int32_t vip;

	if (ip6_skip_exthdrs(ps, &nh, &off))
		return PYFWD_R_PASS_NOT_VIP;
	h = ps->p + off;
	if (nh != PROTO_ICMPV6 || ps->l3_end - off < NDP_MSG_MIN ||
	    !NDP_IS_NS_OR_NA(h[0]))
		return PYFWD_R_PASS_NOT_VIP;
	vip = vip_addr_lookup(ps->b, h + NDP_TARGET_OFF, PYFWD_AF_INET6);
	if (vip < 0)
		return PYFWD_R_PASS_NOT_VIP;
	ps->r->vip = vip;
	ps->r->l4proto = PROTO_ICMPV6;
	ps->r->l4_off = (uint16_t)off;
	return PYFWD_R_PUNT_NDP;
}

static uint32_t classify_ip6(struct parse *ps)
{
	uint32_t l3 = ps->r->l3_off, off = l3 + IP6_HDR_LEN, why;
	const uint8_t *ip = ps->p + l3;
	uint8_t nh;
	int32_t vip;

	ps->r->family = PYFWD_AF_INET6;
	if (unlikely(ps->len - l3 < IP6_HDR_LEN))
		return PYFWD_R_DROP_IP6_TRUNC;
	if (unlikely((ip[0] >> 4) != 6))
		return PYFWD_R_DROP_IP6_VERSION;
	if (unlikely(ld_be16(ip + 4) > ps->len - off))
		return PYFWD_R_DROP_IP6_PAYLEN;
	ps->l3_end = off + ld_be16(ip + 4);
	nh = ip[6];

	vip = vip_addr_lookup(ps->b, ip + IP6_DADDR_OFF, PYFWD_AF_INET6);
	if (vip >= 0) {
		ps->r->vip = vip;
		why = ip6_skip_exthdrs(ps, &nh, &off);
		if (why)
			return why;
		return classify_l4(ps, ip + IP6_SADDR_OFF, ip + IP6_DADDR_OFF,
				   PYFWD_AF_INET6, nh, off);
	}
	if (ip[IP6_DADDR_OFF] == IP6_MULTICAST)
		return classify_ndp(ps, nh, off);
	if (!ps->b->nat_vips)
		return PYFWD_R_PASS_NOT_VIP;
	why = ip6_skip_exthdrs(ps, &nh, &off);
	if (why)
		return why == PYFWD_R_DROP_FRAGMENT ? PYFWD_R_PASS_NOT_VIP :
						      why;
	return classify_return(ps, ip + IP6_SADDR_OFF, ip + IP6_DADDR_OFF,
			       PYFWD_AF_INET6, nh, off);
}

uint32_t frame_classify(const struct pyfwd_ctx *ctx, struct parse *ps,
			const struct pyfwd_frame *f)
{
	struct pyfwd_result *r = ps->r;
	uint32_t l3 = ETH_HDR_LEN;
	uint16_t type;

	if (unlikely((f->len > ctx->cfg.max_frame &&
		      !(f->flags & PYFWD_FRAME_GSO)) || f->len > f->cap))
		return PYFWD_R_DROP_OVERSIZE;
	if (unlikely(!f->data || f->len < ETH_HDR_LEN))
		return PYFWD_R_DROP_RUNT;
	/* Unicast to someone else (multicast and broadcast are for all). */
	if (!ctx->any_mac && !(ps->p[0] & 1) &&
	    memcmp(ps->p, ctx->if_mac[f->in_if % PYFWD_IFACES_MAX], 6))
		return PYFWD_R_PASS_OTHER_MAC;

	type = ld_be16(ps->p + ETH_TYPE_OFF);
	if (type == ETHERTYPE_VLAN || type == ETHERTYPE_QINQ) {
		if (unlikely(f->len < ETH_HDR_LEN + VLAN_HDR_LEN))
			return PYFWD_R_DROP_VLAN_TRUNC;
		r->flags |= PYFWD_F_VLAN;
		r->vlan_tci = ld_be16(ps->p + ETH_HDR_LEN);
		type = ld_be16(ps->p + ETH_HDR_LEN + 2);
		l3 += VLAN_HDR_LEN;
	}
	r->l3_off = (uint16_t)l3;
	switch (type) {
	case ETHERTYPE_ARP:
		return classify_arp(ps);
	case ETHERTYPE_IPV4:
		return classify_ip4(ps);
	case ETHERTYPE_IPV6:
		return classify_ip6(ps);
	default:
		return PYFWD_R_PASS_ETHERTYPE;
	}
}

