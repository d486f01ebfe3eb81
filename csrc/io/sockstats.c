/* SPDX-License-Identifier: MIT */
/*
 * sockstats.c - what the kernel counted at the open backend's sockets:
 * frames it dropped there before a loop saw them, and the NAPI id an
 * AF_XDP loop found (xsk.c and afp.c read them; this file only picks the
 * backend, so that each depends one way).
 */
#include <errno.h>
#include <string.h>

#include "io/afp.h"
#include "io/xsk.h"
#include "pyfwd_mq.h"

int pyfwd_io_sock_stats_read(struct pyfwd_ctx *ctx, uint32_t queue,
			     uint32_t slot, struct pyfwd_sock_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!ctx->io)
		return -ENOTCONN;
	if (ctx->io_kind == IO_XSK)
		return xsk_sock_stats(ctx->io, queue, slot, &out->xsk);
	if (ctx->io_kind == IO_AFP)
		return afp_sock_stats(ctx->io, queue, slot, &out->afp);
	return -ENOTCONN;
}

int pyfwd_io_napi_id(struct pyfwd_ctx *ctx, uint32_t queue, uint32_t slot)
{
	if (!ctx->io || ctx->io_kind != IO_XSK)
		return -ENOTCONN;
	return xsk_napi_read(ctx->io, queue, slot);
}
