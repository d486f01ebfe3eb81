/* SPDX-License-Identifier: MIT */
/*
 * xsk.h - AF_XDP state shared by the set-up (xsk.c) and the loop
 * (xsk_loop.c).
 */
#ifndef PYFWD_XSK_H
#define PYFWD_XSK_H

#include <xdp/xsk.h>

#include "io/io.h"

#define XSK_BATCH_MAX 256

/* One interface's socket on a queue, with its four rings. */
struct xsk_port {
	struct xsk_ring_prod fill;
	struct xsk_ring_cons comp;
	struct xsk_ring_cons rx;
	struct xsk_ring_prod tx;
	struct xsk_socket *xsk;
	int fd;
	int busy_poll;
	int copy;		/* copy mode: a kick sends XSK_COPY_TX_MAX */
	int32_t napi_id;	/* XSK_NAPI_UNKNOWN until read (xsk_loop.c) */
	uint32_t outstanding;	/* sent on TX, not yet completed */
};

/*
 * A socket's NAPI id (SO_INCOMING_NAPI_ID) is read at set-up and, while
 * still 0, once more after its first frames (kernels before 6.13 mark it
 * on receive).  Busy polling drives only a NAPI the socket knows: with
 * none (AF_XDP copy mode since 6.13, veth) a busy poll does nothing, so
 * the loop does not spin but sleeps in poll() when idle.
 */
#define XSK_NAPI_UNKNOWN (-1)

/* Frames one sendto() sends in copy mode (the kernel's TX_BATCH_SIZE). */
#define XSK_COPY_TX_MAX 32
/* Empty rounds before an adaptive loop sleeps in poll() (PYFWD_POLL_*). */
#define XSK_ADAPTIVE_IDLE 512

/*
 * One RX queue (one worker): a UMEM shared by the socket of each
 * interface on that queue, so a frame received on one goes out on the
 * other without a copy; the frames no ring holds wait in a free stack.
 */
struct xsk_queue {
	struct xsk_port port[PYFWD_IFACES_MAX];
	uint32_t nports;
	struct xsk_umem *umem;
	void *area;
	size_t area_size;
	uint64_t *free_addrs;	/* a stack of frame addresses */
	uint32_t nfree;
	uint32_t frame_size;
	uint32_t queue;
	uint32_t empty;		/* rounds in a row that received nothing */
	uint32_t spin;		/* 1: some port's busy polls reach a NAPI */
} __attribute__((aligned(64)));

/* The backend: ctx->io when ctx->io_kind is IO_XSK. */
struct xsk_io {
	struct bpf_object *obj;
	int link_fd[PYFWD_IFACES_MAX];	/* unpinned bpf_links: die with us */
	int xsks_fd;
	int ifaces_fd;		/* steer_ifaces: slot -> ifindex */
	uint32_t ifindex[PYFWD_IFACES_MAX];
	uint32_t nifaces;
	uint32_t nqueues;
	uint32_t batch;
	uint32_t poll_mode;	/* PYFWD_POLL_* */
	struct xsk_queue q[];
};

/* XDP_STATISTICS of the socket of (queue, slot); 0 or -errno (-EINVAL:
 * none such).  io: a struct xsk_io (sockstats.c). */
int xsk_sock_stats(void *io, uint32_t queue, uint32_t slot,
		   struct pyfwd_xsk_sock_stats *out);

/* The NAPI id the kernel gives socket fd: >= 0 (0: none, or the kernel
 * cannot say). */
int32_t xsk_napi_id(int fd);

/* pyfwd_io_napi_id of a struct xsk_io (xsk.c). */
int xsk_napi_read(void *io, uint32_t queue, uint32_t slot);

#endif /* PYFWD_XSK_H */
