"""A TUN real server's XDP decapsulation (csrc/bpf/decap.bpf.c, loaded by
csrc/io/decap.c): attach, ask what is attached, detach.  Needs root.

    prog_id = attach(ifindex)            # stays after this process ends
    attached(ifindex) -> (prog id, name) # (0, "") when none
    detach(ifindex)                      # io.xdp_cleanup
"""

import os

from . import native as _native
from .io import xdp_cleanup
from .native import ffi, lib
from ..errors import DataplaneError

PROGRAM = "pyfwd_xdp_decap"     # its name, as the kernel reports it
MODES = {"auto": lib.PYFWD_XDP_MODE_AUTO,
         "native": lib.PYFWD_XDP_MODE_NATIVE,
         "generic": lib.PYFWD_XDP_MODE_GENERIC}


def attach(ifindex, mode="auto"):
    """Attach pyfwd_xdp_decap to ifindex (by netlink: it outlives us).
    Returns its program id; DataplaneError (EBUSY/EEXIST: another XDP
    program is there) with libbpf's step that failed."""
    errbuf = ffi.new("char[]", 256)
    prog = ffi.new("uint32_t *")
    path = _native.bpf_object_path("decap")
    ret = lib.pyfwd_decap_attach(os.fsencode(path), ifindex, MODES[mode],
                                 prog, errbuf, len(errbuf))
    if ret < 0:
        what = ffi.string(errbuf).decode(errors="replace") or "attaching"
        raise DataplaneError(-ret, f"{what}: {os.strerror(-ret)}")
    return prog[0]


def attached(ifindex):
    """(id, name) of the XDP program attached to ifindex; (0, "")."""
    prog = ffi.new("uint32_t *")
    name = ffi.new("char[]", 32)
    _native.check(lib.pyfwd_xdp_attached(ifindex, prog, name, len(name)),
                  f"asking ifindex {ifindex} for its XDP program")
    return prog[0], ffi.string(name).decode(errors="replace")


def detach(ifindex):
    """Detach what is attached to ifindex (see io.xdp_cleanup)."""
    return xdp_cleanup(ifindex)


__all__ = ["PROGRAM", "MODES", "attach", "attached", "detach"]
