/* SPDX-License-Identifier: MIT */
/*
 * harness.h - the core outside Python, for the fuzzer (fuzz_classify.c)
 * and the sanitizer replay (replay.c): set-ups and inputs.
 *
 * A set-up file is what a test's Core publishes (tests/cases/corpus.py
 * writes them from the packet cases' services):
 *
 *   "PFZ1" | struct pyfwd_config | struct pyfwd_snat (port_hi 0: none) |
 *   u32 nvips | u32 nreals | u32 nring | vips[] | reals[] | ring[]
 *
 * in the host's byte order.  An input is byte 0, the set-up (its index
 * modulo their number), then records, each one frame on a fresh context
 * of that set-up, in order:
 *
 *   ctrl | length (2 bytes, big endian) | frame
 *
 * ctrl bit 0: interface slot 1 (else 0); bit 1: PYFWD_FRAME_CSUM_PARTIAL;
 * bit 2: PYFWD_FRAME_GSO; bit 3: the clock moves on by (ctrl >> 4) + 1
 * times 64 s before the frame, and every flow that timed out expires.
 * A last record cut short takes what is left.
 */
#ifndef PYFWD_HARNESS_H
#define PYFWD_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "pyfwd.h"

#define HARNESS_SETUPS_MAX 8

#define REC_IN_IF1 1
#define REC_CSUM_PARTIAL 2
#define REC_GSO 4
#define REC_CLOCK 8

/*
 * Workers every context gets (0: the set-up's).  With several, record n
 * runs as worker n % workers, and a NAT/SNAT frame another worker owns
 * is handed to it and run there (csrc/handoff.c): the same promises hold.
 */
extern uint16_t harness_workers;

/* Read a set-up file; 0 or -errno (-EINVAL: not one). */
int harness_setup_load(const char *path);

/* Every set-up of a colon-separated list; 0 or -errno. */
int harness_setups_load(const char *list);

/*
 * Run one input.  report (may be NULL) gets each record's result.  Aborts
 * when the core breaks a promise: a verdict that is not its reason's, a
 * frame it did not forward changed, an interface slot out of range,
 * frames, punts, SNAT ports or held flow slots miscounted.  Returns the
 * number of records run.
 */
uint32_t harness_run(const uint8_t *data, size_t size,
		     void (*report)(const struct pyfwd_result *r, void *arg),
		     void *arg);

#endif /* PYFWD_HARNESS_H */
