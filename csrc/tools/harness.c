/* SPDX-License-Identifier: MIT */
/*
 * harness.c - set-ups and inputs of the fuzzer and the sanitizer replay
 * (harness.h says their format).  Each frame sits in a buffer of exactly
 * its size, so that ASan catches a read past its end; each input runs on
 * a fresh context, so that an input always gives the same results.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pyfwd_flows.h"
#include "pyfwd_mq.h"
#include "pyfwd_tun.h"
#include "tools/harness.h"

#define CLOCK_START_NS 1000000000000ull	/* a fixed clock: 1000 s */
#define CLOCK_STEP_NS 64000000000ull

struct setup {
	struct pyfwd_config cfg;
	struct pyfwd_snat snat;
	uint32_t nvips, nreals, nring;
	struct pyfwd_vip *vips;
	struct pyfwd_real *reals;
	uint16_t *ring;
};

static struct setup setups[HARNESS_SETUPS_MAX];
static uint32_t nsetups;

static int take(FILE *fp, void *p, size_t n)
{
	return n && fread(p, 1, n, fp) != n ? -EINVAL : 0;
}

int harness_setup_load(const char *path)
{
	struct setup *s = &setups[nsetups];
	char magic[4];
	FILE *fp;
	int err;

	if (nsetups == HARNESS_SETUPS_MAX)
		return -E2BIG;
	fp = fopen(path, "rb");
	if (!fp)
		return -errno;
	memset(s, 0, sizeof(*s));
	err = take(fp, magic, 4);
	if (!err && memcmp(magic, "PFZ1", 4))
		err = -EINVAL;
	if (!err)
		err = take(fp, &s->cfg, sizeof(s->cfg)) ?:
		      take(fp, &s->snat, sizeof(s->snat)) ?:
		      take(fp, &s->nvips, 4) ?: take(fp, &s->nreals, 4) ?:
		      take(fp, &s->nring, 4);
	if (!err && (s->nvips > 4096 || s->nreals > 4096 ||
		     s->nring > 1 << 20))
		err = -EINVAL;
	if (!err) {
		s->vips = calloc(s->nvips + 1, sizeof(*s->vips));
		s->reals = calloc(s->nreals + 1, sizeof(*s->reals));
		s->ring = calloc(s->nring + 1, sizeof(*s->ring));
		if (!s->vips || !s->reals || !s->ring)
			err = -ENOMEM;
	}
	if (!err)
		err = take(fp, s->vips, s->nvips * sizeof(*s->vips)) ?:
		      take(fp, s->reals, s->nreals * sizeof(*s->reals)) ?:
		      take(fp, s->ring, s->nring * sizeof(*s->ring));
	fclose(fp);
	if (err) {
		free(s->vips);
		free(s->reals);
		free(s->ring);
		return err;
	}
	nsetups++;
	return 0;
}

int harness_setups_load(const char *list)
{
	char *copy = strdup(list), *save = NULL, *path;
	int err = copy ? 0 : -ENOMEM;

	for (path = copy ? strtok_r(copy, ":", &save) : NULL; path && !err;
	     path = strtok_r(NULL, ":", &save))
		err = harness_setup_load(path);
	free(copy);
	return err ?: nsetups ? 0 : -ENOENT;
}

uint16_t harness_workers;

/* TUN's ends (tests/cases/corpus.py TUN_SOURCES): slot 1 has no IPv6
 * source (drop_tun_no_room). */
static const struct pyfwd_tun harness_tun[PYFWD_IFACES_MAX] = {
	{ .src4 = { 10, 0, 0, 2 }, .src6 = { 0xfd, [15] = 2 }, .mtu = 1500 },
	{ .src4 = { 10, 0, 0, 2 }, .mtu = 1500 },
};

static struct pyfwd_ctx *ctx_of(const struct setup *s)
{
	struct pyfwd_config cfg = s->cfg;
	struct pyfwd_ctx *ctx;
	uint32_t slot;

	if (harness_workers)
		cfg.workers = harness_workers;
	if (pyfwd_ctx_create(&cfg, &ctx))
		abort();
	if (s->snat.port_hi && pyfwd_snat_set(ctx, &s->snat))
		abort();
	for (slot = 0; slot < PYFWD_IFACES_MAX; slot++)
		if (pyfwd_tun_set(ctx, slot, &harness_tun[slot]))
			abort();
	if (pyfwd_tables_publish(ctx, s->vips, s->nvips, s->reals, s->nreals,
				 s->ring, s->nring))
		abort();
	pyfwd_clock_set(ctx, CLOCK_START_NS);
	return ctx;
}

/*
 * The promises every frame's result keeps, whatever the frame.  buf: the
 * buffer, PYFWD_HEADROOM bytes and the frame's len (NULL: no room): a
 * forward keeps its length, or (TUN) grows into the headroom and ends
 * within the buffer.
 */
static void check(const struct pyfwd_result *r, const struct pyfwd_frame *f,
		  const uint8_t *before, uint32_t len, const uint8_t *buf)
{
	int tun = buf && (r->reason == PYFWD_R_FORWARD_TOO_BIG ||
			  f->data != buf + PYFWD_HEADROOM);

	if (r->reason >= PYFWD_R_MAX ||
	    r->verdict != pyfwd_reason_verdict(r->reason))
		abort();
	if (r->verdict == PYFWD_VERDICT_FORWARD) {
		if (r->out_if >= PYFWD_IFACES_MAX || (!tun && f->len != len))
			abort();
		if (tun && (f->data < buf ||
			    f->data + f->len > buf + PYFWD_HEADROOM + len))
			abort();
	} else if (f->len != len || (len && memcmp(f->data, before, len))) {
		abort();	/* only a forward rewrites */
	}
}

/*
 * Each worker's count of held flow slots is what a scan of its table
 * finds (csrc/flow.h flow_slot_*), and the table's size at most; `all`
 * (every entry expired and reaped): none.  Its per-real counts of live and
 * closing flows are what a scan of its counted entries finds.
 */
static void check_slots(struct pyfwd_ctx *ctx, int all)
{
	struct pyfwd_worker_room room;
	struct pyfwd_config cfg;
	uint32_t w;

	pyfwd_ctx_config_read(ctx, &cfg);
	for (w = 0; w < cfg.workers; w++)
		if (pyfwd_worker_room_read(ctx, w, &room) ||
		    room.flow_slots_used > room.flow_slots ||
		    (int64_t)room.flow_slots_used !=
		    pyfwd_flow_slots_scan(ctx, w) ||
		    (all && room.flow_slots_used) ||
		    pyfwd_flow_counts_check(ctx, w))
			abort();
}

/*
 * Frame f through the core as worker w (of `workers`, record n's turn);
 * a frame handed to another worker is taken there, in a buffer of its
 * size, and run by it, its result in *r.  The frame that ends is *f or
 * *f2 (then its buffer is *buf2, freed by the caller).
 */
static struct pyfwd_frame *run_on(struct pyfwd_ctx *ctx, uint32_t workers,
				  uint32_t n, struct pyfwd_frame *f,
				  struct pyfwd_frame *f2, uint8_t **buf2,
				  struct pyfwd_result *r)
{
	uint32_t w = n % workers, o, got = 0;

	if (pyfwd_worker_burst(ctx, w, f, 1, r) < 0)
		abort();
	if (r->verdict != PYFWD_HANDOFF)
		return f;
	*buf2 = malloc(f->len ? f->len : 1);
	if (!*buf2)
		abort();
	for (o = 0; o < workers; o++) {
		f2->data = *buf2;
		f2->cap = (uint16_t)f->len;
		if (o == w || !pyfwd_handoff_take(ctx, o, f2, 1))
			continue;
		if (got++ || pyfwd_worker_burst(ctx, o, f2, 1, r) < 0 ||
		    r->verdict == PYFWD_HANDOFF)
			abort();	/* one owner, which keeps it */
	}
	if (got != 1)
		abort();
	return f2;
}

uint32_t harness_run(const uint8_t *data, size_t size,
		     void (*report)(const struct pyfwd_result *r, void *arg),
		     void *arg)
{
	uint64_t now = CLOCK_START_NS;
	const struct setup *s;
	struct pyfwd_ctx *ctx;
	struct pyfwd_stats st;
	uint32_t n = 0, punted = 0, drained = 0, k, i;
	uint8_t pbuf[16384];
	uint32_t plens[64];
	size_t off = 1;

	if (!size || !nsetups)
		return 0;
	s = &setups[data[0] % nsetups];
	ctx = ctx_of(s);
	while (off + 3 <= size) {
		uint8_t ctrl = data[off];
		size_t len = (size_t)data[off + 1] << 8 | data[off + 2];
		struct pyfwd_result r;
		struct pyfwd_frame f, f2, *done;
		uint8_t *buf, *buf2 = NULL;

		off += 3;
		if (len > size - off)
			len = size - off;
		/* room in front, as the backends lend (TUN grows into it) */
		buf = malloc(PYFWD_HEADROOM + len);
		if (!buf)
			abort();
		memcpy(buf + PYFWD_HEADROOM, data + off, len);
		f.data = len ? buf + PYFWD_HEADROOM : NULL;
		f.len = (uint32_t)len;
		f.cap = (uint16_t)len;
		f.in_if = ctrl & REC_IN_IF1;
		f.flags = (ctrl & REC_CSUM_PARTIAL ?
			   PYFWD_FRAME_CSUM_PARTIAL : 0) |
			  (ctrl & REC_GSO ? PYFWD_FRAME_GSO : 0) |
			  (len ? PYFWD_FRAME_HEADROOM : 0);
		if (ctrl & REC_CLOCK) {
			now += ((uint64_t)(ctrl >> 4) + 1) * CLOCK_STEP_NS;
			pyfwd_clock_set(ctx, now);
			pyfwd_flows_expire(ctx);
		}
		done = run_on(ctx, harness_workers ? harness_workers : 1, n,
			      &f, &f2, &buf2, &r);
		check(&r, done, data + off, (uint32_t)len,
		      done == &f ? buf : NULL);
		check_slots(ctx, 0);
		punted += r.verdict == PYFWD_VERDICT_PUNT;
		if (report)
			report(&r, arg);
		free(buf);
		free(buf2);
		off += len;
		n++;
	}
	/* Every punted frame waits for Python, whole or cut to the ring's
	 * snap length, as many as the ring held. */
	while ((k = pyfwd_punt_drain(ctx, pbuf, sizeof(pbuf), plens, 64))) {
		for (i = 0; i < k; i++)
			if (!plens[i] || plens[i] > sizeof(pbuf))
				abort();
		drained += k;
	}
	if (drained > punted || (punted && !drained))
		abort();
	pyfwd_stats_read(ctx, &st);
	if (st.frames != n || st.verdict[0] + st.verdict[1] + st.verdict[2] +
	    st.verdict[3] != n ||
	    (s->snat.port_hi && st.flows.snat_ports_used >
	     (uint64_t)(s->snat.port_hi - s->snat.port_lo + 1)))
		abort();
	/* past any timeout: every entry expires, every slot is free */
	pyfwd_clock_set(ctx, 1ull << 63);
	pyfwd_flows_expire(ctx);
	check_slots(ctx, 1);
	pyfwd_ctx_destroy(ctx);
	return n;
}
