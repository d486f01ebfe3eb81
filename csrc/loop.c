/* SPDX-License-Identifier: MIT */
/*
 * loop.c - the AF_XDP loop of one RX queue: rx -> core -> tx, frames
 * recycled through a free stack.  No allocation, no lock, no Python: the
 * only calls out are the kicks the rings ask for (need_wakeup) and poll()
 * when idle without busy polling.
 */
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include "xsk.h"

#define IDLE_POLL_MS 100	/* how soon an idle loop notices stop */

static inline void free_push(struct xsk_queue *q, uint64_t addr)
{
	/* Aligned mode: any address inside a frame names the frame. */
	q->free_addrs[q->nfree++] = addr & ~((uint64_t)q->frame_size - 1);
}

/* Frames the kernel has sent come back to the free stack. */
static void complete_tx(struct xsk_queue *q)
{
	uint32_t idx, n, i;

	n = xsk_ring_cons__peek(&q->comp, XSK_BATCH_MAX, &idx);
	for (i = 0; i < n; i++)
		free_push(q, *xsk_ring_cons__comp_addr(&q->comp, idx + i));
	if (n)
		xsk_ring_cons__release(&q->comp, n);
}

/* Give the kernel free frames to receive into. */
static void refill(struct xsk_queue *q)
{
	uint32_t idx, n, i, want = xsk_prod_nb_free(&q->fill, q->nfree);

	if (want > q->nfree)
		want = q->nfree;
	if (!want)
		return;
	n = xsk_ring_prod__reserve(&q->fill, want, &idx);
	for (i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&q->fill, idx + i) =
			q->free_addrs[--q->nfree];
	xsk_ring_prod__submit(&q->fill, n);
}

static void kick_tx(struct xsk_queue *q, struct worker *w)
{
	if (q->busy_poll || xsk_ring_prod__needs_wakeup(&q->tx)) {
		sendto(q->fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
		w->stats.wakeups++;
	}
}

/* Nothing received: drive NAPI ourselves, or sleep in poll(). */
static void idle(struct xsk_queue *q, struct worker *w)
{
	struct pollfd pfd = { .fd = q->fd, .events = POLLIN };

	if (q->busy_poll) {
		recvfrom(q->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
		w->stats.wakeups++;
		return;
	}
	poll(&pfd, 1, IDLE_POLL_MS);
	w->stats.polls++;
}

int pyfwd_xsk_run(struct pyfwd_ctx *ctx, uint32_t queue)
{
	struct pyfwd_frame frames[XSK_BATCH_MAX];
	struct pyfwd_result res[XSK_BATCH_MAX];
	uint64_t addrs[XSK_BATCH_MAX];
	struct xsk_io *io = ctx->io;
	struct xsk_queue *q;
	struct worker *w;
	uint32_t n, i, idx, nfwd, tidx = 0;

	if (!io || queue >= io->nqueues)
		return -EINVAL;
	q = &io->q[queue];
	w = &ctx->workers[queue];

	while (!__atomic_load_n(&ctx->stop, __ATOMIC_ACQUIRE)) {
		complete_tx(q);
		refill(q);
		n = xsk_ring_cons__peek(&q->rx, io->batch, &idx);
		if (!n) {
			if (xsk_ring_prod__needs_wakeup(&q->tx))
				kick_tx(q, w);
			idle(q, w);
			continue;
		}
		for (i = 0; i < n; i++) {
			const struct xdp_desc *d =
				xsk_ring_cons__rx_desc(&q->rx, idx + i);

			addrs[i] = d->addr;
			frames[i].data = xsk_umem__get_data(q->area, d->addr);
			frames[i].len = d->len;
			frames[i].cap = q->frame_size -
					(uint32_t)(d->addr & (q->frame_size - 1));
		}
		xsk_ring_cons__release(&q->rx, n);
		w->stats.rx += n;

		nfwd = core_burst(ctx, w, frames, n, res);
		if (nfwd && xsk_ring_prod__reserve(&q->tx, nfwd, &tidx) != nfwd) {
			complete_tx(q);
			kick_tx(q, w);
			if (xsk_ring_prod__reserve(&q->tx, nfwd, &tidx) != nfwd) {
				w->stats.tx_ring_full += nfwd;
				nfwd = 0;
			}
		}
		for (i = 0; i < n; i++) {
			struct xdp_desc *t;

			if (!nfwd || res[i].verdict != PYFWD_VERDICT_FORWARD) {
				free_push(q, addrs[i]);
				continue;
			}
			t = xsk_ring_prod__tx_desc(&q->tx, tidx++);
			t->addr = addrs[i];
			t->len = frames[i].len;
			t->options = 0;
		}
		if (nfwd) {
			xsk_ring_prod__submit(&q->tx, nfwd);
			w->stats.tx += nfwd;
			kick_tx(q, w);
		}
	}
	return 0;
}
