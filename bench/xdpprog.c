// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * xdpprog - attach the first XDP program of an object to an interface
 * through an unpinned bpf_link, so it goes when this process dies.
 *
 *   xdpprog OBJ IFACE [native|generic]
 *
 * Prints {"ready": ..., "mode": ...} once attached.  Then, for each line
 * read on stdin, prints the sum over CPUs of entry 0 of a per-CPU array
 * map named "count" (if the object has one) with a CLOCK_MONOTONIC
 * timestamp: {"t": seconds, "count": N}.  Exits on EOF, SIGINT, SIGTERM.
 */
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/if_link.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

static int die(const char *what, int err)
{
	fprintf(stderr, "xdpprog: %s: %s\n", what, strerror(err < 0 ? -err : err));
	return 1;
}

static unsigned long long count_sum(int fd, int ncpus, unsigned long long *v)
{
	unsigned long long sum = 0;
	__u32 key = 0;
	int i;

	if (bpf_map_lookup_elem(fd, &key, v))
		return 0;
	for (i = 0; i < ncpus; i++)
		sum += v[i];
	return sum;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 3 ? argv[3] : "native";
	struct bpf_object *obj;
	struct bpf_program *prog;
	LIBBPF_OPTS(bpf_link_create_opts, link_opts);
	struct bpf_map *map;
	unsigned long long *vals = NULL;
	int ifindex, link, fd = -1, ncpus = 0, err;
	char line[64];

	if (argc < 3) {
		fprintf(stderr, "usage: xdpprog OBJ IFACE [native|generic]\n");
		return 2;
	}
	ifindex = if_nametoindex(argv[2]);
	if (!ifindex)
		return die(argv[2], errno);
	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj)
		return die(argv[1], errno);
	err = bpf_object__load(obj);
	if (err)
		return die("load", err);
	prog = bpf_object__next_program(obj, NULL);
	if (!prog)
		return die("no program", ENOENT);
	/* the link fd is never pinned: the kernel detaches it at our exit */
	link_opts.flags = strcmp(mode, "generic") ? XDP_FLAGS_DRV_MODE :
						   XDP_FLAGS_SKB_MODE;
	link = bpf_link_create(bpf_program__fd(prog), ifindex, BPF_XDP,
			       &link_opts);
	if (link < 0)
		return die("attach", link);
	map = bpf_object__find_map_by_name(obj, "count");
	if (map) {
		fd = bpf_map__fd(map);
		ncpus = libbpf_num_possible_cpus();
		vals = calloc(ncpus, sizeof(*vals));
		if (!vals)
			return die("calloc", ENOMEM);
	}
	printf("{\"ready\": \"%s\", \"iface\": \"%s\", \"mode\": \"%s\"}\n",
	       bpf_program__name(prog), argv[2], mode);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		struct timespec ts;
		unsigned long long n;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		n = fd >= 0 ? count_sum(fd, ncpus, vals) : 0;
		printf("{\"t\": %ld.%09ld, \"count\": %llu}\n",
		       (long)ts.tv_sec, ts.tv_nsec, n);
		fflush(stdout);
	}
	return 0;
}
