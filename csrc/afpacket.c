/* SPDX-License-Identifier: MIT */
/*
 * afpacket.c - the raw-socket backend: the same core behind AF_PACKET
 * sockets, for interfaces where AF_XDP is not available.
 *
 * Per interface: a TPACKET_V3 receive ring on a socket whose BPF filter
 * keeps what the engine may own, and a socket for batched transmit
 * (sendmmsg, past the qdisc).  AF_PACKET taps, it does not steal, so the
 * kernel gets every frame too: a tc ingress program attached with tcx (a
 * bpf_link, gone with the process) drops what the engine owns after the
 * taps took their copy, so that the kernel neither answers SNAT's returns
 * with a reset nor forwards NAT's a second time.  One loop serves every
 * interface.
 */
#define _GNU_SOURCE	/* sendmmsg */
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "core.h"

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif
#ifndef SO_ATTACH_BPF
#define SO_ATTACH_BPF 50
#endif
/* Linux 6.6 (tcx); Debian 12's uapi headers predate it. */
#define ATTACH_TCX_INGRESS 46

#define AFP_BATCH 64
#define AFP_BLOCK_SIZE (1u << 18)	/* 256 KiB blocks */
#define AFP_BLOCKS 16
#define AFP_FRAME_SIZE 2048
#define AFP_RETIRE_MS 1		/* hand over a part-filled block after */
#define IDLE_POLL_MS 100
#define IDLE_SWEEP 4096

struct afp_port {
	int rx_fd;
	int tx_fd;
	int link_fd;		/* the tcx bpf_link */
	uint8_t *ring;
	size_t ring_size;
	uint32_t cur;		/* next block to look at */
	uint32_t ifindex;
};

struct afp_io {
	struct bpf_object *obj;
	uint32_t nports;
	struct afp_port port[PYFWD_IFACES_MAX];
};

static void port_close(struct afp_port *p)
{
	if (p->ring)
		munmap(p->ring, p->ring_size);
	if (p->rx_fd >= 0)
		close(p->rx_fd);
	if (p->tx_fd >= 0)
		close(p->tx_fd);
	if (p->link_fd >= 0)
		close(p->link_fd);	/* detaches the tc program */
	p->ring = NULL;
	p->rx_fd = p->tx_fd = p->link_fd = -1;
}

static void afp_free(struct afp_io *io)
{
	uint32_t i;

	for (i = 0; i < PYFWD_IFACES_MAX; i++)
		port_close(&io->port[i]);
	if (io->obj)
		bpf_object__close(io->obj);
	free(io);
}

static int port_open(struct afp_port *p, uint32_t ifindex, int filter_fd,
		     int tc_fd, char *errbuf, size_t errlen)
{
	struct tpacket_req3 req = {
		.tp_block_size = AFP_BLOCK_SIZE,
		.tp_block_nr = AFP_BLOCKS,
		.tp_frame_size = AFP_FRAME_SIZE,
		.tp_frame_nr = AFP_BLOCK_SIZE / AFP_FRAME_SIZE * AFP_BLOCKS,
		.tp_retire_blk_tov = AFP_RETIRE_MS,
	};
	struct sockaddr_ll sll = { .sll_family = AF_PACKET,
				   .sll_protocol = htons(ETH_P_ALL),
				   .sll_ifindex = (int)ifindex };
	int v3 = TPACKET_V3, one = 1, err;
	char name[IF_NAMESIZE] = "?";

	if_indextoname(ifindex, name);
	p->ifindex = ifindex;
	p->rx_fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	p->tx_fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (p->rx_fd < 0 || p->tx_fd < 0)
		goto errno_out;
	/* Filter first, then bind: nothing unfiltered is queued. */
	if (setsockopt(p->rx_fd, SOL_SOCKET, SO_ATTACH_BPF, &filter_fd,
		       sizeof(filter_fd)) ||
	    setsockopt(p->rx_fd, SOL_PACKET, PACKET_VERSION, &v3,
		       sizeof(v3)) ||
	    setsockopt(p->rx_fd, SOL_PACKET, PACKET_RX_RING, &req,
		       sizeof(req)) ||
	    setsockopt(p->rx_fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one,
		       sizeof(one)))
		goto errno_out;
	p->ring_size = (size_t)req.tp_block_size * req.tp_block_nr;
	p->ring = mmap(NULL, p->ring_size, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_LOCKED, p->rx_fd, 0);
	if (p->ring == MAP_FAILED) {
		p->ring = NULL;
		goto errno_out;
	}
	if (bind(p->rx_fd, (struct sockaddr *)&sll, sizeof(sll)))
		goto errno_out;
	sll.sll_protocol = 0;	/* the transmit socket receives nothing */
	if (bind(p->tx_fd, (struct sockaddr *)&sll, sizeof(sll)) ||
	    setsockopt(p->tx_fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one,
		       sizeof(one)))
		goto errno_out;
	p->link_fd = bpf_link_create(tc_fd, (int)ifindex, ATTACH_TCX_INGRESS,
				     NULL);
	if (p->link_fd < 0) {
		err = -errno;
		say(errbuf, errlen, "attaching the tc program to %s (tcx needs "
		    "Linux 6.6 or newer)", name);
		return err;
	}
	return 0;

errno_out:
	err = -errno;
	say(errbuf, errlen, "AF_PACKET socket on %s", name);
	return err;
}

int pyfwd_afp_open(struct pyfwd_ctx *ctx, const char *bpf_path,
		   uint32_t ifindex, uint32_t ifindex2, char *errbuf,
		   size_t errlen)
{
	struct bpf_program *progs[2];
	struct afp_io *io;
	uint32_t i;
	int err;

	say(errbuf, errlen, "%s", "");
	if (ctx->io)
		return -EBUSY;	/* one backend at a time */
	io = calloc(1, sizeof(*io));
	if (!io)
		return -ENOMEM;
	for (i = 0; i < PYFWD_IFACES_MAX; i++)
		io->port[i].rx_fd = io->port[i].tx_fd = io->port[i].link_fd = -1;
	io->nports = ifindex2 ? 2 : 1;

	err = steer_object_load(bpf_path, (const char *const[]){
					"pyfwd_sock_filter", "pyfwd_tc_owned" },
				progs, 2, &io->obj, &ctx->maps, errbuf,
				errlen);
	if (err)
		goto err;
	for (i = 0; i < io->nports; i++) {
		err = port_open(&io->port[i], i ? ifindex2 : ifindex,
				bpf_program__fd(progs[0]),
				bpf_program__fd(progs[1]),
				errbuf, errlen);
		if (err)
			goto err;
	}
	ctx->stop = 0;
	ctx->io = io;
	ctx->io_kind = IO_AFP;
	ctx->io_close = pyfwd_afp_close;
	return 0;

err:
	memset(&ctx->maps, 0, sizeof(ctx->maps));
	afp_free(io);
	return err < 0 ? err : -EINVAL;
}

void pyfwd_afp_close(struct pyfwd_ctx *ctx)
{
	if (!ctx->io || ctx->io_kind != IO_AFP)
		return;
	__atomic_store_n(&ctx->stop, 1, __ATOMIC_RELEASE);
	afp_free(ctx->io);
	ctx->io = NULL;
	ctx->io_kind = IO_NONE;
	memset(&ctx->maps, 0, sizeof(ctx->maps));
}

/* Send the forwarded frames of a burst, each on its port, in batches. */
static void transmit(struct afp_io *io, struct worker *w,
		     struct pyfwd_frame *frames, struct pyfwd_result *res,
		     uint32_t n)
{
	struct mmsghdr msgs[AFP_BATCH];
	struct iovec iov[AFP_BATCH];
	uint32_t s, i, k;
	int sent;

	for (s = 0; s < io->nports; s++) {
		for (i = 0, k = 0; i < n; i++) {
			if (res[i].verdict != PYFWD_VERDICT_FORWARD ||
			    (res[i].out_if < io->nports ? res[i].out_if : 0) != s)
				continue;
			iov[k].iov_base = frames[i].data;
			iov[k].iov_len = frames[i].len;
			memset(&msgs[k], 0, sizeof(msgs[k]));
			msgs[k].msg_hdr.msg_iov = &iov[k];
			msgs[k].msg_hdr.msg_iovlen = 1;
			k++;
		}
		if (!k)
			continue;
		sent = sendmmsg(io->port[s].tx_fd, msgs, k, 0);
		sent = sent < 0 ? 0 : sent;
		w->stats.tx += (uint32_t)sent;
		w->stats.tx_ring_full += k - (uint32_t)sent;
		w->stats.wakeups++;
	}
}

/* Every frame of one retired block through the core, in bursts. */
static void block(struct pyfwd_ctx *ctx, struct afp_io *io, struct worker *w,
		  struct tpacket_block_desc *bd, uint8_t slot)
{
	struct pyfwd_frame frames[AFP_BATCH];
	struct pyfwd_result res[AFP_BATCH];
	struct tpacket3_hdr *h;
	uint32_t i, n = 0, total = bd->hdr.bh1.num_pkts;

	h = (struct tpacket3_hdr *)((uint8_t *)bd +
				     bd->hdr.bh1.offset_to_first_pkt);
	for (i = 0; i < total; i++) {
		frames[n].data = (uint8_t *)h + h->tp_mac;
		frames[n].len = h->tp_snaplen;
		frames[n].cap = (uint16_t)h->tp_snaplen;
		frames[n].in_if = slot;
		if (++n == AFP_BATCH || i + 1 == total) {
			w->stats.rx += n;
			core_burst(ctx, w, frames, n, res);
			transmit(io, w, frames, res, n);
			n = 0;
		}
		h = (struct tpacket3_hdr *)((uint8_t *)h + h->tp_next_offset);
	}
}

int pyfwd_afp_run(struct pyfwd_ctx *ctx, uint32_t queue)
{
	struct afp_io *io = ctx->io;
	struct pollfd pfd[PYFWD_IFACES_MAX];
	struct worker *w = &ctx->workers[0];
	uint32_t s, got;

	if (!io || ctx->io_kind != IO_AFP || queue != 0)
		return -EINVAL;
	while (!__atomic_load_n(&ctx->stop, __ATOMIC_ACQUIRE)) {
		got = 0;
		for (s = 0; s < io->nports; s++) {
			struct afp_port *p = &io->port[s];
			struct tpacket_block_desc *bd;

			for (;;) {
				bd = (struct tpacket_block_desc *)
					(p->ring + (size_t)p->cur *
						   AFP_BLOCK_SIZE);
				if (!(__atomic_load_n(&bd->hdr.bh1.block_status,
						      __ATOMIC_ACQUIRE) &
				      TP_STATUS_USER))
					break;
				block(ctx, io, w, bd, (uint8_t)s);
				__atomic_store_n(&bd->hdr.bh1.block_status,
						 TP_STATUS_KERNEL,
						 __ATOMIC_RELEASE);
				p->cur = (p->cur + 1) % AFP_BLOCKS;
				got++;
			}
		}
		if (got)
			continue;
		for (s = 0; s < io->nports; s++) {
			pfd[s].fd = io->port[s].rx_fd;
			pfd[s].events = POLLIN | POLLERR;
			pfd[s].revents = 0;
		}
		if (!poll(pfd, io->nports, IDLE_POLL_MS))
			core_sweep(w, core_now(ctx), IDLE_SWEEP);
		w->stats.polls++;
	}
	return 0;
}
