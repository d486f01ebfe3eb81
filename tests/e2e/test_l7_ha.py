"""L7 VIPs in an active/passive pair, end to end (issue 16, point 6): the
one-arm-ha lab (lb, lb2 on one segment), both running `pyfwd start` with
one L7 HTTP VIP over two whoami real servers; lb active, lb2 standby.

The VIP address follows the role: on the active node's eth0 only (the
standby's HAProxy runs and binds it all the same, `transparent`);
`pyfwd ctl ha standby` on lb then `ha active` on lb2 (what keepalived's
notify scripts run) moves it, with a gratuitous ARP that moves the
client's neighbour entry; a client polling with curl sees a gap, measured
and printed, both ways.

Root; the lab is named "pfk" + random hex and always removed; every
process is stopped by its PID."""

import json
import os
import re
import secrets
import subprocess
import textwrap
import threading
import time

import pytest
from pyroute2 import IPRoute

from pyfwd.lab import whoami
from pyfwd.lab.programs import PYFWD
from pyfwd.lab.topology import Lab

from .procs import wait_line

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

VIP = "10.0.0.100"
URL = f"http://{VIP}/"
GAP_BOUND = 3.0         # s without an answer while the role moves
POLL_TIMEOUT = 0.5      # s: curl's --max-time per request


@pytest.fixture
def pair(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    procs = []
    with Lab("pfk" + secrets.token_hex(3), topology="one-arm-ha",
             reals=2) as lab:
        try:
            for role in lab.reals:
                p = lab.popen(role, whoami.command(8080, role),
                              stdout=subprocess.PIPE, text=True)
                procs.append(p)
                wait_line(p, "listening")
            lab.dir = tmp_path
            lab.engines = {}
            yield lab
        finally:
            for proc in list(lab.engines.values()) + procs:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=5)


def start(lab, node, role):
    sock = lab.dir / f"{node}.sock"
    cfg = lab.dir / f"{node}.toml"
    reals = "".join(f'\n[[vip.real]]\naddress = "{lab.ip(r)}"\nport = 8080\n'
                    for r in lab.reals)
    cfg.write_text(textwrap.dedent(f"""
        [engine]
        iface = "eth0"
        control_socket = "{sock}"
        role = "{role}"

        [[vip]]
        name = "web"
        address = "{VIP}"
        port = 80
        mode = "l7"
        scheduler = "rr"
        """) + reals)
    with open(lab.dir / f"{node}.log", "w") as out:
        lab.engines[node] = lab.popen(node, PYFWD + [
            "start", "--config", str(cfg), "--busy-poll", "0"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def logs(lab):
    return "\n".join(f"--- {n} ---\n" + (lab.dir / f"{n}.log").read_text()
                     [-3000:] for n in lab.engines)


def ctl(lab, node, *args):
    r = subprocess.run(PYFWD + ["ctl", "-s", str(lab.dir / f"{node}.sock"),
                                *args], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, (args, r.stdout, r.stderr, logs(lab))
    return r.stdout


def wait_ready(lab, node, role, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = subprocess.run(PYFWD + ["ctl", "-s", str(lab.dir / f"{node}.sock"),
                                    "--json", "status"],
                           capture_output=True, text=True, timeout=10)
        if r.returncode == 0:
            st = json.loads(r.stdout)
            if st["ha"]["role"] == role and (st.get("haproxy") or {}).get(
                    "pid"):
                return st
        assert lab.engines[node].poll() is None, logs(lab)
        time.sleep(0.2)
    raise AssertionError(f"{node} not {role} with HAProxy\n" + logs(lab))


def holds(lab, node):
    out = lab.run(node, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
                  capture_output=True, text=True, check=True).stdout
    return bool(re.search(rf"inet {re.escape(VIP)}/", out))


def client_neighbour(lab):
    def get():
        with IPRoute() as ipr:
            for n in ipr.get_neighbours(dst=VIP):
                return n.get_attr("NDA_LLADDR")
    return lab.call("client", get)


class Poller:
    """curl from the client in a loop: (monotonic time, answered)."""

    def __init__(self, lab):
        self.lab, self.seen = lab, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            r = self.lab.run("client", ["curl", "-sS", "--max-time",
                                        f"{POLL_TIMEOUT:g}", URL],
                             capture_output=True, text=True, timeout=10)
            self.seen.append((time.monotonic(),
                              r.returncode == 0 and "node=" in r.stdout))
            time.sleep(0.02)

    def stop(self):
        self._stop.set()
        self._thread.join(10)

    def gap(self, since):
        """The longest time between two answered polls around `since`
        (the switch): from the last answer before it to the first after."""
        before = [t for t, ok in self.seen if ok and t <= since]
        after = [t for t, ok in self.seen if ok and t > since]
        assert before and after, self.seen
        times = [t for t, ok in self.seen if ok and t >= before[-1]]
        return max(b - a for a, b in zip(times, times[1:]))


def switch(lab, old, new):
    """What keepalived's notify scripts do: the old master stands down,
    the new one takes over.  The time it started."""
    t = time.monotonic()
    ctl(lab, old, "ha", "standby")
    ctl(lab, new, "ha", "active")
    return t


def test_l7_vip_follows_the_role(pair):
    lab = pair
    mac = {n: lab.node(n).interfaces[0].mac for n in ("lb", "lb2")}
    start(lab, "lb", "active")
    start(lab, "lb2", "standby")
    wait_ready(lab, "lb", "active")
    wait_ready(lab, "lb2", "standby")      # its HAProxy runs, binds the VIP
    assert holds(lab, "lb") and not holds(lab, "lb2")
    poll = Poller(lab)
    gaps = {}
    try:
        time.sleep(1.0)
        t = switch(lab, "lb", "lb2")
        time.sleep(3.0)
        assert holds(lab, "lb2") and not holds(lab, "lb")
        assert client_neighbour(lab) == mac["lb2"]
        gaps["lb -> lb2"] = poll.gap(t)
        t = switch(lab, "lb2", "lb")
        time.sleep(3.0)
        assert holds(lab, "lb") and not holds(lab, "lb2")
        assert client_neighbour(lab) == mac["lb"]
        gaps["lb2 -> lb"] = poll.gap(t)
    finally:
        poll.stop()
    answered = sum(ok for _, ok in poll.seen)
    print(f"\nL7 failover gap of a polling curl ({answered} of "
          f"{len(poll.seen)} polls answered): " + ", ".join(
              f"{k} {v:.2f} s" for k, v in gaps.items()))
    for k, v in gaps.items():
        assert v < GAP_BOUND, (k, v, logs(lab))
    for node in ("lb", "lb2"):
        proc = lab.engines[node]
        proc.terminate()
        assert proc.wait(timeout=20) == 0, logs(lab)
        assert not holds(lab, node)
    assert "Traceback" not in logs(lab)
