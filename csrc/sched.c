/* SPDX-License-Identifier: MIT */
/*
 * sched.c - which real server a new flow goes to: the VIP's ring indexed
 * the way its scheduler says (PYFWD_SCHED_*), or the real a persistent
 * client had; and the Maglev table fill that Python's scheduler.py asks
 * for when it builds a ring.
 */
#include <errno.h>

#include "flow.h"
#include "tables.h"

/* Fewest live flows per weight among the ring's candidates (lc, wlc). */
static uint32_t pick_least(const struct vip_bank *b, const struct worker *w,
			   const struct pyfwd_vip *vip, uint32_t turn)
{
	uint32_t i, best = PYFWD_NO_REAL;
	uint64_t best_a = 0, best_w = 1;

	/* Start at a turning offset so that ties take turns. */
	for (i = 0; i < vip->ring_len; i++) {
		uint32_t k = vip->ring_off + (turn + i) % vip->ring_len;
		uint32_t id = b->ring[k];
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

uint32_t sched_pick(const struct vip_bank *b, struct worker *w,
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

uint32_t sched_persist_lookup(struct worker *w, const struct vip_bank *b,
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
	/* Weight 0 (drained, or quiesced by a failed health check) takes no
	 * new flow, a persistent client's neither: it moves on. */
	if (f && real_usable(b, f->real) && b->reals[f->real].weight)
		return f->real;
	return PYFWD_NO_REAL;
}

int pyfwd_maglev_fill(uint16_t *table, uint32_t size, uint32_t *next,
		      const uint32_t *skip, uint32_t nreals,
		      const uint32_t *turns, uint32_t nturns)
{
	uint32_t i, k;

	if (!table || size < 2 || nturns > size || nreals >= PYFWD_NO_REAL ||
	    (nturns && (!next || !skip || !turns)))
		return -EINVAL;
	for (i = 0; i < nreals; i++)
		if (next[i] >= size || !skip[i] || skip[i] >= size)
			return -EINVAL;
	for (k = 0; k < nturns; k++)
		if (turns[k] >= nreals)
			return -EINVAL;
	for (k = 0; k < size; k++)
		table[k] = PYFWD_NO_REAL;
	for (k = 0; k < nturns; k++) {
		uint32_t r = turns[k], c = next[r], s = skip[r], tries = size;

		/* size is prime: the permutation visits every entry once. */
		while (table[c] != PYFWD_NO_REAL) {
			if (unlikely(!--tries))
				return -EINVAL;
			c += s;
			if (c >= size)
				c -= size;
		}
		table[c] = (uint16_t)r;
		c += s;
		next[r] = c >= size ? c - size : c;
	}
	return 0;
}
