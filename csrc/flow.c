/* SPDX-License-Identifier: MIT */
/*
 * flow.c - the flow table of each worker: probing, NAT/SNAT pairs (and
 * SNAT's source ports), incremental expiry.
 *
 * DR keeps one entry per flow.  NAT and SNAT keep two, the client's
 * direction (ORIG) and the real server's (REPLY), each the other's peer,
 * freed together.  Nothing here allocates: the table and the port pools
 * are sized at create time (ctx.c).
 */
#include "fastmap.h"
#include "flow.h"

/* SNAT: a source port back to its worker's pool, last in the ring. */
static void snat_port_release(struct worker *w, uint16_t port)
{
	struct port_pool *pp = &w->ports;

	pp->owner[port] = 0;
	pp->free[(pp->head + pp->nfree++) & PORT_RING_MASK] = port;
	w->stats.flows.snat_ports_used--;
}

/* SNAT: a port taken but never sent from goes back first in the ring. */
static void snat_port_unget(struct worker *w, uint16_t port)
{
	struct port_pool *pp = &w->ports;

	pp->owner[port] = 0;
	pp->head = (pp->head - 1) & PORT_RING_MASK;
	pp->free[pp->head] = port;
	pp->nfree++;
	w->stats.flows.snat_ports_used--;
}

/*
 * SNAT: a source port for a new flow (the pool is not empty): the one
 * freed longest ago; or `keep`, when it is the one freed last.  forward.c
 * asks to keep the port of a closing flow whose client sends a new SYN on
 * the same tuple: that is how a Linux client answers a real server whose
 * TIME-WAIT on the port dropped its SYN (the real's ACK of its old
 * connection; the client's RST ends that TIME-WAIT, then its SYN comes
 * again ~10 ms later, once).  The same port finds the real clear; the
 * next port in the ring may not, and then the client waits seconds.
 */
static uint16_t snat_port_take(struct port_pool *pp, uint16_t keep)
{
	uint32_t last = (pp->head + pp->nfree - 1) & PORT_RING_MASK;
	uint16_t port;

	if (keep && pp->free[last] == keep) {
		pp->nfree--;
		return keep;
	}
	port = pp->free[pp->head];
	pp->head = (pp->head + 1) & PORT_RING_MASK;
	pp->nfree--;
	return port;
}

/*
 * An entry found expired is reaped: freed, its slot free again (a pair's
 * both, SNAT's port back).  flows_expired counts the NAT/SNAT pairs.
 */
static inline void flow_lapse(struct worker *w, struct flow *f)
{
	if (!f->expires_ns)
		return;		/* free already */
	w->stats.flows.flows_expired += f->peer != NO_PEER;
	flow_free(w, f);
}

__attribute__((noinline)) struct flow *
flow_probe(struct worker *w, const struct flow_key *key, uint32_t h,
	   uint64_t now, struct flow **slot, int *evict)
{
	uint32_t k;
	/* Two windows (two choices) keep the table usable when nearly full. */
	uint32_t start[2] = { h, (h * 0x9e3779b1u) ^ (h >> 15) ^ 0x5bd1e995u };
	struct flow *free_[2] = { NULL, NULL }, *oldest = NULL, *half = NULL;
	uint32_t nfree[2] = { 0, 0 };

	for (k = 0; k < 2 * FLOW_PROBE; k++) {
		uint32_t win = k / FLOW_PROBE, at = start[win] + k % FLOW_PROBE;
		struct flow *f = &w->flows[at & w->flow_mask];

		if (!flow_alive(f, now) && !fastmap_revive(w, f, now)) {
			flow_lapse(w, f);
			if (!free_[win])
				free_[win] = f;
			nfree[win]++;
			continue;
		}
		if (!memcmp(&f->key, key, sizeof(*key)))
			return f;
		if (flow_half_open(f->state)) {
			/* spoofed SYNs' first: never established */
			if (!half || f->expires_ns < half->expires_ns)
				half = f;
		} else if (f->peer == NO_PEER &&
			   (!oldest || f->expires_ns < oldest->expires_ns)) {
			oldest = f;	/* of the rest, DR entries only */
		}
	}
	/* A new flow goes to the emptier window (the power of two choices). */
	*slot = nfree[1] > nfree[0] ? free_[1] : free_[0];
	*evict = EVICT_NONE;
	if (!*slot && (half || oldest)) {
		*evict = half ? EVICT_HALF_OPEN : EVICT_DR;
		*slot = half ? half : oldest;
	}
	return NULL;
}

void flow_free(struct worker *w, struct flow *f)
{
	struct flow *orig = f, *peer;

	fastmap_forget(w, f);
	if (f->peer == NO_PEER) {
		flow_uncount(w, f);
		flow_slot_clear(w, f);
		return;
	}
	peer = flow_peer(w, f);
	fastmap_forget(w, peer);
	if (f->dir == DIR_REPLY)
		orig = peer;
	flow_uncount(w, orig);
	if (orig->mode == PYFWD_MODE_SNAT && orig->snat_port &&
	    w->ports.owner[orig->snat_port])
		snat_port_release(w, orig->snat_port);
	flow_slot_clear(w, f);
	flow_slot_clear(w, peer);
	f->peer = peer->peer = NO_PEER;
}

/*
 * SNAT, every port taken: free a port whose flow is half-open (or expired,
 * not swept yet), looking at PORT_RECLAIM ports from where the last look
 * stopped.  1 if one is free now.
 */
#define PORT_RECLAIM 64

static int snat_port_reclaim(const struct pyfwd_ctx *ctx, struct worker *w,
			     uint64_t now)
{
	uint32_t lo = ctx->snat.port_lo, n = ctx->snat.port_hi - lo + 1, k;

	for (k = 0; k < PORT_RECLAIM && k < n; k++) {
		uint32_t port = lo + w->ports.cursor++ % n, o;
		struct flow *f;

		o = w->ports.owner[port];
		if (!o)
			continue;
		f = &w->flows[o - 1];
		if ((flow_alive(f, now) || fastmap_revive(w, f, now)) &&
		    !flow_half_open(f->state))
			continue;
		if (flow_alive(f, now))
			w->stats.flows.flows_evicted++;
		else
			w->stats.flows.flows_expired++;
		flow_free(w, f);
		return 1;
	}
	return 0;
}

uint32_t flow_pair_open(const struct pyfwd_ctx *ctx, struct worker *w,
			const struct vip_bank *b, struct flow *orig,
			uint64_t now, uint16_t keep)
{
	const struct pyfwd_real *real = &b->reals[orig->real];
	struct flow_key rk = { 0 };
	struct flow *rep = NULL, *dup;
	int evict = 0;

	if (orig->mode == PYFWD_MODE_SNAT) {
		if (unlikely(!w->ports.nfree) &&
		    !snat_port_reclaim(ctx, w, now))
			return PYFWD_R_DROP_PORTS_FULL;
		orig->snat_port = snat_port_take(&w->ports, keep);
		w->ports.owner[orig->snat_port] = flow_link(w, orig);
		w->stats.flows.snat_ports_used++;
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
	if (unlikely(dup || !rep || rep == orig || evict == EVICT_DR)) {
		/* no room, or the same reply tuple serves another flow */
		if (orig->mode == PYFWD_MODE_SNAT)
			snat_port_unget(w, orig->snat_port);
		return PYFWD_R_DROP_TABLE_FULL;
	}
	if (evict) {			/* a half-open flow goes */
		flow_free(w, rep);
		w->stats.flows.flows_evicted++;
	}
	rep->key = rk;
	rep->counted = 0;
	rep->real = orig->real;
	rep->dir = DIR_REPLY;
	rep->mode = orig->mode;
	flow_slot_take(w, rep, orig->expires_ns);
	rep->peer = flow_link(w, orig);
	orig->peer = flow_link(w, rep);
	return 0;
}

/*
 * Incremental expiry: a few slots per burst, never the whole table at
 * once.  An expired entry is freed (a NAT/SNAT pair both, SNAT gets its
 * port back).
 */
void flow_sweep(struct worker *w, uint64_t now, uint32_t slots)
{
	uint32_t k;

	for (k = 0; k < slots; k++) {
		struct flow *f = &w->flows[w->sweep++ & w->flow_mask];

		if (!flow_alive(f, now) && !fastmap_revive(w, f, now))
			flow_lapse(w, f);
	}
}

void pyfwd_flows_expire(struct pyfwd_ctx *ctx)
{
	uint64_t now = ctx_now(ctx);
	uint32_t i;

	for (i = 0; i < ctx->cfg.workers; i++) {
		struct worker *w = &ctx->workers[i];

		w->sweep = 0;
		flow_sweep(w, now, w->flow_mask + 1);
	}
}
