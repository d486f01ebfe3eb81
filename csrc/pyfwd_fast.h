/* SPDX-License-Identifier: MIT */
/*
 * pyfwd_fast.h - the boundary's functions for the XDP fast path, and the
 * test runs of the XDP program (a second part of pyfwd.h, which stays
 * under its size: csrc/build_ffi.py reads both between the cffi markers).  Counters: pyfwd.h's struct
 * pyfwd_fast_stats.
 */
#ifndef PYFWD_FAST_H
#define PYFWD_FAST_H

#include "pyfwd.h"

/* cffi:begin */

/* Flows the fast path holds at most (DR: one entry each, NAT/SNAT two),
 * shared by the queues: bpf/fastmap.h's FAST_FLOWS_MAX. */
#define PYFWD_FAST_FLOWS_MAX 65536

/*
 * Turn the XDP fast path on for the open AF_XDP backend (before its loops
 * start): established flows are installed in the steering object's maps
 * (bpf/fastmap.h) and rewritten and sent by pyfwd_xdp_steer itself.  0 or
 * -errno: -ENOTCONN (no AF_XDP backend open), -EBUSY (on already),
 * -ENOENT (an object without the maps), -ENOMEM, mmap's.  Off again
 * with the backend (pyfwd_io_close).
 */
int pyfwd_fastpath_open(struct pyfwd_ctx *ctx);

/*
 * Tests: run the open AF_XDP backend's XDP program on one frame as
 * received on interface slot in_if, queue 0 (BPF_PROG_TEST_RUN); *action
 * gets the XDP action (XDP_TX 3: the fast path sent it; XDP_REDIRECT 4:
 * steered to the engine; XDP_PASS 2: the kernel's), out the frame as it
 * left (out_len bytes, at most its size on entry).  0 or -errno.
 */
int pyfwd_fastpath_test_run(struct pyfwd_ctx *ctx, const uint8_t *frame,
			    uint32_t len, uint32_t in_if, uint8_t *out,
			    uint32_t *out_len, uint32_t *action);

/*
 * Tests: run the open AF_XDP backend's steering program on one frame
 * (BPF_PROG_TEST_RUN, as received on RX queue 0 of the calling thread's
 * namespace's loopback: interface slot 0).  *action gets the XDP action:
 * XDP_REDIRECT (4) when it steers the frame to the engine's socket (the
 * redirect is not carried out), XDP_PASS (2) when it leaves it to the
 * kernel.  0 or -errno: -ENOTCONN (no AF_XDP backend open), -EINVAL (the
 * kernel takes 14 bytes up to about a page, less its headroom).
 */
int pyfwd_steer_test_run(struct pyfwd_ctx *ctx, const uint8_t *frame,
			 uint32_t len, uint32_t *action);

/* Flows installed in the fast path now, summed over workers. */
uint64_t pyfwd_fastpath_flows(const struct pyfwd_ctx *ctx);

/*
 * Open and load (through the kernel verifier) a BPF object file, then
 * unload it.  0 or -errno; errbuf gets libbpf's last complaint.
 */
int pyfwd_bpf_object_check(const char *path, char *errbuf, size_t errlen);

/* cffi:end */

#endif /* PYFWD_FAST_H */
