/* SPDX-License-Identifier: MIT */
/*
 * ctx.c - the context's set-up: create (every table, flow table, ring and
 * pool allocated here, once, so that nothing is allocated per packet),
 * destroy, the SNAT port pools, the tests' clock.  Control plane only.
 */
#include <errno.h>
#include <stdlib.h>

#include "tables.h"

static void worker_free(struct worker *w)
{
	free(w->ports.free);
	free(w->ports.owner);
	free(w->flows);
	free(w->seq);
	free(w->active);
	free(w->inactive);
	free(w->real_stats);
	free(w->punt.data);
	flow_list_free(w);
}

/*
 * Map a fresh table's pages now: a read maps the shared zero page, so no
 * memory is used until a slot is written.  Otherwise the sweep's first
 * pass over a new flow table takes a page fault every 56 slots, in the
 * loop (about one per burst for the first 2M slots / 64 bursts).
 */
static void map_zero_pages(const void *p, size_t len)
{
	const volatile uint8_t *b = p;
	size_t i;

	for (i = 0; i < len; i += 4096)
		(void)b[i];
}

static int worker_alloc(struct worker *w, const struct pyfwd_config *cfg)
{
	uint32_t slots = pow2_at_least(cfg->flows, 64);

	w->epoch = EPOCH_IDLE;
	w->wake_fd = -1;
	w->flow_mask = slots - 1;
	/* calloc of a large table maps zero pages: memory is used as used */
	w->flows = calloc(slots, sizeof(*w->flows));
	if (w->flows)
		map_zero_pages(w->flows, (size_t)slots * sizeof(*w->flows));
	w->seq = calloc(cfg->max_vips, sizeof(*w->seq));
	w->active = calloc(cfg->max_reals, sizeof(*w->active));
	w->inactive = calloc(cfg->max_reals, sizeof(*w->inactive));
	w->real_stats = calloc(cfg->max_reals, sizeof(*w->real_stats));
	w->punt.data = calloc(PUNT_SLOTS, PUNT_SNAP);
	w->ports.free = calloc(65536, sizeof(*w->ports.free));
	w->ports.owner = calloc(65536, sizeof(*w->ports.owner));
	if (!w->flows || !w->seq || !w->active || !w->inactive ||
	    !w->real_stats || !w->punt.data ||
	    !w->ports.free || !w->ports.owner)
		return -ENOMEM;
	return 0;
}

static void config_defaults(struct pyfwd_config *c)
{
#define DEFAULT(field, value) \
	do { if (!c->field) c->field = (value); } while (0)
	DEFAULT(workers, 1);
	DEFAULT(max_frame, PYFWD_FRAME_MAX_DEFAULT);
	DEFAULT(max_vips, PYFWD_VIPS_MAX_DEFAULT);
	DEFAULT(max_reals, PYFWD_REALS_MAX_DEFAULT);
	DEFAULT(max_ring, PYFWD_RING_MAX_DEFAULT);
	DEFAULT(flows, PYFWD_FLOWS_DEFAULT);
	DEFAULT(tcp_timeout, PYFWD_TCP_TIMEOUT_DEFAULT);
	DEFAULT(tcp_fin_timeout, PYFWD_TCP_FIN_TIMEOUT_DEFAULT);
	DEFAULT(udp_timeout, PYFWD_UDP_TIMEOUT_DEFAULT);
	DEFAULT(tcp_syn_timeout, PYFWD_TCP_SYN_TIMEOUT_DEFAULT);
#undef DEFAULT
}

int pyfwd_ctx_create(const struct pyfwd_config *cfg, struct pyfwd_ctx **out)
{
	static const uint8_t zero_mac[6];
	struct pyfwd_ctx *ctx;
	uint32_t i;
	int err = -ENOMEM;

	if (!cfg || !out)
		return -EINVAL;
	*out = NULL;
	if (cfg->max_vips > PYFWD_VIPS_LIMIT ||
	    cfg->max_frame > PYFWD_FRAME_LIMIT ||
	    cfg->max_reals > PYFWD_REALS_LIMIT ||
	    cfg->workers > PYFWD_WORKERS_MAX ||
	    cfg->flows > PYFWD_FLOWS_LIMIT || cfg->max_ring > PYFWD_RING_LIMIT ||
	    cfg->tcp_timeout > PYFWD_TIMEOUT_LIMIT ||
	    cfg->tcp_fin_timeout > PYFWD_TIMEOUT_LIMIT ||
	    cfg->udp_timeout > PYFWD_TIMEOUT_LIMIT ||
	    cfg->tcp_syn_timeout > PYFWD_TIMEOUT_LIMIT)
		return -EINVAL;

	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	ctx->cfg = *cfg;
	config_defaults(&ctx->cfg);
	ctx->any_mac = !memcmp(cfg->mac, zero_mac, sizeof(zero_mac));
	memcpy(ctx->if_mac[0], cfg->mac, 6);
	memcpy(ctx->if_mac[1], cfg->mac2, 6);

	for (i = 0; i < 2; i++)
		if (bank_alloc(&ctx->bank[i], &ctx->cfg))
			goto err;
	ctx->workers = aligned_alloc(64, ctx->cfg.workers *
					     sizeof(*ctx->workers));
	if (!ctx->workers)
		goto err;
	memset(ctx->workers, 0, ctx->cfg.workers * sizeof(*ctx->workers));
	for (i = 0; i < ctx->cfg.workers; i++)
		if (worker_alloc(&ctx->workers[i], &ctx->cfg))
			goto err;
	ctx->owners = ctx->cfg.workers;
	err = handoff_alloc(ctx);
	if (err)
		goto err;
	*out = ctx;
	return 0;

err:
	pyfwd_ctx_destroy(ctx);
	return err;
}

void pyfwd_ctx_destroy(struct pyfwd_ctx *ctx)
{
	uint32_t i;

	if (!ctx)
		return;
	if (ctx->io_close)
		ctx->io_close(ctx);	/* the core builds without the I/O */
	bank_free(&ctx->bank[0]);
	bank_free(&ctx->bank[1]);
	if (ctx->workers)
		handoff_free(ctx);
	if (ctx->workers)
		for (i = 0; i < ctx->cfg.workers; i++)
			worker_free(&ctx->workers[i]);
	free(ctx->workers);
	free(ctx);
}

void pyfwd_ctx_config_read(const struct pyfwd_ctx *ctx,
			   struct pyfwd_config *out)
{
	*out = ctx->cfg;
}

/* Split the SNAT range between the owners (ports held: -EBUSY). */
static int snat_split(struct pyfwd_ctx *ctx, const struct pyfwd_snat *snat,
		      uint32_t owners)
{
	uint32_t i, p;

	for (i = 0; i < ctx->cfg.workers; i++)
		if (ctx->workers[i].ports.size != ctx->workers[i].ports.nfree)
			return -EBUSY;
	ctx->snat = *snat;
	ctx->owners = owners;
	/* Worker i gives the ports it owns (handoff.c: the answers to a
	 * port come to its owner); a worker that owns no flow, none. */
	for (i = 0; i < ctx->cfg.workers; i++) {
		struct port_pool *pp = &ctx->workers[i].ports;

		pp->head = pp->nfree = pp->size = 0;
		memset(pp->owner, 0, 65536 * sizeof(*pp->owner));
		pp->cursor = 0;
		for (p = snat->port_lo; snat->port_hi && p <= snat->port_hi;
		     p++)
			if (snat_port_worker(snat, p, owners) == i)
				pp->free[pp->nfree++] = (uint16_t)p;
		pp->size = pp->nfree;
		ctx->workers[i].stats.flows.snat_ports_pool = pp->size;
	}
	return 0;
}

int pyfwd_snat_set(struct pyfwd_ctx *ctx, const struct pyfwd_snat *snat)
{
	if (snat->family != PYFWD_AF_INET && snat->family != PYFWD_AF_INET6)
		return -EINVAL;
	if (!snat->port_lo || snat->port_lo > snat->port_hi)
		return -EINVAL;
	return snat_split(ctx, snat, ctx->owners);
}

int ctx_owners_set(struct pyfwd_ctx *ctx, uint32_t owners)
{
	struct pyfwd_snat snat = ctx->snat;

	if (owners == ctx->owners)
		return 0;
	return snat_split(ctx, &snat, owners);
}

void pyfwd_clock_set(struct pyfwd_ctx *ctx, uint64_t now_ns)
{
	__atomic_store_n(&ctx->clock_ns, now_ns, __ATOMIC_RELAXED);
}
