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
	for (i = 0; i <= b->nat_mask; i++)
		b->nat_reals[i].vip = -1;
	b->count = 0;
}

void bank_free(struct vip_bank *b)
{
	free(b->svc);
	free(b->addr);
	free(b->vips);
	free(b->reals);
	free(b->ring);
	free(b->nat_reals);
	free(b->seen);
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
	/* one endpoint per real id at most: half full at most, likewise */
	b->nat_mask = pow2_at_least(2 * cfg->max_reals, 16) - 1;
	b->nat_reals = calloc(b->nat_mask + 1, sizeof(*b->nat_reals));
	b->seen = calloc(cfg->max_reals, 1);
	if (!b->svc || !b->addr || !b->vips || !b->reals || !b->ring ||
	    !b->nat_reals || !b->seen)
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
	if (v->mode > PYFWD_MODE_TUN)
		return 0;
	if (v->sched > PYFWD_SCHED_LEAST)
		return 0;
	if (v->ring_off > nring || v->ring_len > nring - v->ring_off)
		return 0;
	return v->port != 0;
}

/* addr:port/proto into a table of vip_slots (not full): -EEXIST if in. */
static int svc_insert(struct vip_slot *t, uint32_t mask, const uint8_t *addr,
		      uint8_t family, uint8_t proto, uint16_t port,
		      int32_t index)
{
	uint32_t i;

	i = vip_hash(addr, family, svc_extra(proto, port)) & mask;
	for (; t[i].vip >= 0; i = (i + 1) & mask) {
		const struct vip_slot *s = &t[i];

		if (s->port == port && s->proto == proto &&
		    s->family == family && !memcmp(s->addr, addr, 16))
			return -EEXIST;
	}
	memcpy(t[i].addr, addr, 16);
	t[i].family = family;
	t[i].proto = proto;
	t[i].port = port;
	t[i].vip = index;
	return 0;
}

static int bank_insert(struct vip_bank *b, const struct pyfwd_vip *v,
		       int32_t index)
{
	uint32_t i;

	if (svc_insert(b->svc, b->mask, v->addr, v->family, v->proto, v->port,
		       index))
		return -EEXIST;

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

/*
 * The NAT VIPs' reals' endpoints (addr, port or the VIP's, the VIP's
 * protocol), from the rings: what the steering program takes as answers
 * (services.steering), but for reals in no ring (weight 0), whose stray
 * answers are then said pass_not_vip.  A real id is one VIP's.
 */
static void bank_nat_reals(struct vip_bank *b, const struct pyfwd_vip *vips,
			   uint32_t nvips, const struct pyfwd_real *reals,
			   uint32_t nreals, const uint16_t *ring)
{
	uint32_t i, k;

	memset(b->seen, 0, nreals);
	for (i = 0; i < nvips; i++) {
		const struct pyfwd_vip *v = &vips[i];

		if (v->mode != PYFWD_MODE_NAT)
			continue;
		for (k = v->ring_off; k < v->ring_off + v->ring_len; k++) {
			const struct pyfwd_real *r;

			if (ring[k] == PYFWD_NO_REAL || b->seen[ring[k]])
				continue;
			b->seen[ring[k]] = 1;
			r = &reals[ring[k]];
			svc_insert(b->nat_reals, b->nat_mask, r->addr,
				   r->family, v->proto,
				   r->port ? r->port : v->port, (int32_t)i);
		}
	}
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
		b->nat_vips += mode_paired(vips[i].mode);
	bank_nat_reals(b, vips, nvips, reals, nreals, ring);
	b->nreals = nreals;
	b->nring = nring;
	__atomic_store_n(&ctx->gen, gen + 1, __ATOMIC_SEQ_CST);
	fastmap_published(ctx);
	return 0;
}
