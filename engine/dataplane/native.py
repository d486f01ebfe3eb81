"""The only module that touches the cffi extension (pyfwd._fastpath).

It loads the extension, turns negative C returns into DataplaneError and
finds the compiled XDP objects.  Everything above it speaks Python values.
"""

import importlib.resources
import os

import numpy as np

from pyfwd.errors import BuildError, DataplaneError

try:
    from pyfwd._fastpath import ffi, lib
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


def maglev_fill(size, offsets, skips, turns):
    """Fill a Maglev table in C (scheduler.maglev_table gives the inputs).

    @param size the table size, a prime
    @param offsets, skips each real's permutation: offset + j * skip
    @param turns the real index of each turn, at most `size` of them
    @return numpy.uint16 array of `size` entries; each turn's real claims
        the next free entry of its permutation, NO_REAL where none did

    Raises DataplaneError (EINVAL) for values out of range or a size that
    is not prime.
    """
    table = np.empty(size, dtype=np.uint16)
    cursors = np.array(offsets, dtype=np.uint32)     # written by C
    skips = np.ascontiguousarray(skips, dtype=np.uint32)
    turns = np.ascontiguousarray(turns, dtype=np.uint32)
    if skips.size != cursors.size:
        raise ValueError(f"{cursors.size} offsets and {skips.size} skips")
    check(lib.pyfwd_maglev_fill(
        ffi.from_buffer("uint16_t[]", table), size,
        ffi.from_buffer("uint32_t[]", cursors),
        ffi.from_buffer("uint32_t[]", skips), cursors.size,
        ffi.from_buffer("uint32_t[]", turns), turns.size),
        f"filling a Maglev table of {size} entries")
    return table


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


__all__ = ["ffi", "lib", "check", "VERDICTS", "REASONS", "maglev_fill",
           "bpf_object_path", "bpf_object_check"]
