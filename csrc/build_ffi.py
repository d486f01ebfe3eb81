"""cffi build script for pyfwd._fastpath (out-of-line, API mode).

The cdef is the part of csrc/pyfwd.h between the cffi:begin/cffi:end
markers, so the header stays the single description of the boundary.

The sources are the layout itself: csrc/*.c is the core (pure, no I/O:
the Makefile's sanitizer and fuzzing builds take the same files), csrc/io/
the I/O backends against libxdp and libbpf.
"""

import glob
import os
import re

from cffi import FFI

CSRC = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(CSRC, "pyfwd.h")
# The boundary's other parts (pyfwd.h keeps under its size): the fast
# path; several workers (flow owners, hand-over); L4 TUN; listing flows.
HEADERS = (HEADER, os.path.join(CSRC, "pyfwd_fast.h"),
           os.path.join(CSRC, "pyfwd_mq.h"),
           os.path.join(CSRC, "pyfwd_tun.h"),
           os.path.join(CSRC, "pyfwd_flows.h"))


def sources():
    """The core's C files, then the I/O backends', sorted."""
    return [os.path.relpath(p) for d in ("", "io")
            for p in sorted(glob.glob(os.path.join(CSRC, d, "*.c")))]


def boundary_cdef(path=HEADER):
    """Return the cffi-parseable part of the boundary header."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"/\* cffi:begin \*/(.*)/\* cffi:end \*/", text, re.S)
    if not m:
        raise RuntimeError(f"{path}: no cffi:begin/cffi:end markers")
    return m.group(1)


ffibuilder = FFI()
ffibuilder.cdef("".join(boundary_cdef(h) for h in HEADERS))
ffibuilder.set_source(
    "pyfwd._fastpath",
    "".join(f'#include "{os.path.basename(h)}"\n' for h in HEADERS),
    sources=sources(),
    include_dirs=[CSRC],
    libraries=["xdp", "bpf"],
    # Hidden: calls between the C files bind directly, not through the PLT.
    extra_compile_args=["-std=gnu11", "-O2", "-fvisibility=hidden",
                        "-Wall", "-Wextra",
                        "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
