/* SPDX-License-Identifier: MIT */
/*
 * ctx.c - set-up side of the core: context, VIP table publication, stats.
 * Everything here runs in the control plane's thread; nothing here runs
 * per packet.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

static const char *const reason_names[PYFWD_R_MAX] = {
	[PYFWD_R_FORWARD] = "forward",
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

static uint32_t slots_for(uint32_t max_vips)
{
	uint32_t slots = 16;

	/* At most half full, so a probe always meets an empty slot. */
	while (slots < 2 * max_vips)
		slots <<= 1;
	return slots;
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
	b->svc = NULL;
	b->addr = NULL;
}

int pyfwd_ctx_create(const struct pyfwd_config *cfg, struct pyfwd_ctx **out)
{
	static const uint8_t zero_mac[6];
	struct pyfwd_ctx *ctx;
	uint32_t slots;
	int i, err;

	if (!cfg || !out)
		return -EINVAL;
	*out = NULL;
	if (cfg->max_vips > (1u << 20) || cfg->max_frame > 65535)
		return -EINVAL;

	ctx = aligned_alloc(64, (sizeof(*ctx) + 63) & ~(size_t)63);
	if (!ctx)
		return -ENOMEM;
	memset(ctx, 0, sizeof(*ctx));
	ctx->cfg = *cfg;
	if (!ctx->cfg.max_frame)
		ctx->cfg.max_frame = PYFWD_FRAME_MAX_DEFAULT;
	if (!ctx->cfg.max_vips)
		ctx->cfg.max_vips = PYFWD_VIPS_MAX_DEFAULT;
	ctx->any_mac = !memcmp(cfg->mac, zero_mac, sizeof(zero_mac));

	slots = slots_for(ctx->cfg.max_vips);
	for (i = 0; i < 2; i++) {
		struct vip_bank *b = &ctx->bank[i];

		b->mask = slots - 1;
		b->svc = calloc(slots, sizeof(*b->svc));
		b->addr = calloc(slots, sizeof(*b->addr));
		if (!b->svc || !b->addr) {
			err = -ENOMEM;
			goto err_banks;
		}
		bank_clear(b);
	}
	*out = ctx;
	return 0;

err_banks:
	bank_free(&ctx->bank[0]);
	bank_free(&ctx->bank[1]);
	free(ctx);
	return err;
}

void pyfwd_ctx_destroy(struct pyfwd_ctx *ctx)
{
	if (!ctx)
		return;
	bank_free(&ctx->bank[0]);
	bank_free(&ctx->bank[1]);
	free(ctx);
}

static int vip_valid(const struct pyfwd_vip *v)
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

int pyfwd_vip_publish(struct pyfwd_ctx *ctx, const struct pyfwd_vip *vips,
		      uint32_t n)
{
	uint32_t next, i;
	struct vip_bank *b;
	int err;

	if (!ctx || (n && !vips))
		return -EINVAL;
	if (n > ctx->cfg.max_vips)
		return -E2BIG;
	for (i = 0; i < n; i++)
		if (!vip_valid(&vips[i]))
			return -EINVAL;

	next = !__atomic_load_n(&ctx->active, __ATOMIC_RELAXED);
	b = &ctx->bank[next];
	bank_clear(b);
	for (i = 0; i < n; i++) {
		err = bank_insert(b, &vips[i], (int32_t)i);
		if (err)
			return err;	/* the active bank is untouched */
	}
	b->count = n;
	__atomic_store_n(&ctx->active, next, __ATOMIC_RELEASE);
	ctx->generation++;
	return 0;
}

void pyfwd_stats_read(const struct pyfwd_ctx *ctx, struct pyfwd_stats *out)
{
	uint32_t active = __atomic_load_n(&ctx->active, __ATOMIC_ACQUIRE);

	*out = ctx->stats;
	out->vip_generation = ctx->generation;
	out->vip_count = ctx->bank[active].count;
}
