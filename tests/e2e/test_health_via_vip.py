"""A DR health check through the VIP (``via_vip = true``) end to end: a
one-arm lab with two whoami real servers set up with `pyfwd realserver
setup`, the engine (on each backend, in the lb namespace) with an http check plus
the SYN through each real's MAC to the VIP.  Removing the VIP from one
real's lo leaves its own address answering the http check, yet `ctl show`
marks it down and curl through the VIP keeps working on the other; putting
the VIP back brings it up again.  Root; the lab is removed whatever
happens."""

import json
import secrets
import subprocess
import time

import pytest

from pyfwd.control import server as control
from pyfwd.control.engine import Engine
from pyfwd.control.health.spec import HealthSpec
from pyfwd.lab import whoami
from pyfwd.lab.programs import PYFWD
from pyfwd.lab.topology import Lab
from pyfwd.model import Real, Service, Vip

from .procs import wait_line
from .test_control_plane import wait_for

pytestmark = pytest.mark.root

VIP4 = "10.0.0.100"
WEB = Vip.parse(f"{VIP4}:80/tcp")
INTERVAL, FALL, RISE = 0.5, 2, 2


@pytest.fixture(scope="module")
def lab():
    procs = []
    with Lab("pfrs" + secrets.token_hex(3), topology="one-arm",
             reals=2) as lab:
        for role in lab.reals:
            r = lab.run(role, PYFWD + ["realserver", "setup", "--vip", VIP4],
                        capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            p = lab.popen(role, whoami.command(80, role),
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
    svc = Service(WEB, [Real("10.0.0.11"), Real("10.0.0.12")], "wrr",
                  name="web", health=spec)
    eng = Engine("eth0", [svc], busy_poll=0, flows=1 << 16, backend=request.param)
    lab.call("lb", eng.start)
    eng.sock = str(tmp_path / "ctl.sock")
    srv = control.ControlServer(eng, eng.sock).start()
    yield eng
    time.sleep(0.5)
    srv.stop()
    eng.stop()


def rows(lab, eng):
    """`pyfwd ctl show --json` through the control socket: {real: row}."""
    r = lab.run("lb", PYFWD + ["ctl", "--socket", eng.sock,
                               "--json", "show"],
                capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return {row["real"]: row for row in json.loads(r.stdout)[0]["reals"]}


def curl_nodes(lab, n):
    r = lab.run("client", ["curl", "-sS", "--max-time", "20", "-H",
                           "Connection: close", *[f"http://{VIP4}/"] * n],
                capture_output=True, text=True, timeout=40)
    return r.returncode, [line.split("node=")[1].split()[0]
                          for line in r.stdout.splitlines()
                          if "node=" in line]


def test_a_real_that_lost_the_vip_is_taken_out_and_comes_back(lab, engine):
    eng = engine
    assert wait_for(lambda: all(
        r["health"] == "up" and "SYN-ACK" in (r["health_detail"] or "")
        for r in rows(lab, eng).values()), 5), rows(lab, eng)
    # the probe's RST closed each half-open connection it opened
    time.sleep(INTERVAL)
    for role in lab.reals:
        r = lab.run(role, ["ss", "-Htn", "state", "syn-recv"],
                    capture_output=True, text=True, check=True)
        assert r.stdout.strip() == "", r.stdout
    lab.run("real1", ["ip", "addr", "del", f"{VIP4}/32", "dev", "lo"],
            check=True)
    try:
        t0 = time.monotonic()
        assert wait_for(lambda: rows(lab, eng)["10.0.0.11"]["health"]
                        == "down", (FALL + 2) * INTERVAL + 1), rows(lab, eng)
        took = time.monotonic() - t0
        row = rows(lab, eng)["10.0.0.11"]
        # the http check at its own address still passes; the VIP does not
        assert row["health_detail"].startswith("HTTP 200; at the VIP: no "
                                               "answer"), row
        assert not row["scheduled"]
        assert rows(lab, eng)["10.0.0.12"]["health"] == "up"
        rc, nodes = curl_nodes(lab, 20)
        assert rc == 0 and nodes == ["real2"] * 20, (rc, nodes)
    finally:
        lab.run("real1", PYFWD + ["realserver", "setup", "--vip", VIP4],
                check=True, capture_output=True)
    assert wait_for(lambda: rows(lab, eng)["10.0.0.11"]["health"] == "up",
                    (RISE + 2) * INTERVAL + 1), rows(lab, eng)
    rc, nodes = curl_nodes(lab, 30)
    assert rc == 0 and set(nodes) == {"real1", "real2"}, (rc, nodes)
    print(f"taken out {took:.2f} s after the VIP left real1's lo "
          f"(interval {INTERVAL} s, fall {FALL})")
