"""The only module that touches the cffi extension (pyfwd._fastpath).

It loads the extension, turns negative C returns into DataplaneError and
finds the compiled XDP objects.  Everything above it speaks Python values.
"""

import importlib.resources
import os

from .errors import BuildError, DataplaneError

try:
    from ._fastpath import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the install
    raise BuildError(
        "pyfwd's C extension pyfwd._fastpath is not built "
        f"({exc}); install the package with `pip install -e .` "
        "(see the README for the Debian packages it needs)") from exc

VERDICTS = ("pass", "punt", "forward", "drop")
REASONS = tuple(ffi.string(lib.pyfwd_reason_name(i)).decode()
                for i in range(lib.PYFWD_R_MAX))


def check(ret, what):
    """Return ret, or raise DataplaneError if it is a negative errno."""
    if ret < 0:
        code = -ret
        raise DataplaneError(code, f"{what}: {os.strerror(code)}")
    return ret


def bpf_object_path(name="steer"):
    """Path of an installed XDP object, e.g. bpf_object_path("steer")."""
    res = importlib.resources.files("pyfwd").joinpath(f"bpf/{name}.bpf.o")
    if not res.is_file():
        raise BuildError(f"XDP object {name}.bpf.o is not installed with "
                         "pyfwd; rebuild with `pip install -e .` (needs "
                         "clang)")
    return os.fspath(res)


def bpf_object_check(path):
    """Load an XDP object through the verifier and unload it.

    Needs CAP_BPF (root).  Raises DataplaneError with libbpf's message.
    """
    errbuf = ffi.new("char[]", 512)
    ret = lib.pyfwd_bpf_object_check(os.fsencode(path), errbuf, len(errbuf))
    if ret < 0:
        detail = ffi.string(errbuf).decode(errors="replace")
        raise DataplaneError(-ret, f"loading {path}: {os.strerror(-ret)}"
                             + (f" ({detail})" if detail else ""))


__all__ = ["ffi", "lib", "check", "VERDICTS", "REASONS", "bpf_object_path",
           "bpf_object_check"]
