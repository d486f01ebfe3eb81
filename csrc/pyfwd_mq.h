/* SPDX-License-Identifier: MIT */
/*
 * pyfwd_mq.h - the boundary's part for several workers (RX queues) and
 * NAT/SNAT: which worker owns a flow, and the hand-over of frames to it
 * (a third part of pyfwd.h, read by csrc/build_ffi.py between the cffi
 * markers as the others; the C is csrc/handoff.c).
 *
 * A NAT/SNAT flow's two entries live in one worker's flow table, its
 * owner, which both directions compute from the frame alone: the
 * client's address and port (NAT keeps them on both ways: forward
 * client->VIP, answer real->client), or for SNAT the port given out,
 * taken from the owner's share of the range.  A worker that receives a
 * frame of a flow it does not own copies it into a ring toward the owner
 * (one single-producer, single-consumer ring per pair of workers, slots
 * allocated at create); the owner takes it on its next round and runs it
 * through the core as if it had received it.  DR needs no owner.
 */
#ifndef PYFWD_MQ_H
#define PYFWD_MQ_H

#include "pyfwd.h"

/* cffi:begin */

/*
 * pyfwd_result.verdict of a frame handed to its flow's owner: not a
 * verdict (the owner decides and counts it; the hander counts
 * handoff_out), the buffer is free again.  reason: what it was classified.
 */
#define PYFWD_HANDOFF 4

/* Bytes of frame a hand-over slot holds: longer ones are dropped
 * (drop_handoff_full); AF_XDP's frames are shorter. */
#define PYFWD_HANDOFF_SNAP 4096

/*
 * The worker that owns a NAT/SNAT flow whose client-side endpoint is
 * addr:port (family PYFWD_AF_*): a SNAT address and a port of its range,
 * (port - port_lo) % workers, the worker whose pool gives that port;
 * else a hash of the address and port, % workers.  0 with one worker.
 */
uint32_t pyfwd_flow_owner(const struct pyfwd_ctx *ctx, const uint8_t *addr,
			  uint8_t family, uint16_t port);

/*
 * pyfwd_core_burst as worker `worker` (tests: two workers in one
 * thread; not beside a loop).  A NAT/SNAT frame another worker owns
 * comes back PYFWD_HANDOFF (or dropped, drop_handoff_full, its ring
 * full).  -EINVAL past the last worker, else the frames to forward.
 */
int pyfwd_worker_burst(struct pyfwd_ctx *ctx, uint32_t worker,
		       struct pyfwd_frame *frames, uint32_t n,
		       struct pyfwd_result *out);

/*
 * Take up to max frames other workers handed to `worker`, oldest first,
 * each copied into frames[i].data (cap bytes; a longer one is dropped,
 * counted) with len, in_if and flags set (flags | PYFWD_FRAME_HANDED),
 * ready for the core.  The loop of `worker` calls it every round; tests
 * call it between bursts.  Returns how many (0 for one worker).
 */
uint32_t pyfwd_handoff_take(struct pyfwd_ctx *ctx, uint32_t worker,
			    struct pyfwd_frame *frames, uint32_t max);

/*
 * The NAPI id the AF_XDP loop of `queue` found for its socket on `slot`
 * (SO_INCOMING_NAPI_ID): > 0, its busy polls drive that NAPI; 0, none
 * (copy mode, veth): busy polling cannot engage and the loop sleeps in
 * poll() when idle.  -EAGAIN: not known yet (no frame received), -EINVAL
 * (no such queue or slot), -ENOTCONN (no AF_XDP backend).
 */
int pyfwd_io_napi_id(struct pyfwd_ctx *ctx, uint32_t queue, uint32_t slot);

/*
 * What worker `worker` has room for and holds now: its flow table's
 * slots and those an entry holds (flow_slots_used, exact: a DR or TUN
 * flow takes one, a NAT/SNAT flow two, a persistent VIP's client one
 * more; an expired one until the sweep reaps it, within ~1 s), its
 * punt ring's slots and the punted frames waiting there for Python.
 * flow_slots_used is the worker's own counter, read without a lock: at
 * most a burst old.  0, or -EINVAL past the last worker.
 */
struct pyfwd_worker_room {
	uint64_t flow_slots;
	uint64_t flow_slots_used;
	uint32_t punt_slots;
	uint32_t punt_queued;
};

int pyfwd_worker_room_read(const struct pyfwd_ctx *ctx, uint32_t worker,
			   struct pyfwd_worker_room *out);

/* cffi:end */

_Static_assert(sizeof(struct pyfwd_worker_room) == 24, "worker room");

#endif /* PYFWD_MQ_H */
