"""tools/run on a tree of its own: it says what it does on an install, runs
no pip at all when none of the build's inputs changed, installs again when
one did or an output is gone, and shows pip's end when pip fails.

The tree is a copy of tools/run beside a fake project; its .venv/bin/python
is a script that records its calls and plays pip; id, dpkg-query and mount
are fakes on PATH (root, every Debian package installed).  No root, no
network."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/bin/sh
here=$(cd "$(dirname "$0")/../.." && pwd)
echo "$*" >>"$here/calls"
case "$*" in
--version) echo "Python 3.11.0" ;;
*"pip install"*"-e"*)
	echo "Collecting click>=8.0"
	echo "Requirement already satisfied: numpy"
	echo "  Building editable for pyfwd (pyproject.toml): started"
	if [ -n "$FAKE_PIP_FAIL" ]; then
		echo "error: the C build failed here" >&2
		exit 1
	fi
	mkdir -p "$here/engine/bpf"
	touch "$here/.venv/bin/pyfwd" "$here/engine/_fastpath.abi3.so" \\
		"$here/engine/bpf/steer.bpf.o"
	chmod +x "$here/.venv/bin/pyfwd"
	echo "Successfully installed pyfwd-0.1.0"
	;;
esac
"""
FAKES = {"id": "echo 0", "dpkg-query": "echo 'install ok installed'",
         "mount": "echo \"$*\" >>\"$FAKE_CALLS\""}


@pytest.fixture
def tree(tmp_path):
    t = tmp_path / "tree"
    (t / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "run", t / "tools" / "run")
    for rel, text in {"pyproject.toml": "[project]\n", "setup.py": "",
                      "csrc/a.c": "int a;\n", "csrc/a.h": "",
                      "bench/b.c": "", "bench/test_b.py": ""}.items():
        (t / rel).parent.mkdir(parents=True, exist_ok=True)
        (t / rel).write_text(text)
    python = t / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    fakes = tmp_path / "bin"
    fakes.mkdir()
    for name, body in FAKES.items():
        (fakes / name).write_text(f"#!/bin/sh\n{body}\n")
        (fakes / name).chmod(0o755)
    return t


def setup(tree, **env):
    """tools/run setup: (exit status, stderr, pip calls made, seconds)."""
    calls = tree / "calls"
    before = calls.read_text().count("pip install") if calls.exists() else 0
    e = dict(os.environ, PATH=f"{tree.parent / 'bin'}:{os.environ['PATH']}",
             FAKE_CALLS=str(tree / "mounts"), **env)
    t0 = time.monotonic()
    r = subprocess.run([str(tree / "tools" / "run"), "setup"], env=e,
                       capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    after = calls.read_text().count("pip install") if calls.exists() else 0
    return r.returncode, r.stderr, after - before, took


def test_first_install_says_what_it_does(tree):
    rc, err, pips, _ = setup(tree)
    assert (rc, pips) == (0, 1), err
    assert "pip install -e '.[test,bench]'" in err
    assert "    collecting click>=8.0" in err
    assert "    building pyfwd: the C extension pyfwd._fastpath, the XDP " \
        "programs, the bench tools" in err
    assert "    Successfully installed pyfwd-0.1.0" in err
    assert "Requirement already satisfied" not in err
    assert (tree / ".venv" / "pip-install.log").read_text().count(
        "Requirement already satisfied") == 1


def test_nothing_changed_nothing_done(tree):
    assert setup(tree)[:3:2] == (0, 1)
    rc, err, pips, took = setup(tree)
    assert (rc, pips) == (0, 0), err
    assert "pyfwd in .venv is up to date" in err
    assert took < 5
    (tree / "bench" / "test_b.py").write_text("# not a build input\n")
    assert setup(tree)[2] == 0


@pytest.mark.parametrize("change", [
    lambda t: (t / "csrc" / "a.h").write_text("#define X 1\n"),
    lambda t: (t / "csrc" / "new.c").write_text(""),
    lambda t: (t / "bench" / "b.c").write_text("int b;\n"),
    lambda t: (t / "pyproject.toml").write_text("[project]\nname='x'\n"),
    lambda t: (t / "engine" / "bpf" / "steer.bpf.o").unlink(),
    lambda t: (t / ".venv" / ".pyfwd-inputs").unlink(),
])
def test_a_changed_input_or_a_lost_output_installs_again(tree, change):
    assert setup(tree)[:3:2] == (0, 1)
    change(tree)
    rc, err, pips, _ = setup(tree)
    assert (rc, pips) == (0, 1), err
    assert setup(tree)[2] == 0


def test_a_failed_pip_shows_its_end_and_installs_again_next_time(tree):
    rc, err, pips, _ = setup(tree, FAKE_PIP_FAIL="1")
    assert rc == 1 and pips == 1
    assert "error: the C build failed here" in err
    assert f"pip install failed (exit 1); its whole output: " \
        ".venv/pip-install.log" in err
    assert not (tree / ".venv" / ".pyfwd-inputs").exists()
    assert setup(tree)[:3:2] == (0, 1)
