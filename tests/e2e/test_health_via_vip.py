"""A DR health check through the VIP (``via_vip = true``) end to end: a
one-arm lab with two whoami real servers set up with `pyfwd realserver
setup` for an IPv4 and an IPv6 VIP, the engine (on each backend, in the lb
namespace) with an http check plus the SYN through each real's MAC to the
VIP.  Removing the VIP from one real's lo leaves its own address answering
the http check, yet `ctl show` marks it down and curl through the VIP keeps
working on the other; putting the VIP back brings it up again.  Root; the
lab is removed whatever happens."""

import json
import secrets
import subprocess
import time

import pytest

from pyfwd.control.health.spec import HealthSpec
from pyfwd.lab import whoami
from pyfwd.lab.programs import PYFWD
from pyfwd.lab.topology import Lab
from pyfwd.model import Real, Service, Vip

from . import labs
from .procs import wait_line
from .test_control_plane import wait_for

pytestmark = pytest.mark.root

VIP4, VIP6 = "10.0.0.100", "fd00:0:0:1::100"
REALS = {VIP4: ("10.0.0.11", "10.0.0.12"),
         VIP6: ("fd00:0:0:1::11", "fd00:0:0:1::12")}
PREFIX = {VIP4: 32, VIP6: 128}
INTERVAL, FALL, RISE = 0.5, 2, 2


@pytest.fixture(scope="module")
def lab():
    procs = []
    with Lab("pfrs" + secrets.token_hex(3), topology="one-arm",
             reals=2) as lab:
        for role in lab.reals:
            for vip in REALS:
                r = lab.run(role, PYFWD + ["realserver", "setup", "--vip",
                                           vip], capture_output=True,
                            text=True)
                assert r.returncode == 0, r.stderr
            p = lab.popen(role, whoami.command(80, role, bind="::"),
                          stdout=subprocess.PIPE, text=True)
            wait_line(p, "listening")
            procs.append(p)
        yield lab
        for p in procs:
            p.kill()
            p.wait(timeout=5)


@pytest.fixture(params=["xdp", "afpacket"])
def engine(lab, tmp_path, request):
    spec = HealthSpec.from_dict({"type": "http", "interval": INTERVAL,
                                 "timeout": 0.4, "rise": RISE, "fall": FALL,
                                 "via_vip": True})
    svcs = [Service(Vip(vip, 80, "tcp"), [Real(a) for a in reals], "wrr",
                    name=f"web{len(vip)}", health=spec)
            for vip, reals in REALS.items()]
    yield from labs.serve_engine(lab, svcs, request.param,
                                 tmp_path / "ctl.sock")


def rows(lab, eng, vip):
    """`pyfwd ctl show --json` through the control socket: {real: row} of
    ``vip``."""
    r = lab.run("lb", PYFWD + ["ctl", "--socket", eng.sock,
                               "--json", "show"],
                capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (shown,) = [v for v in json.loads(r.stdout)
                if Vip.parse(v["vip"]).address == Vip(vip, 80, "tcp").address]
    return {Real.parse(row["real"]).address.compressed: row
            for row in shown["reals"]}


def curl_nodes(lab, vip, n):
    url = f"http://[{vip}]/" if ":" in vip else f"http://{vip}/"
    r = lab.run("client", ["curl", "-sS", "-g", "--max-time", "20", "-H",
                           "Connection: close", *[url] * n],
                capture_output=True, text=True, timeout=40)
    return r.returncode, [line.split("node=")[1].split()[0]
                          for line in r.stdout.splitlines()
                          if "node=" in line]


@pytest.mark.parametrize("vip", [VIP4, VIP6])
def test_a_real_that_lost_the_vip_is_taken_out_and_comes_back(lab, engine,
                                                              vip):
    eng = engine
    real1, real2 = REALS[vip]
    assert wait_for(lambda: all(
        r["health"] == "up" and "SYN-ACK" in (r["health_detail"] or "")
        for r in rows(lab, eng, vip).values()), 5), rows(lab, eng, vip)
    # the probe's RST closed each half-open connection it opened
    time.sleep(INTERVAL)
    for role in lab.reals:
        r = lab.run(role, ["ss", "-Htn", "state", "syn-recv"],
                    capture_output=True, text=True, check=True)
        assert r.stdout.strip() == "", r.stdout
    lab.run("real1", ["ip", "addr", "del", f"{vip}/{PREFIX[vip]}", "dev",
                      "lo"], check=True)
    try:
        t0 = time.monotonic()
        assert wait_for(lambda: rows(lab, eng, vip)[real1]["health"]
                        == "down", (FALL + 2) * INTERVAL + 1), \
            rows(lab, eng, vip)
        took = time.monotonic() - t0
        row = rows(lab, eng, vip)[real1]
        # the http check at its own address still passes; the VIP does not
        assert row["health_detail"].startswith("HTTP 200; at the VIP: no "
                                               "answer"), row
        assert not row["scheduled"]
        assert rows(lab, eng, vip)[real2]["health"] == "up"
        rc, nodes = curl_nodes(lab, vip, 20)
        assert rc == 0 and nodes == ["real2"] * 20, (rc, nodes)
    finally:
        lab.run("real1", PYFWD + ["realserver", "setup", "--vip", vip],
                check=True, capture_output=True)
    assert wait_for(lambda: rows(lab, eng, vip)[real1]["health"] == "up",
                    (RISE + 2) * INTERVAL + 1), rows(lab, eng, vip)
    rc, nodes = curl_nodes(lab, vip, 30)
    assert rc == 0 and set(nodes) == {"real1", "real2"}, (rc, nodes)
    print(f"{vip}: taken out {took:.2f} s after the VIP left real1's lo "
          f"(interval {INTERVAL} s, fall {FALL}); "
          f"{rows(lab, eng, vip)[real2]['health_detail']}")
