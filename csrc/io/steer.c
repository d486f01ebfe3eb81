/* SPDX-License-Identifier: MIT */
/*
 * steer.c - the steering maps of the BPF object (bpf/steer.bpf.c) that
 * both backends load: what the kernel hands the engine (AF_XDP) or keeps
 * away from its own stack (AF_PACKET).  Set-up code, not per packet; and
 * the tests' runs of the XDP program on one frame (BPF_PROG_TEST_RUN),
 * the steering's and the fast path's.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf/steer.h"
#include "io/io.h"
#include "io/xsk.h"
#include "pyfwd_fast.h"

_Static_assert(STEER_AF_INET == PYFWD_AF_INET &&
	       STEER_AF_INET6 == PYFWD_AF_INET6, "steer.h families");
_Static_assert(sizeof(struct steer_svc) == 20 &&
	       sizeof(struct steer_addr) == 20, "steering map keys");
_Static_assert(sizeof(struct steer_vip) == 16384, "steer_vips value");

int steer_maps_find(struct bpf_object *obj, struct steer_maps *m)
{
	m->vips = bpf_object__find_map_fd_by_name(obj, "steer_vips");
	m->rsvcs = bpf_object__find_map_fd_by_name(obj, "steer_rsvcs");
	m->snat = bpf_object__find_map_fd_by_name(obj, "steer_snat");
	if (m->vips < 0 || m->rsvcs < 0 || m->snat < 0)
		return -ENOENT;
	return 0;
}

/* The map keys of an endpoint: its address, and its service. */
static void steer_keys(const struct pyfwd_endpoint *e, struct steer_addr *a,
		       struct steer_svc *s)
{
	memset(a, 0, sizeof(*a));
	memset(s, 0, sizeof(*s));
	memcpy(a->addr, e->addr, 16);
	a->family = e->family;
	memcpy(s->addr, e->addr, 16);
	s->family = e->family;
	s->proto = e->proto;
	s->port = htons(e->port);
}

/*
 * Delete every key of map fd that is none of the n endpoints' (their
 * service key if svc, else their address key).
 */
static int prune(int fd, const struct pyfwd_endpoint *eps, uint32_t n,
		 int svc)
{
	uint8_t key[sizeof(struct steer_svc)], next[sizeof(key)];
	size_t ksize = svc ? sizeof(struct steer_svc) :
			     sizeof(struct steer_addr);
	struct steer_addr a;
	struct steer_svc s;
	void *prev = NULL;
	uint32_t i;
	int keep;

	while (!bpf_map_get_next_key(fd, prev, next)) {
		for (keep = 0, i = 0; i < n && !keep; i++) {
			steer_keys(&eps[i], &a, &s);
			keep = !memcmp(next, svc ? (void *)&s : (void *)&a,
				       ksize);
		}
		if (!keep) {
			if (bpf_map_delete_elem(fd, next))
				return -errno;
			continue;	/* the iteration restarts from prev */
		}
		memcpy(key, next, ksize);
		prev = key;
	}
	return 0;
}

/*
 * The steer_vips entry of vips[at]'s address into *a and *v: the ports
 * of every VIP service on it.  0, or 1 when an earlier one has the same
 * address (its entry is made already).
 */
static int vip_entry(const struct pyfwd_endpoint *vips, uint32_t n,
		     uint32_t at, struct steer_addr *a, struct steer_vip *v)
{
	struct steer_addr b;
	struct steer_svc s;
	uint32_t i;

	steer_keys(&vips[at], a, &s);
	for (i = 0; i < at; i++) {
		steer_keys(&vips[i], &b, &s);
		if (!memcmp(&b, a, sizeof(b)))
			return 1;
	}
	memset(v, 0, sizeof(*v));
	for (i = at; i < n; i++) {
		uint64_t *bits = vips[i].proto == IPPROTO_TCP ? v->tcp : v->udp;

		steer_keys(&vips[i], &b, &s);
		if (memcmp(&b, a, sizeof(b)) ||
		    (vips[i].proto != IPPROTO_TCP &&
		     vips[i].proto != IPPROTO_UDP))
			continue;
		bits[vips[i].port >> 6] |= 1ULL << (vips[i].port & 63);
	}
	return 0;
}

int pyfwd_steer_set(struct pyfwd_ctx *ctx, const struct pyfwd_endpoint *vips,
		    uint32_t nvips, const struct pyfwd_endpoint *replies,
		    uint32_t nreplies, const struct pyfwd_snat *snat)
{
	const struct steer_maps *m = &ctx->maps;
	struct pyfwd_endpoint snat_addr = { 0 };
	struct steer_ports range;
	struct steer_vip *v;
	struct steer_addr a;
	struct steer_svc s;
	uint32_t i, one = 1, nsnat = 0;
	int err;

	if (ctx->io_kind == IO_NONE)
		return -ENOTCONN;
	if (nvips > STEER_VIPS_MAX || nreplies > STEER_REALS_MAX)
		return -E2BIG;
	v = malloc(sizeof(*v));
	if (!v)
		return -ENOMEM;
	/* Add first, then remove: what stays is never unsteered.  An
	 * address's ports are replaced whole: one update each. */
	for (i = 0; i < nvips; i++) {
		if (vip_entry(vips, nvips, i, &a, v))
			continue;
		if (bpf_map_update_elem(m->vips, &a, v, BPF_ANY)) {
			err = -errno;
			free(v);
			return err;
		}
	}
	free(v);
	for (i = 0; i < nreplies; i++) {
		steer_keys(&replies[i], &a, &s);
		if (bpf_map_update_elem(m->rsvcs, &s, &one, BPF_ANY))
			return -errno;
	}
	if (snat && snat->port_hi) {
		/* SNAT's map is keyed by its address; the range is the value */
		memcpy(snat_addr.addr, snat->addr, 16);
		snat_addr.family = snat->family;
		steer_keys(&snat_addr, &a, &s);
		range.lo = snat->port_lo;
		range.hi = snat->port_hi;
		if (bpf_map_update_elem(m->snat, &a, &range, BPF_ANY))
			return -errno;
		nsnat = 1;
	}
	err = prune(m->vips, vips, nvips, 0);
	if (!err)
		err = prune(m->rsvcs, replies, nreplies, 1);
	if (!err)
		err = prune(m->snat, &snat_addr, nsnat, 0);
	return err;
}

/* The open AF_XDP backend's program run on opts' frame: its XDP action
 * in *action.  0 or -errno (-ENOTCONN: no AF_XDP backend open). */
static int xdp_test_run(struct pyfwd_ctx *ctx, struct bpf_test_run_opts *opts,
			uint32_t *action)
{
	struct bpf_program *prog;
	struct xsk_io *io = ctx->io;

	if (ctx->io_kind != IO_XSK)
		return -ENOTCONN;
	prog = bpf_object__find_program_by_name(io->obj, "pyfwd_xdp_steer");
	if (!prog)
		return -ENOENT;
	if (bpf_prog_test_run_opts(bpf_program__fd(prog), opts))
		return -errno;
	*action = opts->retval;
	return 0;
}

int pyfwd_steer_test_run(struct pyfwd_ctx *ctx, const uint8_t *frame,
			 uint32_t len, uint32_t *action)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame,
		    .data_size_in = len, .repeat = 1);

	return xdp_test_run(ctx, &opts, action);
}

int pyfwd_fastpath_test_run(struct pyfwd_ctx *ctx, const uint8_t *frame,
			    uint32_t len, uint32_t in_if, uint8_t *out,
			    uint32_t *out_len, uint32_t *action)
{
	struct xdp_md md = { 0 };
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame,
		    .data_size_in = len, .data_out = out,
		    .data_size_out = *out_len, .ctx_in = &md,
		    .ctx_size_in = sizeof(md), .repeat = 1);
	int err;

	if (ctx->io_kind != IO_XSK)
		return -ENOTCONN;
	if (in_if >= ((struct xsk_io *)ctx->io)->nifaces)
		return -EINVAL;
	md.ingress_ifindex = ((struct xsk_io *)ctx->io)->ifindex[in_if];
	md.data_end = len;
	err = xdp_test_run(ctx, &opts, action);
	if (!err)
		*out_len = opts.data_size_out;
	return err;
}
