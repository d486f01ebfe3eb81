/* SPDX-License-Identifier: MIT */
/*
 * punt.c - the punt rings: frames the core does not answer itself (ARP,
 * ICMP and NDP for a VIP) wait in a ring per worker for Python to drain
 * them in a batch.  Single producer (the worker), single consumer (the
 * control plane); lock-free, fixed size: a full ring counts and drops.
 * ARP and NDP have PUNT_NEIGH slots that nothing else may take.
 */
#include "core.h"

void punt_push(struct worker *w, const uint8_t *data, uint32_t len,
	       uint32_t reason)
{
	struct punt_ring *p = &w->punt;
	uint32_t head = p->head;
	uint32_t tail = __atomic_load_n(&p->tail, __ATOMIC_ACQUIRE);
	int neigh = reason == PYFWD_R_PUNT_ARP || reason == PYFWD_R_PUNT_NDP;
	uint32_t room = neigh ? PUNT_SLOTS : PUNT_SLOTS - PUNT_NEIGH;

	if (unlikely(head - tail >= room)) {
		w->stats.io.punt_overflow++;
		return;
	}
	if (len > PUNT_SNAP)
		len = PUNT_SNAP;
	memcpy(p->data[head % PUNT_SLOTS], data, len);
	p->len[head % PUNT_SLOTS] = (uint16_t)len;
	__atomic_store_n(&p->head, head + 1, __ATOMIC_RELEASE);
}

uint32_t pyfwd_punt_drain(struct pyfwd_ctx *ctx, uint8_t *buf, size_t bufsize,
			  uint32_t *lens, uint32_t max)
{
	uint32_t i, got = 0;
	size_t used = 0;

	for (i = 0; i < ctx->cfg.workers && got < max; i++) {
		struct punt_ring *p = &ctx->workers[i].punt;
		uint32_t tail = p->tail;
		uint32_t head = __atomic_load_n(&p->head, __ATOMIC_ACQUIRE);

		while (tail != head && got < max) {
			uint32_t len = p->len[tail % PUNT_SLOTS];

			if (used + len > bufsize)
				break;
			memcpy(buf + used, p->data[tail % PUNT_SLOTS], len);
			lens[got++] = len;
			used += len;
			tail++;
		}
		__atomic_store_n(&p->tail, tail, __ATOMIC_RELEASE);
	}
	return got;
}
