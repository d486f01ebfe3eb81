"""`pyfwd doctor`: is this machine ready to run pyfwd?

Each check returns a Check(name, ok, detail); nothing here changes the
machine.
"""

import os
import socket
from dataclasses import dataclass

AF_XDP = 44   # not in Python's socket module


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True   # False: a warning, pyfwd runs without it


def _native():
    try:
        from ..dataplane import native as _native
    except Exception as exc:  # BuildError, or a broken .so
        return Check("C extension pyfwd._fastpath", False, str(exc)), None
    return Check("C extension pyfwd._fastpath", True,
                 f"loaded, {len(_native.REASONS)} verdict reasons"), _native


def _xdp_object(native):
    if native is None:
        return [Check("XDP program", False, "needs the C extension")]
    try:
        path = native.bpf_object_path("steer")
    except Exception as exc:
        return [Check("XDP program", False, str(exc))]
    found = Check("XDP program", True, path)
    if os.geteuid() != 0:
        return [found, Check("XDP verifier", False, "needs root to load")]
    try:
        native.bpf_object_check(path)
    except Exception as exc:
        return [found, Check("XDP verifier", False, str(exc))]
    return [found, Check("XDP verifier", True,
                         "steer.bpf.o loads on this kernel")]


def _af_xdp():
    try:
        s = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
    except OSError as exc:
        return Check("AF_XDP sockets", False, exc.strerror or str(exc))
    s.close()
    return Check("AF_XDP sockets", True, "the kernel creates them")


def _bpffs():
    try:
        with open("/proc/mounts", encoding="ascii") as f:
            mounted = any(line.split()[1:3] == ["/sys/fs/bpf", "bpf"]
                          for line in f)
    except OSError as exc:
        return Check("bpffs", False, str(exc))
    return Check("bpffs", mounted, "mounted at /sys/fs/bpf" if mounted else
                 "not mounted (libxdp then runs one program per interface, "
                 "no dispatcher): mount -t bpf bpf /sys/fs/bpf",
                 required=False)


def checks():
    """All checks, in order."""
    first, native = _native()
    root = os.geteuid() == 0
    return [Check("root", root, "yes" if root else
                  "no: the engine and the lab need root"),
            first, *_xdp_object(native), _af_xdp(), _bpffs()]
