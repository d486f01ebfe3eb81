/* SPDX-License-Identifier: MIT */
/*
 * decap.c - a TUN real server's XDP decapsulation (bpf/decap.bpf.c):
 * attached by netlink, so that it stays when `pyfwd realserver setup`
 * has exited (pyfwd_xdp_cleanup detaches it); and what is attached.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>

#include "io/io.h"

#define DECAP_PROG "pyfwd_xdp_decap"

int pyfwd_decap_attach(const char *path, uint32_t ifindex, uint32_t xdp_mode,
		       uint32_t *prog_id, char *errbuf, size_t errlen)
{
	uint32_t flags = XDP_FLAGS_UPDATE_IF_NOEXIST;
	struct bpf_program *prog;
	struct bpf_object *obj;
	int err;

	*prog_id = 0;
	if (xdp_mode == PYFWD_XDP_MODE_NATIVE)
		flags |= XDP_FLAGS_DRV_MODE;
	else if (xdp_mode == PYFWD_XDP_MODE_GENERIC)
		flags |= XDP_FLAGS_SKB_MODE;
	obj = bpf_object__open_file(path, NULL);
	err = libbpf_get_error(obj);
	if (err) {
		say(errbuf, errlen, "opening %s", path);
		return err;
	}
	err = bpf_object__load(obj);
	if (err) {
		say(errbuf, errlen, "loading %s (verifier)", path);
		goto out;
	}
	prog = bpf_object__find_program_by_name(obj, DECAP_PROG);
	if (!prog) {
		say(errbuf, errlen, "%s lacks %s", path, DECAP_PROG);
		err = -ENOENT;
		goto out;
	}
	err = bpf_xdp_attach((int)ifindex, bpf_program__fd(prog), flags, NULL);
	if (err) {
		say(errbuf, errlen, "attaching %s (another XDP program there?)",
		    DECAP_PROG);
		goto out;
	}
	err = bpf_xdp_query_id((int)ifindex, 0, prog_id);
	if (err)
		say(errbuf, errlen, "querying the program attached");
out:
	bpf_object__close(obj);	/* the attachment holds the program */
	return err;
}

int pyfwd_xdp_attached(uint32_t ifindex, uint32_t *prog_id, char *name,
		       size_t namelen)
{
	struct bpf_prog_info info;
	uint32_t len = sizeof(info);
	int fd, err;

	*prog_id = 0;
	if (namelen)
		name[0] = '\0';
	err = bpf_xdp_query_id((int)ifindex, 0, prog_id);
	if (err || !*prog_id)
		return err;
	fd = bpf_prog_get_fd_by_id(*prog_id);
	if (fd < 0)
		return -errno;
	memset(&info, 0, sizeof(info));
	err = bpf_obj_get_info_by_fd(fd, &info, &len);
	close(fd);
	if (err)
		return err;
	if (namelen)
		snprintf(name, namelen, "%s", info.name);
	return 0;
}
