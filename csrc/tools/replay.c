/* SPDX-License-Identifier: MIT */
/*
 * replay.c - run inputs from files through the core, outside Python.
 *
 * Built with -fsanitize=address,undefined (make -C csrc replay) to replay
 * the corpus (tests/cases/corpus.py: every packet case, and what the
 * fuzzer found), or with coverage (make -C csrc cover) to measure what
 * it reaches.  Inputs and set-ups are harness.h's.
 *
 *   replay [-w WORKERS] -s SETUP [-s SETUP]... FILE...
 *
 * -w: every context gets WORKERS workers, the records run on each in
 * turn, and frames of flows another worker owns are handed to it
 * (harness.h).
 *
 * Prints "FILE<TAB>REASON REASON ..." per file, the reason of each of its
 * frames in order, and exits 0; aborts when the core breaks a promise;
 * exits 2 on a usage or I/O error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/harness.h"

static int read_file(const char *path, uint8_t **data, size_t *size)
{
	FILE *fp = fopen(path, "rb");
	long n;

	if (!fp)
		return -errno;
	if (fseek(fp, 0, SEEK_END) || (n = ftell(fp)) < 0 ||
	    fseek(fp, 0, SEEK_SET) || n > 1 << 24) {
		fclose(fp);
		return -EIO;
	}
	*data = malloc(n ? (size_t)n : 1);
	*size = (size_t)n;
	if (!*data || (n && fread(*data, 1, (size_t)n, fp) != (size_t)n)) {
		free(*data);
		fclose(fp);
		return -EIO;
	}
	fclose(fp);
	return 0;
}

static void print_reason(const struct pyfwd_result *r, void *arg)
{
	int *first = arg;

	printf("%s%s", *first ? "" : " ", pyfwd_reason_name(r->reason));
	*first = 0;
}

int main(int argc, char **argv)
{
	int opt, err, i, first;
	uint8_t *data;
	size_t size;

	while ((opt = getopt(argc, argv, "s:w:")) != -1) {
		if (opt == 'w') {
			harness_workers = (uint16_t)atoi(optarg);
			err = harness_workers >= 1 &&
			      harness_workers <= PYFWD_WORKERS_MAX ? 0 : -EINVAL;
		} else {
			err = opt == 's' ? harness_setup_load(optarg) : -EINVAL;
		}
		if (err) {
			fprintf(stderr,
				"usage: %s [-w N] -s SETUP... FILE... "
				"(%s%s%s)\n", argv[0], optarg ? optarg : "",
				optarg ? ": " : "", strerror(-err));
			return 2;
		}
	}
	for (i = optind; i < argc; i++) {
		err = read_file(argv[i], &data, &size);
		if (err) {
			fprintf(stderr, "replay: %s: %s\n", argv[i],
				strerror(-err));
			return 2;
		}
		printf("%s\t", argv[i]);
		first = 1;
		harness_run(data, size, print_reason, &first);
		printf("\n");
		free(data);
	}
	return 0;
}
