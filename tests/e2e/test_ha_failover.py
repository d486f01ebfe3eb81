"""HA failover measured, DR and NAT: two engines, two real keepalived, a
client polling the VIP with curl (one request every ~0.1 s, each bounded
by CURL_TIMEOUT); the figures are printed (pytest -s) and asserted.

- keepalived on the active node is killed with SIGKILL (its processes
  stopped first so none is respawned; no notify script runs): the engine's
  lease runs out and it stands down within STAND_DOWN_BOUND (3 s, the
  issue's), the peer's keepalived hears no more adverts and makes lb2
  active; the service gap seen by the client is bounded; in NAT the real
  servers' gateway ([ha] gateway) leaves lb and is held by lb2, which
  takes the replies (its XDP program steers them by their source).
- the active engine itself is killed with SIGKILL: keepalived's engine
  check puts lb in FAULT and lb2 takes over; in NAT the gateway address
  the dead engine left goes by itself (its kernel lifetime).

DR runs in the one-arm-ha lab (test_ha's), NAT in two-arm-ha: the reals'
default gateway 192.168.50.1 belongs to no node, the active balancer holds
it.  Root; labs named "pfha" + random hex, always removed.
"""

import ipaddress
import os
import secrets
import subprocess
import time

import pytest
from pyroute2 import IPRoute

from pyfwd.control import gateway, ha, lease
from pyfwd.control import server as control
from pyfwd.errors import PyfwdError
from pyfwd.lab.modes import setup_reals, whoami_servers
from pyfwd.lab.topology import Lab

from .test_ha import (ADVERT_INT, ENGINE_DEATH_BOUND, PORT, PYFWD, VIP,
                      Pair, curl_ok, elect, keepalived)

pytestmark = pytest.mark.root

GATEWAY = "192.168.50.1/24"
URLS = {"dr": f"http://{VIP}:{PORT}", "nat": f"http://{VIP}:80"}
STAND_DOWN_BOUND = 3.0      # s, from keepalived's SIGKILL (the issue's)
# lb2's keepalived becomes master 3 adverts and its skew after lb's last
# one (under 4 s); 2 s more for notify_master, the announcements and the
# client's next request.
KEEPALIVED_DEATH_BOUND = 3 * ADVERT_INT + 2
CURL_TIMEOUT = 0.5          # s, one request
PERIOD = 0.05               # s, between requests
POLLS = 600                 # at most, whatever happens (~60 s)


class Poller:
    """curl to url from the client, POLLS times at most, in one shell loop
    in the client's namespace; each line: start, end (epoch s), HTTP
    status (000: no answer)."""

    def __init__(self, lab, url):
        script = (f"for i in $(seq {POLLS}); do s=$(date +%s.%N); "
                  f"c=$(curl -s -o /dev/null --max-time {CURL_TIMEOUT} "
                  f"-w '%{{http_code}}' {url}); "
                  f"echo \"$s $(date +%s.%N) $c\"; sleep {PERIOD}; done")
        self.proc = lab.popen("client", ["bash", "-c", script],
                              stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)

    def stop(self):
        """[(start, end, ok)] of every request made."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 9)
        out, _ = self.proc.communicate(10)
        polls = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3:
                polls.append((float(parts[0]), float(parts[1]),
                              parts[2] == "200"))
        return polls


def outage(polls, since):
    """(the longest time between two answered requests after `since`,
    counting from the last one answered before it; how many requests went
    unanswered meanwhile; how many were made)."""
    prev = max((e for _, e, ok in polls if ok and e <= since), default=since)
    gap, failed, made = 0.0, 0, 0
    for _, end, ok in polls:
        if end <= since:
            continue
        made += 1
        if ok:
            gap, prev = max(gap, end - prev), end
        else:
            failed += 1
    return gap, failed, made


def measured(pair, url, act):
    """Poll url from the client while act() runs (1 s of answered polls
    before it, 2 s after): (what act returned, the longest time without
    an answer after act began, unanswered requests, requests made, every
    poll)."""
    poller = Poller(pair.lab, url)
    try:
        time.sleep(1.0)
        t0 = time.time()
        out = act()
        time.sleep(2.0)
    finally:
        polls = poller.stop()
    return (out, *outage(polls, t0), polls)


def role_of(pair, role):
    try:
        return control.request(pair.sock(role), "status", timeout=1)[
            "ha"]["role"]
    except PyfwdError:
        return None


def wait_for(ok, limit, what, pair, step=0.02):
    """Seconds until ok(); AssertionError with the logs after limit s."""
    t0 = time.monotonic()
    while not ok():
        assert time.monotonic() - t0 < limit, f"{what}: not within " \
            f"{limit} s\n" + pair.logs()
        time.sleep(step)
    return time.monotonic() - t0


def gateway_on(lab, role):
    """The gateway address's IFA_PROTO on role's eth1, or None if absent."""
    want = ipaddress.ip_interface(GATEWAY).ip

    def get():
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname="eth1")[0]
            for m in ipr.get_addr(index=idx):
                if ipaddress.ip_address(m.get_attr("IFA_ADDRESS")) == want:
                    return m.get_attr("IFA_PROTO")
        return None
    return lab.call(role, get)


def plant_leftover(lab, role):
    """What a pyfwd killed before its address expired leaves: the gateway
    on eth1, marked, here without a lifetime."""
    def add():
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname="eth1")[0]
            ipr.addr("add", index=idx, address=GATEWAY.split("/")[0],
                     prefixlen=24, proto=gateway.GATEWAY_PROTO)
    lab.call(role, add)


def nat_engine(pair, role, what=None):
    """`pyfwd start` in NAT on role's node (standby, [ha] gateway), from a
    config file: VIP:80 -> the reals' 8080."""
    reals = "".join(f"[[vip.real]]\naddress = \"{pair.lab.ip(r)}\"\n"
                    "port = 8080\n" for r in pair.lab.reals)
    cfg = pair.dir / f"{role}.toml"
    cfg.write_text(f"""[engine]
iface = "eth0"
inside_iface = "eth1"
control_socket = "{pair.sock(role)}"
role = "standby"

[ha]
gateway = "{GATEWAY}"

[[vip]]
address = "{VIP}"
port = 80
mode = "nat"
scheduler = "maglev"
{reals}""")
    return pair.start(what or role, role, [
        PYFWD, "start", "--config", str(cfg), "--busy-poll", "0",
        "--flows", "16384"])


@pytest.fixture(params=["dr", "nat"])
def ha_pair(request, tmp_path):
    """(mode, Pair): DR in one-arm-ha (the reals set up for the VIP,
    whoami on PORT), NAT in two-arm-ha (whoami on 8080); both engines
    standby, keepalived elected lb."""
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    mode = request.param
    name = "pfha" + secrets.token_hex(3)
    workdir = tmp_path / name
    workdir.mkdir()
    topology = "one-arm-ha" if mode == "dr" else "two-arm-ha"
    with Lab(name, topology=topology, reals=3) as lab:
        if mode == "dr":
            setup_reals(lab, [VIP])
        with whoami_servers(lab, PORT if mode == "dr" else 8080):
            p = Pair(lab, workdir)
            try:
                if mode == "nat":
                    # lb2's engine removes what a dead one left there
                    plant_leftover(lab, "lb2")
                    elect(p, lambda role: nat_engine(p, role),
                          URLS["nat"])
                    assert gateway_on(lab, "lb") == gateway.GATEWAY_PROTO
                    assert gateway_on(lab, "lb2") is None, p.logs()
                else:
                    elect(p)
                yield mode, p
            finally:
                p.stop()


def kill_keepalived(pair, role):
    """SIGKILL role's keepalived, its VRRP child first, the parent stopped
    meanwhile so that it respawns nothing: no notify script runs."""
    parent = next(p for what, p, _ in pair.procs if what == f"ka-{role}")
    child = int((pair.dir / f"keepalived-{role}-vrrp.pid").read_text())
    os.kill(parent.pid, 19)             # SIGSTOP
    os.kill(child, 9)
    os.kill(parent.pid, 9)
    parent.wait(5)


def test_keepalived_killed_stands_down_and_the_peer_serves(ha_pair):
    mode, pair = ha_pair
    url = URLS[mode]
    lease_left = control.request(pair.sock("lb"), "status")["ha"]["lease"]
    assert lease_left["armed"], lease_left      # keepalived renews it

    def act():
        kill_keepalived(pair, "lb")
        down = wait_for(lambda: role_of(pair, "lb") == "standby",
                        STAND_DOWN_BOUND, "lb standing down", pair)
        return down, down + wait_for(
            lambda: role_of(pair, "lb2") == "active",
            KEEPALIVED_DEATH_BOUND + 2, "lb2 active", pair)
    (down, took), gap, failed, made, polls = measured(pair, url, act)
    print(f"\n{mode}: keepalived on the active node SIGKILLed: its engine "
          f"stood down after {down:.2f} s (lease {lease.LEASE:g} s, bound "
          f"{STAND_DOWN_BOUND:g} s); lb2 active after {took:.2f} s; "
          f"longest time without an answer {gap:.2f} s ({failed} of "
          f"{made} requests unanswered, one every ~{PERIOD + 0.03:.2f} s, "
          f"bound {KEEPALIVED_DEATH_BOUND} s)")
    assert down < STAND_DOWN_BOUND
    assert gap < KEEPALIVED_DEATH_BOUND, polls
    assert made > 20 and polls[-1][2], polls    # answered at the end
    h = control.request(pair.sock("lb"), "status")["ha"]
    assert (h["role"], h["lease_expired"]) == ("standby", 1), h
    assert "lease expired" in (pair.dir / "lb.log").read_text()
    assert curl_ok(pair.lab, 3, url), pair.logs()
    if mode == "nat":
        assert gateway_on(pair.lab, "lb") is None, pair.logs()
        assert gateway_on(pair.lab, "lb2") == gateway.GATEWAY_PROTO
        # the new requests' replies reached lb2's data plane: it forwarded
        # them, since its XDP program steers them by their source
        shown = control.request(pair.sock("lb2"), "show")[0]["reals"]
        assert sum(r["frames"] for r in shown) > 0, shown
    # the next TRACK_FALL checks are refused (a keepalived that was only
    # late goes through FAULT and elects again), then renewals arm again
    refused = 0
    for _ in range(ha.TRACK_FALL + 1):
        try:
            control.request(pair.sock("lb"), "ha-renew")
        except PyfwdError as exc:
            assert "stood down when its lease ran out" in str(exc)
            refused += 1
    assert refused == ha.TRACK_FALL     # keepalived renews nothing now


def test_engine_killed_the_peer_serves(ha_pair):
    mode, pair = ha_pair
    url = URLS[mode]
    lb = next(p for what, p, _ in pair.procs if what == "lb")

    def act():
        os.kill(lb.pid, 9)              # no clean-up, no notify
        lb.wait(5)
        took = wait_for(lambda: role_of(pair, "lb2") == "active",
                        ENGINE_DEATH_BOUND, "lb2 active", pair)
        if mode != "nat":
            return took, None
        # the dead engine's gateway address goes with its lifetime
        return took, took + wait_for(
            lambda: gateway_on(pair.lab, "lb") is None,
            gateway.LIFETIME + 2, "lb's gateway gone", pair, step=0.1)
    (took, gone), gap, failed, made, polls = measured(pair, url, act)
    print(f"\n{mode}: the active engine SIGKILLed: lb2 active after "
          f"{took:.2f} s; longest time without an answer {gap:.2f} s "
          f"({failed} of {made} requests unanswered; bound "
          f"{ENGINE_DEATH_BOUND} s)"
          + (f"; the dead node's gateway address gone after {gone:.2f} s "
             f"(lifetime {gateway.LIFETIME} s)" if gone is not None else ""))
    assert gap < ENGINE_DEATH_BOUND, polls
    assert made > 20 and polls[-1][2], polls
    assert curl_ok(pair.lab, 3, url), pair.logs()
    if mode == "nat":
        assert gateway_on(pair.lab, "lb2") == gateway.GATEWAY_PROTO
