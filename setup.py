"""Build pyfwd's native parts: the cffi extension pyfwd._fastpath (C core,
AF_XDP I/O, against libxdp and libbpf) and the XDP programs in csrc/bpf/
(clang -target bpf), installed as package data under pyfwd/bpf/.

Metadata lives in pyproject.toml.  A missing compiler, header or library
stops the build with the Debian package to install.
"""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
BPF_SRC = os.path.join(HERE, "csrc", "bpf")
BPF_OUT = os.path.join(HERE, "engine", "bpf")

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


def build_bpf():
    """Compile csrc/bpf/*.bpf.c into engine/bpf/*.bpf.o when out of date."""
    check_toolchain()
    os.makedirs(BPF_OUT, exist_ok=True)
    sources = sorted(glob.glob(os.path.join(BPF_SRC, "*.bpf.c")))
    headers = glob.glob(os.path.join(BPF_SRC, "*.h"))
    for src in sources:
        obj = os.path.join(BPF_OUT, os.path.basename(src)[:-2] + ".o")
        newest = max(os.path.getmtime(p) for p in [src, *headers])
        if os.path.exists(obj) and os.path.getmtime(obj) >= newest:
            continue
        cmd = ["clang", "-O2", "-g", "-Wall", "-target", "bpf",
               *multiarch_include(), f"-I{BPF_SRC}", "-c", src, "-o", obj]
        print(" ".join(cmd))
        subprocess.run(cmd, check=True)


class BuildPy(build_py):
    def run(self):
        build_bpf()
        super().run()


class BuildExt(build_ext):
    def run(self):
        build_bpf()
        super().run()


setup(
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    cmdclass={"build_py": BuildPy, "build_ext": BuildExt},
)
