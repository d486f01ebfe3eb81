"""High availability end to end: two balancers (lb, lb2) on one segment
(the one-arm-ha lab), both running `pyfwd start` in DR with Maglev over the
same three whoami real servers.

- `pyfwd ctl ha standby` on the active node stops its ARP answers
  (`pyfwd arp-check` from the client sees nobody) and `ha active` brings
  them back with a gratuitous ARP;
- keepalived on each node (started here, in the foreground, its own pid
  files, killed by PID; its config from `pyfwd ha keepalived-conf`) elects
  lb; lb answers ARP, lb2 does not; a slow download runs through lb; lb's
  link goes down (a SIGKILLed keepalived master would keep its claim: the
  link is how a dead node is simulated); keepalived on lb2 becomes master,
  lb2's engine goes active and announces; the client's ARP cache moves to
  lb2 and pings to the VIP are answered again within a bound (the time is
  printed), and the download completes on the same real server (Maglev
  tables are identical on both nodes): lb2's per-real counters grow for
  that real only, no other TCP traffic meanwhile;
- lb's engine process is killed while keepalived runs on both: keepalived's
  engine check puts lb in FAULT, lb2 takes over within a bound (printed);
  a new engine on lb is elected back (preemption) and lb2 steps down.

Root; labs are named "pfh" + random hex and always removed.
"""

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from pyfwd.neighbours.arp import parse_arp
from pyfwd.neighbours.framesocket import FrameSocket
from pyfwd.frames import mac_to_str
from pyfwd.control import server as control
from pyfwd.control import ha
from pyfwd.errors import PyfwdError
from pyfwd.lab.topology import Lab
from pyfwd.lab.modes import setup_reals, whoami_servers

pytestmark = pytest.mark.root

VIP = "10.0.0.100"
PORT = 8080
URL = f"http://{VIP}:{PORT}"
PYFWD = str(Path(sys.executable).with_name("pyfwd"))
KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"
MAC_RE = re.compile(r"^([0-9a-f]{2}(?::[0-9a-f]{2}){5})\b", re.M)
DOWNLOAD = 8 << 20          # bytes, at RATE: runs ~8 s, across the failover
RATE = 1 << 20              # bytes/s, paced by the real server (whoami)
ADVERT_INT = 1              # keepalived's, seconds
# A dead master is noticed after 3 adverts and the backup's skew, under
# 4 s here; 2 s more for notify_master, the gratuitous ARP and the probe.
FAILOVER_BOUND = 3 * ADVERT_INT + 2
# A dead engine: the check fails twice a second apart (plus up to its
# timeout), lb leaves the master role at once (priority 0 advert), lb2
# takes it after its skew; 2 s for notify_master, ARP and the probe.
ENGINE_DEATH_BOUND = ha.TRACK_FALL * ha.TRACK_INTERVAL + \
    ha.TRACK_TIMEOUT + ADVERT_INT + 2


class Pair:
    """The lab, the engines' control sockets and log files."""

    def __init__(self, lab, workdir):
        self.lab = lab
        self.dir = workdir
        self.procs = []         # (what, Popen, log path), stopped by PID
        self.mac = {r: lab.node(r).interfaces[0].mac for r in ("lb", "lb2")}

    def sock(self, role):
        return str(self.dir / f"{role}.sock")

    def start(self, what, role, argv):
        log = self.dir / f"{what}.log"
        with open(log, "w") as out:
            proc = self.lab.popen(role, argv, stdout=out,
                                  stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        self.procs.append((what, proc, log))
        return proc

    def engine(self, role, standby, what=None):
        """`pyfwd start` on role's node; its process."""
        reals = [a for r in self.lab.reals for a in
                 ("--real", self.lab.ip(r))]
        return self.start(what or role, role, [
            PYFWD, "start", "--iface", "eth0", "--vip", f"{VIP}:{PORT}/tcp",
            *reals, "--scheduler", "maglev", "--busy-poll", "0", "--flows",
            "16384", "--control-socket", self.sock(role)] +
            (["--role", "standby"] if standby else []))

    def ctl(self, role, *args, timeout=10):
        r = subprocess.run([PYFWD, "ctl", "-s", self.sock(role), *args],
                           capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, (args, r.stdout, r.stderr, self.logs())
        return r.stdout

    def status(self, role):
        return json.loads(self.ctl(role, "--json", "status"))

    def real_frames(self, role):
        """{real address: frames forwarded to it} on role's engine."""
        shown = json.loads(self.ctl(role, "--json", "show"))[0]["reals"]
        return {r["real"]: r["frames"] for r in shown}

    def wait_role(self, role, want, timeout=20):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if self.status(role)["ha"]["role"] == want:
                    return
            except AssertionError:
                pass                    # not listening yet
            time.sleep(0.1)
        raise AssertionError(f"{role} is not {want} after {timeout} s\n"
                             + self.logs())

    def arp_check(self):
        """The MACs that answer ARP for the VIP, seen from the client with
        `pyfwd arp-check` (lb's MAC is "the balancer")."""
        r = self.lab.run("client", [PYFWD, "arp-check", "--iface", "eth0",
                                    "--vip", VIP, "--balancer-mac",
                                    self.mac["lb"], "--timeout", "1"],
                         capture_output=True, text=True, timeout=20)
        return MAC_RE.findall(r.stdout)

    def stop(self):
        # keepalived first: its notify_stop calls the engines
        for what, proc, _ in sorted(self.procs,
                                    key=lambda p: not p[0].startswith("ka")):
            if proc.poll() is None:
                os.kill(proc.pid, 15)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, 9)
                    proc.wait(5)

    def logs(self):
        out = []
        for what, _, log in self.procs:
            try:
                text = log.read_text()[-3000:]
            except OSError:
                text = ""
            out.append(f"--- {what} ({log}) ---\n{text}")
        return "\n".join(out)


@pytest.fixture
def pair(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    name = "pfh" + secrets.token_hex(3)
    workdir = tmp_path / name
    workdir.mkdir()
    with Lab(name, topology="one-arm-ha", reals=3) as lab:
        setup_reals(lab, [VIP])
        with whoami_servers(lab, PORT):
            p = Pair(lab, workdir)
            try:
                yield p
            finally:
                p.stop()


def garps_seen(lab, run, timeout=2.0):
    """Run `run()` while listening on the client: the MACs that sent a
    gratuitous ARP for the VIP meanwhile."""
    sock = lab.call("client", lambda: FrameSocket("eth0"))
    try:
        run()
        seen, end = set(), time.monotonic() + timeout
        while time.monotonic() < end:
            frame = sock.recv(max(0.0, end - time.monotonic()))
            pkt = parse_arp(frame) if frame else None
            if pkt and pkt.is_gratuitous and str(pkt.spa) == VIP:
                seen.add(mac_to_str(pkt.sha))
        return seen
    finally:
        sock.close()


def ping_ok(lab, timeout=0.2):
    """One echo request from the client to the VIP answered (only the
    active engine answers, and nothing reaches a real server)."""
    r = lab.run("client", ["ping", "-n", "-q", "-c", "1", "-W",
                           f"{timeout:g}", VIP],
                capture_output=True, text=True, timeout=timeout + 5)
    return r.returncode == 0


def until(ok, limit, what, pair):
    """Seconds until ok() first returns True (AssertionError with the
    logs after `limit` s) and how many times it said no before."""
    t0, tries = time.monotonic(), 0
    while not ok():
        tries += 1
        assert time.monotonic() - t0 < limit, f"{what}: not within " \
            f"{limit} s\n" + pair.logs()
    return time.monotonic() - t0, tries


def curl_ok(lab, timeout=0.5, url=URL):
    r = lab.run("client", ["curl", "-sS", "--max-time", f"{timeout:g}", url],
                capture_output=True, text=True, timeout=timeout + 5)
    return r.returncode == 0 and "node=" in r.stdout


def client_neighbour(lab):
    def get():
        with IPRoute() as ipr:
            for n in ipr.get_neighbours(dst=VIP):
                return n.get_attr("NDA_LLADDR")
    return lab.call("client", get)


def test_ctl_ha_standby_stops_arp_and_active_announces(pair):
    pair.engine("lb", standby=False)
    pair.engine("lb2", standby=True)
    pair.wait_role("lb", "active")
    pair.wait_role("lb2", "standby")
    assert pair.arp_check() == [pair.mac["lb"]], pair.logs()
    assert curl_ok(pair.lab, 3)

    out = pair.ctl("lb", "ha", "standby")
    assert out.strip() == "standby (was active): not answering ARP for " \
        "the VIPs"
    assert pair.arp_check() == [], pair.logs()
    assert "standby since" in pair.ctl("lb", "status")

    said = []
    seen = garps_seen(pair.lab, lambda: said.append(
        pair.ctl("lb", "ha", "active")))
    assert said[0].strip() == f"active (was standby): gratuitous ARP for " \
        f"{VIP}"
    assert seen == {pair.mac["lb"]}, seen
    assert pair.arp_check() == [pair.mac["lb"]], pair.logs()
    assert curl_ok(pair.lab, 3)

    h = pair.status("lb")["ha"]
    assert (h["role"], h["transitions"]) == ("active", 2)
    assert h["garp_bursts"] >= 2        # at start, on becoming active
    h2 = pair.status("lb2")["ha"]
    assert (h2["role"], h2["transitions"]) == ("standby", 0)
    assert h2["arp_withheld"] >= 2      # the client's who-has, not answered
    assert pair.mac["lb"] in h2["peers"]        # seen holding the VIP
    # the active node's answers are no "ARP problem" for the standby one
    assert "ARP problem" not in (pair.dir / "lb2.log").read_text()
    with pytest.raises(PyfwdError, match="'active' or 'standby', not "
                       "'master'"):
        control.request(pair.sock("lb"), "ha", role="master")


def keepalived(pair, role, priority):
    """keepalived in role's namespace, VRRP only, in the foreground, with
    its own pid files; its config from `pyfwd ha keepalived-conf`."""
    argv = [PYFWD, "ha", "keepalived-conf", "--iface", "eth0", "--vrid",
            "51", "--priority", str(priority), "--socket", pair.sock(role),
            "--pyfwd", PYFWD, "--instance", f"pyfwd_{role}",
            "--advert-int", str(ADVERT_INT)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and not r.stderr, (r.stdout, r.stderr)
    path = pair.dir / f"keepalived-{role}.conf"
    path.write_text(r.stdout)
    pid = pair.dir / f"keepalived-{role}"
    return pair.start(f"ka-{role}", role, [
        KEEPALIVED, "--dont-fork", "--log-console", "--log-detail",
        "--no-syslog", "--vrrp", "--use-file", str(path),
        "--pid", f"{pid}.pid", "--vrrp_pid", f"{pid}-vrrp.pid",
        "--checkers_pid", f"{pid}-checkers.pid"])


def elect(pair, engine=None, url=URL):
    """Both engines standby (engine(role) starts one: by default the DR
    one of Pair.engine), keepalived on both; lb (priority 150) is
    elected, lb2 (100) stays standby; lb answers ARP and requests (to
    url)."""
    if not os.path.exists(KEEPALIVED):
        pytest.fail("keepalived is not installed (tools/run installs it)")
    for role in ("lb", "lb2"):
        if engine:
            engine(role)
        else:
            pair.engine(role, standby=True)
    pair.wait_role("lb", "standby")
    pair.wait_role("lb2", "standby")
    keepalived(pair, "lb", 150)
    keepalived(pair, "lb2", 100)
    pair.wait_role("lb", "active", timeout=20)
    time.sleep(1.0)                     # lb2 has heard lb's adverts
    assert pair.status("lb2")["ha"]["role"] == "standby", pair.logs()
    assert pair.arp_check() == [pair.mac["lb"]], pair.logs()
    assert curl_ok(pair.lab, 3, url), pair.logs()
    assert client_neighbour(pair.lab) == pair.mac["lb"]


def test_keepalived_failover_keeps_the_dr_download(pair):
    elect(pair)
    # lb2 is standby and the client's ARP points to lb: lb2 has forwarded
    # nothing yet, or close to it (frames sent to it by a stale cache)
    before = pair.real_frames("lb2")

    # A slow DR download through lb, across the failover.  From here to
    # its end the only TCP traffic to the VIP is the download's: the
    # failover is watched with ping, which the active engine answers
    # itself.
    # The real server paces the download (whoami's ?rate=): curl's
    # --limit-rate paces only its reads, and with the client's receive
    # buffer autotuned to megabytes most of the download could land in the
    # socket before the failover (seen twice: 8 MB in 1.5 s).
    headers = pair.dir / "download.headers"
    download = pair.lab.popen("client", [
        "curl", "-sS", "--max-time", "90", "-D",
        str(headers), "-o", "/dev/null", "-w", "%{size_download} "
        "%{http_code}", f"{URL}/bytes/{DOWNLOAD}?rate={RATE}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        assert download.poll() is None, download.communicate()

        def link_down():
            with IPRoute() as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="eth0")[0],
                         state="down")
        pair.lab.call("lb", link_down)
        failover, tries = until(lambda: ping_ok(pair.lab),
                                FAILOVER_BOUND, "no ping answered by lb2",
                                pair)
        print(f"\nfailover: {failover:.2f} s from lb's link down to the "
              f"first ping answered by lb2 ({tries} unanswered before; "
              f"bound {FAILOVER_BOUND} s, advert_int {ADVERT_INT} s)")
        assert client_neighbour(pair.lab) == pair.mac["lb2"]
        assert pair.status("lb2")["ha"]["role"] == "active"
        assert pair.arp_check() == [pair.mac["lb2"]], pair.logs()

        out, err = download.communicate(timeout=90)
    finally:
        if download.poll() is None:
            download.kill()
            download.wait(5)
    assert download.returncode == 0, (out, err, pair.logs())
    after = pair.real_frames("lb2")
    size, code = out.split()
    assert (int(size), code) == (DOWNLOAD, "200"), (out, err)
    node = re.search(r"(?im)^x-node:\s*(\S+)", headers.read_text()).group(1)
    real = pair.lab.ip(node)
    # After the failover lb2 forwarded the download's ACKs to the real
    # that served it, and to no other: nothing else went to the VIP.
    grew = {r: after[r] - before.get(r, 0) for r in after}
    assert grew[real] > 0, (node, before, after)
    assert all(n == 0 for r, n in grew.items() if r != real), \
        (node, before, after)
    print(f"download: {DOWNLOAD} bytes from {node}, completed across the "
          f"failover; lb2 forwarded {grew[real]} of its frames to {real}, "
          "none to the other reals")
    assert curl_ok(pair.lab, 3), pair.logs()    # new requests, via lb2
    # keepalived on lb saw its link go: fault, so its engine is standby
    pair.wait_role("lb", "standby", timeout=10)
    h = pair.status("lb2")["ha"]
    assert (h["role"], h["transitions"]) == ("active", 1)


def test_dead_engine_hands_over_and_a_new_one_is_elected_back(pair):
    elect(pair)
    lb = next(p for what, p, _ in pair.procs if what == "lb")
    t0 = time.monotonic()
    os.kill(lb.pid, 9)                  # no clean-up, no notify
    lb.wait(5)
    _, tries = until(lambda: ping_ok(pair.lab), ENGINE_DEATH_BOUND,
                        "no ping answered by lb2 after lb's engine died",
                        pair)
    took = time.monotonic() - t0
    print(f"\nengine death: {took:.2f} s from SIGKILL to the first ping "
          f"answered by lb2 ({tries} unanswered before; bound "
          f"{ENGINE_DEATH_BOUND} s; engine check every "
          f"{ha.TRACK_INTERVAL} s, fall {ha.TRACK_FALL})")
    assert pair.status("lb2")["ha"]["role"] == "active", pair.logs()
    assert client_neighbour(pair.lab) == pair.mac["lb2"]
    assert curl_ok(pair.lab, 3), pair.logs()
    log = (pair.dir / "ka-lb.log").read_text()
    assert "FAULT" in log, log[-3000:]

    # A new engine on lb, standby: keepalived sees it answer, leaves
    # FAULT and, with the higher priority, takes the master role back
    # (preemption); the notify scripts run again on both nodes.
    t0 = time.monotonic()
    pair.engine("lb", standby=True, what="lb-again")
    pair.wait_role("lb", "active", timeout=20)
    back = time.monotonic() - t0
    pair.wait_role("lb2", "standby", timeout=10)
    print(f"engine back: lb active again {back:.2f} s after its restart")
    assert pair.arp_check() == [pair.mac["lb"]], pair.logs()
    assert curl_ok(pair.lab, 3), pair.logs()
