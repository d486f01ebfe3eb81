/* SPDX-License-Identifier: MIT */
/*
 * pyfwd_flows.h - the boundary's part for listing flows (`pyfwd ctl
 * flows`, as `ipvsadm -L -c`): a copy of the live flows of a worker's
 * table (read by csrc/build_ffi.py between the cffi markers as the
 * others; the C is csrc/flowlist.c).
 */
#ifndef PYFWD_FLOWS_H
#define PYFWD_FLOWS_H

#include "pyfwd.h"

/* cffi:begin */

/* A flow's TCP state as the core tracks it (UDP flows are OPEN). */
#define PYFWD_FLOW_OPEN 1	/* established */
#define PYFWD_FLOW_CLOSING 2	/* FIN or RST seen */
#define PYFWD_FLOW_SYN 3	/* half-open: the client's SYN only */
#define PYFWD_FLOW_SYN_ACK 4	/* half-open, NAT/SNAT: the real answered */

/* Which flows pyfwd_flow_list copies: family 0, every one; else those to
 * addr:port/proto (a VIP; port 0: any port, proto 0: any protocol). */
struct pyfwd_flow_filter {
	uint8_t addr[16];
	uint16_t port;
	uint8_t proto;		/* IPPROTO_TCP, IPPROTO_UDP, 0 */
	uint8_t family;		/* PYFWD_AF_INET(6), 0 */
	uint8_t pad[4];
};

/* One flow as pyfwd_flow_list copies it: the client's direction. */
struct pyfwd_flow_info {
	uint8_t client[16];	/* the client's address */
	uint8_t vip[16];	/* the VIP's */
	uint8_t real[16];	/* NAT/SNAT: the real's (its answers' source);
				 * DR, TUN: zero (real_id names it) */
	uint64_t expires_ms;	/* ms before it expires unless a frame comes */
	uint16_t client_port;
	uint16_t vip_port;
	uint16_t real_port;	/* NAT/SNAT; 0 */
	uint16_t snat_port;	/* SNAT: the source port it was given; 0 */
	uint16_t real_id;	/* the real server's id (publish) */
	uint8_t family;		/* PYFWD_AF_INET or PYFWD_AF_INET6 */
	uint8_t proto;		/* IPPROTO_TCP or IPPROTO_UDP */
	uint8_t state;		/* PYFWD_FLOW_* */
	uint8_t mode;		/* PYFWD_MODE_* */
	uint8_t worker;		/* whose table (its RX queue) */
	uint8_t fast;		/* 1: in the XDP fast path's map too */
};

/* wait_ms of pyfwd_flow_list: read the table in the caller's thread. */
#define PYFWD_FLOW_LIST_INPLACE 0xffffffff

/*
 * Copy up to max live flows of worker's table that match filter (NULL:
 * every one) into out, one per flow (NAT/SNAT pairs once); *total gets
 * how many match in all.  Returns how many were copied, or -errno:
 * -EINVAL (no such worker, wait_ms 0), -ENOMEM, -EBUSY (another listing
 * of that worker waits), -ETIMEDOUT (its loop did not answer within
 * wait_ms).
 *
 * wait_ms (> 0): a loop runs the worker; it copies its own table between
 * bursts (a few thousand slots per loop iteration, never a torn entry)
 * and this waits up to wait_ms for it.  PYFWD_FLOW_LIST_INPLACE: no loop
 * runs it, nor can start, and its I/O is not being closed (tests; stopped,
 * or its loop ended): copied here, the caller serialising with
 * pyfwd_core_burst and the I/O's close.  Any thread; GIL released.
 */
int pyfwd_flow_list(struct pyfwd_ctx *ctx, uint32_t worker,
		    const struct pyfwd_flow_filter *filter,
		    struct pyfwd_flow_info *out, uint32_t max,
		    uint64_t *total, uint32_t wait_ms);

/*
 * Tests: the slots of worker's table an entry holds, counted by reading
 * every one (what pyfwd_worker_room's flow_slots_used keeps without a
 * scan), or -EINVAL past the last worker.  Not beside a running loop.
 */
int64_t pyfwd_flow_slots_scan(const struct pyfwd_ctx *ctx, uint32_t worker);

/*
 * Tests: 0 if worker's per-real counts of live flows (active: all of
 * them, closing ones too; inactive: the closing ones) are what a scan of
 * its counted entries finds, 1 if not (or an entry counted that is not a
 * held ORIG entry), -EINVAL past the last worker, -ENOMEM.  Allocates:
 * not beside a running loop.
 */
int pyfwd_flow_counts_check(const struct pyfwd_ctx *ctx, uint32_t worker);

/* cffi:end */

_Static_assert(sizeof(struct pyfwd_flow_filter) == 24, "flow filter");
_Static_assert(sizeof(struct pyfwd_flow_info) == 72, "flow info");

#endif /* PYFWD_FLOWS_H */
