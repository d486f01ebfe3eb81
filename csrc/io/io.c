/* SPDX-License-Identifier: MIT */
/*
 * io.c - the part of the I/O backends that is the same for both: binding
 * to the context, stopping, the idle poll, set-up error messages.
 */
#include <stdarg.h>
#include <stdio.h>

#include "flow.h"
#include "io/io.h"

void say(char *errbuf, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!errbuf || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
}

void io_bind(struct pyfwd_ctx *ctx, void *io, int kind,
	     void (*free_io)(void *io))
{
	ctx->stop = 0;
	ctx->io = io;
	ctx->io_kind = kind;
	ctx->io_free = free_io;
	ctx->io_close = io_release;
}

void io_unbind(struct pyfwd_ctx *ctx)
{
	ctx->io = NULL;
	ctx->io_kind = IO_NONE;
	ctx->io_free = NULL;
	ctx->io_close = NULL;
	memset(&ctx->maps, 0, sizeof(ctx->maps));
}

void io_release(struct pyfwd_ctx *ctx)
{
	if (!ctx->io)
		return;
	pyfwd_io_stop(ctx);
	ctx->io_free(ctx->io);
	io_unbind(ctx);
}

void pyfwd_io_stop(struct pyfwd_ctx *ctx)
{
	__atomic_store_n(&ctx->stop, 1, __ATOMIC_RELEASE);
}

void pyfwd_io_close(struct pyfwd_ctx *ctx)
{
	io_release(ctx);
}

void io_idle_poll(struct pyfwd_ctx *ctx, struct worker *w, struct pollfd *pfd,
		  uint32_t n)
{
	if (!poll(pfd, n, IDLE_POLL_MS))
		flow_sweep(w, ctx_now(ctx), IDLE_SWEEP);
	w->stats.io.polls++;
}
