"""The XDP fast path (csrc/bpf/fastpath.h, csrc/fastmap.c): established
flows rewritten and sent by the steering program itself, from BPF maps the
C core fills.  The core keeps owning connection tracking; the maps are its
cache.  Off by default (`pyfwd start --fastpath xdp`, or [engine]
fastpath = "xdp", turns it on at start; a reload does not change it).

`enable(xsk)` turns it on for an open AF_XDP backend, before its loops
start; it goes with the backend.  `test_run` runs the XDP program on one
frame (BPF_PROG_TEST_RUN), as tests/cases/test_fastpath_cases.py does for
every packet case.  Its counters are the core's (Core.stats(): fast_*),
and what it carried counts in frames, forward and flow_hits as well.
"""

from . import native as _native
from .native import ffi, lib

MODES = ("off", "xdp")
# Entries of the fast path's flow map (DR: one per flow, NAT/SNAT two).
FLOWS_MAX = lib.PYFWD_FAST_FLOWS_MAX
# The XDP actions the program returns (linux/bpf.h).
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
ACTIONS = {XDP_ABORTED: "aborted", XDP_DROP: "drop", XDP_PASS: "pass",
           XDP_TX: "tx", XDP_REDIRECT: "redirect"}


def enable(xsk):
    """Turn the fast path on for an open io.Xsk (before start()).

    Raises DataplaneError: ENOTCONN when the backend is not AF_XDP (the
    AF_PACKET backend has no XDP program), EBUSY when it is on already."""
    _native.check(lib.pyfwd_fastpath_open(xsk.core.ctx),
                  "turning the XDP fast path on")


def flows(core):
    """Flows in the fast path's map now."""
    return lib.pyfwd_fastpath_flows(core.ctx)


def test_run(core, frame, in_if=0):
    """(XDP action, the frame as the program left it) for one frame run
    through the open AF_XDP backend's program as received on interface
    slot in_if.  DataplaneError if the kernel refuses the run."""
    out = ffi.new("uint8_t[]", len(frame))
    out_len = ffi.new("uint32_t *", len(frame))
    action = ffi.new("uint32_t *")
    _native.check(lib.pyfwd_fastpath_test_run(
        core.ctx, frame, len(frame), in_if, out, out_len, action),
        "running the XDP program")
    return action[0], bytes(ffi.buffer(out, out_len[0]))
