/* SPDX-License-Identifier: MIT */
/*
 * stats.c - the counters as Python reads them: each worker writes its own
 * (no atomics on the hot path), readers sum them with relaxed loads; and
 * the names of the verdict reasons.
 */
#include <errno.h>

#include "fastmap.h"

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
	[PYFWD_R_DROP_ICMP_QUOTE] = "drop_icmp_quote",
	[PYFWD_R_DROP_ICMP_NO_FLOW] = "drop_icmp_no_flow",
	[PYFWD_R_DROP_TTL_EXPIRED] = "drop_ttl_expired",
	[PYFWD_R_DROP_NO_FLOW] = "drop_no_flow",
	[PYFWD_R_DROP_HANDOFF_FULL] = "drop_handoff_full",
	[PYFWD_R_FORWARD_TOO_BIG] = "forward_too_big",
	[PYFWD_R_DROP_TUN_NO_ROOM] = "drop_tun_no_room",
	[PYFWD_R_DROP_TUN_TOO_BIG] = "drop_tun_too_big",
	[PYFWD_R_DROP_TUN_GSO] = "drop_tun_gso",
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

/* Add worker w's counters to out (all of them are uint64_t). */
static void stats_add(const struct worker *w, struct pyfwd_stats *out)
{
	const uint64_t *src = (const uint64_t *)&w->stats;
	uint64_t *dst = (uint64_t *)out;
	uint32_t k;

	for (k = 0; k < sizeof(*out) / sizeof(uint64_t); k++)
		dst[k] += __atomic_load_n(&src[k], __ATOMIC_RELAXED);
}

/* The tables' figures are the context's, not a worker's. */
static void stats_tables(const struct pyfwd_ctx *ctx, struct pyfwd_stats *out)
{
	uint64_t gen = __atomic_load_n(&ctx->gen, __ATOMIC_ACQUIRE);

	out->tables.vip_generation = gen;
	out->tables.vip_count = ctx->bank[gen & 1].count;
}

void pyfwd_stats_read(const struct pyfwd_ctx *ctx, struct pyfwd_stats *out)
{
	uint32_t i;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < ctx->cfg.workers; i++)
		stats_add(&ctx->workers[i], out);
	stats_tables(ctx, out);
	fastmap_stats_add(ctx, out);
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

int pyfwd_worker_room_read(const struct pyfwd_ctx *ctx, uint32_t worker,
			   struct pyfwd_worker_room *out)
{
	const struct worker *w;
	uint32_t head, tail;

	if (worker >= ctx->cfg.workers)
		return -EINVAL;
	w = &ctx->workers[worker];
	out->flow_slots = (uint64_t)w->flow_mask + 1;
	/* written by the worker alone, per new or freed entry: a plain
	 * aligned u64, never torn */
	out->flow_slots_used = __atomic_load_n(&w->slots_used,
					       __ATOMIC_RELAXED);
	out->punt_slots = PUNT_SLOTS;
	/* tail first: head read after it is never behind it (a push and a
	 * drain between two loads in the other order wrap to ~4.29e9) */
	tail = __atomic_load_n(&w->punt.tail, __ATOMIC_ACQUIRE);
	head = __atomic_load_n(&w->punt.head, __ATOMIC_ACQUIRE);
	out->punt_queued = head - tail;
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
		const struct worker *w = &ctx->workers[i];
		const struct pyfwd_real_stats *s = w->real_stats;

		for (r = 0; r < n; r++) {
			/* w->active counts the closing flows too (the
			 * schedulers' total); read racily, the two may
			 * disagree by a burst: inactive never beyond it */
			uint32_t all = __atomic_load_n(&w->active[r],
						       __ATOMIC_RELAXED);
			uint32_t closing = __atomic_load_n(&w->inactive[r],
							   __ATOMIC_RELAXED);

			if (closing > all)
				closing = all;
			out[r].frames += s[r].frames;
			out[r].bytes += s[r].bytes;
			out[r].flows_new += s[r].flows_new;
			out[r].active += all - closing;
			out[r].inactive += closing;
		}
	}
	fastmap_real_stats_add(ctx, out, n);
	return 0;
}
