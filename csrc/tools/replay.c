/* SPDX-License-Identifier: MIT */
/*
 * replay.c - run frames from files through the core, outside Python.
 *
 * Built with -fsanitize=address,undefined (make -C csrc replay) to replay
 * the malformed-frame corpus: each file is one frame, read into a buffer
 * of exactly its size so that any read past its end is caught.
 *
 *   replay [-m MAC] [-v ADDR:PORT/PROTO]... [-V ADDR:PORT/PROTO]... FILE...
 *
 * Every -v VIP schedules to one real server (id 0), so forwarded frames
 * go through the flow table and the rewrite too; a -V VIP has no real.
 * Prints "REASON<TAB>FILE" per frame, then runs the frames again flagged
 * as a veth's (which must agree) and as one batch, and exits 0; 1 on a
 * disagreement; 2 on a usage or I/O error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"
#include "pyfwd.h"

#define VIPS_MAX 64

static int parse_vip(const char *s, struct pyfwd_vip *v)
{
	char host[64], proto[8];
	const char *colon, *slash;
	unsigned long port;
	size_t hlen;

	memset(v, 0, sizeof(*v));
	slash = strrchr(s, '/');
	if (!slash)
		return -1;
	colon = slash;
	while (colon > s && *colon != ':')
		colon--;
	if (*colon != ':')
		return -1;
	hlen = (size_t)(colon - s);
	if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
		s++;
		hlen -= 2;
	}
	if (!hlen || hlen >= sizeof(host) ||
	    (size_t)(slash - colon - 1) == 0 || strlen(slash + 1) >= sizeof(proto))
		return -1;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	port = strtoul(colon + 1, NULL, 10);
	strcpy(proto, slash + 1);
	if (!port || port > 65535)
		return -1;
	v->port = (uint16_t)port;
	if (!strcmp(proto, "tcp"))
		v->proto = PROTO_TCP;
	else if (!strcmp(proto, "udp"))
		v->proto = PROTO_UDP;
	else
		return -1;
	if (inet_pton(AF_INET, host, v->addr) == 1)
		v->family = PYFWD_AF_INET;
	else if (inet_pton(AF_INET6, host, v->addr) == 1)
		v->family = PYFWD_AF_INET6;
	else
		return -1;
	return 0;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
	unsigned int b[6];
	int i;

	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4],
		   &b[5]) != 6)
		return -1;
	for (i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
	return 0;
}

/* The whole file in a buffer of exactly its size (NULL, 0 when empty). */
static int read_frame(const char *path, struct pyfwd_frame *f)
{
	FILE *fp = fopen(path, "rb");
	long size;

	if (!fp)
		return -errno;
	if (fseek(fp, 0, SEEK_END) || (size = ftell(fp)) < 0 ||
	    fseek(fp, 0, SEEK_SET) || size > 1 << 20) {
		fclose(fp);
		return -EIO;
	}
	f->data = size ? malloc((size_t)size) : NULL;
	f->len = f->cap = (uint32_t)size;
	if ((size && !f->data) ||
	    (size && fread(f->data, 1, (size_t)size, fp) != (size_t)size)) {
		free(f->data);
		fclose(fp);
		return -EIO;
	}
	fclose(fp);
	return 0;
}

int main(int argc, char **argv)
{
	struct pyfwd_vip vips[VIPS_MAX];
	struct pyfwd_real real = { .mac = { 2, 0, 0, 0, 1, 0x11 },
				   .flags = PYFWD_REAL_F_USED };
	uint16_t ring[1] = { 0 };
	struct pyfwd_config cfg = { .flows = 4096 };
	struct pyfwd_frame *frames, *orig;
	struct pyfwd_result *res;
	struct pyfwd_ctx *ctx;
	uint32_t nvips = 0, n, i, bad = 0;
	int opt, err;

	while ((opt = getopt(argc, argv, "m:v:V:")) != -1) {
		if (opt == 'm' && !parse_mac(optarg, cfg.mac))
			continue;
		if ((opt == 'v' || opt == 'V') && nvips < VIPS_MAX &&
		    !parse_vip(optarg, &vips[nvips])) {
			vips[nvips].ring_len = opt == 'v';
			nvips++;
			continue;
		}
		fprintf(stderr, "usage: %s [-m MAC] [-v ADDR:PORT/PROTO]... "
			"[-V ADDR:PORT/PROTO]... FILE...\n", argv[0]);
		return 2;
	}
	n = (uint32_t)(argc - optind);
	frames = calloc(n ? n : 1, sizeof(*frames));
	orig = calloc(n ? n : 1, sizeof(*orig));
	res = calloc(n ? n : 1, sizeof(*res));
	if (!frames || !orig || !res)
		return 2;
	err = pyfwd_ctx_create(&cfg, &ctx);
	if (!err)
		err = pyfwd_tables_publish(ctx, vips, nvips, &real, 1, ring, 1);
	if (err) {
		fprintf(stderr, "replay: core set-up: %s\n", strerror(-err));
		return 2;
	}
	for (i = 0; i < n; i++) {
		err = read_frame(argv[optind + i], &frames[i]);
		if (!err)
			err = read_frame(argv[optind + i], &orig[i]);
		if (err) {
			fprintf(stderr, "replay: %s: %s\n", argv[optind + i],
				strerror(-err));
			return 2;
		}
		/* One at a time first, then all together: same answers. */
		pyfwd_core_burst(ctx, &frames[i], 1, &res[i]);
		printf("%s\t%s\n", pyfwd_reason_name(res[i].reason),
		       argv[optind + i]);
	}
	/*
	 * Forwarding rewrote some frames: each pass starts from the file.
	 * This one flags them as a veth's (csum.c reads the whole L4 packet):
	 * the same reasons.
	 */
	for (i = 0; i < n; i++) {
		struct pyfwd_result one = res[i];

		if (frames[i].len)
			memcpy(frames[i].data, orig[i].data, frames[i].len);
		frames[i].flags = PYFWD_FRAME_CSUM_PARTIAL;
		pyfwd_core_burst(ctx, &frames[i], 1, &res[i]);
		/* A forwarded frame now carries our MAC: compare the verdict */
		bad += one.reason != res[i].reason || one.vip != res[i].vip;
	}
	for (i = 0; i < n; i++)
		if (frames[i].len)
			memcpy(frames[i].data, orig[i].data, frames[i].len);
	pyfwd_core_burst(ctx, frames, n, res);
	for (i = 0; i < n; i++) {
		free(frames[i].data);
		free(orig[i].data);
	}
	free(frames);
	free(orig);
	free(res);
	pyfwd_ctx_destroy(ctx);
	if (bad) {
		fprintf(stderr, "replay: %u frames classified differently on "
			"a second pass\n", bad);
		return 1;
	}
	return 0;
}
