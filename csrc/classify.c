/* SPDX-License-Identifier: MIT */
/*
 * classify.c - the per-packet core: parse -> classify -> verdict.
 *
 * Independent of any I/O backend: the AF_XDP and AF_PACKET loops, the
 * cffi tests and the sanitizer replay all call pyfwd_process_batch().
 * Every read is bounds-checked against the frame's length before it is
 * made; a frame that ends early is dropped with a reason, never read past.
 */
#include "core.h"

struct parse {
	const uint8_t *p;
	uint32_t len;		/* bytes of frame */
	uint32_t l3_end;	/* end of the L3 packet (IP length), <= len */
	struct pyfwd_result *r;
	const struct vip_bank *b;
	struct flow_key key;	/* filled for a frame to a VIP service */
	uint8_t tcp_flags;
};

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* Set the result's reason (and so its verdict) and return it. */
static inline uint32_t decide(struct pyfwd_result *r, uint32_t reason)
{
	r->reason = (uint8_t)reason;
	r->verdict = (uint8_t)reason_verdict(reason);
	return reason;
}

static uint32_t classify_arp(struct parse *ps)
{
	const uint8_t *a = ps->p + ps->r->l3_off;
	uint8_t spa[16] = { 0 }, tpa[16] = { 0 };
	int32_t vip;

	ps->r->family = PYFWD_AF_ARP;
	if (unlikely(ps->len - ps->r->l3_off < 28))
		return PYFWD_R_DROP_ARP_TRUNC;
	/* Only Ethernet/IPv4 ARP can name a VIP. */
	if (ld_be16(a) != 1 || ld_be16(a + 2) != ETHERTYPE_IPV4 ||
	    a[4] != 6 || a[5] != 4)
		return PYFWD_R_PASS_ARP;
	memcpy(spa, a + 14, 4);
	memcpy(tpa, a + 24, 4);
	/* A request for a VIP, or anyone claiming one (the ARP problem). */
	vip = vip_addr_lookup(ps->b, tpa, PYFWD_AF_INET);
	if (vip < 0)
		vip = vip_addr_lookup(ps->b, spa, PYFWD_AF_INET);
	if (vip < 0)
		return PYFWD_R_PASS_ARP;
	ps->r->vip = vip;
	return PYFWD_R_PUNT_ARP;
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
	uint32_t avail = ps->l3_end - l4;
	int32_t vip;

	ps->r->l4proto = proto;
	ps->r->l4_off = (uint16_t)l4;
	switch (proto) {
	case PROTO_TCP:
		if (unlikely(avail < 20))
			return PYFWD_R_DROP_L4_TRUNC;
		if (unlikely((h[12] >> 4) < 5 || (uint32_t)(h[12] >> 4) * 4 >
							 avail))
			return PYFWD_R_DROP_TCP_DOFF;
		break;
	case PROTO_UDP:
		if (unlikely(avail < 8))
			return PYFWD_R_DROP_L4_TRUNC;
		if (unlikely(ld_be16(h + 4) < 8 || ld_be16(h + 4) > avail))
			return PYFWD_R_DROP_UDP_LEN;
		break;
	case PROTO_ICMP:
	case PROTO_ICMPV6:
		if (unlikely(avail < (proto == PROTO_ICMP ? 8u : 4u)))
			return PYFWD_R_DROP_L4_TRUNC;
		return PYFWD_R_PUNT_ICMP;
	default:
		return PYFWD_R_PASS_VIP_OTHER;
	}
	vip = vip_svc_lookup(ps->b, daddr, family, proto, ld_be16(h + 2));
	if (vip < 0)
		return PYFWD_R_PASS_VIP_OTHER;
	ps->r->vip = vip;
	memcpy(ps->key.saddr, saddr, family == PYFWD_AF_INET ? 4 : 16);
	memcpy(ps->key.daddr, daddr, family == PYFWD_AF_INET ? 4 : 16);
	ps->key.sport = ld_be16(h);
	ps->key.dport = ld_be16(h + 2);
	ps->key.proto = proto;
	ps->key.family = family;
	ps->tcp_flags = proto == PROTO_TCP ? h[13] : 0;
	return PYFWD_R_FORWARD;
}

static uint32_t classify_ip4(struct parse *ps)
{
	uint32_t l3 = ps->r->l3_off, hlen, totlen;
	const uint8_t *ip = ps->p + l3;
	uint8_t daddr[16] = { 0 };
	int32_t vip;

	ps->r->family = PYFWD_AF_INET;
	if (unlikely(ps->len - l3 < 20))
		return PYFWD_R_DROP_IP4_TRUNC;
	if (unlikely((ip[0] >> 4) != 4))
		return PYFWD_R_DROP_IP4_VERSION;
	hlen = (uint32_t)(ip[0] & 0x0f) * 4;
	if (unlikely(hlen < 20))
		return PYFWD_R_DROP_IP4_IHL;
	if (unlikely(ps->len - l3 < hlen))
		return PYFWD_R_DROP_IP4_TRUNC;
	totlen = ld_be16(ip + 2);
	if (unlikely(totlen < hlen || totlen > ps->len - l3))
		return PYFWD_R_DROP_IP4_TOTLEN;
	ps->l3_end = l3 + totlen;	/* Ethernet padding is not ours */
	if (hlen > 20)
		ps->r->flags |= PYFWD_F_IP_OPTIONS;

	memcpy(daddr, ip + 16, 4);
	vip = vip_addr_lookup(ps->b, daddr, PYFWD_AF_INET);
	if (vip < 0)
		return PYFWD_R_PASS_NOT_VIP;
	ps->r->vip = vip;
	/* MF set or an offset: the ports are not in this frame (or lie). */
	if (unlikely(ld_be16(ip + 6) & 0x3fff)) {
		ps->r->flags |= PYFWD_F_FRAGMENT;
		return PYFWD_R_DROP_FRAGMENT;
	}
	return classify_l4(ps, ip + 12, daddr, PYFWD_AF_INET, ip[9], l3 + hlen);
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

		switch (*nh) {
		case PROTO_HOPOPTS:
		case PROTO_ROUTING:
		case PROTO_DSTOPTS:
			if (unlikely(avail < 8 ||
				     avail < ((uint32_t)h[1] + 1) * 8))
				return PYFWD_R_DROP_IP6_EXTHDR;
			ps->r->flags |= PYFWD_F_IP_OPTIONS;
			*nh = h[0];
			*off += ((uint32_t)h[1] + 1) * 8;
			break;
		case PROTO_FRAGMENT:
			if (unlikely(avail < 8))
				return PYFWD_R_DROP_IP6_EXTHDR;
			ps->r->flags |= PYFWD_F_FRAGMENT;
			return PYFWD_R_DROP_FRAGMENT;
		default:
			return 0;
		}
	}
	return PYFWD_R_DROP_IP6_EXTHDR;
}

/* ff02::1:ffXX:XXXX, where neighbour solicitations are sent. */
static inline int ip6_solicited_node(const uint8_t *a)
{
	static const uint8_t pfx[13] = { 0xff, 0x02, 0, 0, 0, 0, 0, 0,
					 0, 0, 0, 0x01, 0xff };

	return !memcmp(a, pfx, sizeof(pfx));
}

static uint32_t classify_ip6(struct parse *ps)
{
	uint32_t l3 = ps->r->l3_off, off = l3 + 40, why;
	const uint8_t *ip = ps->p + l3;
	uint8_t nh;
	int32_t vip;

	ps->r->family = PYFWD_AF_INET6;
	if (unlikely(ps->len - l3 < 40))
		return PYFWD_R_DROP_IP6_TRUNC;
	if (unlikely((ip[0] >> 4) != 6))
		return PYFWD_R_DROP_IP6_VERSION;
	if (unlikely(ld_be16(ip + 4) > ps->len - off))
		return PYFWD_R_DROP_IP6_PAYLEN;
	ps->l3_end = off + ld_be16(ip + 4);
	nh = ip[6];

	vip = vip_addr_lookup(ps->b, ip + 24, PYFWD_AF_INET6);
	if (vip >= 0) {
		ps->r->vip = vip;
		why = ip6_skip_exthdrs(ps, &nh, &off);
		if (why)
			return why;
		return classify_l4(ps, ip + 8, ip + 24, PYFWD_AF_INET6, nh, off);
	}
	if (!ip6_solicited_node(ip + 24))
		return PYFWD_R_PASS_NOT_VIP;

	/* Neighbour solicitation: is its target a VIP? */
	why = ip6_skip_exthdrs(ps, &nh, &off);
	if (why)
		return why;
	if (nh != PROTO_ICMPV6 || ps->l3_end - off < 24 || ps->p[off] != 135)
		return PYFWD_R_PASS_NOT_VIP;
	vip = vip_addr_lookup(ps->b, ps->p + off + 8, PYFWD_AF_INET6);
	if (vip < 0)
		return PYFWD_R_PASS_NOT_VIP;
	ps->r->vip = vip;
	ps->r->l4proto = PROTO_ICMPV6;
	ps->r->l4_off = (uint16_t)off;
	return PYFWD_R_PUNT_NDP;
}

static uint32_t classify_frame(const struct pyfwd_ctx *ctx,
			       struct parse *ps, const struct pyfwd_frame *f)
{
	struct pyfwd_result *r = ps->r;
	uint32_t l3 = ETH_HLEN_;
	uint16_t type;

	if (unlikely(f->len > ctx->cfg.max_frame || f->len > f->cap))
		return PYFWD_R_DROP_OVERSIZE;
	if (unlikely(!f->data || f->len < ETH_HLEN_))
		return PYFWD_R_DROP_RUNT;
	/* Unicast to someone else (multicast and broadcast are for all). */
	if (!ctx->any_mac && !(ps->p[0] & 1) &&
	    memcmp(ps->p, ctx->cfg.mac, 6))
		return PYFWD_R_PASS_OTHER_MAC;

	type = ld_be16(ps->p + 12);
	if (type == ETHERTYPE_VLAN || type == ETHERTYPE_QINQ) {
		if (unlikely(f->len < ETH_HLEN_ + VLAN_HLEN_))
			return PYFWD_R_DROP_VLAN_TRUNC;
		r->flags |= PYFWD_F_VLAN;
		r->vlan_tci = ld_be16(ps->p + 14);
		type = ld_be16(ps->p + 16);
		l3 += VLAN_HLEN_;
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

/*
 * The flow of key: its slot if it is alive, else NULL with *slot set to
 * where a new one goes (a free slot, or the oldest of the probe window:
 * *evict then says a live flow is pushed out).
 */
static struct flow *flow_find(struct worker *w, const struct flow_key *key,
			      uint32_t h, uint64_t now, struct flow **slot,
			      int *evict)
{
	struct flow *free_ = NULL, *oldest = NULL;
	uint32_t k;

	for (k = 0; k < FLOW_PROBE; k++) {
		struct flow *f = &w->flows[(h + k) & w->flow_mask];

		if (f->expires_ns <= now) {
			if (!free_)
				free_ = f;
			continue;
		}
		if (!memcmp(&f->key, key, sizeof(*key)))
			return f;
		if (!oldest || f->expires_ns < oldest->expires_ns)
			oldest = f;
	}
	*evict = !free_;
	*slot = free_ ? free_ : oldest;
	return NULL;
}

static inline int real_usable(const struct vip_bank *b, uint32_t id)
{
	return id < b->nreals && (b->reals[id].flags & PYFWD_REAL_F_USED);
}

/*
 * A frame to a VIP service: find its flow or schedule a new one, then
 * rewrite it for the VIP's mode.  Returns FORWARD or a drop reason.
 */
static uint32_t forward(struct pyfwd_ctx *ctx, struct worker *w,
			const struct vip_bank *b, struct parse *ps,
			struct pyfwd_frame *f, uint64_t now)
{
	const struct pyfwd_vip *vip = &b->vips[ps->r->vip];
	uint32_t h = flow_hash(&ps->key), id, idx;
	uint8_t fl = ps->tcp_flags;
	struct flow *flow, *slot = NULL;
	const struct pyfwd_real *real;
	int evict = 0;

	flow = flow_find(w, &ps->key, h, now, &slot, &evict);
	if (flow && real_usable(b, flow->real) &&
	    !(flow->state == FLOW_CLOSING && (fl & (TCP_SYN | TCP_ACK)) ==
	      TCP_SYN)) {
		id = flow->real;
		w->stats.flow_hits++;
	} else {
		if (flow) {
			/* Its real was halted, or a new SYN reuses the ports. */
			w->stats.flows_rescheduled += !real_usable(b, flow->real);
			slot = flow;
			evict = 0;
		}
		if (unlikely(!vip->ring_len))
			return PYFWD_R_DROP_NO_REAL;
		idx = vip->sched == PYFWD_SCHED_SEQ ?
			      w->seq[ps->r->vip]++ % vip->ring_len :
			      h % vip->ring_len;
		id = b->ring[vip->ring_off + idx];
		if (unlikely(!real_usable(b, id)))
			return PYFWD_R_DROP_NO_REAL;
		w->stats.flows_evicted += evict;
		w->stats.flows_new++;
		w->real_stats[id].flows_new++;
		flow = slot;
		flow->key = ps->key;
		flow->real = (uint16_t)id;
		flow->state = FLOW_OPEN;
	}

	if (ps->key.proto == PROTO_UDP) {
		flow->expires_ns = now + ctx->cfg.udp_timeout * 1000000000ull;
	} else if (fl & (TCP_FIN | TCP_RST) || flow->state == FLOW_CLOSING) {
		flow->state = FLOW_CLOSING;
		flow->expires_ns = now + ctx->cfg.tcp_fin_timeout *
						 1000000000ull;
	} else {
		flow->expires_ns = now + ctx->cfg.tcp_timeout * 1000000000ull;
	}

	/* DR: the real server's MAC, ours as the source; IP untouched. */
	real = &b->reals[id];
	memcpy(f->data, real->mac, 6);
	memcpy(f->data + 6, ctx->cfg.mac, 6);
	w->real_stats[id].frames++;
	w->real_stats[id].bytes += f->len;
	return PYFWD_R_FORWARD;
}

uint32_t core_burst(struct pyfwd_ctx *ctx, struct worker *w,
		    struct pyfwd_frame *frames, uint32_t n,
		    struct pyfwd_result *out)
{
	const struct vip_bank *b = bank_enter(ctx, w);
	uint64_t now = core_now(ctx);
	uint32_t i, reason, fwd = 0;

	for (i = 0; i < n; i++) {
		struct pyfwd_result *r = &out[i];
		struct parse ps = { .p = frames[i].data, .len = frames[i].len,
				    .r = r, .b = b };

		memset(r, 0, sizeof(*r));
		r->vip = -1;
		reason = classify_frame(ctx, &ps, &frames[i]);
		if (reason == PYFWD_R_FORWARD)
			reason = forward(ctx, w, b, &ps, &frames[i], now);
		decide(r, reason);
		w->stats.frames++;
		w->stats.bytes += frames[i].len;
		w->stats.reason[reason]++;
		w->stats.verdict[r->verdict]++;
		if (r->verdict == PYFWD_VERDICT_PUNT)
			punt_push(w, frames[i].data, frames[i].len);
		fwd += r->verdict == PYFWD_VERDICT_FORWARD;
	}
	bank_leave(w);
	return fwd;
}

uint32_t pyfwd_process_batch(struct pyfwd_ctx *ctx, struct pyfwd_frame *frames,
			     uint32_t n, struct pyfwd_result *out)
{
	return core_burst(ctx, &ctx->workers[0], frames, n, out);
}
