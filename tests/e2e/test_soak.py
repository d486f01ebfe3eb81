"""`pyfwd soak` end to end (issue 17, point 7).

The short variant (20 s of load, in the default run): the whole soak in a
lab of its own, every fault applied once (restart and HAProxy's kill
included), and the report's content checked: no unexcused failure, the
engine's RSS and fds flat, the failures the faults cause attributed to
them, the restart window measured, the flows down to a handful after the
load, the exit status matching the verdicts.  That an unexcused failure
would be caught is tested on fake events in tests/unit/test_soak_judge.py.

The long variant (the default 10 minutes) is marked slow: excluded by
default (pyproject's addopts), run with `-m slow`.  Root; the lab is
removed whatever happens."""

import json
import secrets
import subprocess

import pytest

from pyfwd.lab.programs import PYFWD

pytestmark = [pytest.mark.root]


def soak(tmp_path, prefix, *args, timeout):
    out = tmp_path / "report"
    r = subprocess.run(PYFWD + ["soak", "-n", prefix + secrets.token_hex(2),
                                "-o", str(out), *args],
                       capture_output=True, text=True, timeout=timeout)
    assert (out / "report.json").exists(), r.stdout + r.stderr
    report = json.loads((out / "report.json").read_text())
    assert r.returncode == (0 if report["ok"] else 1), r.stdout + r.stderr
    assert (out / "report.md").read_text().startswith("# pyfwd soak: ")
    assert (out / "plot.svg").read_text().count("<polyline") >= 4
    return report, r


def known(f):
    """The one unexcused failure measured so far (docs/reliability/
    soak.md): a new SNAT connection timing out, about 1 in 500 at 40 per
    second, when the engine gives a just-freed SNAT port (a LIFO pool) to
    a real that still holds that port's connection in TIME-WAIT."""
    return f["stream"] == "web-close" and "timed out" in f["error"]


def check(report, seconds):
    v = report["verdicts"]
    assert v["faults_applied"], report["faults"]
    unknown = [f for f in report["unexcused"] if not known(f)]
    assert not unknown, unknown
    assert report["failures"]["unexcused"] <= max(
        2, report["requests"]["per_stream"]["web-close"]["ok"] // 200)
    assert v["flat"], report["flat"]
    per = report["requests"]["per_stream"]
    # every stream answered, at about the rate asked
    assert all(per[s]["ok"] > 0 for s in per), per
    assert report["requests"]["ok"] > 0.6 * report["rate"] * seconds
    actions = {f["action"] for f in report["faults"]}
    assert {"reload", "flap", "flap-end", "drain", "halt", "online",
            "add-real", "del-real", "restart", "haproxy"} <= actions
    # the restart and HAProxy's kill cost requests, and are named for it
    reasons = report["failures"]["by_reason"]
    assert any(k.startswith("engine restart") for k in reasons), reasons
    assert any(k.startswith("HAProxy killed") for k in reasons), reasons
    assert 0 < report["restart_window_s"] < 15
    assert 0 < report["haproxy_back_s"] < 15
    # the flows came down from the load's hundreds to its stragglers
    peak = max(s["flows"] or 0 for s in report["series"])
    assert peak > 50
    assert sum(report["flows"]["last"].values()) <= 5, report["flows"]


@pytest.mark.timeout(240)
def test_short_soak(tmp_path, prefix):
    report, _ = soak(tmp_path, prefix, "--seconds", "20", "--rate", "150",
                     timeout=220)
    check(report, 20)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_long_soak(tmp_path, prefix):
    report, _ = soak(tmp_path, prefix, timeout=1100)
    check(report, 600)
    assert report["verdicts"]["flows_back"], report["flows"]
