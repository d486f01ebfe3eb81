/* SPDX-License-Identifier: MIT */
/*
 * tables.c - publishing the tables Python built (VIPs, real servers,
 * rings).  They are checked, written into the inactive bank once no worker
 * reads it any more, and made active with one store of the generation;
 * the workers read the generation once per burst (bank_enter).  Control
 * plane only; calls are serialised by the caller.
 */
#include <errno.h>
#include <stdlib.h>

#include "fastmap.h"
#include "tables.h"

static void bank_clear(struct vip_bank *b)
{
	uint32_t i;

	for (i = 0; i <= b->mask; i++) {
		b->svc[i].vip = -1;
		b->addr[i].vip = -1;
	}
	b->count = 0;
}

void bank_free(struct vip_bank *b)
{
	free(b->svc);
	free(b->addr);
	free(b->vips);
	free(b->reals);
	free(b->ring);
	memset(b, 0, sizeof(*b));
}

int bank_alloc(struct vip_bank *b, const struct pyfwd_config *cfg)
{
	/* At most half full, so a probe always meets an empty slot. */
	uint32_t slots = pow2_at_least(2 * cfg->max_vips, 16);

	b->mask = slots - 1;
	b->svc = calloc(slots, sizeof(*b->svc));
	b->addr = calloc(slots, sizeof(*b->addr));
	b->vips = calloc(cfg->max_vips, sizeof(*b->vips));
	b->reals = calloc(cfg->max_reals, sizeof(*b->reals));
	b->ring = calloc(cfg->max_ring, sizeof(*b->ring));
	if (!b->svc || !b->addr || !b->vips || !b->reals || !b->ring)
		return -ENOMEM;
	bank_clear(b);
	return 0;
}

static int vip_valid(const struct pyfwd_vip *v, uint32_t nring)
{
	static const uint8_t zero[12];

	if (v->family == PYFWD_AF_INET) {
		if (memcmp(v->addr + 4, zero, 12))
			return 0;
	} else if (v->family != PYFWD_AF_INET6) {
		return 0;
	}
	if (v->proto != PROTO_TCP && v->proto != PROTO_UDP)
		return 0;
	if (v->mode > PYFWD_MODE_SNAT)
		return 0;
	if (v->sched > PYFWD_SCHED_LEAST)
		return 0;
	if (v->ring_off > nring || v->ring_len > nring - v->ring_off)
		return 0;
	return v->port != 0;
}

static int bank_insert(struct vip_bank *b, const struct pyfwd_vip *v,
		       int32_t index)
{
	uint32_t i;

	i = vip_hash(v->addr, v->family, svc_extra(v->proto, v->port)) &
	    b->mask;
	for (; b->svc[i].vip >= 0; i = (i + 1) & b->mask) {
		const struct vip_slot *s = &b->svc[i];

		if (s->port == v->port && s->proto == v->proto &&
		    s->family == v->family && !memcmp(s->addr, v->addr, 16))
			return -EEXIST;
	}
	memcpy(b->svc[i].addr, v->addr, 16);
	b->svc[i].family = v->family;
	b->svc[i].proto = v->proto;
	b->svc[i].port = v->port;
	b->svc[i].vip = index;

	if (vip_addr_lookup(b, v->addr, v->family) >= 0)
		return 0;
	i = vip_hash(v->addr, v->family, 0) & b->mask;
	while (b->addr[i].vip >= 0)
		i = (i + 1) & b->mask;
	memcpy(b->addr[i].addr, v->addr, 16);
	b->addr[i].family = v->family;
	b->addr[i].vip = index;
	return 0;
}

/* Wait until no worker reads the bank of generation `old`. */
static int wait_readers(struct pyfwd_ctx *ctx, uint64_t old)
{
	const struct timespec nap = { 0, 20000 };
	uint32_t i, tries;

	for (i = 0; i < ctx->cfg.workers; i++) {
		for (tries = 0; __atomic_load_n(&ctx->workers[i].epoch,
						 __ATOMIC_SEQ_CST) == old;
		     tries++) {
			/* ~2 s: a burst never takes that */
			if (tries > 100000)
				return -ETIMEDOUT;
			nanosleep(&nap, NULL);
		}
	}
	return 0;
}

int pyfwd_tables_publish(struct pyfwd_ctx *ctx, const struct pyfwd_vip *vips,
			 uint32_t nvips, const struct pyfwd_real *reals,
			 uint32_t nreals, const uint16_t *ring, uint32_t nring)
{
	uint64_t gen;
	struct vip_bank *b;
	uint32_t i;
	int err;

	if (!ctx || (nvips && !vips) || (nreals && !reals) || (nring && !ring))
		return -EINVAL;
	if (nvips > ctx->cfg.max_vips || nreals > ctx->cfg.max_reals ||
	    nring > ctx->cfg.max_ring)
		return -E2BIG;
	for (i = 0; i < nvips; i++)
		if (!vip_valid(&vips[i], nring))
			return -EINVAL;
	for (i = 0; i < nring; i++)
		if (ring[i] != PYFWD_NO_REAL && ring[i] >= nreals)
			return -EINVAL;
	for (i = 0; i < nreals; i++)
		if (reals[i].out_if >= PYFWD_IFACES_MAX)
			return -EINVAL;

	gen = __atomic_load_n(&ctx->gen, __ATOMIC_SEQ_CST);
	/* The bank we overwrite was active at gen - 1. */
	if (gen) {
		err = wait_readers(ctx, gen - 1);
		if (err)
			return err;
	}
	b = &ctx->bank[(gen + 1) & 1];
	bank_clear(b);
	for (i = 0; i < nvips; i++) {
		err = bank_insert(b, &vips[i], (int32_t)i);
		if (err)
			return err;	/* the active bank is untouched */
	}
	memcpy(b->vips, vips, nvips * sizeof(*vips));
	memset(b->reals, 0, ctx->cfg.max_reals * sizeof(*reals));
	memcpy(b->reals, reals, nreals * sizeof(*reals));
	memcpy(b->ring, ring, nring * sizeof(*ring));
	b->count = nvips;
	b->nat_vips = 0;
	for (i = 0; i < nvips; i++)
		b->nat_vips += vips[i].mode != PYFWD_MODE_DR;
	b->nreals = nreals;
	b->nring = nring;
	__atomic_store_n(&ctx->gen, gen + 1, __ATOMIC_SEQ_CST);
	fastmap_published(ctx);
	return 0;
}
