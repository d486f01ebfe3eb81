/* SPDX-License-Identifier: MIT */
/*
 * io.h - what the I/O backends share: binding a backend to the context,
 * the idle poll, set-up errors, the steering object.
 *
 *   io.c        bind/unbind, stop, the idle poll, errbuf, heartbeats
 *   bpf.c       BPF objects: the steering object's load, doctor's check
 *   steer.c     the steering maps: what the BPF programs send the engine
 *   xsk.c       AF_XDP set-up: XDP program and bpf_link, UMEMs, sockets
 *   xsk_loop.c  AF_XDP loop of one queue
 *   afp.c       AF_PACKET set-up: TPACKET_V3 rings, tc program (tcx)
 *   afp_loop.c  AF_PACKET loop
 *   sockstats.c the kernel's counters of either backend's sockets
 *
 * Set-up code returns -errno and says what failed in errbuf; the loops
 * allocate nothing, take no lock and never call Python.
 */
#ifndef PYFWD_IO_H
#define PYFWD_IO_H

#include <poll.h>
#include <stddef.h>

#include "core.h"

#define IDLE_POLL_MS 100	/* how soon an idle loop notices stop */

/* Set-up code's errors: what failed, for errbuf. */
void say(char *errbuf, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * The backend's state `io` becomes the context's (its loops may run until
 * pyfwd_io_stop); release (or destroying the context) stops the loops,
 * frees it with free_io and forgets it, and the steering maps (they were
 * the backend's).  unbind only forgets: the open functions' error path.
 */
void io_bind(struct pyfwd_ctx *ctx, void *io, int kind,
	     void (*free_io)(void *io));
void io_release(struct pyfwd_ctx *ctx);
void io_unbind(struct pyfwd_ctx *ctx);

/*
 * The flags every frame of slot s (ifindex[s], n slots) is given: set-up,
 * before io_bind (io_unbind clears them).  CSUM_PARTIAL where the driver
 * hands over unfinished checksums (csum.c): veth, or a driver whose name
 * cannot be read (checking costs time, not checking costs the traffic).
 */
void io_if_flags_set(struct pyfwd_ctx *ctx, const uint32_t *ifindex,
		     uint32_t n);

/* The frame flags of slot s as the loops give them. */
static inline uint8_t io_if_flags(const struct pyfwd_ctx *ctx, uint32_t s)
{
	return ctx->if_flags[s < PYFWD_IFACES_MAX ? s : 0];
}

static inline int io_stopped(const struct pyfwd_ctx *ctx)
{
	return __atomic_load_n(&ctx->stop, __ATOMIC_ACQUIRE);
}

int io_held(struct pyfwd_ctx *ctx, struct worker *w);

/*
 * Names the calling loop thread "pyfwd-KIND-qQUEUE" (the kernel's comm, as
 * top -H, /proc/PID/task/TID/comm and `pyfwd bench` show it), so its CPU
 * time can be told from the Python threads'.  Best effort.
 */
void io_name_thread(const char *kind, uint32_t queue);

/*
 * Every loop iteration: one heartbeat (a relaxed store: one writer), a
 * slice of a flow listing asked (pyfwd_flow_list), then the test hook's
 * hold (pyfwd_io_worker_pause).  0, or -ECANCELED when the loop must
 * return.
 */
static inline int io_beat(struct pyfwd_ctx *ctx, struct worker *w)
{
	__atomic_store_n(&w->beats, w->beats + 1, __ATOMIC_RELAXED);
	if (unlikely(w->listing ||
		     __atomic_load_n(&w->list_req, __ATOMIC_RELAXED)))
		flow_list_serve(ctx, w, 0);
	if (unlikely(__atomic_load_n(&w->hold, __ATOMIC_RELAXED)))
		return io_held(ctx, w);
	return 0;
}

/* Nothing came: sleep in poll() on n fds (pfd has room for one more:
 * the worker's wake_fd, when other workers hand it frames), then expire
 * flows as the clock says (worker_sweep: NAT/SNAT ports back, live counts
 * right). */
void io_idle_poll(struct pyfwd_ctx *ctx, struct worker *w, struct pollfd *pfd,
		  uint32_t n);

/*
 * bpf.c: open the steering object at path, load only the n programs
 * named (the backend's), find its maps.  0 or -errno, errbuf says what.
 */
struct bpf_object;
struct bpf_program;
int steer_object_load(const char *path, const char *const *names,
		      struct bpf_program **progs, int n,
		      struct bpf_object **objp, struct steer_maps *maps,
		      char *errbuf, size_t errlen);

/* steer.c: the steering maps' fds in a loaded object; 0 or -ENOENT. */
int steer_maps_find(struct bpf_object *obj, struct steer_maps *m);

#endif /* PYFWD_IO_H */
