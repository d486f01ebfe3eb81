/* SPDX-License-Identifier: MIT */
/*
 * io.c - the part of the I/O backends that is the same for both: binding
 * to the context, stopping, the idle poll, set-up error messages.
 */
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <errno.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fastmap.h"
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

/*
 * Drivers whose frames may carry unfinished TCP/UDP checksums under XDP
 * and AF_XDP copy mode (csum.c).  veth: measured (Linux 6.18).  A NIC
 * hands over what came off a wire: finished, or wrong.  Others join the
 * list once measured; AF_PACKET's TP_STATUS_CSUMNOTREADY says it per
 * frame whatever the driver.
 */
static const char *const csum_partial_drivers[] = { "veth" };

/* 1 if ifindex's driver is one of them, or cannot be told. */
static int csum_partial_driver(uint32_t ifindex)
{
	struct ethtool_drvinfo info = { .cmd = ETHTOOL_GDRVINFO };
	struct ifreq ifr = { .ifr_data = (void *)&info };
	size_t i;
	int fd, err;

	if (!if_indextoname(ifindex, ifr.ifr_name))
		return 1;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 1;
	err = ioctl(fd, SIOCETHTOOL, &ifr);
	close(fd);
	if (err)
		return 1;
	for (i = 0; i < sizeof(csum_partial_drivers) /
			sizeof(csum_partial_drivers[0]); i++)
		if (!strncmp(info.driver, csum_partial_drivers[i],
			     sizeof(info.driver)))
			return 1;
	return 0;
}

void io_if_flags_set(struct pyfwd_ctx *ctx, const uint32_t *ifindex,
		     uint32_t n)
{
	uint32_t s;

	for (s = 0; s < PYFWD_IFACES_MAX; s++)
		ctx->if_flags[s] = s < n && csum_partial_driver(ifindex[s]) ?
					   PYFWD_FRAME_CSUM_PARTIAL : 0;
}

uint32_t pyfwd_io_csum_slots(const struct pyfwd_ctx *ctx)
{
	uint32_t s, mask = 0;

	if (!ctx->io)
		return 0;
	for (s = 0; s < PYFWD_IFACES_MAX; s++)
		if (ctx->if_flags[s] & PYFWD_FRAME_CSUM_PARTIAL)
			mask |= 1u << s;
	return mask;
}

void io_unbind(struct pyfwd_ctx *ctx)
{
	memset(ctx->if_flags, 0, sizeof(ctx->if_flags));
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
	fastmap_fold(ctx);	/* the program's counters, while its maps are */
	ctx->io_free(ctx->io);
	fastmap_close(ctx);	/* its arrays stay mapped until here */
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
	/* A flow listing under way: the next slice, not a sleep. */
	if (unlikely(w->listing))
		return;
	/* Several workers: frames handed to us wake us (handoff.c). */
	if (handoff_sleep(ctx, w))
		return;
	if (w->wake_fd >= 0) {
		pfd[n].fd = w->wake_fd;
		pfd[n].events = POLLIN;
		pfd[n].revents = 0;
		n++;
	}
	poll(pfd, n, IDLE_POLL_MS);
	handoff_woken(w);
	worker_sweep(w, ctx_now(ctx));
	w->stats.io.polls++;
}

uint64_t pyfwd_io_worker_beats(const struct pyfwd_ctx *ctx, uint32_t worker)
{
	if (worker >= ctx->cfg.workers)
		return 0;
	return __atomic_load_n(&ctx->workers[worker].beats, __ATOMIC_RELAXED);
}

int pyfwd_io_worker_pause(struct pyfwd_ctx *ctx, uint32_t worker, int how)
{
	if (worker >= ctx->cfg.workers || how < PYFWD_LOOP_RUN ||
	    how > PYFWD_LOOP_EXIT)
		return -EINVAL;
	__atomic_store_n(&ctx->workers[worker].hold, how, __ATOMIC_RELAXED);
	return 0;
}

void io_name_thread(const char *kind, uint32_t queue)
{
	char name[16];		/* TASK_COMM_LEN */

	snprintf(name, sizeof(name), "pyfwd-%s-q%u", kind, queue);
	prctl(PR_SET_NAME, name, 0, 0, 0);
}

/* The hold of pyfwd_io_worker_pause: a pause sleeps without beating. */
int io_held(struct pyfwd_ctx *ctx, struct worker *w)
{
	const struct timespec tick = { .tv_nsec = 10 * 1000 * 1000 };
	int how;

	while ((how = __atomic_load_n(&w->hold, __ATOMIC_RELAXED)) ==
		       PYFWD_LOOP_PAUSE &&
	       !io_stopped(ctx)) {
		flow_list_serve(ctx, w, 1);	/* paused: at once */
		nanosleep(&tick, NULL);
	}
	return how == PYFWD_LOOP_EXIT ? -ECANCELED : 0;
}
