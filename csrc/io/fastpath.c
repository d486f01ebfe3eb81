/* SPDX-License-Identifier: MIT */
/*
 * fastpath.c - the XDP fast path's set-up (set-up code, not per packet):
 * its maps found in the loaded steering object, the mmapped arrays, the
 * switch turned on.  What goes into the maps and when: fastmap.c; the
 * tests' run of the program on one frame: steer.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "fastmap.h"
#include "io/xsk.h"
#include "pyfwd_fast.h"

static void *map_mmap(struct bpf_object *obj, const char *name,
		      size_t *size)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, name);
	long page = sysconf(_SC_PAGESIZE);
	void *p;

	if (!map)
		return NULL;
	*size = ((size_t)bpf_map__value_size(map) *
		 bpf_map__max_entries(map) + page - 1) & ~(size_t)(page - 1);
	p = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED,
		 bpf_map__fd(map), 0);
	return p == MAP_FAILED ? NULL : p;
}

int pyfwd_fastpath_open(struct pyfwd_ctx *ctx)
{
	struct xsk_io *io = ctx->io;
	struct fast_cfg on = { .on = 1 };
	struct fastmap *m;
	uint32_t zero = 0, s;
	int cfg_fd, ports_fd, err, ncpus = libbpf_num_possible_cpus();

	if (ctx->io_kind != IO_XSK)
		return -ENOTCONN;
	if (ctx->fast)
		return -EBUSY;
	if (ncpus <= 0 || ncpus > PYFWD_FAST_CPUS_MAX)
		return ncpus < 0 ? ncpus : -E2BIG;
	m = calloc(1, sizeof(*m) + ctx->cfg.workers * sizeof(m->w[0]));
	if (!m)
		return -ENOMEM;
	m->ncpus = (uint32_t)ncpus;
	m->flows_fd = bpf_object__find_map_fd_by_name(io->obj, "fast_flows");
	m->stats_fd = bpf_object__find_map_fd_by_name(io->obj, "fast_stats");
	m->reals_fd = bpf_object__find_map_fd_by_name(io->obj, "fast_reals");
	cfg_fd = bpf_object__find_map_fd_by_name(io->obj, "fast_cfg");
	if (m->flows_fd < 0 || m->stats_fd < 0 || m->reals_fd < 0 ||
	    cfg_fd < 0) {
		err = -ENOENT;
		goto err;
	}
	m->seen = map_mmap(io->obj, "fast_seen", &m->seen_size);
	m->gens = map_mmap(io->obj, "fast_gens", &m->gens_size);
	if (!m->seen || !m->gens) {
		err = errno ? -errno : -ENOENT;
		goto err;
	}
	ports_fd = bpf_object__find_map_fd_by_name(io->obj, "fast_ports");
	for (s = 0; s < io->nifaces; s++) {
		m->ifindex[s] = io->ifindex[s];
		if (ports_fd < 0 || bpf_map_update_elem(ports_fd, &s,
							&io->ifindex[s],
							BPF_ANY)) {
			err = ports_fd < 0 ? -ENOENT : -errno;
			goto err;
		}
	}
	err = fastmap_start(ctx, m);
	if (err) {
		fastmap_close(ctx);
		return err;
	}
	if (bpf_map_update_elem(cfg_fd, &zero, &on, BPF_ANY)) {
		err = -errno;
		fastmap_close(ctx);
		return err;
	}
	return 0;

err:
	fastmap_free(m);
	return err;
}

uint64_t pyfwd_fastpath_flows(const struct pyfwd_ctx *ctx)
{
	uint64_t n = 0;
	uint32_t i;

	if (!ctx->fast)
		return 0;
	for (i = 0; i < ctx->fast->nworkers; i++)
		n += FAST_FLOWS_MAX / ctx->fast->nworkers -
		     ctx->fast->w[i].nfree;
	return n;
}
