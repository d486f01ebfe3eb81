"""`pyfwd ctl` stays light: keepalived's engine check runs `pyfwd ctl
ha-renew` every second, with a 2 s timeout.  The CLI's start and the ctl
client must not import the data plane, pyroute2 or numpy (0.6 s of CPU a
call when they did, 0.17 s without)."""

import subprocess
import sys

HEAVY = ("numpy", "pyroute2", "pyfwd.dataplane", "pyfwd._fastpath",
         "pyfwd.control.engine", "pyfwd.control.bgp.speaker")

PROBE = """
import sys
from pyfwd.cli.main import cli
try:
    cli(["ctl", "--socket", "/nonexistent/pyfwd.sock", "ha-renew"])
except SystemExit:
    pass
print(" ".join(m for m in {heavy!r} if m in sys.modules))
"""


def test_ctl_imports_nothing_heavy():
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", \
        f"`pyfwd ctl` imported: {out.stdout.strip()}"


def test_the_probe_sees_a_heavy_import():
    """The probe itself works: the engine's module does pull them in."""
    probe = "import sys, pyfwd.control.engine\nprint(' '.join(m for m in " \
        f"{HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True,
                         text=True, timeout=60)
    assert "numpy" in out.stdout.split()
