"""pyfwd.neighbours (the ARP responder, FrameSocket, arp-check, the
neighbours' MACs) and pyfwd.ops.realserver against real kernels in a
one-arm lab.

The functions act on the current network namespace, so they run either in a
thread that entered a lab namespace (lab.call) or, for realserver (as the
CLI would), in a child `python -c` started inside it (lab.run).

Lab: client 10.0.0.1, lb 10.0.0.2, real1 10.0.0.11, real2 10.0.0.12 on one
bridge; the VIP 10.0.0.100 is nobody's unless a test puts it somewhere.
"""

import contextlib
import errno
import ipaddress
import json
import random
import socket
import string
import sys
import threading
import time

import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

from pyfwd.errors import ConfigError, PyfwdError
from pyfwd.lab.topology import Lab
from pyfwd.neighbours.arp import ArpResponder, gratuitous
from pyfwd.neighbours.check import arp_check
from pyfwd.neighbours.framesocket import FrameSocket
from pyfwd.frames import mac_to_bytes, mac_to_str
from pyfwd.neighbours import kernel
from pyfwd.ops import realserver

VIP = "10.0.0.100"
VIP2 = "10.0.0.101"
CHECK = 0.5                 # seconds arp_check listens


def lab_name() -> str:
    return "pfa" + "".join(random.choices(string.ascii_lowercase
                                          + string.digits, k=5))


@pytest.fixture
def lab():
    with Lab(lab_name(), topology="one-arm", reals=2) as the_lab:
        yield the_lab


# -- helpers


def in_ns(the_lab, role, fn, timeout=10.0):
    """fn() in a thread inside role's namespace."""
    return the_lab.call(role, fn, timeout=timeout)


def mac(the_lab, role) -> str:
    return the_lab.node(role).interfaces[0].mac


def netlink(the_lab, role, job):
    """job(ipr, index of eth0, index of lo) inside role's namespace."""
    def run():
        with IPRoute() as ipr:
            return job(ipr, ipr.link_lookup(ifname="eth0")[0],
                       ipr.link_lookup(ifname="lo")[0])
    return in_ns(the_lab, role, run)


def add_vip_on_lo(the_lab, role, vip=VIP):
    netlink(the_lab, role, lambda ipr, eth0, lo:
            ipr.addr("add", index=lo, address=vip, prefixlen=32))


def neighbour(the_lab, role, ip):
    """(lladdr, state) of role's neighbour entry for ip on eth0, or None."""
    def job(ipr, eth0, lo):
        for n in ipr.neigh("dump", family=socket.AF_INET, ifindex=eth0):
            if n.get("NDA_DST") == ip:
                return n.get("NDA_LLADDR"), n["state"]
        return None
    return netlink(the_lab, role, job)


def neighbour_mac(the_lab, role, ip):
    entry = neighbour(the_lab, role, ip)
    return entry[0] if entry else None


def set_neighbour(the_lab, role, ip, lladdr, state):
    netlink(the_lab, role, lambda ipr, eth0, lo: ipr.neigh(
        "replace", dst=ip, lladdr=lladdr, ifindex=eth0,
        state=ndmsg.states[state]))


def del_neighbour(the_lab, role, ip):
    def job(ipr, eth0, lo):
        try:
            ipr.neigh("del", dst=ip, ifindex=eth0)
        except NetlinkError as exc:
            if exc.code != errno.ENOENT:
                raise
    netlink(the_lab, role, job)


def wait_for(predicate, timeout=3.0, step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def check(the_lab, role, vip=VIP, timeout=CHECK) -> set:
    """{(mac, is_balancer)} answering ARP for vip, seen from role."""
    lb_mac = mac(the_lab, "lb")
    found = in_ns(the_lab, role, lambda: arp_check(
        "eth0", vip, timeout=timeout, own_mac=lb_mac))
    assert all(r.ip == ipaddress.IPv4Address(vip) for r in found)
    assert len(found) == len({r.mac for r in found})      # one per MAC
    return {(r.mac, r.is_balancer) for r in found}


def realserver_call(the_lab, role, call: str):
    """``pyfwd.ops.realserver.<call>`` in a fresh python inside role, as the
    CLI would run it; returns its JSON result."""
    code = ("import json; from pyfwd.ops import realserver; "
            f"print(json.dumps(realserver.{call}))")
    done = the_lab.run(role, [sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@contextlib.contextmanager
def responder_in(the_lab, role, vips, ifname="eth0"):
    """An ArpResponder answering on role's ifname, in a test thread: the
    engine's ARP loop without the data plane.  Yields (responder, sock)."""
    sock = in_ns(the_lab, role, lambda: FrameSocket(ifname))
    responder = ArpResponder(sock.mac, vips)
    stop = threading.Event()
    errors = []

    def loop():
        try:
            while not stop.is_set():
                frame = sock.recv(0.05)
                if frame is not None:
                    reply = responder.handle(frame)
                    if reply is not None:
                        sock.send(reply)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=loop, daemon=True, name="arp-loop")
    thread.start()
    try:
        yield responder, sock
    finally:
        stop.set()
        thread.join(2)
        sock.close()
    assert not thread.is_alive() and not errors, errors


def send_udp(the_lab, role, dst, src=None):
    """One UDP datagram from role (from src if given): makes the kernel
    resolve the next hop."""
    with the_lab.socket(role, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        if src is not None:
            sock.bind((src, 0))
        sock.sendto(b"x", (dst, 9))


# -- 1. the ARP problem, seen and solved


@pytest.mark.root
def test_arp_problem_seen_by_arp_check_and_solved_by_setup(lab, need_root):
    lb_mac, real2_mac = mac(lab, "lb"), mac(lab, "real2")
    # real2 holds the VIP on lo with the default settings (and a per-
    # interface arp_ignore=3, which answers for a global VIP: max() wins)
    add_vip_on_lo(lab, "real2")
    lab.sysctl("real2", "net.ipv4.conf.eth0.arp_ignore", 3)

    # from the lb: real2 answers for the VIP
    assert check(lab, "lb") == {(real2_mac, False)}

    with responder_in(lab, "lb", [VIP]) as (responder, _):
        # arp_announce=0: real2's own ARP requests carry the VIP as sender,
        # and the balancer's responder records the conflict
        send_udp(lab, "real2", lab.ip("client"), src=VIP)
        assert wait_for(lambda: responder.conflicts), responder.counters
        assert set(responder.conflicts[ipaddress.IPv4Address(VIP)]) == \
            {real2_mac}

        # from the client: both the balancer and real2 answer, both listed
        assert check(lab, "client") == {(lb_mac, True), (real2_mac, False)}

        # the fix
        changes = realserver_call(lab, "real2", "setup('10.0.0.100')")
        assert sorted(changes) == sorted([
            "net.ipv4.conf.all.arp_ignore: 0 -> 1",
            "net.ipv4.conf.all.arp_announce: 0 -> 2",
            "net.ipv4.conf.eth0.arp_ignore: 3 -> 1",
            "net.ipv4.conf.eth0.arp_announce: 0 -> 2"])   # VIP already on lo
        assert realserver_call(lab, "real2", "setup('10.0.0.100')") == []
        state = realserver_call(lab, "real2", "status('10.0.0.100')")
        assert state["ok"] and state["vip_on_dev"], state["problems"]

        assert check(lab, "client") == {(lb_mac, True)}
        assert check(lab, "lb") == set()

        # arp_announce=2: real2's requests no longer name the VIP
        conflicts = responder.counters["conflicts"]
        del_neighbour(lab, "real2", lab.ip("client"))
        send_udp(lab, "real2", lab.ip("client"), src=VIP)
        assert wait_for(lambda: neighbour(lab, "real2", lab.ip("client"))
                        and neighbour(lab, "real2", lab.ip("client"))[1]
                        == ndmsg.states["reachable"])
        assert responder.counters["conflicts"] == conflicts

    # undo: VIP gone, settings back to the kernel's defaults
    changes = realserver_call(lab, "real2", "setup('10.0.0.100', undo=True)")
    assert "removed 10.0.0.100/32 from lo" in changes
    assert "net.ipv4.conf.all.arp_ignore: 1 -> 0" in changes
    assert "net.ipv4.conf.eth0.arp_announce: 2 -> 0" in changes
    state = realserver_call(lab, "real2", "status('10.0.0.100')")
    assert not state["vip_on_dev"] and not state["ok"]
    assert state["arp"] == {
        "all": {"arp_ignore": 0, "arp_announce": 0},
        "eth0": {"arp_ignore": 0, "arp_announce": 0}}
    assert realserver_call(lab, "real2",
                           "setup('10.0.0.100', undo=True)") == []


@pytest.mark.root
def test_setup_from_scratch_and_undo_keeps_settings_for_other_vips(
        lab, need_root):
    state = realserver_call(lab, "real1", "status('10.0.0.100')")
    assert not state["ok"] and len(state["problems"]) == 3

    changes = realserver_call(lab, "real1", "setup('10.0.0.100')")
    assert changes[-1] == "added 10.0.0.100/32 to lo"      # after the ARP
    assert len(changes) == 5                               # settings
    assert realserver_call(lab, "real1", "setup('10.0.0.101')") == [
        "added 10.0.0.101/32 to lo"]
    assert realserver_call(lab, "real1", "status('10.0.0.101')")["ok"]
    # real1 owns the VIPs (accepts traffic for them) but stays silent
    assert check(lab, "lb") == set()
    assert check(lab, "lb", vip=VIP2) == set()

    # undo one VIP: another remains on lo, so the settings stay
    assert realserver_call(lab, "real1", "setup('10.0.0.100', undo=True)") \
        == ["removed 10.0.0.100/32 from lo"]
    assert lab.sysctl("real1", "net.ipv4.conf.all.arp_ignore") == "1"
    assert realserver_call(lab, "real1", "status('10.0.0.101')")["ok"]
    # undo the last one: the settings go back to 0
    changes = realserver_call(lab, "real1", "setup('10.0.0.101', undo=True)")
    assert changes[0] == "removed 10.0.0.101/32 from lo" and len(changes) == 5
    assert lab.sysctl("real1", "net.ipv4.conf.all.arp_announce") == "0"


def test_setup_refuses_bad_input():
    # checked before any kernel call: no root needed
    with pytest.raises(ConfigError, match="unicast"):
        realserver.setup("fe80::100")
    with pytest.raises(ConfigError, match="unicast"):
        realserver.setup("ff02::1")
    with pytest.raises(ConfigError, match="'10.0.0.300'"):
        realserver.status("10.0.0.300")
    with pytest.raises(ConfigError, match="unicast"):
        realserver.setup("224.0.0.1")


@pytest.mark.root
def test_setup_names_a_missing_device(lab, need_root):
    with pytest.raises(ConfigError, match="'dummy9'"):
        in_ns(lab, "real1", lambda: realserver.setup(VIP, dev="dummy9"))


# -- 2. resolve: a real server's MAC


def lb_resolves(the_lab, ip, **kw):
    """kernel.neighbour_mac() of ip on the lb's eth0."""
    return in_ns(the_lab, "lb",
                 lambda: kernel.neighbour_mac("eth0", ip, **kw))


@pytest.mark.root
def test_resolve_by_arp_then_from_the_kernel_table(lab, need_root):
    real1, real2 = lab.ip("real1"), lab.ip("real2")
    real1_mac = mac_to_bytes(mac(lab, "real1"))
    real2_mac = mac_to_bytes(mac(lab, "real2"))

    # empty neighbour table: the answer comes off the wire
    assert neighbour(lab, "lb", real1) is None
    assert lb_resolves(lab, real1) == real1_mac

    # the kernel table is used first: a permanent (here bogus) entry wins
    set_neighbour(lab, "lb", real2, "02:00:00:00:99:99", "permanent")
    assert lb_resolves(lab, real2) == b"\x02\x00\x00\x00\x99\x99"
    assert lb_resolves(lab, real2, kernel=False) == real2_mac

    # an entry the kernel learnt itself (traffic from the lb to real1)
    send_udp(lab, "lb", real1)
    assert wait_for(lambda: (neighbour(lab, "lb", real1) or (0, 0))[1]
                    == ndmsg.states["reachable"])
    assert lb_resolves(lab, real1) == real1_mac

    # nobody: None, within the timeout; refresh does them all at once
    start = time.monotonic()
    got = in_ns(lab, "lb", lambda: kernel.neighbour_macs(
        "eth0", [real1, ipaddress.ip_address(real2), "10.0.0.77"],
        timeout=0.4, retries=2, kernel=False))
    assert time.monotonic() - start < 1.5
    assert got == {real1: real1_mac, ipaddress.ip_address(real2): real2_mac,
                   "10.0.0.77": None}


@pytest.mark.root
def test_missing_interface_is_a_clear_error(lab, need_root):
    with pytest.raises(PyfwdError, match="'nope0'"):
        in_ns(lab, "lb", lambda: FrameSocket("nope0"))
    with pytest.raises(PyfwdError, match="'nope0'"):
        in_ns(lab, "lb", lambda: kernel.neighbour_mac("nope0", "10.0.0.11"))
    with pytest.raises(PyfwdError, match="'nope0'"):
        in_ns(lab, "lb", lambda: arp_check("nope0", VIP))


# -- 3. the responder, end to end


@pytest.mark.root
def test_client_kernel_resolves_the_vip_to_the_lb_through_the_responder(
        lab, need_root):
    lb_mac = mac(lab, "lb")
    # the lb's kernel does not own the VIP: only the responder can answer
    with responder_in(lab, "lb", [VIP]) as (responder, sock):
        assert mac_to_str(sock.mac) == lb_mac
        send_udp(lab, "client", VIP)
        # the entry is INCOMPLETE (no MAC) until the reply arrives
        assert wait_for(lambda: neighbour_mac(lab, "client", VIP)) == lb_mac
        assert responder.counters["requests_answered"] >= 1
        assert responder.conflicts == {}
        arp_table = lab.run("client", ["cat", "/proc/net/arp"],
                            capture_output=True, text=True, timeout=5).stdout
        assert any(line.split()[:1] == [VIP] and lb_mac in line
                   for line in arp_table.splitlines()), arp_table

        # a gratuitous ARP overrides a stale entry pointing elsewhere
        set_neighbour(lab, "client", VIP, "02:00:00:00:99:99", "stale")
        sock.send(gratuitous(sock.mac, VIP))
        assert wait_for(lambda: neighbour_mac(lab, "client", VIP)
                        == lb_mac), neighbour(lab, "client", VIP)
