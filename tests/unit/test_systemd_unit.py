"""tools/systemd: the units systemd-analyze verify accepts without a word,
their promises (Type=notify, reload by SIGHUP, the watchdog, restarts,
the capabilities measured for the engine) tied to what pyfwd start does.

systemd-analyze needs the ExecStart binary to exist: the test verifies a
copy whose /usr/local/bin/pyfwd is this venv's pyfwd, nothing else
changed.  No root needed (PID 1 need not be systemd)."""

import os
import subprocess
import sys

import pytest

from pyfwd.cli import balancer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
UNITS = os.path.join(ROOT, "tools", "systemd")
INSTALLED = "/usr/local/bin/pyfwd"
PYFWD = os.path.join(os.path.dirname(sys.executable), "pyfwd")
# What the engine needs and nothing more (measured under setpriv: see
# docs/operating.md); a change here is a change to measure again.
CAPS = {"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_NET_RAW",
        "CAP_IPC_LOCK", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID",
        "CAP_KILL"}


def settings(name):
    """{key: [values]} of the unit's [Service] section."""
    out, section = {}, None
    with open(os.path.join(UNITS, name), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[Service]" and "=" in line and \
                    not line.startswith("#"):
                key, _, value = line.partition("=")
                out.setdefault(key, []).append(value)
    return out


def verify(tmp_path, name, instance=None, edit=lambda text: text):
    """systemd-analyze verify on a copy of the unit (this venv's pyfwd):
    (return code, what it said)."""
    with open(os.path.join(UNITS, name), encoding="utf-8") as f:
        text = f.read()
    assert INSTALLED in text
    (tmp_path / name).write_text(edit(text.replace(INSTALLED, PYFWD)))
    target = name.replace("@", f"@{instance}") if instance else name
    r = subprocess.run(["systemd-analyze", "verify",
                        str(tmp_path / target)], capture_output=True,
                       text=True, cwd=tmp_path, timeout=60)
    return r.returncode, (r.stdout + r.stderr).strip()


@pytest.mark.parametrize("name,instance", [("pyfwd.service", None),
                                           ("pyfwd@.service", "pacs")])
def test_systemd_analyze_verify_says_nothing(tmp_path, name, instance):
    assert os.access(PYFWD, os.X_OK), PYFWD
    assert verify(tmp_path, name, instance) == (0, "")


def test_verify_would_tell_a_wrong_unit(tmp_path):
    """The check above can fail: a misspelt key is reported."""
    rc, said = verify(tmp_path, "pyfwd.service", edit=lambda t: t.replace(
        "WatchdogSec=", "WatchdogSecs="))
    assert "Unknown key 'WatchdogSecs'" in said, said


@pytest.mark.parametrize("name", ["pyfwd.service", "pyfwd@.service"])
def test_the_unit_says_what_pyfwd_start_does(name):
    s = settings(name)
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["on-failure"]
    assert s["WatchdogSec"] == ["15s"]
    [start] = s["ExecStart"]
    assert start.startswith(f"{INSTALLED} start --config ")
    assert "--control-socket /run/pyfwd/" in start
    # /etc is read-only under ProtectSystem=full: the state file goes to
    # the StateDirectory ($STATE_DIRECTORY: pyfwd start's default there),
    # never beside the config; no --state-file, which would override an
    # operator's [engine] state_file
    assert s["ProtectSystem"] == ["full"]
    assert s["StateDirectory"] == ["pyfwd"]
    assert "--state-file" not in start
    # the statuses a restart cannot mend
    assert {int(x) for x in s["RestartPreventExitStatus"][0].split()} == \
        {balancer.EXIT_USAGE, balancer.EXIT_NOT_ROOT}
    [caps] = s["CapabilityBoundingSet"]
    assert set(caps.split()) == CAPS
    assert "AmbientCapabilities" not in s       # root: the bounding set
