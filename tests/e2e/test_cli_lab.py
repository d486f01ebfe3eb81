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

from pyfwd.lab.programs import PYFWD

pytestmark = pytest.mark.root

NETNS = Path("/run/netns")


def pyfwd(*args, timeout=120, check=True):
    exe = Path(sys.executable).parent / "pyfwd"
    argv = [str(exe)] if exe.exists() else PYFWD
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


TABLE_ROW = re.compile(r"^(dr|nat|snat|tun|l7) +(one-arm|two-arm|tun) +(\S+) +"
                       r"(direct to client|via balancer) +(\d+) +([\d.]+) +"
                       r"([\d.]+)$", re.M)


def test_demo_all_modes_measured_and_cleans_up(name):
    r = pyfwd("lab", "demo", "--name", name, "--reals", "2", timeout=300)
    out = r.stdout
    assert "FAIL" not in out
    # 4 requests per mode (2 per real), each saying who answered it
    assert len(re.findall(r"ok +answered by real[12] ", out)) == 20, out
    rows = {m[0]: m[1:] for m in TABLE_ROW.findall(out)}
    assert sorted(rows) == ["dr", "l7", "nat", "snat", "tun"], out
    topo, saw, path, frames, mb, reply_mb = rows["dr"]
    # DR: the client's own address reaches the real server; the 20 MB
    # download's replies never reach the balancer, only the client's ACKs
    assert (topo, saw, path) == ("one-arm", "10.0.0.1", "direct to client")
    assert float(reply_mb) == 0 and float(mb) < 2 and int(frames) > 100
    # TUN: the same from another subnet: the client is behind a router
    topo, saw, path, frames, mb, reply_mb = rows["tun"]
    assert (topo, saw, path) == ("tun", "10.0.3.1", "direct to client")
    assert float(reply_mb) == 0 and float(mb) < 2 and int(frames) > 100
    topo, saw, path, frames, mb, reply_mb = rows["nat"]
    assert (topo, saw, path) == ("two-arm", "10.0.0.1", "via balancer")
    assert float(reply_mb) >= 20           # 20 MB and the headers
    for mode in ("snat", "l7"):            # the balancer's own address
        topo, saw, path, frames, mb, reply_mb = rows[mode]
        assert (topo, saw, path) == ("one-arm", "10.0.0.2", "via balancer")
        assert float(reply_mb) >= 20
    assert "X-Forwarded-For: 10.0.0.1" in out
    assert ours(name) == []


def test_demo_one_mode(name):
    r = pyfwd("lab", "demo", "--name", name, "--mode", "nat", "--reals", "2",
              timeout=120)
    assert "--- NAT:" in r.stdout and "--- DR:" not in r.stdout
    assert "side by side" not in r.stdout      # the table needs two modes
    assert "The replies came back through the balancer (100%" in r.stdout
    assert ours(name) == []


def test_demo_one_mode_with_pacs(name):
    r = pyfwd("lab", "demo", "--name", name, "--mode", "nat", "--pacs",
              "--reals", "2", timeout=180)
    out = r.stdout
    assert "--- NAT:" in out and "== PACS over NAT" in out, out
    assert "PACS over DR" not in out            # only the mode asked for
    assert "they match" in out, out
    assert ours(name) == []
