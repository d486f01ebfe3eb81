"""What the ARP problem lesson (pyfwd.lab.arpproblem) measures, and how.

The values (``Request``, ``Announcement``, ``ArpCheckRun``, and ``Result``
with what it concludes from them) and the measurements that make them in a
one-arm lab: one HTTP request from the client with the client's ARP cache
for the VIP before and after and the balancer's counters meanwhile
(``request``), waiting for the engine's gratuitous ARP
(``wait_for_announcement``), `pyfwd arp-check` from the client
(``run_arp_check``), and reading and deleting ARP cache entries.  Nothing
here prints: the lesson says what these measured.
"""

import contextlib
import errno
import logging
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import LabError
from . import modes as labmodes
from .programs import PYFWD
from ..frames import mac_to_str

__all__ = ["VIP", "BROKEN", "Request", "Announcement", "ArpCheckRun",
           "Result", "mac_of", "parse_arp_check", "cache_history",
           "frame_counts", "punts_handled", "cached_mac", "forget",
           "settled_counts", "request", "wait_for_announcement",
           "run_arp_check", "add_vip_on_lo", "engine_warnings"]

VIP = labmodes.VIP
PORT = labmodes.WHOAMI_PORT
URL = f"http://{VIP}:{PORT}/"
BROKEN = "real1"            # the real server left without realserver setup

NETLINK_TIMEOUT = 5.0       # one neighbour-table job in a namespace (s)
CURL_TIMEOUT = 3.0          # one HTTP request (s)
CHECK_TIMEOUT = 20.0        # one `pyfwd arp-check` / `realserver setup` (s)
ANNOUNCE_WAIT = 1.5         # after an announcement is due, wait this long
SETTLE = 0.5                # at most this long for punts to be handled (s)
EARLY = 0.05                # a cache read this close before "due" is after

_MAC_RE = re.compile(r"^([0-9a-f]{2}(?::[0-9a-f]{2}){5})(?=\s|$)", re.I)


# ---------------------------------------------------------------------------
# What is measured


@dataclass(frozen=True)
class Request:
    """One HTTP request from the client to the VIP.

    ``cause`` says what happened just before it.  ``mac_before`` and
    ``mac_after`` are the client's ARP cache entry for the VIP (None: no
    entry).  ``node`` is the real server that answered (None if the request
    failed, ``error`` then says why).  The rest is what the balancer
    counted while the request ran: ``flows`` new flows, ``frames`` frames
    in all, of which ``forwarded`` it forwarded to a real server and ``arp``
    were ARP; ``arp_answered`` ARP requests for the VIP it answered,
    ``arp_claims`` ARP frames from another MAC naming the VIP as sender.  A
    request crossed the balancer iff it made a new flow there (only this
    request's connection runs meanwhile).
    """

    cause: str
    mac_before: Optional[str]
    mac_after: Optional[str]
    node: Optional[str]
    flows: int
    frames: int
    error: Optional[str] = None
    forwarded: int = 0
    arp: int = 0
    arp_answered: int = 0
    arp_claims: int = 0

    @property
    def crossed(self) -> bool:
        return self.flows > 0

    @property
    def bypassed(self) -> bool:
        """It was answered, and the balancer made no flow for it."""
        return self.node is not None and not self.crossed


@dataclass(frozen=True)
class Announcement:
    """Waiting for the engine's next gratuitous ARP.  ``due`` is when it
    was scheduled, in seconds after the engine started (None: the engine
    had made its last one).  ``mac_before`` is the client's cache entry for
    the VIP last read before it was due, ``mac_after`` the last read.
    ``seen`` is when the cache first held ``lb_mac`` after holding another
    MAC (None: it already held it, or never did within the wait)."""

    due: Optional[float]
    seen: Optional[float]
    mac_before: Optional[str]
    mac_after: Optional[str]
    lb_mac: str

    @property
    def already_held(self) -> bool:
        """The cache held the balancer's MAC before it was due: the
        announcement changed nothing there."""
        return self.mac_before == self.lb_mac

    @property
    def took(self) -> bool:
        """The cache went from another MAC to the balancer's after it was
        due."""
        return self.seen is not None


@dataclass(frozen=True)
class ArpCheckRun:
    """`pyfwd arp-check` run in the client namespace: its exit status, its
    output, and the MACs it listed (balancer's first if present)."""

    returncode: int
    output: str
    macs: tuple
    balancer_mac: str

    @property
    def others(self) -> tuple:
        """The MACs that answered and are not the balancer's."""
        return tuple(m for m in self.macs if m != self.balancer_mac)


def mac_of(owners: dict, role: str) -> str:
    """The MAC of ``role`` in ``owners`` ({MAC: role}).  LabError if none."""
    for mac, who in owners.items():
        if who == role:
            return mac
    raise LabError(f"the lab has no host {role!r} with one interface")


@dataclass
class Result:
    """Everything the lesson measured, in order (each step's part under
    the names it returns them by)."""

    owners: dict                            # MAC -> role (mac_owners)
    broken_sysctls: dict = field(default_factory=dict)  # on real1
    before: list = field(default_factory=list)         # [Request]
    announcement: Optional[Announcement] = None
    check_before: Optional[ArpCheckRun] = None
    engine_conflicts: dict = field(default_factory=dict)  # VIP -> [MAC]
    engine_log: list = field(default_factory=list)      # its warnings
    setup_output: str = ""
    after: list = field(default_factory=list)          # [Request]
    cache_after: Optional[str] = None
    conflict_frames_after: int = 0          # engine conflicts after the fix
                                            # (ARP frames from another MAC
                                            # naming the VIP as sender)
    check_after: Optional[ArpCheckRun] = None

    @property
    def lb_mac(self) -> str:
        return mac_of(self.owners, "lb")

    @property
    def broken_mac(self) -> str:
        return mac_of(self.owners, BROKEN)

    @property
    def bypassed(self) -> list:
        """The requests before the fix that made no flow on the balancer."""
        return [r for r in self.before if r.bypassed]

    @property
    def cache_history(self) -> list:
        """The MACs the client's cache held for the VIP before the fix, as
        they followed one another (repeats and empty entries left out)."""
        return cache_history(self.before)

    @property
    def flipped(self) -> bool:
        """The cache held both the balancer's and real1's MAC."""
        return {self.lb_mac, self.broken_mac} <= set(self.cache_history)

    @property
    def failure_seen(self) -> bool:
        """A request bypassed the balancer, and arp-check failed naming
        real1's MAC."""
        return bool(self.bypassed) and self.check_before is not None \
            and self.check_before.returncode == 1 \
            and self.broken_mac in self.check_before.others

    @property
    def fixed(self) -> bool:
        """After the fix every request crossed the balancer, the cache holds
        the balancer's MAC, arp-check passes with the balancer alone."""
        return bool(self.after) \
            and all(r.crossed and r.node for r in self.after) \
            and self.cache_after == self.lb_mac \
            and self.check_after is not None \
            and self.check_after.returncode == 0 \
            and not self.check_after.others

    @property
    def ok(self) -> bool:
        return self.failure_seen and self.fixed



# ---------------------------------------------------------------------------
# Pure helpers


def parse_arp_check(output: str) -> tuple:
    """The MACs listed by `pyfwd arp-check` (one ``MAC  text`` line each),
    in order, lower case."""
    return tuple(m.group(1).lower() for m in
                 map(_MAC_RE.match, output.splitlines()) if m)


def cache_history(requests) -> list:
    """The MACs the client's cache held for the VIP over ``requests``
    ([Request]), as they followed one another (repeats and empty entries
    left out)."""
    history = []
    for r in requests:
        for mac in (r.mac_before, r.mac_after):
            if mac is not None and (not history or history[-1] != mac):
                history.append(mac)
    return history


def frame_counts(stats: dict) -> dict:
    """From an ``Engine.stats()`` snapshot, the counters a Request is the
    difference of: new flows, frames, frames forwarded to a real server,
    ARP frames, ARP requests for a VIP answered, ARP frames from another
    MAC naming a VIP as sender."""
    reason = stats["core"]["reason"]
    return {"flows": stats["core"]["flows_new"],
            "frames": stats["core"]["frames"],
            "forwarded": reason.get("forward", 0),
            "arp": reason.get("pass_arp", 0) + reason.get("punt_arp", 0),
            "arp_answered": stats["arp"].get("requests_answered", 0),
            "arp_claims": stats["arp"].get("conflicts", 0)}


def punts_handled(stats: dict) -> bool:
    """In an ``Engine.stats()`` snapshot, has the control thread handled
    every frame the data plane punted (its ARP counters count each punted
    frame once: answered, conflict or ignored)?"""
    core = stats["core"]
    return sum(stats["arp"].values()) >= \
        core["verdict"]["punt"] - core.get("punt_overflow", 0)


# ---------------------------------------------------------------------------
# Measuring, in the lab's namespaces


def _netlink(lab, role: str, job: Callable, what: str):
    """job() in role's namespace; a netlink error becomes a LabError."""
    try:
        return lab.call(role, job, timeout=NETLINK_TIMEOUT)
    except NetlinkError as exc:
        raise LabError(f"{what} in {role}: {exc}") from None


def _neigh_job(ip: str, delete: bool) -> Callable[[], Optional[str]]:
    """A job for lab.call: the eth0 neighbour entry's MAC for ip (or None),
    after deleting it if ``delete`` (as an expiry would)."""
    def job():
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname="eth0")[0]
            if delete:
                try:
                    ipr.neigh("del", dst=ip, ifindex=index)
                except NetlinkError as exc:
                    if exc.code != errno.ENOENT:
                        raise
                return None
            for n in ipr.neigh("dump", family=socket.AF_INET,
                               ifindex=index):
                if n.get("NDA_DST") == ip and n.get("NDA_LLADDR"):
                    return mac_to_str(n.get("NDA_LLADDR"))
            return None
    return job


def cached_mac(lab, role: str, ip: str) -> Optional[str]:
    """The MAC in ``role``'s ARP cache (eth0) for ``ip``, or None."""
    return _netlink(lab, role, _neigh_job(ip, False),
                    f"reading the ARP cache entry for {ip}")


def forget(lab, role: str, ip: str) -> None:
    """Delete ``role``'s ARP cache entry for ``ip`` (if any)."""
    _netlink(lab, role, _neigh_job(ip, True),
             f"deleting the ARP cache entry for {ip}")


def add_vip_on_lo(lab, role: str) -> None:
    """The VIP on role's lo, and nothing else: the ARP sysctls stay at the
    lab's 0 (arp_ignore=0, arp_announce=0), like a forgotten real server."""
    lab.address(role, "add", "lo", VIP, 32)


def settled_counts(eng) -> dict:
    """frame_counts() once the control thread has handled the punted
    frames (it drains them every few ms), or after SETTLE seconds."""
    deadline = time.monotonic() + SETTLE
    stats = eng.stats()
    while not punts_handled(stats) and time.monotonic() < deadline:
        time.sleep(0.005)
        stats = eng.stats()
    return frame_counts(stats)


def request(lab, eng, cause: str) -> Request:
    """One GET of the VIP from the client, measured (see Request)."""
    before = cached_mac(lab, "client", VIP)
    c0 = settled_counts(eng)
    ok, said = labmodes.curl(lab, "client", URL, timeout=CURL_TIMEOUT)
    c1 = settled_counts(eng)
    after = cached_mac(lab, "client", VIP)
    node, error = None, said or "no reply"
    if ok:
        node = labmodes.parse_whoami(said)["node"]
        node, error = (None, f"reply: {said!r}") if node == "?" \
            else (node, None)
    return Request(cause, before, after, node, error=error,
                   **{k: c1[k] - c0[k] for k in c0})


def wait_for_announcement(lab, eng, lb_mac: str, times=None,
                          wait: float = ANNOUNCE_WAIT) -> Announcement:
    """Wait for the engine's next scheduled gratuitous ARP (``times``,
    pyfwd.control.ha.GARP_REPEAT by default, in seconds after
    eng.started) and read the client's cache for the VIP until it goes from
    another MAC to ``lb_mac``, or ``wait`` seconds after the announcement
    was due."""
    if times is None:
        from ..control.ha import GARP_REPEAT as times

    def since_start():
        return time.monotonic() - eng.started

    prior = cached_mac(lab, "client", VIP)
    due = next((t for t in times if t > since_start() + EARLY), None)
    if due is None:
        return Announcement(None, None, prior, prior, lb_mac)
    while True:
        mac = cached_mac(lab, "client", VIP)
        t = since_start()
        if t < due - EARLY:
            prior = mac
        elif prior != lb_mac and mac == lb_mac:
            return Announcement(due, t, prior, mac, lb_mac)
        if t > due + wait:
            return Announcement(due, None, prior, mac, lb_mac)
        time.sleep(0.02)


def run_arp_check(lab, lb_mac: str) -> ArpCheckRun:
    """`pyfwd arp-check --iface eth0 --vip VIP --balancer-mac lb_mac` in
    the client namespace, as an operator would run it.  LabError if it
    does not finish within CHECK_TIMEOUT."""
    try:
        r = lab.run("client", PYFWD + [
            "arp-check", "--iface", "eth0", "--vip", VIP, "--balancer-mac",
            lb_mac], capture_output=True, text=True, timeout=CHECK_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise LabError(f"pyfwd arp-check in the client: no answer in "
                       f"{CHECK_TIMEOUT:g} s") from None
    output = (r.stdout + r.stderr).strip()
    return ArpCheckRun(r.returncode, output, parse_arp_check(r.stdout),
                       lb_mac)


class _Collect(logging.Handler):
    """Keeps the engine's warnings to show them in the lesson (and, being
    a handler, keeps logging's last-resort printer from interleaving them
    with the lesson's text)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def engine_warnings():
    """The warnings pyfwd's loggers give in the with block, as a list that
    fills as they come."""
    logger = logging.getLogger("pyfwd")
    handler = _Collect()
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


