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
