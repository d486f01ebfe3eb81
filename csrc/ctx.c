/* SPDX-License-Identifier: MIT */
/*
 * ctx.c - set-up side of the core: context, VIP table publication, stats.
 * Everything here runs in the control plane's thread; nothing here runs
 * per packet (punt_push and core_now excepted: small and lock-free).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"

static const char *const reason_names[PYFWD_R_MAX] = {
	[PYFWD_R_FORWARD] = "forward",
	[PYFWD_R_FORWARD_REPLY] = "forward_reply",
	[PYFWD_R_FORWARD_ICMP] = "forward_icmp",
	[PYFWD_R_PASS_OTHER_MAC] = "pass_other_mac",
	[PYFWD_R_PASS_ETHERTYPE] = "pass_ethertype",
	[PYFWD_R_PASS_ARP] = "pass_arp",
	[PYFWD_R_PASS_NOT_VIP] = "pass_not_vip",
	[PYFWD_R_PASS_VIP_OTHER] = "pass_vip_other",
	[PYFWD_R_PUNT_ARP] = "punt_arp",
	[PYFWD_R_PUNT_ICMP] = "punt_icmp",
	[PYFWD_R_PUNT_NDP] = "punt_ndp",
	[PYFWD_R_DROP_RUNT] = "drop_runt",
	[PYFWD_R_DROP_OVERSIZE] = "drop_oversize",
	[PYFWD_R_DROP_VLAN_TRUNC] = "drop_vlan_trunc",
	[PYFWD_R_DROP_ARP_TRUNC] = "drop_arp_trunc",
	[PYFWD_R_DROP_IP4_TRUNC] = "drop_ip4_trunc",
	[PYFWD_R_DROP_IP4_VERSION] = "drop_ip4_version",
	[PYFWD_R_DROP_IP4_IHL] = "drop_ip4_ihl",
	[PYFWD_R_DROP_IP4_TOTLEN] = "drop_ip4_totlen",
	[PYFWD_R_DROP_IP6_TRUNC] = "drop_ip6_trunc",
	[PYFWD_R_DROP_IP6_VERSION] = "drop_ip6_version",
	[PYFWD_R_DROP_IP6_PAYLEN] = "drop_ip6_paylen",
	[PYFWD_R_DROP_IP6_EXTHDR] = "drop_ip6_exthdr",
	[PYFWD_R_DROP_FRAGMENT] = "drop_fragment",
	[PYFWD_R_DROP_L4_TRUNC] = "drop_l4_trunc",
	[PYFWD_R_DROP_TCP_DOFF] = "drop_tcp_doff",
	[PYFWD_R_DROP_UDP_LEN] = "drop_udp_len",
	[PYFWD_R_DROP_NO_REAL] = "drop_no_real",
	[PYFWD_R_DROP_TABLE_FULL] = "drop_table_full",
	[PYFWD_R_DROP_PORTS_FULL] = "drop_ports_full",
};

const char *pyfwd_reason_name(uint32_t reason)
{
	if (reason >= PYFWD_R_MAX || !reason_names[reason])
		return "unknown";
	return reason_names[reason];
}

uint32_t pyfwd_reason_verdict(uint32_t reason)
{
	return reason_verdict(reason);
}

static uint32_t pow2_at_least(uint32_t n, uint32_t floor)
{
	uint32_t p = floor;

	while (p < n)
		p <<= 1;
	return p;
}

static void bank_clear(struct vip_bank *b)
{
	uint32_t i;

	for (i = 0; i <= b->mask; i++) {
		b->svc[i].vip = -1;
		b->addr[i].vip = -1;
	}
	b->count = 0;
}

static void bank_free(struct vip_bank *b)
{
	free(b->svc);
	free(b->addr);
	free(b->vips);
	free(b->reals);
	free(b->ring);
	memset(b, 0, sizeof(*b));
}

static int bank_alloc(struct vip_bank *b, const struct pyfwd_config *cfg)
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

static void worker_free(struct worker *w)
{
	free(w->ports.free);
	free(w->ports.taken);
	free(w->flows);
	free(w->seq);
	free(w->active);
	free(w->real_stats);
	free(w->punt.data);
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
	w->flow_mask = slots - 1;
	/* calloc of a large table maps zero pages: memory is used as used */
	w->flows = calloc(slots, sizeof(*w->flows));
	if (w->flows)
		map_zero_pages(w->flows, (size_t)slots * sizeof(*w->flows));
	w->seq = calloc(cfg->max_vips, sizeof(*w->seq));
	w->active = calloc(cfg->max_reals, sizeof(*w->active));
	w->real_stats = calloc(cfg->max_reals, sizeof(*w->real_stats));
	w->punt.data = calloc(PUNT_SLOTS, PUNT_SNAP);
	w->ports.free = calloc(65536, sizeof(*w->ports.free));
	w->ports.taken = calloc(65536, 1);
	if (!w->flows || !w->seq || !w->active || !w->real_stats ||
	    !w->punt.data ||
	    !w->ports.free || !w->ports.taken)
		return -ENOMEM;
	return 0;
}

static void config_defaults(struct pyfwd_config *c)
{
#define DEFAULT(field, value) do { if (!c->field) c->field = (value); } while (0)
	DEFAULT(workers, 1);
	DEFAULT(max_frame, PYFWD_FRAME_MAX_DEFAULT);
	DEFAULT(max_vips, PYFWD_VIPS_MAX_DEFAULT);
	DEFAULT(max_reals, PYFWD_REALS_MAX_DEFAULT);
	DEFAULT(max_ring, PYFWD_RING_MAX_DEFAULT);
	DEFAULT(flows, PYFWD_FLOWS_DEFAULT);
	DEFAULT(tcp_timeout, 900);
	DEFAULT(tcp_fin_timeout, 10);
	DEFAULT(udp_timeout, 300);
	DEFAULT(tcp_syn_timeout, 30);
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
	if (cfg->max_vips > (1u << 20) || cfg->max_frame > 65535 ||
	    cfg->max_reals > PYFWD_NO_REAL || cfg->workers > PYFWD_WORKERS_MAX ||
	    cfg->flows > (1u << 26) || cfg->max_ring > (1u << 28))
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
		for (i = 0; i < ctx->cfg.workers; i++)
			worker_free(&ctx->workers[i]);
	free(ctx->workers);
	free(ctx);
}

int pyfwd_snat_set(struct pyfwd_ctx *ctx, const struct pyfwd_snat *snat)
{
	uint32_t i, p, k;

	if (snat->family != PYFWD_AF_INET && snat->family != PYFWD_AF_INET6)
		return -EINVAL;
	if (!snat->port_lo || snat->port_lo > snat->port_hi)
		return -EINVAL;
	for (i = 0; i < ctx->cfg.workers; i++)
		if (ctx->workers[i].ports.size != ctx->workers[i].ports.nfree)
			return -EBUSY;
	ctx->snat = *snat;
	/* Worker i owns the ports with (port - lo) % workers == i. */
	for (i = 0; i < ctx->cfg.workers; i++) {
		struct port_pool *pp = &ctx->workers[i].ports;

		pp->nfree = pp->size = 0;
		memset(pp->taken, 0, 65536);
		for (p = snat->port_hi, k = 0; p >= snat->port_lo; p--, k++) {
			if ((p - snat->port_lo) % ctx->cfg.workers == i)
				pp->free[pp->nfree++] = (uint16_t)p;
			if (p == 0)
				break;
		}
		pp->size = pp->nfree;
	}
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
			if (tries > 100000)	/* ~2 s: a burst never takes that */
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
	return 0;
}

/* Add worker w's counters to out (all of them are uint64_t). */
static void stats_add(const struct worker *w, struct pyfwd_stats *out)
{
	const uint64_t *src = (const uint64_t *)&w->stats;
	uint64_t *dst = (uint64_t *)out;
	uint32_t k;

	for (k = 0; k < sizeof(*out) / sizeof(uint64_t); k++)
		dst[k] += __atomic_load_n(&src[k], __ATOMIC_RELAXED);
}

static void stats_tables(const struct pyfwd_ctx *ctx, struct pyfwd_stats *out)
{
	uint64_t gen = __atomic_load_n(&ctx->gen, __ATOMIC_ACQUIRE);

	out->vip_generation = gen;
	out->vip_count = ctx->bank[gen & 1].count;
}

void pyfwd_stats_read(const struct pyfwd_ctx *ctx, struct pyfwd_stats *out)
{
	uint32_t i;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < ctx->cfg.workers; i++)
		stats_add(&ctx->workers[i], out);
	stats_tables(ctx, out);
}

int pyfwd_worker_stats_read(const struct pyfwd_ctx *ctx, uint32_t worker,
			    struct pyfwd_stats *out)
{
	if (worker >= ctx->cfg.workers)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	stats_add(&ctx->workers[worker], out);
	stats_tables(ctx, out);
	return 0;
}

int pyfwd_real_stats_read(const struct pyfwd_ctx *ctx,
			  struct pyfwd_real_stats *out, uint32_t n)
{
	uint32_t i, r;

	if (n > ctx->cfg.max_reals)
		return -E2BIG;
	memset(out, 0, n * sizeof(*out));
	for (i = 0; i < ctx->cfg.workers; i++) {
		const struct pyfwd_real_stats *s = ctx->workers[i].real_stats;

		for (r = 0; r < n; r++) {
			out[r].frames += s[r].frames;
			out[r].bytes += s[r].bytes;
			out[r].flows_new += s[r].flows_new;
			out[r].active += __atomic_load_n(
				&ctx->workers[i].active[r], __ATOMIC_RELAXED);
		}
	}
	return 0;
}

void pyfwd_expire(struct pyfwd_ctx *ctx)
{
	uint64_t now = core_now(ctx);
	uint32_t i;

	for (i = 0; i < ctx->cfg.workers; i++) {
		struct worker *w = &ctx->workers[i];

		w->sweep = 0;
		core_sweep(w, now, w->flow_mask + 1);
	}
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

void pyfwd_clock_set(struct pyfwd_ctx *ctx, uint64_t now_ns)
{
	__atomic_store_n(&ctx->clock_ns, now_ns, __ATOMIC_RELAXED);
}

uint64_t core_now(const struct pyfwd_ctx *ctx)
{
	uint64_t fixed = __atomic_load_n(&ctx->clock_ns, __ATOMIC_RELAXED);
	struct timespec ts;

	if (fixed)
		return fixed;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void punt_push(struct worker *w, const uint8_t *data, uint32_t len)
{
	struct punt_ring *p = &w->punt;
	uint32_t head = p->head;
	uint32_t tail = __atomic_load_n(&p->tail, __ATOMIC_ACQUIRE);

	if (unlikely(head - tail >= PUNT_SLOTS)) {
		w->stats.punt_overflow++;
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
