/* SPDX-License-Identifier: MIT */
/*
 * fuzz_classify.c - libFuzzer target for the core (make -C csrc fuzz).
 *
 * Each input is one frame, copied into a buffer of exactly its size, and
 * classified against a fixed VIP table (the packet cases' VIPs), once with
 * the balancer's MAC set and once accepting any MAC and flagged as a
 * veth's (csum.c reads the whole L4 packet).  ASan and UBSan turn
 * a read past the end or undefined behaviour into a crash.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "pyfwd.h"

static struct pyfwd_ctx *ctx_mac, *ctx_any;

static void add(struct pyfwd_vip *v, int family, const char *addr,
		uint8_t proto, uint16_t port)
{
	memset(v, 0, sizeof(*v));
	v->family = family == AF_INET ? PYFWD_AF_INET : PYFWD_AF_INET6;
	inet_pton(family, addr, v->addr);
	v->proto = proto;
	v->port = port;
}

static struct pyfwd_ctx *make_ctx(int with_mac)
{
	struct pyfwd_config cfg = { .mac = { 2, 0, 0, 0, 0, 2 },
				    .flows = 1024 };
	struct pyfwd_real reals[2] = {
		{ .mac = { 2, 0, 0, 0, 1, 0x11 }, .flags = PYFWD_REAL_F_USED },
		{ .mac = { 2, 0, 0, 0, 1, 0x12 }, .flags = PYFWD_REAL_F_USED },
	};
	uint16_t ring[3] = { 0, 1, PYFWD_NO_REAL };
	struct pyfwd_vip vips[5];
	struct pyfwd_ctx *ctx;
	int i;

	if (!with_mac)
		memset(cfg.mac, 0, sizeof(cfg.mac));
	add(&vips[0], AF_INET, "10.0.0.100", PROTO_TCP, 80);
	add(&vips[1], AF_INET, "10.0.0.100", PROTO_UDP, 53);
	add(&vips[2], AF_INET, "10.0.0.100", PROTO_TCP, 11112);
	add(&vips[3], AF_INET6, "fd00::100", PROTO_TCP, 80);
	add(&vips[4], AF_INET6, "fd00::100", PROTO_UDP, 53);
	for (i = 0; i < 5; i++) {
		vips[i].sched = i & 1 ? PYFWD_SCHED_SEQ : PYFWD_SCHED_HASH;
		vips[i].ring_len = i == 4 ? 3 : 2;	/* one with a hole */
	}
	if (pyfwd_ctx_create(&cfg, &ctx) ||
	    pyfwd_tables_publish(ctx, vips, 5, reals, 2, ring, 3))
		abort();
	return ctx;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pyfwd_result res;
	struct pyfwd_frame f;
	uint8_t *copy;

	if (!ctx_mac) {
		ctx_mac = make_ctx(1);
		ctx_any = make_ctx(0);
	}
	if (size > 65535)
		return 0;
	copy = size ? malloc(size) : NULL;
	if (size && !copy)
		return 0;
	if (size)
		memcpy(copy, data, size);
	f.data = copy;
	f.len = f.cap = (uint32_t)size;
	f.in_if = 0;
	f.flags = 0;
	pyfwd_core_burst(ctx_mac, &f, 1, &res);
	if (res.verdict != pyfwd_reason_verdict(res.reason))
		abort();
	/* And as a veth hands it over: its checksum maybe unfinished. */
	f.flags = PYFWD_FRAME_CSUM_PARTIAL;
	pyfwd_core_burst(ctx_any, &f, 1, &res);
	if (res.verdict != pyfwd_reason_verdict(res.reason))
		abort();
	free(copy);
	return 0;
}
