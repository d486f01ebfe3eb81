/* SPDX-License-Identifier: MIT */
/*
 * steer.c - the steering maps of the BPF object (bpf/steer.bpf.c) that
 * both backends load: what the kernel hands the engine (AF_XDP) or keeps
 * away from its own stack (AF_PACKET).  Set-up code, not per packet.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf/steer.h"
#include "core.h"

void say(char *errbuf, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!errbuf || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
}

static int steer_maps_find(struct bpf_object *obj, struct steer_maps *m)
{
	m->addrs = bpf_object__find_map_fd_by_name(obj, "steer_addrs");
	m->svcs = bpf_object__find_map_fd_by_name(obj, "steer_svcs");
	m->rsvcs = bpf_object__find_map_fd_by_name(obj, "steer_rsvcs");
	m->snat = bpf_object__find_map_fd_by_name(obj, "steer_snat");
	if (m->addrs < 0 || m->svcs < 0 || m->rsvcs < 0 || m->snat < 0)
		return -ENOENT;
	return 0;
}

int steer_object_load(const char *path, const char *const *names,
		      struct bpf_program **progs, int n,
		      struct bpf_object **objp, struct steer_maps *maps,
		      char *errbuf, size_t errlen)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	struct bpf_program *p;
	int i, err = libbpf_get_error(obj);

	*objp = NULL;
	if (err) {
		say(errbuf, errlen, "opening %s", path);
		return err;
	}
	/* Only this backend's programs go through the verifier. */
	bpf_object__for_each_program(p, obj)
		bpf_program__set_autoload(p, false);
	for (i = 0; i < n; i++) {
		progs[i] = bpf_object__find_program_by_name(obj, names[i]);
		if (!progs[i]) {
			say(errbuf, errlen, "%s lacks %s", path, names[i]);
			err = -ENOENT;
			goto err;
		}
		bpf_program__set_autoload(progs[i], true);
	}
	err = bpf_object__load(obj);
	if (err) {
		say(errbuf, errlen, "loading %s (verifier)", path);
		goto err;
	}
	err = steer_maps_find(obj, maps);
	if (err) {
		say(errbuf, errlen, "%s lacks its steering maps", path);
		goto err;
	}
	*objp = obj;
	return 0;

err:
	bpf_object__close(obj);
	return err < 0 ? err : -EINVAL;
}

static void steer_keys(const struct pyfwd_vip *v, struct steer_addr *a,
		       struct steer_svc *s)
{
	memset(a, 0, sizeof(*a));
	memset(s, 0, sizeof(*s));
	memcpy(a->addr, v->addr, 16);
	a->family = v->family;
	memcpy(s->addr, v->addr, 16);
	s->family = v->family;
	s->proto = v->proto;
	s->port = htons(v->port);
}

/* Delete every key of map fd that want() rejects. */
static int prune(int fd, size_t ksize, const struct pyfwd_vip *vips,
		 uint32_t n, int svc)
{
	uint8_t key[sizeof(struct steer_svc)], next[sizeof(key)];
	struct steer_addr a;
	struct steer_svc s;
	void *prev = NULL;
	uint32_t i;
	int keep;

	while (!bpf_map_get_next_key(fd, prev, next)) {
		for (keep = 0, i = 0; i < n && !keep; i++) {
			steer_keys(&vips[i], &a, &s);
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

int pyfwd_steer(struct pyfwd_ctx *ctx, const struct pyfwd_vip *vips,
		uint32_t n, const struct pyfwd_vip *replies, uint32_t nreplies,
		const struct pyfwd_snat *snat)
{
	const struct steer_maps *io = &ctx->maps;
	struct steer_ports range;
	struct steer_addr a;
	struct steer_svc s;
	uint32_t i, one = 1, nsnat = 0;
	struct pyfwd_vip snat_as_vip = { 0 };
	int err;

	if (ctx->io_kind == IO_NONE)
		return -ENOTCONN;
	if (n > STEER_VIPS_MAX || nreplies > STEER_REALS_MAX)
		return -E2BIG;
	/* Add first, then remove: what stays is never unsteered. */
	for (i = 0; i < n; i++) {
		steer_keys(&vips[i], &a, &s);
		if (bpf_map_update_elem(io->addrs, &a, &one, BPF_ANY) ||
		    bpf_map_update_elem(io->svcs, &s, &one, BPF_ANY))
			return -errno;
	}
	for (i = 0; i < nreplies; i++) {
		steer_keys(&replies[i], &a, &s);
		if (bpf_map_update_elem(io->rsvcs, &s, &one, BPF_ANY))
			return -errno;
	}
	if (snat && snat->port_hi) {
		memcpy(snat_as_vip.addr, snat->addr, 16);
		snat_as_vip.family = snat->family;
		steer_keys(&snat_as_vip, &a, &s);
		range.lo = snat->port_lo;
		range.hi = snat->port_hi;
		if (bpf_map_update_elem(io->snat, &a, &range, BPF_ANY))
			return -errno;
		nsnat = 1;
	}
	err = prune(io->svcs, sizeof(s), vips, n, 1);
	if (!err)
		err = prune(io->addrs, sizeof(a), vips, n, 0);
	if (!err)
		err = prune(io->rsvcs, sizeof(s), replies, nreplies, 1);
	if (!err)
		err = prune(io->snat, sizeof(a), &snat_as_vip, nsnat, 0);
	return err;
}

