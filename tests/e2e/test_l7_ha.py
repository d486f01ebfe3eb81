"""L7 VIPs in an active/passive pair, end to end (issue 16, point 6): the
one-arm-ha lab (lb, lb2 on one segment), both running `pyfwd start` with
one L7 HTTP VIP over two whoami real servers; lb active, lb2 standby.

The VIP address follows the role: on the active node's eth0 only (the
standby's HAProxy runs and binds it all the same, `transparent`);
`pyfwd ctl ha standby` on lb then `ha active` on lb2 (what keepalived's
notify scripts run) moves it, with a gratuitous ARP that moves the
client's neighbour entry; a client polling with curl sees a gap, measured
and printed, both ways.  With keepalived (its config from `pyfwd ha
keepalived-conf`, both engines started standby), lb is elected, its link
goes down (a dead node), lb2 takes the address over: the gap is printed.

Root; the lab is named "pfk" + random hex and always removed; every
process is stopped by its PID."""

import json
import os
import re
import sys
import secrets
import shutil
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from pyfwd.lab.modes import whoami_servers
from pyfwd.lab.programs import PYFWD
from pyfwd.lab.topology import Lab

from .test_ha import VIP, client_neighbour

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

URL = f"http://{VIP}/"
GAP_BOUND = 3.0         # s without an answer while the role moves
POLL_TIMEOUT = 0.5      # s: curl's --max-time per request
PYFWD_BIN = str(Path(sys.executable).with_name("pyfwd"))
KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"
# a dead master is noticed after 3 adverts (1 s) and the backup's skew;
# 3 s more for notify_master, the address, the gratuitous ARP and the
# polls (each may wait its 0.5 s)
KEEPALIVED_BOUND = 3 * 1 + 3


@pytest.fixture
def pair(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    with Lab("pfk" + secrets.token_hex(3), topology="one-arm-ha",
             reals=2) as lab, whoami_servers(lab, 8080):
        lab.dir = tmp_path
        lab.engines = {}
        try:
            yield lab
        finally:
            for proc in lab.engines.values():
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


def keepalived(lab, node, priority):
    """keepalived in node's namespace (VRRP only, foreground, its own pid
    files), its config from `pyfwd ha keepalived-conf`."""
    r = subprocess.run(PYFWD + [
        "ha", "keepalived-conf", "--iface", "eth0", "--vrid", "52",
        "--priority", str(priority), "--socket",
        str(lab.dir / f"{node}.sock"), "--pyfwd", PYFWD_BIN, "--instance",
        f"pyfwd_{node}"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and not r.stderr, (r.stdout, r.stderr)
    conf = lab.dir / f"ka-{node}.conf"
    conf.write_text(r.stdout)
    pid = lab.dir / f"ka-{node}"
    with open(lab.dir / f"ka-{node}.log", "w") as out:
        lab.engines[f"ka-{node}"] = lab.popen(node, [
            KEEPALIVED, "--dont-fork", "--log-console", "--no-syslog",
            "--vrrp", "--use-file", str(conf), "--pid", f"{pid}.pid",
            "--vrrp_pid", f"{pid}-vrrp.pid", "--checkers_pid",
            f"{pid}-checkers.pid"], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)


def test_l7_vip_moves_with_keepalived(pair):
    """Both engines start standby; keepalived elects lb (150 over 100);
    lb's link goes down (a dead node); lb2's keepalived becomes master,
    its engine takes the L7 VIP address and announces it."""
    lab = pair
    if not os.path.exists(KEEPALIVED):
        pytest.fail("keepalived is not installed (tools/run installs it)")
    mac = {n: lab.node(n).interfaces[0].mac for n in ("lb", "lb2")}
    start(lab, "lb", "standby")
    start(lab, "lb2", "standby")
    wait_ready(lab, "lb", "standby")
    wait_ready(lab, "lb2", "standby")
    assert not holds(lab, "lb") and not holds(lab, "lb2")
    keepalived(lab, "lb", 150)
    keepalived(lab, "lb2", 100)
    wait_ready(lab, "lb", "active")
    assert holds(lab, "lb") and not holds(lab, "lb2")
    poll = Poller(lab)
    try:
        time.sleep(1.5)

        def link_down():
            with IPRoute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="eth0")[0],
                         state="down")
        t = time.monotonic()
        lab.call("lb", link_down)
        wait_ready(lab, "lb2", "active")
        time.sleep(2.0)
        gap = poll.gap(t)
    finally:
        poll.stop()
    print(f"\nL7 failover with keepalived (advert_int 1 s), lb's link "
          f"down: {gap:.2f} s without an answer")
    assert holds(lab, "lb2")
    assert client_neighbour(lab) == mac["lb2"]
    assert gap < KEEPALIVED_BOUND, (gap, logs(lab))
    wait_ready(lab, "lb", "standby")        # keepalived FAULT on lb
    assert not holds(lab, "lb")
