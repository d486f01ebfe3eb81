/* SPDX-License-Identifier: MIT */
/*
 * bpfload.c - BPF object handling through libbpf (set-up code only).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <bpf/libbpf.h>

#include "pyfwd.h"

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
