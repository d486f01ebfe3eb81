"""`pyfwd lab up|show|exec|down` and `pyfwd lab demo`, as a user runs them:
the real console script, real namespaces (root), always removed."""

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

NETNS = Path("/run/netns")


def pyfwd(*args, timeout=120, check=True):
    exe = Path(sys.executable).parent / "pyfwd"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m",
                                             "pyfwd.cli"]
    r = subprocess.run(argv + list(args), capture_output=True, text=True,
                       timeout=timeout)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def ours(name):
    return sorted(p.name for p in NETNS.glob(f"{name}-*")) \
        if NETNS.exists() else []


@pytest.fixture
def name(need_root):
    n = "pfc" + secrets.token_hex(3)
    yield n
    if ours(n):
        pyfwd("lab", "down", "--name", n, check=False)
    assert ours(n) == []


def root_links():
    return sorted(os.listdir("/sys/class/net"))


def test_up_show_exec_down(name):
    links = root_links()
    r = pyfwd("lab", "up", "--name", name, "--topology", "one-arm",
              "--reals", "3")
    assert "10.0.0.13" in r.stdout
    assert ours(name) == sorted(f"{name}-{role}" for role in
                                ("client", "lb", "real1", "real2", "real3",
                                 "sw"))
    plan = json.loads(pyfwd("lab", "show", "--name", name, "--json").stdout)
    assert plan["topology"] == "one-arm"
    assert "10.0.0.11" in json.dumps(plan)
    r = pyfwd("lab", "exec", "--name", name, "client", "--", "ping", "-c1",
              "-W2", "10.0.0.12")
    assert "1 received" in r.stdout
    r = pyfwd("lab", "exec", "--name", name, "client", "--", "false",
              check=False)
    assert r.returncode == 1
    assert name in pyfwd("lab", "list").stdout
    assert root_links() == links            # nothing in the root namespace
    pyfwd("lab", "down", "--name", name)
    assert ours(name) == []
    assert root_links() == links


def test_two_arm_up_down(name):
    pyfwd("lab", "up", "--name", name, "--topology", "two-arm", "--reals",
          "2")
    r = pyfwd("lab", "exec", "--name", name, "client", "--", "ping", "-c1",
              "-W2", "192.168.50.12")
    assert "1 received" in r.stdout
    pyfwd("lab", "down", "--name", name)
    assert ours(name) == []


def test_demo_runs_and_cleans_up(name):
    r = pyfwd("lab", "demo", "--name", name, timeout=240)
    out = r.stdout
    # per topology: 3 reals directly, then 6 requests through the VIP
    assert out.count("node=real") == 18, out
    assert out.count("client=10.0.0.1:") == 18
    assert "FAIL" not in out
    dr = re.search(r"^dr +one-arm +([\d.]+)$", out, re.M)
    nat = re.search(r"^nat +two-arm +([\d.]+)$", out, re.M)
    assert dr and nat, out
    # DR's answers bypass the balancer; NAT's 20 MB come back through it
    assert float(dr.group(1)) < 2 and float(nat.group(1)) > 19
    assert ours(name) == []
