/* SPDX-License-Identifier: MIT */
/*
 * afp.h - the raw-socket (AF_PACKET) backend's state, shared by its
 * set-up (afp.c) and its loop (afp_loop.c).
 */
#ifndef PYFWD_AFP_H
#define PYFWD_AFP_H

#include <linux/virtio_net.h>

#include "io/io.h"

#define AFP_BATCH 64
#define AFP_BLOCK_SIZE (1u << 18)	/* 256 KiB blocks */
#define AFP_BLOCKS 16
#define AFP_FRAME_SIZE 2048
#define AFP_RETIRE_MS 1		/* hand over a part-filled block after */
/* Blocks between two reads of the socket's counters: they hold 32 bits
 * (a block holds a few thousand frames at most). */
#define AFP_STATS_BLOCKS 1024
/* Before every frame, received and sent (PACKET_VNET_HDR). */
#define AFP_VNET_HDR_LEN sizeof(struct virtio_net_hdr)
/* TUN: a GSO frame cut into at most this many segments, each in a slot
 * (afp_gso.c); a longer frame or a larger gso_size stays dropped. */
#define AFP_GSO_SEGS 64
#define AFP_GSO_SLOT 2048

struct afp_port {
	int rx_fd;
	int tx_fd;
	int link_fd;		/* the tcx bpf_link */
	uint8_t *ring;
	size_t ring_size;
	uint32_t cur;		/* next block to look at */
	uint32_t ifindex;
	uint32_t blocks;	/* retired so far (the loop's) */
	/* PACKET_STATISTICS added up (afp_stats_fold: atomic adds) */
	struct pyfwd_afp_sock_stats sum;
};

/* The backend: ctx->io when ctx->io_kind is IO_AFP. */
struct afp_io {
	struct bpf_object *obj;
	uint32_t nports;
	struct afp_port port[PYFWD_IFACES_MAX];
	uint8_t *gso_buf;	/* AFP_GSO_SEGS slots (afp_gso.c) */
};

/*
 * TUN (afp_gso.c): GSO frame f, its virtio_net_hdr vh, cut into TCP
 * segments in buf's slots, described in out[] (AFP_GSO_SEGS of them):
 * how many, 0 when it cannot be.
 */
uint32_t afp_gso_cut(const struct pyfwd_frame *f,
		     const struct virtio_net_hdr *vh, uint8_t *buf,
		     struct pyfwd_frame *out);

/*
 * Add what the kernel counted at p's receive socket since the last read
 * (PACKET_STATISTICS resets them) to p->sum; the loop and readers may
 * fold at once.  0 or -errno.
 */
int afp_stats_fold(struct afp_port *p);

/* The sums of slot's receive socket, folded first; queue 0 only.  0 or
 * -errno (-EINVAL: none such).  io: a struct afp_io (sockstats.c). */
int afp_sock_stats(void *io, uint32_t queue, uint32_t slot,
		   struct pyfwd_afp_sock_stats *out);

#endif /* PYFWD_AFP_H */
