"""A wheel built from a clean checkout installs into a fresh venv and runs
DR in the lab (issue 21's "done when").

The checkout's HEAD goes out with `git archive` into a temp directory (no
build output, no .venv, nothing uncommitted helps); `python -m build`
makes the sdist from it and the wheel from the sdist, each in an isolated
environment; a fresh venv (this Python's base interpreter) installs the
wheel, its dependencies from the package index.  From a directory outside
the checkout, with no PYTHONPATH, that venv's `pyfwd` then says its
version and where it lives, imports its own C extension, and runs `pyfwd
lab demo --mode dr` on the lab named "pfi" (namespaces pfi-*), removed
whatever happens.
"""

import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
LAB = "pfi"
NETNS = Path("/run/netns")


def run(argv, timeout, cwd, env=None):
    r = subprocess.run([str(a) for a in argv], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (f"{argv}: exit {r.returncode}\n"
                               + r.stdout[-4000:] + r.stderr[-4000:])
    return r


def lab_namespaces():
    return sorted(p.name for p in NETNS.glob(f"{LAB}-*")) \
        if NETNS.exists() else []


@pytest.fixture
def clean_env(need_root):
    """The environment a user's shell would give: no PYTHONPATH, no venv
    of ours on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    ours = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(
        os.pathsep) if p != ours)
    return env


@pytest.fixture
def wheel_venv(tmp_path, clean_env):
    """(venv directory, sdist, wheel): HEAD built and installed."""
    assert lab_namespaces() == [], f"a lab {LAB} exists already"
    src = tmp_path / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"],
                             capture_output=True, check=True, timeout=60)
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout,
                   check=True, timeout=60)
    assert not (src / "engine" / "bpf").exists()
    run([sys.executable, "-m", "build", "-o", tmp_path / "dist", src], 600,
        tmp_path, clean_env)
    [sdist] = (tmp_path / "dist").glob("pyfwd-*.tar.gz")
    [wheel] = (tmp_path / "dist").glob("pyfwd-*.whl")
    venv = tmp_path / "venv"
    run([sys._base_executable, "-m", "venv", venv], 120, tmp_path, clean_env)
    run([venv / "bin" / "pip", "install", "-q", wheel], 600, tmp_path,
        clean_env)
    yield venv, sdist, wheel
    if lab_namespaces():
        subprocess.run([venv / "bin" / "pyfwd", "lab", "down", "--name",
                        LAB], capture_output=True, timeout=120, cwd=tmp_path)
    assert lab_namespaces() == []


def test_a_wheel_from_a_clean_checkout_runs_dr(wheel_venv, tmp_path,
                                               clean_env):
    venv, sdist, wheel = wheel_venv
    with open(ROOT / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    site = run([venv / "bin" / "python", "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               60, tmp_path, clean_env).stdout.strip()
    assert site.startswith(str(venv))
    installed = os.path.join(site, "pyfwd")

    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {"csrc/pyfwd.h", "csrc/build_ffi.py", "setup.py",
            "LICENSE"} <= names
    with zipfile.ZipFile(wheel) as z:
        assert "pyfwd/bpf/steer.bpf.o" in z.namelist()

    r = run([venv / "bin" / "pyfwd", "--version"], 60, tmp_path, clean_env)
    assert r.stdout.strip().startswith(
        f"pyfwd {version} from {installed} (Python "), r.stdout
    r = run([venv / "bin" / "python", "-c",
             "import pyfwd._fastpath as f, pyfwd.control.bgp as b; "
             "print(f.__file__); print(b.__file__)"], 60, tmp_path,
            clean_env)
    assert all(line.startswith(installed + "/")
               for line in r.stdout.split()), r.stdout

    r = run([venv / "bin" / "pyfwd", "lab", "demo", "--mode", "dr",
             "--name", LAB, "--reals", "2"], 300, tmp_path, clean_env)
    answered = re.findall(r"ok +answered by (real\d)", r.stdout)
    assert len(answered) == 4 and set(answered) == {"real1", "real2"}, \
        r.stdout
    assert "20.0 MB download through the VIP: ok" in r.stdout
    assert "No reply crossed the balancer" in r.stdout
    assert lab_namespaces() == []
