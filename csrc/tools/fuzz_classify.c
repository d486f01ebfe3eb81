/* SPDX-License-Identifier: MIT */
/*
 * fuzz_classify.c - libFuzzer target for the core (make -C csrc fuzz).
 *
 * The set-ups come from PYFWD_FUZZ_SETUPS (a colon-separated list of
 * files, tests/cases/corpus.py writes them: DR, two-arm NAT and SNAT,
 * IPv4 and IPv6); each input is a sequence of frames on a fresh context
 * (harness.h), so that the fuzzer reaches the return path, ICMP errors
 * and SNAT's port allocation, which need a flow first.  ASan and UBSan
 * turn a read past the end or undefined behaviour into a crash; the
 * harness aborts when a result breaks one of the core's promises.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/harness.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *list = getenv("PYFWD_FUZZ_SETUPS");
	int err;

	(void)argc;
	(void)argv;
	err = list ? harness_setups_load(list) : -2;
	if (err) {
		fprintf(stderr, "fuzz_classify: PYFWD_FUZZ_SETUPS=%s: %s\n",
			list ? list : "(unset)", strerror(-err));
		exit(2);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	harness_run(data, size, NULL, NULL);
	return 0;
}
