/* SPDX-License-Identifier: MIT */
/*
 * flow.c - the per-packet core, second half: flows (connection tracking),
 * scheduling, the rewrites of each mode, verdicts.
 *
 * DR keeps one entry per flow and rewrites the MACs.  NAT and SNAT keep
 * two (the client's direction, ORIG, and the real server's, REPLY, each
 * the other's peer) and translate addresses and ports both ways, with the
 * checksums updated incrementally (RFC 1624).  A packet we emitted that
 * comes back quoted in an ICMP error is translated back, so that path MTU
 * discovery works through the balancer.
 */
#include "core.h"

#define NS 1000000000ull
#define SWEEP_SLOTS 64	/* flow slots the expiry looks at per burst */
#define PREFETCH_AHEAD 4	/* frames whose data is fetched ahead */
#define CORE_CHUNK 64	/* frames classified before their flows are found */

/* Set the result's reason (and so its verdict) and return it. */
static inline uint32_t decide(struct pyfwd_result *r, uint32_t reason)
{
	r->reason = (uint8_t)reason;
	r->verdict = (uint8_t)reason_verdict(reason);
	return reason;
}

static inline int alive(const struct flow *f, uint64_t now)
{
	return f->expires_ns > now;
}

static inline struct flow *peer_of(struct worker *w, const struct flow *f)
{
	return &w->flows[f->peer - 1];
}

static inline uint32_t link_to(const struct worker *w, const struct flow *f)
{
	return (uint32_t)(f - w->flows) + 1;
}

static void pair_free(struct worker *w, struct flow *f);

/* A flow stops counting toward its real's live flows (LC and stats). */
static inline void uncount(struct worker *w, struct flow *f)
{
	if (f->counted) {
		f->counted = 0;
		w->active[f->real]--;
	}
}

/* flow_find's search of both windows, for key of hash h. */
static __attribute__((noinline)) struct flow *
flow_probe(struct worker *w, const struct flow_key *key, uint32_t h,
	   uint64_t now, struct flow **slot, int *evict)
{
	uint32_t k;
	/* Two windows (two choices) keep the table usable when nearly full. */
	uint32_t start[2] = { h, (h * 0x9e3779b1u) ^ (h >> 15) ^ 0x5bd1e995u };
	struct flow *free_[2] = { NULL, NULL }, *oldest = NULL;
	uint32_t nfree[2] = { 0, 0 };

	for (k = 0; k < 2 * FLOW_PROBE; k++) {
		uint32_t win = k / FLOW_PROBE, at = start[win] + k % FLOW_PROBE;
		struct flow *f = &w->flows[at & w->flow_mask];

		if (!alive(f, now)) {
			if (f->peer != NO_PEER) {	/* an expired pair */
				pair_free(w, f);
				w->stats.flows_expired++;
			}
			uncount(w, f);
			if (!free_[win])
				free_[win] = f;
			nfree[win]++;
			continue;
		}
		if (!memcmp(&f->key, key, sizeof(*key)))
			return f;
		if (f->peer == NO_PEER &&
		    (!oldest || f->expires_ns < oldest->expires_ns))
			oldest = f;	/* only DR entries may be pushed out */
	}
	/* A new flow goes to the emptier window (the power of two choices). */
	*slot = nfree[1] > nfree[0] ? free_[1] : free_[0];
	*evict = !*slot && oldest;
	if (!*slot)
		*slot = oldest;
	return NULL;
}

/*
 * The live flow entry of key (hash h), or NULL with *slot set to where a
 * new one goes: a free slot, else (DR may evict) the oldest of the probe
 * window, with *evict set; NULL *slot when NAT/SNAT finds no free one.
 */
static inline struct flow *flow_find_h(struct worker *w,
				       const struct flow_key *key, uint32_t h,
				       uint64_t now, struct flow **slot,
				       int *evict)
{
	struct flow *f = &w->flows[h & w->flow_mask];

	/* Most hits are the first slot of the first window: no set-up. */
	if (likely(alive(f, now) && !memcmp(&f->key, key, sizeof(*key))))
		return f;
	return flow_probe(w, key, h, now, slot, evict);
}

static inline struct flow *flow_find(struct worker *w,
				     const struct flow_key *key, uint64_t now,
				     struct flow **slot, int *evict)
{
	return flow_find_h(w, key, flow_hash(key), now, slot, evict);
}

/* Free a NAT/SNAT pair (and its SNAT port): expiry and reuse. */
static void pair_free(struct worker *w, struct flow *f)
{
	struct flow *orig = f, *peer;

	if (f->peer == NO_PEER) {
		uncount(w, f);
		f->expires_ns = 0;
		return;
	}
	peer = peer_of(w, f);
	if (f->dir == DIR_REPLY)
		orig = peer;
	uncount(w, orig);
	if (orig->mode == PYFWD_MODE_SNAT && orig->snat_port &&
	    w->ports.taken[orig->snat_port]) {
		w->ports.taken[orig->snat_port] = 0;
		w->ports.free[w->ports.nfree++] = orig->snat_port;
		w->stats.snat_ports_used--;
	}
	f->expires_ns = peer->expires_ns = 0;
	f->peer = peer->peer = NO_PEER;
}

/*
 * Incremental expiry: a few slots per burst, never the whole table at
 * once.  A NAT/SNAT pair is freed when its entries expire (SNAT gets its
 * port back); DR entries just lapse.
 */
void core_sweep(struct worker *w, uint64_t now, uint32_t slots)
{
	uint32_t k;

	for (k = 0; k < slots; k++) {
		struct flow *f = &w->flows[w->sweep++ & w->flow_mask];

		if (alive(f, now))
			continue;
		if (f->peer != NO_PEER) {
			pair_free(w, f);
			w->stats.flows_expired++;
		}
		uncount(w, f);
	}
}

/* Refresh a flow (and its peer) after a packet with these TCP flags. */
static void flow_touch(const struct pyfwd_ctx *ctx, struct worker *w,
		       struct flow *f, uint8_t fl, int from_real,
		       uint64_t now)
{
	const struct pyfwd_config *c = &ctx->cfg;
	struct flow *peer = f->peer == NO_PEER ? NULL : peer_of(w, f);
	uint64_t ttl;

	if (f->key.proto == PROTO_UDP) {
		ttl = c->udp_timeout;
	} else {
		if (fl & (TCP_FIN | TCP_RST))
			f->state = FLOW_CLOSING;
		else if (f->state == FLOW_SYN && from_real)
			f->state = FLOW_OPEN;	/* the real answered */
		ttl = f->state == FLOW_CLOSING ? c->tcp_fin_timeout :
		      f->state == FLOW_SYN ? c->tcp_syn_timeout :
					       c->tcp_timeout;
	}
	f->expires_ns = now + ttl * NS;
	if (peer) {
		peer->state = f->state;
		peer->expires_ns = f->expires_ns;
	}
}

static inline int real_usable(const struct vip_bank *b, uint32_t id)
{
	return id < b->nreals && (b->reals[id].flags & PYFWD_REAL_F_USED);
}

/* --- rewriting ---------------------------------------------------------- */

/* Write v at p (16 bits), fixing the checksums that cover it. */
static inline void set16(uint8_t *p, uint16_t v, uint8_t *sum1,
			 uint8_t *sum2, uint8_t *sum3)
{
	uint16_t old = ld_be16(p);

	if (old == v)
		return;
	st_be16(p, v);
	if (sum1)
		csum_fix16(sum1, old, v);
	if (sum2)
		csum_fix16(sum2, old, v);
	if (sum3)
		csum_fix16(sum3, old, v);
}

static inline void set_addr(uint8_t *p, const uint8_t *a, int len,
			    uint8_t *sum1, uint8_t *sum2, uint8_t *sum3)
{
	int k;

	for (k = 0; k < len; k += 2)
		set16(p + k, ld_be16(a + k), sum1, sum2, sum3);
}

/*
 * The L4 checksum field of the TCP/UDP header at l4 if it is within the
 * `avail` bytes there and in use (IPv4 UDP may send none: 0 stays 0).
 */
static inline uint8_t *l4_sum(uint8_t *l4, uint32_t avail, uint8_t proto,
			      uint8_t family)
{
	uint32_t off = proto == PROTO_TCP ? 16 : 6;

	if (avail < off + 2)
		return NULL;
	if (proto == PROTO_UDP && family == PYFWD_AF_INET &&
	    !ld_be16(l4 + off))
		return NULL;
	return l4 + off;
}

/* A UDP checksum that came out 0 is sent as 0xffff (RFC 768). */
static inline void udp_sum_nonzero(uint8_t *sum, uint8_t proto)
{
	if (sum && proto == PROTO_UDP && !ld_be16(sum))
		st_be16(sum, 0xffff);
}

/*
 * Translate the TCP/UDP packet at l3/l4 to saddr:sport -> daddr:dport.
 * The checksums take one delta for all the words changed (RFC 1624),
 * summed 32 bits at a time and folded once.
 */
static inline void translate(uint8_t *l3, uint8_t *l4, uint32_t l4_avail,
			     uint8_t family, uint8_t proto,
			     const uint8_t *saddr, uint16_t sport,
			     const uint8_t *daddr, uint16_t dport)
{
	uint8_t *sum = l4_sum(l4, l4_avail, proto, family);
	uint32_t ports = (uint32_t)sport << 16 | dport;
	uint64_t d = (uint64_t)(uint32_t)~ld_be32(l4) + ports;
	int k;

	st_be32(l4, ports);
	if (family == PYFWD_AF_INET) {
		uint64_t da = (uint64_t)(uint32_t)~ld_be32(l3 + 12) +
			      ld_be32(saddr) +
			      (uint64_t)(uint32_t)~ld_be32(l3 + 16) +
			      ld_be32(daddr);

		memcpy(l3 + 12, saddr, 4);
		memcpy(l3 + 16, daddr, 4);
		st_be16(l3 + 10,
			(uint16_t)~csum_fold((uint16_t)~ld_be16(l3 + 10) + da));
		d += da;
	} else {
		/* No IPv6 header sum; the L4 one covers the addresses. */
		for (k = 0; k < 16; k += 4)
			d += (uint64_t)(uint32_t)~ld_be32(l3 + 8 + k) +
			     ld_be32(saddr + k) +
			     (uint64_t)(uint32_t)~ld_be32(l3 + 24 + k) +
			     ld_be32(daddr + k);
		memcpy(l3 + 8, saddr, 16);
		memcpy(l3 + 24, daddr, 16);
	}
	if (sum) {
		st_be16(sum, (uint16_t)~csum_fold((uint16_t)~ld_be16(sum) + d));
		udp_sum_nonzero(sum, proto);
	}
}

/*
 * translate() for a packet quoted in an ICMP error, word by word: `extra`
 * is the ICMP checksum, which covers the quoted bytes, sums included.
 */
static void translate_quoted(uint8_t *l3, uint8_t *l4, uint32_t l4_avail,
			     uint8_t proto, const uint8_t *saddr,
			     uint16_t sport, const uint8_t *daddr,
			     uint16_t dport, uint8_t *extra)
{
	uint8_t *sum = l4_sum(l4, l4_avail, proto, PYFWD_AF_INET);
	uint8_t *ipsum = l3 + 10;
	uint16_t ipsum0 = ld_be16(ipsum);
	uint16_t sum0 = sum ? ld_be16(sum) : 0;

	/* The L4 sum covers the addresses through the pseudo-header. */
	set_addr(l3 + 12, saddr, 4, ipsum, sum, extra);
	set_addr(l3 + 16, daddr, 4, ipsum, sum, extra);
	set16(l4, sport, sum, extra, NULL);
	set16(l4 + 2, dport, sum, extra, NULL);
	udp_sum_nonzero(sum, proto);
	/* The sums we changed are quoted bytes too: extra covers them. */
	csum_fix16(extra, ipsum0, ld_be16(ipsum));
	if (sum)
		csum_fix16(extra, sum0, ld_be16(sum));
}

/* L2: to `mac` from our MAC on interface slot out_if. */
static inline void set_l2(const struct pyfwd_ctx *ctx, uint8_t *frame,
			  const uint8_t *mac, uint8_t out_if,
			  struct pyfwd_result *r)
{
	memcpy(frame, mac, 6);
	memcpy(frame + 6, ctx->if_mac[out_if], 6);
	r->out_if = out_if;
}

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
		const struct flow *orig = peer_of(w, e);

		x->saddr = orig->key.daddr;	/* the VIP */
		x->sport = orig->key.dport;
		x->daddr = orig->key.saddr;	/* the client */
		x->dport = orig->key.sport;
		x->mac = orig->mac;
		x->out_if = orig->in_if;
	}
}

/* --- the three kinds of forward ------------------------------------------ */

/* Fewest live flows per weight among the ring's candidates (lc, wlc). */
static uint32_t pick_least(const struct vip_bank *b, const struct worker *w,
			   const struct pyfwd_vip *vip, uint32_t turn)
{
	uint32_t i, best = PYFWD_NO_REAL;
	uint64_t best_a = 0, best_w = 1;

	/* Start at a turning offset so that ties take turns. */
	for (i = 0; i < vip->ring_len; i++) {
		uint32_t id = b->ring[vip->ring_off + (turn + i) % vip->ring_len];
		uint64_t a, wt;

		if (!real_usable(b, id) || !b->reals[id].weight)
			continue;
		a = w->active[id];
		wt = b->reals[id].weight;
		if (best == PYFWD_NO_REAL || a * best_w < best_a * wt) {
			best = id;
			best_a = a;
			best_w = wt;
		}
	}
	return best;
}

/* A real server for a new flow of vip; PYFWD_NO_REAL if none. */
static uint32_t schedule(const struct vip_bank *b, struct worker *w,
			 const struct pyfwd_vip *vip, int32_t vip_index,
			 const struct flow_key *key)
{
	uint32_t w4[4];

	switch (vip->sched) {
	case PYFWD_SCHED_SEQ:
		return b->ring[vip->ring_off +
			       w->seq[vip_index]++ % vip->ring_len];
	case PYFWD_SCHED_SRC_HASH:
		memcpy(w4, key->saddr, 16);
		return b->ring[vip->ring_off +
			       hash_words(w4, 4, key->family) % vip->ring_len];
	case PYFWD_SCHED_LEAST:
		return pick_least(b, w, vip, w->seq[vip_index]++);
	default:
		return b->ring[vip->ring_off + flow_hash(key) % vip->ring_len];
	}
}

/*
 * Persistence: the real this client's address was sent to on this VIP
 * within the last vip->persist seconds (a flow entry of its own), or
 * PYFWD_NO_REAL.  Sets *entry to the entry to refresh or fill.
 */
static uint32_t persist_lookup(struct worker *w, const struct vip_bank *b,
			       const struct pyfwd_vip *vip,
			       const struct flow_key *key, uint64_t now,
			       struct flow **entry, struct flow_key *pk)
{
	struct flow *f, *slot = NULL;
	int evict = 0;

	memset(pk, 0, sizeof(*pk));
	memcpy(pk->saddr, key->saddr, 16);
	memcpy(pk->daddr, vip->addr, 16);
	pk->dport = vip->port;
	pk->proto = PROTO_PERSIST;
	pk->family = key->family;
	f = flow_find(w, pk, now, &slot, &evict);
	*entry = f ? f : evict ? NULL : slot;	/* never push a flow out */
	if (f && real_usable(b, f->real))
		return f->real;
	return PYFWD_NO_REAL;
}

/* NAT/SNAT: the REPLY entry of a new ORIG entry; 0 or a drop reason. */
static uint32_t nat_open(const struct pyfwd_ctx *ctx, struct worker *w,
			 const struct vip_bank *b, struct flow *orig,
			 uint64_t now)
{
	const struct pyfwd_real *real = &b->reals[orig->real];
	struct flow_key rk = { 0 };
	struct flow *rep = NULL, *dup;
	int evict = 0;

	if (orig->mode == PYFWD_MODE_SNAT) {
		if (unlikely(!w->ports.nfree))
			return PYFWD_R_DROP_PORTS_FULL;
		orig->snat_port = w->ports.free[--w->ports.nfree];
		w->ports.taken[orig->snat_port] = 1;
		w->stats.snat_ports_used++;
		memcpy(rk.daddr, ctx->snat.addr, 16);
		rk.dport = orig->snat_port;
	} else {
		memcpy(rk.daddr, orig->key.saddr, 16);
		rk.dport = orig->key.sport;
	}
	memcpy(rk.saddr, real->addr, 16);
	rk.sport = real->port ? real->port : orig->key.dport;
	rk.proto = orig->key.proto;
	rk.family = orig->key.family;
	dup = flow_find(w, &rk, now, &rep, &evict);
	if (unlikely(dup || !rep || evict)) {
		/* no room, or the same reply tuple serves another flow */
		if (orig->mode == PYFWD_MODE_SNAT) {
			w->ports.taken[orig->snat_port] = 0;
			w->ports.free[w->ports.nfree++] = orig->snat_port;
			w->stats.snat_ports_used--;
		}
		return PYFWD_R_DROP_TABLE_FULL;
	}
	rep->key = rk;
	rep->real = orig->real;
	rep->dir = DIR_REPLY;
	rep->mode = orig->mode;
	rep->expires_ns = orig->expires_ns;
	rep->peer = link_to(w, orig);
	orig->peer = link_to(w, rep);
	return 0;
}

/*
 * A frame to a VIP service: find its flow or schedule a new one, then
 * rewrite it for the VIP's mode.  Returns FORWARD or a drop reason.
 */
static uint32_t forward(const struct pyfwd_ctx *ctx, struct worker *w,
			const struct vip_bank *b, struct parse *ps,
			struct pyfwd_frame *f, uint64_t now)
{
	const struct pyfwd_vip *vip = &b->vips[ps->r->vip];
	uint8_t fl = ps->tcp_flags;
	struct flow *flow, *slot = NULL, *pe = NULL;
	struct flow_key pk;
	uint32_t id = PYFWD_NO_REAL, why;
	struct xlat x;
	int evict = 0;

	flow = flow_find_h(w, &ps->key, ps->hash, now, &slot, &evict);
	if (flow && (!real_usable(b, flow->real) || flow->mode != vip->mode ||
		     (flow->state == FLOW_CLOSING &&
		      (fl & (TCP_SYN | TCP_ACK)) == TCP_SYN))) {
		/* Its real was halted, or a new SYN reuses the ports. */
		w->stats.flows_rescheduled += !real_usable(b, flow->real);
		pair_free(w, flow);
		slot = flow;
		evict = 0;
		flow = NULL;
	}
	if (flow) {
		w->stats.flow_hits++;
	} else {
		if (unlikely(!slot || (evict && vip->mode != PYFWD_MODE_DR)))
			return PYFWD_R_DROP_TABLE_FULL;
		if (vip->persist)
			id = persist_lookup(w, b, vip, &ps->key, now, &pe, &pk);
		if (id == PYFWD_NO_REAL) {
			if (unlikely(!vip->ring_len))
				return PYFWD_R_DROP_NO_REAL;
			id = schedule(b, w, vip, ps->r->vip, &ps->key);
			if (unlikely(!real_usable(b, id)))
				return PYFWD_R_DROP_NO_REAL;
		}
		if (pe == slot)
			pe = NULL;	/* one free slot: the flow comes first */
		if (pe) {
			if (!alive(pe, now)) {
				memset(pe, 0, sizeof(*pe));
				pe->key = pk;
			}
			pe->real = (uint16_t)id;
			pe->expires_ns = now + (uint64_t)vip->persist * NS;
		}
		if (evict)
			uncount(w, slot);
		flow = slot;
		memset(flow, 0, sizeof(*flow));
		flow->key = ps->key;
		flow->real = (uint16_t)id;
		flow->mode = vip->mode;
		flow->dir = DIR_ORIG;
		flow->peer = NO_PEER;
		flow->in_if = f->in_if;
		memcpy(flow->mac, f->data + 6, 6);
		if (vip->mode == PYFWD_MODE_DR) {
			flow->state = FLOW_OPEN;
		} else {
			flow->state = ps->key.proto == PROTO_TCP ? FLOW_SYN :
								   FLOW_OPEN;
			flow->expires_ns = now + 1;	/* taken while we look */
			why = nat_open(ctx, w, b, flow, now);
			if (why) {
				flow->expires_ns = 0;	/* the slot stays free */
				return why;
			}
		}
		w->stats.flows_evicted += evict;
		w->stats.flows_new++;
		w->real_stats[id].flows_new++;
		flow->counted = 1;
		w->active[id]++;
	}
	flow_touch(ctx, w, flow, fl, 0, now);
	if (flow->mode == PYFWD_MODE_DR && flow->state != FLOW_CLOSING)
		flow->state = FLOW_OPEN;

	id = flow->real;
	xlat_out(ctx, w, b, flow, &x);
	if (flow->mode != PYFWD_MODE_DR) {
		uint8_t *l3 = f->data + ps->r->l3_off;
		uint8_t *l4 = f->data + ps->r->l4_off;

		translate(l3, l4, ps->l3_end - ps->r->l4_off,
			  ps->key.family, ps->key.proto, x.saddr, x.sport,
			  x.daddr, x.dport);
	}
	set_l2(ctx, f->data, x.mac, x.out_if, ps->r);
	w->real_stats[id].frames++;
	w->real_stats[id].bytes += f->len;
	return PYFWD_R_FORWARD;
}

/* A real server's answer (NAT, SNAT): back to the client, from the VIP. */
static uint32_t forward_reply(const struct pyfwd_ctx *ctx, struct worker *w,
			      const struct vip_bank *b, struct parse *ps,
			      struct pyfwd_frame *f, uint64_t now)
{
	struct flow *slot, *e;
	struct xlat x;
	int evict;

	e = flow_find_h(w, &ps->key, ps->hash, now, &slot, &evict);
	if (!e || e->dir != DIR_REPLY)
		return PYFWD_R_PASS_NOT_VIP;
	flow_touch(ctx, w, e, ps->tcp_flags, 1, now);
	xlat_out(ctx, w, b, e, &x);
	translate(f->data + ps->r->l3_off, f->data + ps->r->l4_off,
		  ps->l3_end - ps->r->l4_off, ps->key.family, ps->key.proto,
		  x.saddr, x.sport, x.daddr, x.dport);
	set_l2(ctx, f->data, x.mac, x.out_if, ps->r);
	return PYFWD_R_FORWARD_REPLY;
}

/*
 * An ICMP error quoting a packet we emitted (after translating it with
 * entry e): the quoted packet becomes e's original again and the error
 * goes to its sender.  The quoted tuple Q is the reverse of an entry F's
 * key; e is F's peer.
 */
static uint32_t forward_icmp(const struct pyfwd_ctx *ctx, struct worker *w,
			     const struct vip_bank *b, struct parse *ps,
			     struct pyfwd_frame *f, uint64_t now)
{
	uint8_t *l3 = f->data + ps->r->l3_off, *icmp = f->data + ps->r->l4_off;
	uint8_t *in3 = f->data + ps->inner_l3, *in4 = f->data + ps->inner_l4;
	struct flow_key q = ps->key, rev = { 0 };
	const struct pyfwd_real *real;
	struct flow *slot, *hit, *e;
	const uint8_t *mac;
	uint8_t out_if;
	int evict;

	memcpy(rev.saddr, q.daddr, 16);
	memcpy(rev.daddr, q.saddr, 16);
	rev.sport = q.dport;
	rev.dport = q.sport;
	rev.proto = q.proto;
	rev.family = q.family;
	hit = flow_find(w, &rev, now, &slot, &evict);
	if (!hit || hit->peer == NO_PEER)
		return ps->r->vip >= 0 ? PYFWD_R_PUNT_ICMP : PYFWD_R_PASS_NOT_VIP;
	e = peer_of(w, hit);
	if (e->dir == DIR_ORIG) {
		mac = e->mac;
		out_if = e->in_if;
	} else {
		real = &b->reals[e->real];
		mac = real->mac;
		out_if = real->out_if;
	}
	/* The quoted packet, as e's sender sent it; ICMP's sum covers it. */
	translate_quoted(in3, in4,
			 ps->inner_len - (ps->inner_l4 - ps->inner_l3), q.proto,
			 e->key.saddr, e->key.sport, e->key.daddr,
			 e->key.dport, icmp + 2);
	/* The error goes to e's sender. */
	set_addr(l3 + 16, e->key.saddr, 4, l3 + 10, NULL, NULL);
	set_l2(ctx, f->data, mac, out_if, ps->r);
	return PYFWD_R_FORWARD_ICMP;
}

/* --- the burst ------------------------------------------------------------ */

/* The flow slot a parsed frame will look at first, on its way to L1. */
static inline void flow_prefetch(const struct worker *w, struct parse *ps,
				 uint32_t reason)
{
	const struct flow *f;

	if (reason != PYFWD_R_FORWARD && reason != PYFWD_R_FORWARD_REPLY)
		return;
	ps->hash = flow_hash(&ps->key);
	f = &w->flows[ps->hash & w->flow_mask];
	__builtin_prefetch(f);
	__builtin_prefetch(&f->expires_ns);	/* the key may end a line */
}

/*
 * Frames are classified a chunk at a time before any of them looks up its
 * flow: classifying reads only the frame and the bank, and the flow slots
 * of the whole chunk are fetched while it runs instead of one miss at a
 * time.  Flows are then looked up and frames rewritten in order.
 */
uint32_t core_burst(struct pyfwd_ctx *ctx, struct worker *w,
		    struct pyfwd_frame *frames, uint32_t n,
		    struct pyfwd_result *out)
{
	const struct vip_bank *b = bank_enter(ctx, w);
	uint64_t now = core_now(ctx);
	struct parse ps[CORE_CHUNK];
	uint32_t why[CORE_CHUNK];
	uint32_t i, j, m, reason, fwd = 0;

	core_sweep(w, now, SWEEP_SLOTS);
	for (j = 0; j < n; j += m) {
		struct pyfwd_frame *fr = frames + j;
		struct pyfwd_result *res = out + j;

		m = n - j < CORE_CHUNK ? n - j : CORE_CHUNK;
		for (i = 0; i < m; i++) {
			struct pyfwd_result *r = &res[i];
			struct parse *p = &ps[i];

			/* Frames come from the NIC or Python: not in L1 yet. */
			if (i + PREFETCH_AHEAD < m)
				__builtin_prefetch(fr[i + PREFETCH_AHEAD].data);
			memset(r, 0, sizeof(*r));
			r->vip = -1;
			r->out_if = fr[i].in_if;
			/* All but the key (written before it is read). */
			p->p = fr[i].data;
			p->len = fr[i].len;
			p->l3_end = 0;
			p->r = r;
			p->b = b;
			p->tcp_flags = 0;
			p->inner_l3 = p->inner_l4 = p->inner_len = 0;
			why[i] = classify_frame(ctx, p, &fr[i]);
			flow_prefetch(w, p, why[i]);
		}
		for (i = 0; i < m; i++) {
			struct pyfwd_result *r = &res[i];
			struct pyfwd_frame *f = &fr[i];
			struct parse *p = &ps[i];

			reason = why[i];
			if (reason == PYFWD_R_FORWARD)
				reason = forward(ctx, w, b, p, f, now);
			else if (reason == PYFWD_R_FORWARD_REPLY)
				reason = forward_reply(ctx, w, b, p, f, now);
			else if (reason == PYFWD_R_FORWARD_ICMP)
				reason = forward_icmp(ctx, w, b, p, f, now);
			decide(r, reason);
			w->stats.frames++;
			w->stats.bytes += f->len;
			w->stats.reason[reason]++;
			w->stats.verdict[r->verdict]++;
			if (r->verdict == PYFWD_VERDICT_PUNT)
				punt_push(w, f->data, f->len);
			fwd += r->verdict == PYFWD_VERDICT_FORWARD;
		}
	}
	bank_leave(w);
	return fwd;
}

uint32_t pyfwd_process_batch(struct pyfwd_ctx *ctx, struct pyfwd_frame *frames,
			     uint32_t n, struct pyfwd_result *out)
{
	return core_burst(ctx, &ctx->workers[0], frames, n, out);
}
