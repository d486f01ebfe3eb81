/* SPDX-License-Identifier: MIT */
/*
 * forward.c - the three kinds of forward, once a frame is classified:
 *
 *   FORWARD        to a VIP service: find its flow or schedule a new one,
 *                  rewrite for the VIP's mode (DR: L2; NAT/SNAT: L3/L4;
 *                  TUN: an outer IP header, tunnel.c)
 *   FORWARD_REPLY  a real server's answer (NAT, SNAT): back to the
 *                  client, from the VIP
 *   FORWARD_ICMP   an ICMP error quoting a packet of a flow: DR, to the
 *                  flow's real (TUN: through its tunnel); NAT/SNAT, the
 *                  quoted packet made what
 *                  its sender sent, to that sender
 *
 * Each returns the reason the frame ends with: the one it came with, or
 * PASS/PUNT when no flow claims it, or DROP when none can be made.
 */
#include "fastmap.h"
#include "flow.h"
#include "rewrite.h"
#include "tables.h"

/* Where a translated packet of entry e goes, and what it becomes. */
struct xlat {
	const uint8_t *saddr, *daddr;
	uint16_t sport, dport;
	const uint8_t *mac;	/* next hop */
	uint8_t out_if;
};

/* A packet matching entry e (DIR_ORIG or DIR_REPLY) as we send it on. */
static void xlat_out(const struct pyfwd_ctx *ctx, struct worker *w,
		     const struct vip_bank *b, const struct flow *e,
		     struct xlat *x)
{
	if (e->dir == DIR_ORIG) {
		const struct pyfwd_real *real = &b->reals[e->real];

		x->daddr = real->addr;
		x->dport = real->port ? real->port : e->key.dport;
		x->mac = real->mac;
		x->out_if = real->out_if;
		if (e->mode == PYFWD_MODE_SNAT) {
			x->saddr = ctx->snat.addr;
			x->sport = e->snat_port;
		} else {
			x->saddr = e->key.saddr;
			x->sport = e->key.sport;
		}
	} else {
		const struct flow *orig = flow_peer(w, e);

		x->saddr = orig->key.daddr;	/* the VIP */
		x->sport = orig->key.dport;
		x->daddr = orig->key.saddr;	/* the client */
		x->dport = orig->key.sport;
		x->mac = orig->mac;
		x->out_if = orig->in_if;
	}
}

/* Rewrite the frame of a parsed flow packet as entry e says. */
static void xlat_apply(const struct pyfwd_ctx *ctx, struct worker *w,
		       const struct vip_bank *b, const struct flow *e,
		       struct parse *ps, struct pyfwd_frame *f)
{
	int gso = f->flags & PYFWD_FRAME_GSO;	/* the kernel finishes it */
	struct xlat x;

	xlat_out(ctx, w, b, e, &x);
	if (!gso && (f->flags & PYFWD_FRAME_CSUM_PARTIAL))
		csum_finish(w, ps, f->data);	/* NAT then starts from it */
	if (mode_paired(e->mode))	/* routed: a hop (classify.c) */
		rewrite_ttl_dec(f->data + ps->r->l3_off, ps->key.family);
	if (mode_paired(e->mode))
		rewrite_nat(f->data + ps->r->l3_off, f->data + ps->r->l4_off,
			    ps->l3_end - ps->r->l4_off, ps->key.family,
			    ps->key.proto, x.saddr, x.sport, x.daddr, x.dport,
			    gso);
	rewrite_l2(ctx, f->data, x.mac, x.out_if, ps->r);
}

/*
 * The state of a new flow (core.h): TCP half-open, whatever made it (a
 * FIN or RST makes it closing at once: flow_touch).  A DR flow made by
 * another segment than a SYN becomes established with the client's next
 * segment (forward_vip): a lone late segment (a straggler of a connection
 * gone) keeps it tcp_syn_timeout, not tcp_timeout.
 */
static inline uint8_t flow_first_state(const struct parse *ps)
{
	return ps->key.proto == PROTO_TCP ? FLOW_SYN : FLOW_OPEN;
}

/*
 * A new flow of the VIP into `slot` (pushing out what it holds if
 * `evict`, EVICT_*: a half-open flow, or for DR the oldest DR entry):
 * its real (persistence first, else the scheduler), its REPLY entry for
 * NAT/SNAT (SNAT: `keep`, a port just freed, if the pool can give it:
 * flow.c).  Returns the flow, or NULL with *why a drop reason.
 */
static struct flow *flow_new(const struct pyfwd_ctx *ctx, struct worker *w,
			     const struct vip_bank *b, struct parse *ps,
			     struct pyfwd_frame *f, uint64_t now,
			     struct flow *slot, int evict, uint16_t keep,
			     uint32_t *why)
{
	const struct pyfwd_vip *vip = &b->vips[ps->r->vip];
	uint32_t id = PYFWD_NO_REAL;
	struct flow *flow, *pe = NULL;
	struct flow_key pk;

	*why = PYFWD_R_DROP_TABLE_FULL;
	if (unlikely(!slot || (evict == EVICT_DR && mode_paired(vip->mode))))
		return NULL;
	if (vip->persist)
		id = sched_persist_lookup(w, b, vip, &ps->key, now, &pe, &pk);
	if (id == PYFWD_NO_REAL) {
		*why = PYFWD_R_DROP_NO_REAL;
		if (unlikely(!vip->ring_len))
			return NULL;
		id = sched_pick(b, w, vip, ps->r->vip, &ps->key);
		if (unlikely(!real_usable(b, id)))
			return NULL;
	}
	if (pe == slot)
		pe = NULL;	/* one free slot: the flow comes first */
	if (pe) {
		if (!flow_alive(pe, now)) {
			memset(pe, 0, sizeof(*pe));	/* a free slot */
			pe->key = pk;
		}
		pe->real = (uint16_t)id;
		flow_slot_take(w, pe, now + (uint64_t)vip->persist * NS_PER_S);
	}
	if (evict)
		flow_free(w, slot);	/* a half-open pair: both, its port */
	flow = slot;
	memset(flow, 0, sizeof(*flow));		/* a free slot */
	/* taken while we look (flow_touch gives it its expiry); state 0:
	 * NAT/SNAT's REPLY entry pushes out no half-open flow there */
	flow_slot_take(w, flow, now + 1);
	flow->key = ps->key;
	flow->real = (uint16_t)id;
	flow->mode = vip->mode;
	flow->dir = DIR_ORIG;
	flow->peer = NO_PEER;
	flow->in_if = f->in_if;
	memcpy(flow->mac, f->data + 6, 6);
	if (mode_paired(vip->mode)) {
		*why = flow_pair_open(ctx, w, b, flow, now, keep);
		if (*why) {
			flow_slot_clear(w, flow);	/* it stays free */
			return NULL;
		}
		flow_peer(w, flow)->state = flow_first_state(ps);
	}
	flow->state = flow_first_state(ps);
	w->stats.flows.flows_evicted += evict != EVICT_NONE;
	w->stats.flows.flows_new++;
	w->real_stats[id].flows_new++;
	flow->counted = 1;
	w->active[id]++;
	w->stats.flows.flows_half_open += flow_half_open(flow->state);
	return flow;
}

/* New flows per second on this worker past the cap (when there is one). */
static inline int new_flow_over_cap(const struct pyfwd_config *c,
				    struct worker *w, uint64_t now)
{
	uint64_t second = now / NS_PER_S;

	if (likely(!c->new_flows_per_second))
		return 0;
	if (w->new_second != second) {
		w->new_second = second;
		w->new_in_second = 0;
	}
	return w->new_in_second >= c->new_flows_per_second;
}

/*
 * A new flow beyond the cap: DR (or TUN) with Maglev sends it by the
 * table without a flow entry (the same tuple, the same real, while the
 * table stands: Katran's LRU bypass); anything else is dropped, as for a
 * full table.
 */
static uint32_t forward_untracked(const struct pyfwd_ctx *ctx,
				  struct worker *w, const struct vip_bank *b,
				  struct parse *ps, struct pyfwd_frame *f)
{
	const struct pyfwd_vip *vip = &b->vips[ps->r->vip];
	struct flow e = { .dir = DIR_ORIG, .mode = PYFWD_MODE_DR };
	uint32_t id, why = PYFWD_R_FORWARD;

	if (mode_paired(vip->mode) || vip->sched != PYFWD_SCHED_HASH ||
	    vip->persist)
		return PYFWD_R_DROP_TABLE_FULL;
	if (unlikely(!vip->ring_len))
		return PYFWD_R_DROP_NO_REAL;
	id = sched_pick(b, w, vip, ps->r->vip, &ps->key);
	if (unlikely(!real_usable(b, id)))
		return PYFWD_R_DROP_NO_REAL;
	e.key = ps->key;
	e.real = (uint16_t)id;
	if (vip->mode == PYFWD_MODE_TUN)
		why = tun_forward(ctx, w, b, id, ps, f, why);
	else
		xlat_apply(ctx, w, b, &e, ps, f);
	w->stats.flows.flows_bypassed++;
	if (why == PYFWD_R_FORWARD) {
		w->real_stats[id].frames++;
		w->real_stats[id].bytes += f->len;
	}
	return why;
}

uint32_t forward_vip(const struct pyfwd_ctx *ctx, struct worker *w,
		     const struct vip_bank *b, struct parse *ps,
		     struct pyfwd_frame *f, uint64_t now)
{
	const struct pyfwd_vip *vip = &b->vips[ps->r->vip];
	uint8_t fl = ps->tcp_flags;
	struct flow *flow, *slot = NULL;
	uint32_t why;
	uint16_t keep = 0;
	int evict = 0;

	flow = flow_find_h(w, &ps->key, ps->hash, now, &slot, &evict);
	if (flow && (!real_usable(b, flow->real) || flow->mode != vip->mode ||
		     (flow->state == FLOW_CLOSING &&
		      (fl & (TCP_SYN | TCP_ACK)) == TCP_SYN))) {
		/* Its real was halted, or a new SYN reuses the ports: SNAT
		 * then keeps the flow's source port (flow.c). */
		w->stats.flows.flows_rescheduled +=
			!real_usable(b, flow->real);
		if (flow->state == FLOW_CLOSING && flow->dir == DIR_ORIG)
			keep = flow->snat_port;
		flow_free(w, flow);
		slot = flow;
		evict = 0;
		flow = NULL;
	}
	if (flow) {
		w->stats.flows.flow_hits++;
	} else {
		fl &= (uint8_t)~TCP_ACK;	/* the next segment's ACK counts */
		if (unlikely(new_flow_over_cap(&ctx->cfg, w, now)))
			return forward_untracked(ctx, w, b, ps, f);
		flow = flow_new(ctx, w, b, ps, f, now, slot, evict, keep,
				&why);
		if (!flow)
			return why;
		w->new_in_second++;
	}
	flow_touch(&ctx->cfg, w, flow, fl, 0, now);

	if (flow->mode == PYFWD_MODE_TUN) {
		/* never the XDP fast path's: it cannot grow a frame */
		why = tun_forward(ctx, w, b, flow->real, ps, f,
				  PYFWD_R_FORWARD);
		if (why != PYFWD_R_FORWARD)
			return why;
	} else {
		xlat_apply(ctx, w, b, flow, ps, f);
		fastmap_learn(ctx, w, b, flow, ps, f);
	}
	w->real_stats[flow->real].frames++;
	w->real_stats[flow->real].bytes += f->len;
	return PYFWD_R_FORWARD;
}

/*
 * A TCP/UDP answer (key) that no flow claims: one from a NAT real's
 * addr:port or to SNAT's address and ports is a stray (a real answering
 * a flow it does not hold, a flow long gone).  The steering program sends
 * the engine those (it cannot see flows), so the kernel never has it: a
 * drop, counted.  Anything else passes (not ours).
 */
static uint32_t stray_answer(const struct pyfwd_ctx *ctx,
			     const struct vip_bank *b,
			     const struct flow_key *key)
{
	const struct pyfwd_snat *s = &ctx->snat;

	if (nat_real_lookup(b, key->saddr, key->family, key->proto,
			    key->sport) >= 0)
		return PYFWD_R_DROP_NO_FLOW;
	if (s->port_hi && s->family == key->family &&
	    key->dport >= s->port_lo && key->dport <= s->port_hi &&
	    addr_eq(s->addr, key->daddr, key->family))
		return PYFWD_R_DROP_NO_FLOW;
	return PYFWD_R_PASS_NOT_VIP;
}

uint32_t forward_reply(const struct pyfwd_ctx *ctx, struct worker *w,
		       const struct vip_bank *b, struct parse *ps,
		       struct pyfwd_frame *f, uint64_t now)
{
	struct flow *slot, *e;
	int evict;

	e = flow_find_h(w, &ps->key, ps->hash, now, &slot, &evict);
	if (!e || e->dir != DIR_REPLY)
		return stray_answer(ctx, b, &ps->key);
	if (unlikely(ip_ttl(f->data + ps->r->l3_off, ps->key.family) <= 1))
		return PYFWD_R_DROP_TTL_EXPIRED;	/* as a router */
	flow_touch(&ctx->cfg, w, e, ps->tcp_flags, 1, now);
	xlat_apply(ctx, w, b, e, ps, f);
	fastmap_learn(ctx, w, b, e, ps, f);
	return PYFWD_R_FORWARD_REPLY;
}

/*
 * DR: the real that holds the quoted packet's flow (hit, or NULL), else
 * the one a new flow of that key would get if the VIP's scheduler says
 * so by a hash of it alone (Maglev, sh; persistence first, as flow_new):
 * another queue's flow, or one made before a restart, lands there too.
 * PYFWD_NO_REAL if none.
 */
static uint32_t icmp_dr_real(struct worker *w, const struct vip_bank *b,
			     const struct parse *ps, const struct flow *hit,
			     const struct flow_key *key, uint64_t now)
{
	const struct pyfwd_vip *vip = &b->vips[ps->r->vip];
	uint32_t id = PYFWD_NO_REAL;
	struct flow *pe;
	struct flow_key pk;

	if (hit && real_usable(b, hit->real))
		return hit->real;
	if (mode_paired(vip->mode) || !vip->ring_len ||
	    (vip->sched != PYFWD_SCHED_HASH &&
	     vip->sched != PYFWD_SCHED_SRC_HASH))
		return PYFWD_NO_REAL;
	if (vip->persist)
		id = sched_persist_lookup(w, b, vip, key, now, &pe, &pk);
	if (id == PYFWD_NO_REAL)
		id = sched_pick(b, w, vip, ps->r->vip, key);
	return real_usable(b, id) ? id : PYFWD_NO_REAL;
}

/*
 * An ICMP or ICMPv6 error quoting a packet Q we sent on (NAT, SNAT) or a
 * DR real sent from the VIP.  Q's tuple reversed is an entry F's key.
 * DR: F is the client's flow; the error goes to its real, only the MACs
 * rewritten, as the flow's frames (IPVS and Katran do the same), so that
 * path MTU discovery works.  NAT/SNAT: F's peer e translated Q; Q becomes
 * e's original again and the error goes to e's sender, routed (TTL).
 */
uint32_t forward_icmp(const struct pyfwd_ctx *ctx, struct worker *w,
		      const struct vip_bank *b, struct parse *ps,
		      struct pyfwd_frame *f, uint64_t now)
{
	uint8_t *l3 = f->data + ps->r->l3_off, *icmp = f->data + ps->r->l4_off;
	uint8_t *in3 = f->data + ps->inner_l3, *in4 = f->data + ps->inner_l4;
	struct flow_key q = ps->key, rev = { 0 };
	const struct pyfwd_real *real;
	struct flow *slot, *hit, *e;
	const uint8_t *mac;
	uint32_t id;
	uint8_t out_if;
	int evict;

	memcpy(rev.saddr, q.daddr, 16);
	memcpy(rev.daddr, q.saddr, 16);
	rev.sport = q.dport;
	rev.dport = q.sport;
	rev.proto = q.proto;
	rev.family = q.family;
	hit = flow_find(w, &rev, now, &slot, &evict);
	if (!hit || hit->peer == NO_PEER) {
		if (ps->r->vip < 0)
			return stray_answer(ctx, b, &rev);
		id = icmp_dr_real(w, b, ps, hit, &rev, now);
		if (id == PYFWD_NO_REAL)
			return PYFWD_R_DROP_ICMP_NO_FLOW;
		if (b->vips[ps->r->vip].mode == PYFWD_MODE_TUN)
			return tun_forward(ctx, w, b, id, ps, f,
					   PYFWD_R_FORWARD_ICMP);
		real = &b->reals[id];
		rewrite_l2(ctx, f->data, real->mac, real->out_if, ps->r);
		return PYFWD_R_FORWARD_ICMP;
	}
	if (unlikely(ip_ttl(l3, q.family) <= 1))
		return PYFWD_R_DROP_TTL_EXPIRED;
	e = flow_peer(w, hit);
	if (e->dir == DIR_ORIG) {
		mac = e->mac;
		out_if = e->in_if;
	} else {
		real = &b->reals[e->real];
		mac = real->mac;
		out_if = real->out_if;
	}
	/*
	 * The quoted packet, as e's sender sent it; ICMP's sum covers it.
	 * No checksum here is unfinished (csum.c): ICMP's are computed in
	 * software, and the quoted packet is one we sent, completed.
	 */
	rewrite_quoted(in3, in4, ps->inner_len - (ps->inner_l4 - ps->inner_l3),
		       q.family, q.proto, e->key.saddr, e->key.sport,
		       e->key.daddr, e->key.dport, icmp + 2);
	/* The error goes to e's sender. */
	rewrite_ip_daddr(l3, q.family, e->key.saddr, icmp + 2);
	rewrite_ttl_dec(l3, q.family);
	rewrite_l2(ctx, f->data, mac, out_if, ps->r);
	return PYFWD_R_FORWARD_ICMP;
}
