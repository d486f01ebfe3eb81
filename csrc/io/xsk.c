/* SPDX-License-Identifier: MIT */
/*
 * xsk.c - AF_XDP set-up: the XDP program, its bpf_link, UMEMs, sockets;
 * and the clean-up of an XDP program left attached by netlink.  Set-up
 * code: errors are -errno, unwound with goto.  The per-packet loop is in
 * xsk_loop.c.
 */
#include <errno.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>

#include "bpf/steer.h"
#include "io/xsk.h"

#ifndef SO_PREFER_BUSY_POLL
#define SO_PREFER_BUSY_POLL 69
#endif
#ifndef SO_BUSY_POLL_BUDGET
#define SO_BUSY_POLL_BUDGET 70
#endif

/* Ring sizes the kernel takes (xsk_init_queue: a power of two). */
#define XSK_RING_MIN 64
#define XSK_RING_MAX 65536

/*
 * The defaults keep the fill ring stocked: as the minimal forwarder, the
 * fill ring holds twice the RX ring, and half the UMEM waits on it.
 */
static void xsk_config_defaults(struct pyfwd_xsk_config *c)
{
	if (!c->frame_size)
		c->frame_size = XSK_UMEM__DEFAULT_FRAME_SIZE;
	if (!c->ring_size)
		c->ring_size = 2048;
	if (!c->rx_ring)
		c->rx_ring = c->ring_size;
	if (!c->tx_ring)
		c->tx_ring = c->ring_size;
	if (!c->comp_ring)
		c->comp_ring = c->ring_size;
	if (!c->fill_ring)
		c->fill_ring = 2 * c->ring_size;
	if (!c->frames)		/* twice the fill ring per interface */
		c->frames = 2 * c->fill_ring * (c->ifindex2 ? 2 : 1);
	if (!c->batch)
		c->batch = 64;
	if (!c->busy_poll_budget)
		c->busy_poll_budget = 64;
}

static int ring_bad(uint32_t n)
{
	return n < XSK_RING_MIN || n > XSK_RING_MAX || (n & (n - 1));
}

/* NULL, or what is wrong with c (defaults filled in) for n interfaces. */
static const char *xsk_config_check(const struct pyfwd_xsk_config *c,
				    uint32_t workers, uint32_t n)
{
	/* Several workers: each owns flows, so each needs its queue. */
	if (!c->queues || c->queues > workers ||
	    (workers > 1 && c->queues != workers) ||
	    c->queues > STEER_QUEUES_MAX)
		return "queues (one per worker)";
	if (!c->batch || c->batch > XSK_BATCH_MAX)
		return "batch";
	if ((c->frame_size & (c->frame_size - 1)) || c->frame_size < 2048)
		return "frame_size";
	if (ring_bad(c->rx_ring) || ring_bad(c->tx_ring) ||
	    ring_bad(c->fill_ring) || ring_bad(c->comp_ring))
		return "ring sizes (powers of two, 64 to 65536)";
	if (c->poll_mode > PYFWD_POLL_ADAPTIVE)
		return "poll_mode";
	if ((uint64_t)c->frames < (uint64_t)n * 2 * XSK_RING_MIN ||
	    c->frames > (1u << 20))
		return "frames";
	return NULL;
}

/* Attach to interface slot i with a bpf_link, native first if allowed. */
static int attach(struct xsk_io *io, uint32_t slot, int prog_fd,
		  uint32_t mode, struct pyfwd_xsk_info *info)
{
	static const uint32_t flags[] = { XDP_FLAGS_DRV_MODE,
					  XDP_FLAGS_SKB_MODE };
	int i, fd = -EINVAL;

	for (i = 0; i < 2; i++) {
		LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = flags[i]);

		if ((mode == PYFWD_XDP_MODE_NATIVE && i == 1) ||
		    (mode == PYFWD_XDP_MODE_GENERIC && i == 0))
			continue;
		fd = bpf_link_create(prog_fd, (int)io->ifindex[slot], BPF_XDP,
				     &opts);
		if (fd >= 0) {
			io->link_fd[slot] = fd;
			info->xdp_mode = i ? PYFWD_XDP_MODE_GENERIC :
					     PYFWD_XDP_MODE_NATIVE;
			return 0;
		}
		fd = -errno;
		if (fd == -EBUSY || fd == -EEXIST)
			break;	/* someone else's program: no fallback */
	}
	return fd;
}

static int busy_poll(struct xsk_port *q, const struct pyfwd_xsk_config *c)
{
	int one = 1, usecs = (int)c->busy_poll_usecs;
	int budget = (int)c->busy_poll_budget;

	if (!usecs)
		return 0;
	if (setsockopt(q->fd, SOL_SOCKET, SO_PREFER_BUSY_POLL, &one,
		       sizeof(one)) ||
	    setsockopt(q->fd, SOL_SOCKET, SO_BUSY_POLL, &usecs,
		       sizeof(usecs)) ||
	    setsockopt(q->fd, SOL_SOCKET, SO_BUSY_POLL_BUDGET, &budget,
		       sizeof(budget)))
		return 0;
	return 1;
}

int32_t xsk_napi_id(int fd)
{
	unsigned int id = 0;
	socklen_t len = sizeof(id);

	if (getsockopt(fd, SOL_SOCKET, SO_INCOMING_NAPI_ID, &id, &len))
		return 0;	/* no CONFIG_NET_RX_BUSY_POLL: nothing to poll */
	return id > INT32_MAX ? INT32_MAX : (int32_t)id;
}

int xsk_napi_read(void *p, uint32_t queue, uint32_t slot)
{
	struct xsk_io *io = p;
	int32_t id;

	if (queue >= io->nqueues || slot >= io->q[queue].nports)
		return -EINVAL;
	id = __atomic_load_n(&io->q[queue].port[slot].napi_id,
			     __ATOMIC_RELAXED);
	return id == XSK_NAPI_UNKNOWN ? -EAGAIN : id;
}

/* What the kernel says the socket got (XDP_OPTIONS, Linux 5.3+). */
static int zerocopy(int fd)
{
	struct xdp_options opts = { 0 };
	socklen_t len = sizeof(opts);

	if (getsockopt(fd, SOL_XDP, XDP_OPTIONS, &opts, &len))
		return 0;
	return !!(opts.flags & XDP_OPTIONS_ZEROCOPY);
}

/* Put n free frames on a port's fill ring. */
static int fill_from_stack(struct xsk_queue *q, struct xsk_port *p,
			   uint32_t n)
{
	uint32_t idx, i;

	if (xsk_ring_prod__reserve(&p->fill, n, &idx) != n)
		return -ENOSPC;
	for (i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&p->fill, idx + i) =
			q->free_addrs[--q->nfree];
	xsk_ring_prod__submit(&p->fill, n);
	return 0;
}

/* The socket of interface slot `slot` on this queue. */
static int port_open(struct xsk_io *io, struct xsk_queue *q, uint32_t slot,
		     const struct pyfwd_xsk_config *c,
		     struct pyfwd_xsk_info *info, char *errbuf, size_t errlen)
{
	static const uint16_t copy_flags[] = { XDP_ZEROCOPY, XDP_COPY };
	struct xsk_port *p = &q->port[slot];
	char ifname[IF_NAMESIZE];
	uint32_t key;
	int err = -EINVAL, k;

	if (!if_indextoname(io->ifindex[slot], ifname))
		return -ENODEV;
	for (k = 0; k < 2; k++) {
		struct xsk_socket_config scfg = {
			.rx_size = c->rx_ring,
			.tx_size = c->tx_ring,
			.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
			.bind_flags = XDP_USE_NEED_WAKEUP | copy_flags[k],
		};

		if ((c->copy_mode == PYFWD_XSK_COPY && k == 0) ||
		    (c->copy_mode == PYFWD_XSK_ZEROCOPY && k == 1))
			continue;
		if (slot > 0 && k == 0)
			continue;	/* a shared socket takes the UMEM's mode */
		/* The first socket owns the UMEM's own fill/completion. */
		if (slot == 0)
			err = xsk_socket__create(&p->xsk, ifname, q->queue,
						 q->umem, &p->rx, &p->tx,
						 &scfg);
		else
			err = xsk_socket__create_shared(&p->xsk, ifname,
							q->queue, q->umem,
							&p->rx, &p->tx,
							&p->fill, &p->comp,
							&scfg);
		if (!err)
			break;
		p->xsk = NULL;
	}
	if (err) {
		say(errbuf, errlen, "AF_XDP socket on %s queue %u", ifname,
		    q->queue);
		return err;
	}
	p->fd = xsk_socket__fd(p->xsk);
	p->copy = !zerocopy(p->fd);
	info->copy_mode = p->copy ? PYFWD_XSK_COPY : PYFWD_XSK_ZEROCOPY;
	key = slot * STEER_QUEUES_MAX + q->queue;
	if (bpf_map_update_elem(io->xsks_fd, &key, &p->fd, 0)) {
		err = -errno;
		say(errbuf, errlen, "xsks map, %s queue %u", ifname, q->queue);
		return err;
	}
	p->busy_poll = busy_poll(p, c);
	info->busy_poll = p->busy_poll;
	/* Zero-copy since 6.13 knows it at bind; else the first frame may
	 * tell (xsk_loop.c). */
	p->napi_id = xsk_napi_id(p->fd);
	if (!p->napi_id)
		p->napi_id = XSK_NAPI_UNKNOWN;
	if (p->busy_poll && p->napi_id > 0)
		q->spin = 1;
	q->nports = slot + 1;
	return 0;
}

static int queue_open(struct xsk_io *io, struct xsk_queue *q, uint32_t queue,
		      const struct pyfwd_xsk_config *c,
		      struct pyfwd_xsk_info *info, char *errbuf, size_t errlen)
{
	struct xsk_umem_config ucfg = {
		.fill_size = c->fill_ring,
		.comp_size = c->comp_ring,
		.frame_size = c->frame_size,
		.frame_headroom = 0,
	};
	uint32_t i, slot, fill;
	int err;

	q->queue = queue;
	q->frame_size = c->frame_size;
	q->area_size = (size_t)c->frames * c->frame_size;
	q->area = mmap(NULL, q->area_size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (q->area == MAP_FAILED) {
		q->area = NULL;
		say(errbuf, errlen, "UMEM of %zu bytes", q->area_size);
		return -ENOMEM;
	}
	q->free_addrs = calloc(c->frames, sizeof(*q->free_addrs));
	if (!q->free_addrs)
		return -ENOMEM;
	err = xsk_umem__create(&q->umem, q->area, q->area_size,
			       &q->port[0].fill, &q->port[0].comp, &ucfg);
	if (err) {
		q->umem = NULL;
		say(errbuf, errlen, "xsk_umem__create (queue %u)", queue);
		return err;
	}
	for (slot = 0; slot < io->nifaces; slot++) {
		err = port_open(io, q, slot, c, info, errbuf, errlen);
		if (err)
			return err;
	}
	for (i = 0; i < c->frames; i++)
		q->free_addrs[i] = (uint64_t)i * c->frame_size;
	q->nfree = c->frames;
	/* Half the frames wait on the fill rings, shared out; the rest are
	 * on the RX and TX rings or free, for the loop to refill from. */
	fill = c->frames / 2 / io->nifaces;
	if (fill > c->fill_ring)
		fill = c->fill_ring;
	for (slot = 0; slot < io->nifaces; slot++)
		if (fill_from_stack(q, &q->port[slot], fill)) {
			say(errbuf, errlen, "fill ring of queue %u", queue);
			return -ENOSPC;
		}
	return 0;
}

static void queue_close(struct xsk_queue *q)
{
	uint32_t slot;

	for (slot = 0; slot < PYFWD_IFACES_MAX; slot++)
		if (q->port[slot].xsk)
			xsk_socket__delete(q->port[slot].xsk);
	if (q->umem)
		xsk_umem__delete(q->umem);
	if (q->area)
		munmap(q->area, q->area_size);
	free(q->free_addrs);
	memset(q, 0, sizeof(*q));
}

static void xsk_io_free(void *p)
{
	struct xsk_io *io = p;
	uint32_t i;

	for (i = 0; i < io->nqueues; i++)
		queue_close(&io->q[i]);
	for (i = 0; i < PYFWD_IFACES_MAX; i++)
		if (io->link_fd[i] >= 0)
			close(io->link_fd[i]);	/* detaches the program */
	if (io->obj)
		bpf_object__close(io->obj);
	free(io);
}

int pyfwd_xsk_open(struct pyfwd_ctx *ctx, const char *bpf_path,
		   const struct pyfwd_xsk_config *cfg_in,
		   struct pyfwd_xsk_info *info, char *errbuf, size_t errlen)
{
	struct pyfwd_xsk_config c = *cfg_in;
	struct bpf_prog_info pinfo = { 0 };
	uint32_t plen = sizeof(pinfo), i;
	char ifname[IF_NAMESIZE];
	struct bpf_program *prog;
	struct xsk_io *io;
	const char *bad;
	int err, prog_fd;
	uint32_t slot;

	say(errbuf, errlen, "%s", "");
	memset(info, 0, sizeof(*info));
	if (ctx->io)
		return -EBUSY;	/* one backend at a time */
	xsk_config_defaults(&c);
	bad = xsk_config_check(&c, ctx->cfg.workers, c.ifindex2 ? 2 : 1);
	if (bad) {
		say(errbuf, errlen, "bad AF_XDP configuration: %s (queues %u, "
		    "workers %u, batch %u, frames %u, rings rx %u tx %u fill "
		    "%u comp %u)", bad, c.queues, ctx->cfg.workers, c.batch,
		    c.frames, c.rx_ring, c.tx_ring, c.fill_ring, c.comp_ring);
		return -EINVAL;
	}
	if (!if_indextoname(c.ifindex, ifname) ||
	    (c.ifindex2 && !if_indextoname(c.ifindex2, ifname))) {
		say(errbuf, errlen, "no interface with index %u",
		    c.ifindex2 ? c.ifindex2 : c.ifindex);
		return -ENODEV;
	}
	if_indextoname(c.ifindex, ifname);
	io = calloc(1, sizeof(*io) + c.queues * sizeof(io->q[0]));
	if (!io)
		return -ENOMEM;
	for (i = 0; i < PYFWD_IFACES_MAX; i++)
		io->link_fd[i] = -1;
	io->ifindex[0] = c.ifindex;
	io->ifindex[1] = c.ifindex2;
	io->nifaces = c.ifindex2 ? 2 : 1;
	io->batch = c.batch;
	io->poll_mode = c.poll_mode;

	err = steer_object_load(bpf_path,
				(const char *const[]){ "pyfwd_xdp_steer" },
				&prog, 1, &io->obj, &ctx->maps, errbuf,
				errlen);
	if (err)
		goto err;
	io->xsks_fd = bpf_object__find_map_fd_by_name(io->obj, "xsks");
	io->ifaces_fd = bpf_object__find_map_fd_by_name(io->obj,
							"steer_ifaces");
	if (io->xsks_fd < 0 || io->ifaces_fd < 0) {
		err = -ENOENT;
		say(errbuf, errlen, "%s lacks the xsks or steer_ifaces map",
		    bpf_path);
		goto err;
	}
	prog_fd = bpf_program__fd(prog);
	if (!bpf_obj_get_info_by_fd(prog_fd, &pinfo, &plen))
		info->prog_id = pinfo.id;

	for (slot = 0; slot < io->nifaces; slot++) {
		if (bpf_map_update_elem(io->ifaces_fd, &slot,
					&io->ifindex[slot], BPF_ANY)) {
			err = -errno;
			say(errbuf, errlen, "steer_ifaces map");
			goto err;
		}
		err = attach(io, slot, prog_fd, c.xdp_mode, info);
		if (err) {
			if_indextoname(io->ifindex[slot], ifname);
			say(errbuf, errlen, "attaching XDP to %s%s", ifname,
			    err == -EBUSY || err == -EEXIST ?
				    ": another XDP program is attached (pyfwd "
				    "cleanup removes a leftover of ours)" : "");
			goto err;
		}
	}
	for (i = 0; i < c.queues; i++) {
		io->nqueues = i + 1;
		err = queue_open(io, &io->q[i], i, &c, info, errbuf, errlen);
		if (err)
			goto err;
	}
	info->queues = c.queues;
	/* A loop per worker: each owns its share of the flows. */
	if (ctx_owners_set(ctx, ctx->cfg.workers)) {
		say(errbuf, errlen, "flows hold SNAT ports");
		err = -EBUSY;
		goto err;
	}
	io_if_flags_set(ctx, io->ifindex, io->nifaces);
	io_bind(ctx, io, IO_XSK, xsk_io_free);
	return 0;

err:
	io_unbind(ctx);
	xsk_io_free(io);
	return err < 0 ? err : -EINVAL;
}

int xsk_sock_stats(void *p, uint32_t queue, uint32_t slot,
		   struct pyfwd_xsk_sock_stats *out)
{
	struct xdp_statistics st = { 0 };	/* older kernels: fewer */
	socklen_t len = sizeof(st);
	struct xsk_io *io = p;

	if (queue >= io->nqueues || slot >= io->q[queue].nports)
		return -EINVAL;
	if (getsockopt(io->q[queue].port[slot].fd, SOL_XDP, XDP_STATISTICS,
		       &st, &len))
		return -errno;
	out->rx_dropped = st.rx_dropped;
	out->rx_invalid_descs = st.rx_invalid_descs;
	out->tx_invalid_descs = st.tx_invalid_descs;
	out->rx_ring_full = st.rx_ring_full;
	out->rx_fill_ring_empty_descs = st.rx_fill_ring_empty_descs;
	out->tx_ring_empty_descs = st.tx_ring_empty_descs;
	return 0;
}

int pyfwd_xdp_cleanup(uint32_t ifindex, uint32_t *prog_id)
{
	static const uint32_t modes[] = { 0, XDP_FLAGS_SKB_MODE,
					  XDP_FLAGS_DRV_MODE };
	uint32_t id = 0;
	int i, err;

	*prog_id = 0;
	err = bpf_xdp_query_id((int)ifindex, 0, &id);
	if (err)
		return err;
	*prog_id = id;
	if (!id)
		return 0;
	for (i = 0; i < 3; i++) {
		err = bpf_xdp_detach((int)ifindex, modes[i], NULL);
		if (!err && !bpf_xdp_query_id((int)ifindex, 0, &id) && !id)
			return 0;
	}
	return err ? err : -EBUSY;
}
