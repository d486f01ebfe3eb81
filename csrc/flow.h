/* SPDX-License-Identifier: MIT */
/*
 * flow.h - the flow table of a worker (connection tracking): its hash and
 * the per-packet fast path, inline; the rest is in flow.c.
 *
 * Fixed-size open addressing, allocated at create time: a new flow takes a
 * free slot of one of two probe windows; when both are full, DR pushes out
 * the oldest entry and NAT/SNAT drops the frame (a counted reason).
 *
 * An entry holds its slot while its expires_ns is not 0: from when it is
 * written into a free slot until it is freed, pushed out, or found expired
 * and reaped (flow.c flow_lapse: by a probe, the sweep, pyfwd_flows_expire).
 * w->slots_used counts them, changed only by flow_slot_take and
 * flow_slot_clear: per new entry and per freed one, never per packet.
 */
#ifndef PYFWD_FLOW_H
#define PYFWD_FLOW_H

#include "core.h"

/*
 * IPv4: the words saddr, daddr, sport | dport << 16 and proto | family
 * << 8 (pad is 0), loaded as fill_key stored them.  IPv6: the whole key,
 * 10 words.
 */
static inline uint32_t flow_hash(const struct flow_key *k)
{
	uint32_t w[sizeof(*k) / 4];
	uint64_t h;

	if (k->family == PYFWD_AF_INET) {
		h = 0x70667764u ^ 0x9e3779b97f4a7c15ull;
		h = hash_mix(h, ld_u32(k->saddr) |
				(uint64_t)ld_u32(k->daddr) << 32);
		h = hash_mix(h, ld_u64(&k->sport));
		return hash_fin(h);
	}
	memcpy(w, k, sizeof(w));
	return hash_words(w, sizeof(w) / 4, 0x70667764u);
}

static inline int flow_alive(const struct flow *f, uint64_t now)
{
	return f->expires_ns > now;
}

static inline struct flow *flow_peer(struct worker *w, const struct flow *f)
{
	return &w->flows[f->peer - 1];
}

/* What flow.peer holds to name f. */
static inline uint32_t flow_link(const struct worker *w, const struct flow *f)
{
	return (uint32_t)(f - w->flows) + 1;
}

/*
 * Entry f takes its slot until expires_ns (not 0): counted if the slot was
 * free.  Only the worker writes slots_used, a plain aligned u64: readers
 * (pyfwd_worker_room_read) load it racily, a value at most a burst old.
 */
static inline void flow_slot_take(struct worker *w, struct flow *f,
				  uint64_t expires_ns)
{
	w->slots_used += !f->expires_ns;
	f->expires_ns = expires_ns;
}

/* Entry f's slot is free again (counted if it was held). */
static inline void flow_slot_clear(struct worker *w, struct flow *f)
{
	w->slots_used -= !!f->expires_ns;
	f->expires_ns = 0;
}

static inline int flow_half_open(uint8_t state)
{
	return state == FLOW_SYN || state == FLOW_SYN_ACK;
}

/*
 * A flow stops counting toward its real's live flows (LC and stats),
 * closing, toward its inactive ones, and half-open, toward
 * flows_half_open.  Only a live ORIG entry counts.
 */
static inline void flow_uncount(struct worker *w, struct flow *f)
{
	if (f->counted) {
		f->counted = 0;
		w->active[f->real]--;
		w->inactive[f->real] -= f->state == FLOW_CLOSING;
		w->stats.flows.flows_half_open -= flow_half_open(f->state);
	}
}

/* flow_probe's *evict: what the slot it gives holds (table full). */
#define EVICT_NONE 0		/* a free slot */
#define EVICT_HALF_OPEN 1	/* the oldest half-open flow: any new flow
				 * may push it out (its pair and port too) */
#define EVICT_DR 2		/* the oldest DR entry: a DR flow may */

/* flow.c: flow_find's search of both probe windows. */
struct flow *flow_probe(struct worker *w, const struct flow_key *key,
			uint32_t h, uint64_t now, struct flow **slot,
			int *evict);

/*
 * The live flow entry of key (hash h), or NULL with *slot set to where a
 * new one goes: a free slot, else the oldest half-open entry of the probe
 * windows, else the oldest DR entry, with *evict saying which (EVICT_*);
 * NULL *slot when there is none of them.
 */
static inline struct flow *flow_find_h(struct worker *w,
				       const struct flow_key *key, uint32_t h,
				       uint64_t now, struct flow **slot,
				       int *evict)
{
	struct flow *f = &w->flows[h & w->flow_mask];

	/* Most hits are the first slot of the first window: no set-up. */
	if (likely(flow_alive(f, now) &&
		   !memcmp(&f->key, key, sizeof(*key))))
		return f;
	return flow_probe(w, key, h, now, slot, evict);
}

static inline struct flow *flow_find(struct worker *w,
				     const struct flow_key *key, uint64_t now,
				     struct flow **slot, int *evict)
{
	return flow_find_h(w, key, flow_hash(key), now, slot, evict);
}

/* The state a TCP flow moves to on a segment with flags fl (see core.h). */
static inline uint8_t flow_tcp_state(const struct flow *f, uint8_t fl,
				     int from_real)
{
	uint8_t syn_ack = fl & (TCP_SYN | TCP_ACK);

	if (fl & (TCP_FIN | TCP_RST))
		return FLOW_CLOSING;
	if (from_real)
		return f->state == FLOW_SYN ? FLOW_SYN_ACK : f->state;
	if (syn_ack == TCP_ACK &&
	    (f->state == FLOW_SYN_ACK ||
	     (f->state == FLOW_SYN && !mode_paired(f->mode))))
		return FLOW_OPEN;	/* the client's ACK: handshake done */
	return f->state;
}

/* Refresh a flow (and its peer) after a packet with these TCP flags. */
static inline void flow_touch(const struct pyfwd_config *c, struct worker *w,
			      struct flow *f, uint8_t fl, int from_real,
			      uint64_t now)
{
	struct flow *peer = f->peer == NO_PEER ? NULL : flow_peer(w, f);
	uint64_t ttl;

	if (f->key.proto == PROTO_UDP) {
		ttl = c->udp_timeout;
	} else {
		uint8_t state = flow_tcp_state(f, fl, from_real);
		/* the ORIG entry is the counted one */
		const struct flow *orig = f->dir == DIR_ORIG ? f : peer;

		if (unlikely(flow_half_open(state) !=
			     flow_half_open(f->state))) {
			if (orig->counted && flow_half_open(state))
				w->stats.flows.flows_half_open++;
			else if (orig->counted)
				w->stats.flows.flows_half_open--;
		}
		if (unlikely((state == FLOW_CLOSING) !=
			     (f->state == FLOW_CLOSING)) && orig->counted) {
			if (state == FLOW_CLOSING)
				w->inactive[orig->real]++;
			else
				w->inactive[orig->real]--;
		}
		f->state = state;
		ttl = state == FLOW_CLOSING ? c->tcp_fin_timeout :
		      flow_half_open(state) ? c->tcp_syn_timeout :
					      c->tcp_timeout;
	}
	f->expires_ns = now + ttl * NS_PER_S;
	if (peer) {
		peer->state = f->state;
		peer->expires_ns = f->expires_ns;
	}
}

/* Free a flow: a NAT/SNAT pair both entries (and its SNAT port). */
void flow_free(struct worker *w, struct flow *f);

/*
 * NAT/SNAT: the REPLY entry of a new ORIG entry (SNAT: its source port,
 * `keep` if that is the port freed last, see flow.c); 0 or a drop reason.
 */
uint32_t flow_pair_open(const struct pyfwd_ctx *ctx, struct worker *w,
			const struct vip_bank *b, struct flow *orig,
			uint64_t now, uint16_t keep);

/* Reap the expired entries of the next `slots` slots (loops: when idle). */
void flow_sweep(struct worker *w, uint64_t now, uint32_t slots);

#endif /* PYFWD_FLOW_H */
