"""A missing toolchain stops the build with the Debian package to install."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_missing_toolchain_names_the_debian_packages(tmp_path):
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path)
    shutil.copytree(ROOT / "csrc", tmp_path / "csrc")
    empty = tmp_path / "bin"
    empty.mkdir()
    r = subprocess.run([sys.executable, "setup.py", "build_py"],
                       cwd=tmp_path, env={"PATH": str(empty)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "apt-get install build-essential" in r.stderr
    assert "apt-get install clang" in r.stderr
    assert not (tmp_path / "engine" / "bpf").exists()


def _symbols(obj):
    """(defined, undefined) global symbols of an object file (nm)."""
    out = subprocess.run(["nm", str(obj)], capture_output=True, text=True,
                         check=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TDBR":
            defined.add(parts[2])
        elif len(parts) == 2 and parts[0] == "U":
            undefined.add(parts[1])
    return defined, undefined


def test_c_files_depend_one_way(tmp_path):
    """Each C file calls into others in one direction only (no cycle, such
    as ctx.c <-> flow.c was), and the core (csrc/*.c) into no I/O file."""
    csrc = ROOT / "csrc"
    sources = sorted(csrc.glob("*.c")) + sorted(csrc.glob("io/*.c"))
    defs, uses = {}, {}
    for src in sources:
        name = str(src.relative_to(csrc))
        obj = tmp_path / (name.replace("/", "_") + ".o")
        subprocess.run(["cc", "-std=gnu11", "-O2", f"-I{csrc}", "-c",
                        str(src), "-o", str(obj)], check=True, timeout=120)
        defs[name], uses[name] = _symbols(obj)
    owner = {sym: name for name, syms in defs.items() for sym in syms}
    calls = {name: {owner[s] for s in uses[name] if owner.get(s, name)
                    != name} for name in defs}
    for name, callees in calls.items():
        if "/" not in name:
            assert not [c for c in callees if "/" in c], (name, callees)
    done, path = set(), []

    def visit(name):
        assert name not in path, " -> ".join(path + [name])
        if name in done:
            return
        path.append(name)
        for callee in sorted(calls[name]):
            visit(callee)
        path.pop()
        done.add(name)

    for name in sorted(calls):
        visit(name)
