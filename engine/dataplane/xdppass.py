"""An XDP program that passes every frame, for the veth peers of a lab or
a bench: veth hands what XDP sends (XDP_TX, a redirect) to its peer only
when the peer runs an XDP program in driver mode (dataplane.vethpeer), so
the XDP fast path needs one on the far end of each veth it sends on.  A
NIC needs nothing of the kind.

    with IPRoute() as ipr:          # in the peer's namespace
        on_peer(ipr, "sw-lb0")      # attach; on_peer(ipr, name, False) removes

Loaded with bpf(2) from two instructions (r0 = XDP_PASS; exit): no object
file, no compiler.
"""

import ctypes
import os
import struct

__all__ = ["load", "on_peer"]

_NR_BPF = {"x86_64": 321, "aarch64": 280}
_BPF_PROG_LOAD, _BPF_PROG_TYPE_XDP, _XDP_PASS = 5, 6, 2


def load() -> int:
    """A loaded pass-everything XDP program: its fd (the caller closes it).
    OSError if the kernel refuses (no root, no BPF)."""
    nr = _NR_BPF.get(os.uname().machine)
    if nr is None:
        raise OSError(f"bpf(2) syscall number unknown on "
                      f"{os.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    # BPF_MOV64_IMM(r0, XDP_PASS); BPF_EXIT_INSN()
    insns = ctypes.create_string_buffer(struct.pack(
        "<BBhiBBhi", 0xb7, 0, 0, _XDP_PASS, 0x95, 0, 0, 0), 16)
    licence = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQ", attr, 0, _BPF_PROG_TYPE_XDP, 2,
                     ctypes.addressof(insns), ctypes.addressof(licence))
    fd = libc.syscall(nr, _BPF_PROG_LOAD, attr, len(attr))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_PROG_LOAD: {os.strerror(err)}")
    return fd


def on_peer(ipr, ifname: str, on: bool = True) -> None:
    """Attach the pass program to ``ifname`` (driver mode) through the
    pyroute2 IPRoute ``ipr`` of its namespace, or with on=False take any
    XDP program off it.  NetlinkError / OSError as the kernel says."""
    idx, = ipr.link_lookup(ifname=ifname)
    fd = load() if on else -1
    try:
        ipr.link("set", index=idx, xdp_fd=fd)
    finally:
        if fd >= 0:
            os.close(fd)
