"""The sdist and the wheel, built as a user builds them (python -m build:
the sdist, then the wheel from the sdist), hold what an install needs:
every package under engine/, the C extension, the XDP programs and the
bench's tools in the wheel; the C sources, setup.py, LICENSE and the
operator's files (tools/systemd, tools/monitoring) in the sdist, and no
build output there.

Built once, offline (--no-isolation: this venv's setuptools and cffi),
from a copy of the checkout's files (tracked and new, not ignored ones),
so nothing the developer built helps.  tests/e2e/test_install.py installs
such a wheel into a fresh venv and runs DR with it.
"""

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

import pyfwd

ROOT = Path(__file__).resolve().parents[2]
# Files of kinds other helpers will add, planted in the copy: the
# package-data globs must take them.
PLANTED = ("engine/control/web/static/app.css",
           "engine/control/web/static/js/app.js")
# A stale build output in the tree: the sdist must leave it out.
STALE = ("engine/bpf/stale.bpf.o", "engine/bench/bin/stale",
         "engine/_fastpath.c")


def checkout_files() -> list:
    """The checkout's files as git sees them: tracked, and new ones that
    .gitignore does not hide (deleted ones left out)."""
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
         "--exclude-standard"], capture_output=True, check=True,
        timeout=60).stdout
    return sorted(p for p in set(out.decode().split("\0"))
                  if p and (ROOT / p).is_file())


def version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(sdist names, wheel names) of a build from a copy of the checkout."""
    tmp = tmp_path_factory.mktemp("build")
    src = tmp / "src"
    for rel in checkout_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    for rel in PLANTED + STALE:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("planted by test_packaging\n")
    r = subprocess.run([sys.executable, "-m", "build", "--no-isolation",
                        "-o", str(tmp / "dist"), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    [sdist] = (tmp / "dist").glob("pyfwd-*.tar.gz")
    [wheel] = (tmp / "dist").glob("pyfwd-*.whl")
    with tarfile.open(sdist) as t:
        sdist_names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    with zipfile.ZipFile(wheel) as z:
        wheel_names = set(z.namelist())
    return sdist_names, wheel_names


def test_every_module_under_engine_is_in_the_wheel(built):
    """Packages are found, not listed: a new subpackage (control/bgp was
    once missing from a hand-made list) ships without a packaging edit."""
    _, wheel = built
    modules = [p for p in checkout_files()
               if p.startswith("engine/") and p.endswith(".py")]
    assert "engine/control/bgp/__init__.py" in modules
    missing = ["pyfwd/" + p[len("engine/"):] for p in modules
               if "pyfwd/" + p[len("engine/"):] not in wheel]
    assert missing == []
    dirs = {os.path.dirname(p) for p in modules}
    assert [d for d in dirs if f"{d}/__init__.py" not in modules] == [], \
        "a directory of modules without __init__.py is no package"


def test_the_wheel_carries_the_native_parts(built):
    _, wheel = built
    assert [n for n in wheel if n.startswith("pyfwd/_fastpath.")
            and n.endswith(".so")]
    for src in (ROOT / "csrc" / "bpf").glob("*.bpf.c"):
        assert f"pyfwd/bpf/{src.name[:-2]}.o" in wheel
    for src in (ROOT / "bench").glob("*.c"):
        assert f"pyfwd/bench/bin/{src.stem}" in wheel
    for src in (ROOT / "bench" / "bpf").glob("*.bpf.c"):
        assert f"pyfwd/bench/bin/{src.name[:-2]}.o" in wheel
    assert "pyfwd/bench/bin/stale" not in wheel
    info = f"pyfwd-{version()}.dist-info"
    assert f"{info}/licenses/LICENSE" in wheel
    assert f"{info}/entry_points.txt" in wheel


def test_the_wheel_takes_the_package_data_others_add(built):
    _, wheel = built
    for rel in PLANTED:
        assert "pyfwd/" + rel[len("engine/"):] in wheel, rel


def test_the_sdist_builds_without_the_checkout(built):
    sdist, _ = built
    tracked = checkout_files()
    need = [p for p in tracked if p.startswith("csrc/")] + \
        [p for p in tracked if p.startswith("bench/") and p.endswith(".c")] + \
        ["setup.py", "pyproject.toml", "LICENSE", "README.md",
         "tools/systemd/pyfwd.service"] + \
        [p for p in tracked if p.startswith("tools/monitoring/")]
    assert "csrc/pyfwd.h" in need and "csrc/io/xsk.c" in need
    # docs/monitoring.md sends operators there: Grafana's JSON, the rules
    assert "tools/monitoring/grafana-pyfwd.json" in need
    assert "tools/monitoring/pyfwd-alerts.yml" in need
    assert [p for p in need if p not in sdist] == []
    assert [p for p in tracked if p.startswith("examples/")
            and p not in sdist] == []
    outputs = [n for n in sdist if n.endswith((".o", ".so", ".pyc"))
               or n in STALE or "/bin/" in n]
    assert outputs == []


def test_version_is_pyprojects(monkeypatch):
    from importlib import metadata
    assert pyfwd.__version__ == version()

    def gone(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", gone)
    assert pyfwd.__version__ == version() + "+checkout"


def test_pyfwd_version_says_which_install_answered():
    exe = Path(sys.executable).parent / "pyfwd"
    r = subprocess.run([str(exe), "--version"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    where = os.path.dirname(pyfwd.__file__)
    assert r.stdout.startswith(f"pyfwd {version()} from {where} (Python ")
