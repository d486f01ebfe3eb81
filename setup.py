"""Build pyfwd's native parts: the cffi extension pyfwd._fastpath (C core,
AF_XDP I/O, against libxdp and libbpf) and the XDP programs in csrc/bpf/
(clang -target bpf), installed as package data under pyfwd/bpf/; and the
packet-rate benchmark's tools, bench/*.c (executables) and bench/bpf/*.bpf.c,
installed under pyfwd/bench/bin/.

Metadata lives in pyproject.toml.  A missing compiler, header or library
stops the build with the Debian package to install.
"""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")
BPF_SRC = os.path.join(CSRC, "bpf")
BPF_OUT = os.path.join(HERE, "engine", "bpf")
BENCH_SRC = os.path.join(HERE, "bench")
BENCH_OUT = os.path.join(HERE, "engine", "bench", "bin")

# (what must exist, how to tell, the Debian package that brings it)
REQUIREMENTS = [
    ("a C compiler (cc)", lambda: shutil.which("cc") or shutil.which("gcc"),
     "build-essential"),
    ("clang (for the XDP programs)", lambda: shutil.which("clang"), "clang"),
    ("libbpf headers (bpf/libbpf.h)",
     lambda: os.path.exists("/usr/include/bpf/libbpf.h"), "libbpf-dev"),
    ("libxdp headers (xdp/xsk.h)",
     lambda: os.path.exists("/usr/include/xdp/xsk.h"), "libxdp-dev"),
    ("Python headers (Python.h)",
     lambda: os.path.exists(os.path.join(
         sysconfig.get_paths()["include"], "Python.h")), "python3-dev"),
]


def check_toolchain():
    missing = [(what, pkg) for what, found, pkg in REQUIREMENTS if not found()]
    if missing:
        lines = [f"  - {what}: apt-get install {pkg}" for what, pkg in missing]
        sys.exit("pyfwd: cannot build, missing:\n" + "\n".join(lines))


def multiarch_include():
    """Debian keeps asm/types.h under /usr/include/<triplet>."""
    try:
        triplet = subprocess.run(["gcc", "-dumpmachine"], check=True,
                                 capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return []
    path = f"/usr/include/{triplet}"
    if not os.path.exists(os.path.join(path, "asm", "types.h")):
        sys.exit(f"pyfwd: cannot build, missing {path}/asm/types.h: "
                 "apt-get install linux-libc-dev")
    return [f"-I{path}"]


def _stale(out, inputs):
    return not os.path.exists(out) or \
        os.path.getmtime(out) < max(os.path.getmtime(p) for p in inputs)


def _bpf_objects(src_dir, out_dir, include=()):
    """Compile src_dir/*.bpf.c into out_dir/*.bpf.o when out of date.

    include: more header directories (their *.h count for staleness)."""
    os.makedirs(out_dir, exist_ok=True)
    dirs = [src_dir, *include]
    headers = [h for d in dirs for h in glob.glob(os.path.join(d, "*.h"))]
    for src in sorted(glob.glob(os.path.join(src_dir, "*.bpf.c"))):
        obj = os.path.join(out_dir, os.path.basename(src)[:-2] + ".o")
        if not _stale(obj, [src, *headers]):
            continue
        cmd = ["clang", "-O2", "-g", "-Wall", "-target", "bpf",
               *multiarch_include(), *(f"-I{d}" for d in dirs), "-c", src,
               "-o", obj]
        print(" ".join(cmd))
        subprocess.run(cmd, check=True)


def build_bpf():
    """Compile csrc/bpf/*.bpf.c into engine/bpf/*.bpf.o when out of date
    (with csrc/ on the include path: proto.h, shared with the core)."""
    check_toolchain()
    _bpf_objects(BPF_SRC, BPF_OUT, include=[CSRC])


def build_bench():
    """The packet-rate benchmark's tools: bench/*.c into executables
    engine/bench/bin/<name> (against libxdp and libbpf), bench/bpf/*.bpf.c
    into engine/bench/bin/*.bpf.o, when out of date."""
    check_toolchain()
    _bpf_objects(os.path.join(BENCH_SRC, "bpf"), BENCH_OUT)
    for src in sorted(glob.glob(os.path.join(BENCH_SRC, "*.c"))):
        exe = os.path.join(BENCH_OUT, os.path.basename(src)[:-2])
        if not _stale(exe, [src]):
            continue
        cmd = ["cc", "-O2", "-g", "-Wall", src, "-o", exe, "-lxdp", "-lbpf"]
        print(" ".join(cmd))
        subprocess.run(cmd, check=True)


class BuildPy(build_py):
    def run(self):
        build_bpf()
        build_bench()
        super().run()


class BuildExt(build_ext):
    def run(self):
        build_bpf()
        build_bench()
        super().run()


# engine/ is the package pyfwd (pyproject.toml's package-dir): it and every
# package below it, found rather than listed.
PACKAGES = ["pyfwd"] + [f"pyfwd.{p}" for p in find_packages(os.path.join(HERE, "engine"))]


setup(
    packages=PACKAGES,
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    cmdclass={"build_py": BuildPy, "build_ext": BuildExt},
)
