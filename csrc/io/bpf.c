/* SPDX-License-Identifier: MIT */
/*
 * bpf.c - BPF objects through libbpf (set-up code only): loading the
 * steering object (bpf/steer.bpf.c) with just the programs a backend
 * attaches, and `pyfwd doctor`'s check that an object passes the verifier.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <bpf/libbpf.h>

#include "io/io.h"

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

/* libbpf's print callback is global: keep its last warning for errbuf. */
static __thread char last_msg[512];

static int keep_last(enum libbpf_print_level level, const char *fmt,
		     va_list ap)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	return vsnprintf(last_msg, sizeof(last_msg), fmt, ap);
}

int pyfwd_bpf_object_check(const char *path, char *errbuf, size_t errlen)
{
	libbpf_print_fn_t old = libbpf_set_print(keep_last);
	struct bpf_object *obj;
	int err;

	last_msg[0] = '\0';
	obj = bpf_object__open_file(path, NULL);
	err = libbpf_get_error(obj);
	if (err) {
		obj = NULL;
		goto out;
	}
	err = bpf_object__load(obj);
	bpf_object__close(obj);
out:
	libbpf_set_print(old);
	if (errbuf && errlen) {
		snprintf(errbuf, errlen, "%s", last_msg);
		/* libbpf ends its lines with a newline: the caller adds its own */
		errbuf[strcspn(errbuf, "\n")] = '\0';
	}
	return err;
}
