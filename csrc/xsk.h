/* SPDX-License-Identifier: MIT */
/*
 * xsk.h - AF_XDP state shared by the set-up (xsk.c) and the loop (loop.c).
 */
#ifndef PYFWD_XSK_H
#define PYFWD_XSK_H

#include <xdp/xsk.h>

#include "core.h"

#define XSK_BATCH_MAX 256

/* One RX queue: its socket, its UMEM and the frames no ring holds. */
struct xsk_queue {
	struct xsk_ring_prod fill;
	struct xsk_ring_cons comp;
	struct xsk_ring_cons rx;
	struct xsk_ring_prod tx;
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	void *area;
	size_t area_size;
	uint64_t *free_addrs;	/* a stack of frame addresses */
	uint32_t nfree;
	uint32_t frame_size;
	uint32_t queue;
	int fd;
	int busy_poll;
} __attribute__((aligned(64)));

struct xsk_io {
	struct bpf_object *obj;
	int link_fd;		/* the unpinned bpf_link: dies with us */
	int xsks_fd;
	int addrs_fd;
	int svcs_fd;
	uint32_t ifindex;
	uint32_t nqueues;
	uint32_t batch;
	struct xsk_queue q[];
};

#endif /* PYFWD_XSK_H */
