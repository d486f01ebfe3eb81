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
/* Before every frame, received and sent (PACKET_VNET_HDR). */
#define AFP_VNET_HDR_LEN sizeof(struct virtio_net_hdr)

struct afp_port {
	int rx_fd;
	int tx_fd;
	int link_fd;		/* the tcx bpf_link */
	uint8_t *ring;
	size_t ring_size;
	uint32_t cur;		/* next block to look at */
	uint32_t ifindex;
};

/* The backend: ctx->io when ctx->io_kind is IO_AFP. */
struct afp_io {
	struct bpf_object *obj;
	uint32_t nports;
	struct afp_port port[PYFWD_IFACES_MAX];
};

#endif /* PYFWD_AFP_H */
