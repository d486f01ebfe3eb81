/* SPDX-License-Identifier: MIT */
/*
 * afp_loop.c - the raw-socket backend's loop: every retired block of each
 * interface's TPACKET_V3 ring through the core in bursts, the forwarded
 * frames out with sendmmsg.  No allocation, no lock, no Python; poll()
 * when idle.
 */
#define _GNU_SOURCE	/* sendmmsg */
#include <errno.h>
#include <linux/if_packet.h>
#include <string.h>
#include <sys/socket.h>

#include "io/afp.h"

/* A frame sent as it is: its checksums finished, not to be cut. */
static const struct virtio_net_hdr vnet_none;

/*
 * Send the forwarded frames of a burst, each on its port, in batches;
 * each behind its virtio_net_hdr: a GSO frame's as it came (the kernel
 * cuts it and finishes the checksums), the others' none.
 */
static void transmit(struct afp_io *io, struct worker *w,
		     struct pyfwd_frame *frames, struct pyfwd_result *res,
		     uint32_t n)
{
	struct mmsghdr msgs[AFP_BATCH];
	struct iovec iov[AFP_BATCH][2];
	uint32_t s, i, k;
	int sent;

	for (s = 0; s < io->nports; s++) {
		for (i = 0, k = 0; i < n; i++) {
			if (res[i].verdict != PYFWD_VERDICT_FORWARD ||
			    (res[i].out_if < io->nports ? res[i].out_if : 0) != s)
				continue;
			iov[k][0].iov_base = frames[i].flags & PYFWD_FRAME_GSO ?
				frames[i].data - AFP_VNET_HDR_LEN :
				(void *)&vnet_none;
			iov[k][0].iov_len = AFP_VNET_HDR_LEN;
			iov[k][1].iov_base = frames[i].data;
			iov[k][1].iov_len = frames[i].len;
			memset(&msgs[k], 0, sizeof(msgs[k]));
			msgs[k].msg_hdr.msg_iov = iov[k];
			msgs[k].msg_hdr.msg_iovlen = 2;
			k++;
		}
		if (!k)
			continue;
		sent = sendmmsg(io->port[s].tx_fd, msgs, k, 0);
		sent = sent < 0 ? 0 : sent;
		w->stats.io.tx += (uint32_t)sent;
		w->stats.io.tx_ring_full += k - (uint32_t)sent;
		w->stats.io.wakeups++;
	}
}

/*
 * TUN: the GSO frames of a burst that the core could not tunnel
 * (drop_tun_gso: left as they came), each cut into its TCP segments
 * (afp_gso.c), which go through the core and out as frames of their own.
 */
static void gso_cut_burst(struct pyfwd_ctx *ctx, struct afp_io *io,
			  struct worker *w, struct pyfwd_frame *frames,
			  const struct pyfwd_result *res, uint32_t n)
{
	struct pyfwd_frame segs[AFP_GSO_SEGS];
	struct pyfwd_result sres[AFP_GSO_SEGS];
	uint32_t i, m;

	for (i = 0; i < n; i++) {
		if (res[i].reason != PYFWD_R_DROP_TUN_GSO)
			continue;
		m = afp_gso_cut(&frames[i], (const void *)(frames[i].data -
							   AFP_VNET_HDR_LEN),
				io->gso_buf, segs);
		if (!m)
			continue;
		w->stats.io.tun_gso_cut++;
		worker_burst(ctx, w, segs, m, sres);
		transmit(io, w, segs, sres, m);
	}
}

/* Every frame of one retired block through the core, in bursts. */
static void rx_block(struct pyfwd_ctx *ctx, struct afp_io *io, struct worker *w,
		  struct tpacket_block_desc *bd, uint8_t slot)
{
	struct pyfwd_frame frames[AFP_BATCH];
	struct pyfwd_result res[AFP_BATCH];
	struct tpacket3_hdr *h;
	uint32_t i, n = 0, fwd, total = bd->hdr.bh1.num_pkts;
	uint8_t flags = io_if_flags(ctx, slot);

	h = (struct tpacket3_hdr *)((uint8_t *)bd +
				     bd->hdr.bh1.offset_to_first_pkt);
	for (i = 0; i < total; i++) {
		const struct virtio_net_hdr *vh;

		frames[n].data = (uint8_t *)h + h->tp_mac;
		vh = (const void *)(frames[n].data - AFP_VNET_HDR_LEN);
		/* A frame cut short is longer than its buffer: dropped. */
		frames[n].len = h->tp_len;
		frames[n].cap = (uint16_t)(h->tp_snaplen <= UINT16_MAX ?
					   h->tp_snaplen : 0);
		frames[n].in_if = slot;
		/* CHECKSUM_PARTIAL, whatever the driver (csum.c). */
		frames[n].flags = flags | (h->tp_status & TP_STATUS_CSUMNOTREADY ?
					   PYFWD_FRAME_CSUM_PARTIAL : 0);
		if (vh->gso_type != VIRTIO_NET_HDR_GSO_NONE)
			frames[n].flags |= PYFWD_FRAME_GSO;
		/* PACKET_RESERVE's room between the ring's header and
		 * ours: the core may grow the frame into it (TUN). */
		if (h->tp_mac >= TPACKET3_HDRLEN + AFP_VNET_HDR_LEN +
				 PYFWD_HEADROOM)
			frames[n].flags |= PYFWD_FRAME_HEADROOM;
		if (++n == AFP_BATCH || i + 1 == total) {
			w->stats.io.rx += n;
			fwd = worker_burst(ctx, w, frames, n, res);
			transmit(io, w, frames, res, n);
			if (fwd < n)
				gso_cut_burst(ctx, io, w, frames, res, n);
			n = 0;
		}
		h = (struct tpacket3_hdr *)((uint8_t *)h + h->tp_next_offset);
	}
}

int pyfwd_afp_run(struct pyfwd_ctx *ctx, uint32_t queue)
{
	struct afp_io *io = ctx->io;
	struct pollfd pfd[PYFWD_IFACES_MAX + 1];
	struct worker *w = &ctx->workers[0];
	uint32_t s, got;
	int err;

	if (!io || ctx->io_kind != IO_AFP || queue != 0)
		return -EINVAL;
	io_name_thread("afp", queue);
	while (!io_stopped(ctx)) {
		err = io_beat(ctx, w);
		if (unlikely(err))
			return err;
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
				rx_block(ctx, io, w, bd, (uint8_t)s);
				__atomic_store_n(&bd->hdr.bh1.block_status,
						 TP_STATUS_KERNEL,
						 __ATOMIC_RELEASE);
				p->cur = (p->cur + 1) % AFP_BLOCKS;
				got++;
				/* before the kernel's 32 bits wrap */
				if (unlikely(++p->blocks % AFP_STATS_BLOCKS ==
					     0))
					afp_stats_fold(p);
			}
		}
		if (got)
			continue;
		for (s = 0; s < io->nports; s++) {
			pfd[s].fd = io->port[s].rx_fd;
			pfd[s].events = POLLIN | POLLERR;
			pfd[s].revents = 0;
		}
		io_idle_poll(ctx, w, pfd, io->nports);
	}
	return 0;
}
