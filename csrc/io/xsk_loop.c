/* SPDX-License-Identifier: MIT */
/*
 * xsk_loop.c - the AF_XDP loop of one RX queue: rx -> core -> tx, over the
 * socket of each interface on that queue (two in a two-arm NAT), frames
 * recycled through one free stack (the UMEM is shared).  No allocation,
 * no lock, no Python: the only calls out are the kicks the rings ask for
 * (need_wakeup, and only with frames to send: copy mode's TX ring always
 * asks; one per XSK_COPY_TX_MAX frames queued), the busy polls (only where
 * they reach a NAPI), poll() when idle, and one getsockopt per socket at
 * its first frames (its NAPI id).
 */
#include <errno.h>
#include <sys/socket.h>

#include "io/xsk.h"

static inline void free_push(struct xsk_queue *q, uint64_t addr)
{
	/* Aligned mode: any address inside a frame names the frame. */
	q->free_addrs[q->nfree++] = addr & ~((uint64_t)q->frame_size - 1);
}

/* Frames the kernel has sent come back to the free stack. */
static void complete_tx(struct xsk_queue *q, struct xsk_port *p)
{
	uint32_t idx, n, i;

	n = xsk_ring_cons__peek(&p->comp, XSK_BATCH_MAX, &idx);
	for (i = 0; i < n; i++)
		free_push(q, *xsk_ring_cons__comp_addr(&p->comp, idx + i));
	if (n) {
		xsk_ring_cons__release(&p->comp, n);
		p->outstanding -= n < p->outstanding ? n : p->outstanding;
	}
}

/* Give the kernel free frames to receive into, shared between ports. */
static void refill(struct xsk_queue *q, struct xsk_port *p)
{
	uint32_t idx, n, i, want = xsk_prod_nb_free(&p->fill, q->nfree);

	if (q->nports > 1)
		want /= 2;	/* leave the other port its share */
	if (want > q->nfree)
		want = q->nfree;
	if (!want)
		return;
	n = xsk_ring_prod__reserve(&p->fill, want, &idx);
	for (i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&p->fill, idx + i) =
			q->free_addrs[--q->nfree];
	xsk_ring_prod__submit(&p->fill, n);
}

/* Frames on the TX ring the kernel has not taken yet. */
static inline uint32_t tx_pending(struct xsk_port *p)
{
	return p->tx.size - xsk_prod_nb_free(&p->tx, p->tx.size);
}

/*
 * Have the kernel send what waits on the TX ring.  Zero-copy: one kick
 * when it asks, while frames wait or are not completed (the driver
 * reaps them).  Copy mode sends only inside sendto(), XSK_COPY_TX_MAX
 * frames per call: kick until the ring is drained (or the kernel says
 * it cannot take more now), else a 64-frame burst leaves half behind
 * and the ring fills; its TX ring always asks, so an empty one is not
 * kicked (a syscall for nothing, per port and idle round).
 */
static void kick_tx(struct xsk_port *p, struct worker *w)
{
	uint32_t pending, k;

	if (!p->copy) {
		if (p->outstanding && (p->busy_poll ||
				       xsk_ring_prod__needs_wakeup(&p->tx))) {
			sendto(p->fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
			w->stats.io.wakeups++;
		}
		return;
	}
	pending = tx_pending(p);
	for (k = 0; k * XSK_COPY_TX_MAX < pending; k++) {
		w->stats.io.wakeups++;
		if (sendto(p->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 &&
		    errno != EINTR)
			break;	/* EAGAIN, ENOBUFS: the device is full */
	}
}

/*
 * Nothing received: drive NAPI ourselves (busy polling that reaches a
 * NAPI, q->spin; adaptive: only for XSK_ADAPTIVE_IDLE empty rounds in a
 * row), or sleep in poll().
 */
static void idle(struct pyfwd_ctx *ctx, struct xsk_io *io, struct xsk_queue *q,
		 struct worker *w)
{
	struct pollfd pfd[PYFWD_IFACES_MAX + 1];
	uint32_t i;

	if (q->spin && (io->poll_mode == PYFWD_POLL_BUSY ||
			q->empty < XSK_ADAPTIVE_IDLE)) {
		q->empty++;
		for (i = 0; i < q->nports; i++)
			recvfrom(q->port[i].fd, NULL, 0, MSG_DONTWAIT, NULL,
				 NULL);
		w->stats.io.wakeups += q->nports;
		worker_sweep(w, ctx_now(ctx));
		return;
	}
	for (i = 0; i < q->nports; i++) {
		pfd[i].fd = q->port[i].fd;
		pfd[i].events = POLLIN;
		pfd[i].revents = 0;
	}
	io_idle_poll(ctx, w, pfd, q->nports);
}

/* Forwarded frames onto the TX ring of the port each is sent on. */
static void transmit(struct xsk_queue *q, struct worker *w,
		     const uint64_t *addrs, const struct pyfwd_frame *frames,
		     const struct pyfwd_result *res, uint32_t n)
{
	uint32_t want[PYFWD_IFACES_MAX] = { 0 }, tidx[PYFWD_IFACES_MAX];
	uint32_t i, s, ok[PYFWD_IFACES_MAX];

	for (i = 0; i < n; i++)
		if (res[i].verdict == PYFWD_VERDICT_FORWARD)
			want[res[i].out_if < q->nports ? res[i].out_if : 0]++;
	for (s = 0; s < q->nports; s++) {
		struct xsk_port *p = &q->port[s];

		ok[s] = !want[s] ||
			xsk_ring_prod__reserve(&p->tx, want[s], &tidx[s]) ==
				want[s];
		if (!ok[s]) {
			complete_tx(q, p);
			kick_tx(p, w);
			ok[s] = xsk_ring_prod__reserve(&p->tx, want[s],
						       &tidx[s]) == want[s];
		}
		if (!ok[s])
			w->stats.io.tx_ring_full += want[s];
	}
	for (i = 0; i < n; i++) {
		struct xdp_desc *t;

		s = res[i].out_if < q->nports ? res[i].out_if : 0;
		if (res[i].verdict != PYFWD_VERDICT_FORWARD || !ok[s]) {
			free_push(q, addrs[i]);
			continue;
		}
		t = xsk_ring_prod__tx_desc(&q->port[s].tx, tidx[s]++);
		/* the core may have moved the start back (TUN) */
		t->addr = (uint64_t)(frames[i].data - (uint8_t *)q->area);
		t->len = frames[i].len;
		t->options = 0;
	}
	for (s = 0; s < q->nports; s++) {
		if (!want[s] || !ok[s])
			continue;
		xsk_ring_prod__submit(&q->port[s].tx, want[s]);
		q->port[s].outstanding += want[s];
		w->stats.io.tx += want[s];
		kick_tx(&q->port[s], w);
	}
}

/*
 * A port's first frames: its NAPI id, if set-up did not know it (kernels
 * before 6.13 mark it on receive), and whether the queue's busy polls
 * reach a NAPI.  Once per port: the id stays what it was then.
 */
static void napi_learn(struct xsk_queue *q, struct xsk_port *p)
{
	uint32_t s;

	__atomic_store_n(&p->napi_id, xsk_napi_id(p->fd), __ATOMIC_RELAXED);
	q->spin = 0;
	for (s = 0; s < q->nports; s++)
		if (q->port[s].busy_poll && q->port[s].napi_id > 0)
			q->spin = 1;
}

/* One burst from port slot s; the number of frames it had. */
static uint32_t rx_burst(struct pyfwd_ctx *ctx, struct xsk_queue *q,
		      struct worker *w, uint32_t s, uint32_t batch)
{
	struct pyfwd_frame frames[XSK_BATCH_MAX];
	struct pyfwd_result res[XSK_BATCH_MAX];
	uint64_t addrs[XSK_BATCH_MAX];
	struct xsk_port *p = &q->port[s];
	uint8_t flags = io_if_flags(ctx, s);
	uint32_t n, i, idx;

	n = xsk_ring_cons__peek(&p->rx, batch, &idx);
	if (!n)
		return 0;
	if (unlikely(p->napi_id == XSK_NAPI_UNKNOWN))
		napi_learn(q, p);
	for (i = 0; i < n; i++) {
		const struct xdp_desc *d = xsk_ring_cons__rx_desc(&p->rx,
								  idx + i);

		addrs[i] = d->addr;
		frames[i].data = xsk_umem__get_data(q->area, d->addr);
		frames[i].len = d->len;
		frames[i].cap = (uint16_t)(q->frame_size -
					   (d->addr & (q->frame_size - 1)));
		frames[i].in_if = (uint8_t)s;
		/* XDP's headroom is in front (the core may grow into it) */
		frames[i].flags = flags |
			((d->addr & (q->frame_size - 1)) >= PYFWD_HEADROOM ?
			 PYFWD_FRAME_HEADROOM : 0);
	}
	xsk_ring_cons__release(&p->rx, n);
	w->stats.io.rx += n;
	worker_burst(ctx, w, frames, n, res);
	transmit(q, w, addrs, frames, res, n);
	return n;
}

/*
 * Frames other workers handed to this one (NAT/SNAT flows it owns),
 * copied into free UMEM frames, through the core, out on this queue's
 * TX rings as if received here.  The number of frames it had.
 */
static uint32_t handoff_burst(struct pyfwd_ctx *ctx, struct xsk_queue *q,
			      struct worker *w, uint32_t batch)
{
	struct pyfwd_frame frames[XSK_BATCH_MAX];
	struct pyfwd_result res[XSK_BATCH_MAX];
	uint64_t addrs[XSK_BATCH_MAX];
	uint32_t n, i, want = batch < q->nfree ? batch : q->nfree;

	if (!ctx->handoff)
		return 0;
	for (i = 0; i < want; i++) {
		addrs[i] = q->free_addrs[q->nfree - 1 - i];
		frames[i].data = xsk_umem__get_data(q->area, addrs[i]);
		frames[i].cap = (uint16_t)(q->frame_size < UINT16_MAX ?
					   q->frame_size : UINT16_MAX);
	}
	n = pyfwd_handoff_take(ctx, q->queue, frames, want);
	if (!n)
		return 0;
	q->nfree -= n;		/* the top n of the free stack */
	worker_burst(ctx, w, frames, n, res);
	transmit(q, w, addrs, frames, res, n);
	return n;
}

int pyfwd_xsk_run(struct pyfwd_ctx *ctx, uint32_t queue)
{
	struct xsk_io *io = ctx->io;
	struct xsk_queue *q;
	struct worker *w;
	uint32_t s, got;
	int err;

	if (!io || ctx->io_kind != IO_XSK || queue >= io->nqueues)
		return -EINVAL;
	q = &io->q[queue];
	w = &ctx->workers[queue];
	io_name_thread("xsk", queue);

	while (!io_stopped(ctx)) {
		err = io_beat(ctx, w);
		if (unlikely(err))
			return err;
		got = 0;
		for (s = 0; s < q->nports; s++) {
			complete_tx(q, &q->port[s]);
			refill(q, &q->port[s]);
		}
		for (s = 0; s < q->nports; s++)
			got += rx_burst(ctx, q, w, s, io->batch);
		got += handoff_burst(ctx, q, w, io->batch);
		if (got) {
			q->empty = 0;
			continue;
		}
		for (s = 0; s < q->nports; s++)
			if (q->port[s].outstanding &&
			    xsk_ring_prod__needs_wakeup(&q->port[s].tx))
				kick_tx(&q->port[s], w);
		idle(ctx, io, q, w);
	}
	return 0;
}
