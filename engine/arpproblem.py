"""`pyfwd lab arp-problem`: the ARP problem of direct routing, shown.

In DR every real server holds the VIP on ``lo``.  Unless it is told not to
(``pyfwd realserver setup``: arp_ignore=1, arp_announce=2), its kernel
answers "who has the VIP?" like any address of its own, and its own ARP
requests carry the VIP as their sender.  Clients on the segment then cache
that real server's MAC for the VIP, and their connections go straight to it:
the balancer never sees them.

The lesson builds a one-arm lab, breaks real1 that way, and measures:

1. requests from the client, each with the MAC the client's ARP cache held
   for the VIP before and after, who answered, and whether the balancer saw
   a new flow;
2. what `pyfwd arp-check` and the engine itself report;
3. the same after `pyfwd realserver setup` on real1.

Measuring (``request()``, ``wait_for_announcement()``, ``run_arp_check()``,
``lesson()``'s ``Result``) is kept apart from the text (``format_*``): the
tests assert on the values, the student reads the text.  Nothing printed
claims a result that was not measured.
"""

import contextlib
import errno
import logging
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import labmodes
from .errors import LabError

__all__ = ["VIP", "BROKEN", "Request", "Announcement", "ArpCheckRun",
           "Result", "owner", "parse_arp_check", "format_request",
           "format_arp_check", "request", "wait_for_announcement",
           "run_arp_check", "lesson", "run"]

VIP = labmodes.VIP
PORT = labmodes.WHOAMI_PORT
URL = f"http://{VIP}:{PORT}/"
BROKEN = "real1"            # the real server left without realserver setup

NETLINK_TIMEOUT = 5.0       # one neighbour-table job in a namespace (s)
CURL_TIMEOUT = 3            # one HTTP request (s)
CHECK_TIMEOUT = 20.0        # one `pyfwd arp-check` / `realserver setup` (s)
ANNOUNCE_WAIT = 1.5         # after an announcement is due, wait this long

_NODE_RE = re.compile(r"\bnode=(\S+)")
_MAC_RE = re.compile(r"^([0-9a-f]{2}(?::[0-9a-f]{2}){5})\s", re.I)


# ---------------------------------------------------------------------------
# What is measured


@dataclass(frozen=True)
class Request:
    """One HTTP request from the client to the VIP.

    ``cause`` says what happened just before it.  ``mac_before`` and
    ``mac_after`` are the client's ARP cache entry for the VIP (None: no
    entry).  ``node`` is the real server that answered (None if the request
    failed, ``error`` then says why).  ``flows`` and ``frames`` are how many
    new flows and frames the balancer counted during the request: a request
    crossed the balancer iff it made a new flow there.
    """

    cause: str
    mac_before: Optional[str]
    mac_after: Optional[str]
    node: Optional[str]
    flows: int
    frames: int
    error: Optional[str] = None

    @property
    def crossed(self) -> bool:
        return self.flows > 0

    @property
    def bypassed(self) -> bool:
        """It was answered, and the balancer never saw it."""
        return self.node is not None and not self.crossed


@dataclass(frozen=True)
class Announcement:
    """Waiting for the engine's next gratuitous ARP.  ``due`` and ``seen``
    are seconds after the engine started: when it was scheduled and when
    the client's cache first held the balancer's MAC (None: it never did
    before the wait ended, or no announcement was left to wait for)."""

    due: Optional[float]
    seen: Optional[float]
    mac_before: Optional[str]
    mac_after: Optional[str]


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


@dataclass
class Result:
    """Everything the lesson measured, in order."""

    macs: dict                              # role -> eth0 MAC
    before: list = field(default_factory=list)         # [Request]
    announcement: Optional[Announcement] = None
    check_before: Optional[ArpCheckRun] = None
    engine_conflicts: dict = field(default_factory=dict)  # VIP -> [MAC]
    engine_log: list = field(default_factory=list)      # its warnings
    setup_output: str = ""
    after: list = field(default_factory=list)          # [Request]
    cache_after: Optional[str] = None
    conflict_frames_after: int = 0          # engine conflicts after the fix
    check_after: Optional[ArpCheckRun] = None

    @property
    def lb_mac(self) -> str:
        return self.macs["lb"]

    @property
    def broken_mac(self) -> str:
        return self.macs[BROKEN]

    @property
    def bypassed(self) -> list:
        """The requests before the fix that never reached the balancer."""
        return [r for r in self.before if r.bypassed]

    @property
    def cache_history(self) -> list:
        """The MACs the client's cache held for the VIP before the fix, as
        they followed one another (repeats and empty entries left out)."""
        history = []
        for r in self.before:
            for mac in (r.mac_before, r.mac_after):
                if mac is not None and (not history or history[-1] != mac):
                    history.append(mac)
        return history

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


def owner(mac: Optional[str], macs: dict) -> str:
    """Whose MAC it is: the role from ``macs`` ({role: mac}), "none" for
    None, "unknown" for a MAC of no role."""
    if mac is None:
        return "none"
    for role, m in macs.items():
        if m == mac.lower():
            return role
    return "unknown"


def parse_arp_check(output: str) -> tuple:
    """The MACs listed by `pyfwd arp-check` (one ``MAC  text`` line each),
    in order, lower case."""
    return tuple(m.group(1).lower() for m in
                 map(_MAC_RE.match, output.splitlines()) if m)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _mac_cell(mac: Optional[str], macs: dict) -> str:
    return "(none)" if mac is None else f"{mac} {owner(mac, macs)}"


def format_request(n: int, r: Request, macs: dict) -> str:
    """One request as two lines: what came first and the cache, then who
    answered and whether the balancer saw it."""
    cache = _mac_cell(r.mac_before, macs)
    if r.mac_after != r.mac_before:
        cache += f" -> {_mac_cell(r.mac_after, macs)}"
    who = f"answered by {r.node}" if r.node else f"FAILED ({r.error})"
    path = (f"crossed the balancer ({_plural(r.flows, 'new flow')}, "
            f"{_plural(r.frames, 'frame')})" if r.crossed else
            f"BYPASSED the balancer ({_plural(r.frames, 'frame')} there)")
    return (f"  {n}. {r.cause}\n"
            f"     client's cache for {VIP}: {cache}\n"
            f"     {who}; {path}")


def format_arp_check(run: ArpCheckRun, macs: dict) -> str:
    lines = [f"  client$ pyfwd arp-check --iface eth0 --vip {VIP} "
             f"--balancer-mac {run.balancer_mac}"]
    for line in run.output.splitlines():
        mac = parse_arp_check(line + " ")
        who = f"   <- {owner(mac[0], macs)}" if mac else ""
        lines.append(f"    {line}{who}")
    lines.append(f"  exit status {run.returncode}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Measuring, in the lab's namespaces


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
                    return n.get("NDA_LLADDR").lower()
            return None
    return job


def cached_mac(lab, role: str, ip: str) -> Optional[str]:
    """The MAC in ``role``'s ARP cache (eth0) for ``ip``, or None."""
    return lab.call(role, _neigh_job(ip, False), timeout=NETLINK_TIMEOUT)


def forget(lab, role: str, ip: str) -> None:
    """Delete ``role``'s ARP cache entry for ``ip`` (if any)."""
    lab.call(role, _neigh_job(ip, True), timeout=NETLINK_TIMEOUT)


def _add_vip_on_lo(lab, role: str) -> None:
    """The VIP on role's lo, and nothing else: the ARP sysctls stay at the
    lab's 0 (arp_ignore=0, arp_announce=0), like a forgotten real server."""
    def job():
        with IPRoute() as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.addr("add", index=lo, address=VIP, prefixlen=32)
    lab.call(role, job, timeout=NETLINK_TIMEOUT)


def _http_get(lab) -> tuple:
    """(node or None, error or None) of GET URL from the client."""
    r = lab.run("client", ["curl", "-sS", "--max-time", str(CURL_TIMEOUT),
                           URL], capture_output=True, text=True,
                timeout=CURL_TIMEOUT + 5)
    if r.returncode != 0:
        return None, (r.stderr.strip() or f"curl exit {r.returncode}")
    m = _NODE_RE.search(r.stdout)
    return (m.group(1), None) if m else (None, f"reply: {r.stdout!r}")


def request(lab, eng, cause: str) -> Request:
    """One GET of the VIP from the client, measured (see Request)."""
    before = cached_mac(lab, "client", VIP)
    c0 = eng.stats()["core"]
    node, error = _http_get(lab)
    c1 = eng.stats()["core"]
    after = cached_mac(lab, "client", VIP)
    return Request(cause, before, after, node,
                   c1["flows_new"] - c0["flows_new"],
                   c1["frames"] - c0["frames"], error)


def wait_for_announcement(lab, eng, lb_mac: str) -> Announcement:
    """Wait for the engine's next scheduled gratuitous ARP
    (pyfwd.engine.GARP_REPEAT after its start) and watch the client's cache
    until it holds ``lb_mac`` or ANNOUNCE_WAIT after it was due."""
    from .engine import GARP_REPEAT

    before = cached_mac(lab, "client", VIP)
    now = time.monotonic() - eng.started
    due = next((t for t in GARP_REPEAT if t > now + 0.05), None)
    if due is None:
        return Announcement(None, None, before, before)
    deadline = eng.started + due + ANNOUNCE_WAIT
    mac = before
    while True:
        mac = cached_mac(lab, "client", VIP)
        if mac == lb_mac and time.monotonic() - eng.started >= due - 0.05:
            return Announcement(due, time.monotonic() - eng.started,
                                before, mac)
        if time.monotonic() > deadline:
            return Announcement(due, None, before, mac)
        time.sleep(0.02)


def run_arp_check(lab, lb_mac: str) -> ArpCheckRun:
    """`pyfwd arp-check --iface eth0 --vip VIP --balancer-mac lb_mac` in
    the client namespace, as an operator would run it."""
    r = lab.run("client", labmodes.PYFWD + [
        "arp-check", "--iface", "eth0", "--vip", VIP, "--balancer-mac",
        lb_mac], capture_output=True, text=True, timeout=CHECK_TIMEOUT)
    output = (r.stdout + r.stderr).strip()
    return ArpCheckRun(r.returncode, output, parse_arp_check(r.stdout),
                       lb_mac)


def _realserver_setup(lab, role: str) -> str:
    """`pyfwd realserver setup --vip VIP` in role; its output.  LabError
    if it fails."""
    r = lab.run(role, labmodes.PYFWD + ["realserver", "setup", "--vip",
                                        VIP],
                capture_output=True, text=True, timeout=CHECK_TIMEOUT)
    if r.returncode != 0:
        raise LabError(f"realserver setup on {role}: "
                       f"{(r.stderr or r.stdout).strip()}")
    return r.stdout.strip()


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
def _engine_log():
    logger = logging.getLogger("pyfwd")
    handler = _Collect()
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


# ---------------------------------------------------------------------------
# The lesson


def lesson(lab, echo: Callable[[str], None]) -> Result:
    """Show the ARP problem in ``lab`` (a one-arm lab that is up, as
    `Lab(name, "one-arm", reals)` makes it) and fix it; returns what was
    measured.  Prints to ``echo`` as it goes.  Raises LabError if the lab
    is not one-arm or a step cannot run (a server does not start, a
    command fails to start)."""
    if lab.topology != "one-arm":
        raise LabError(f"the ARP problem lesson needs a one-arm lab, "
                       f"{lab.name!r} is {lab.topology}")
    roles = ["client", "lb"] + lab.reals
    macs = {r: lab.node(r).interface("eth0").mac.lower() for r in roles}
    res = Result(macs)
    lb_mac, bad_mac = res.lb_mac, res.broken_mac
    good = [r for r in lab.reals if r != BROKEN]

    echo(_INTRO.format(vip=VIP, port=PORT, broken=BROKEN))
    for r in roles:
        echo(f"  {r:<7} {lab.ip(r):<11} MAC {macs[r]}")
    if good:
        labmodes.setup_reals(lab, roles=good)
    _add_vip_on_lo(lab, BROKEN)
    echo(f"\n`pyfwd realserver setup --vip {VIP}` ran on "
         f"{', '.join(good) or 'no real server'}.  {BROKEN} got {VIP}/32 "
         f"on lo\nand nothing else (arp_ignore="
         f"{lab.sysctl(BROKEN, 'net.ipv4.conf.all.arp_ignore')}, "
         f"arp_announce="
         f"{lab.sysctl(BROKEN, 'net.ipv4.conf.all.arp_announce')}).")

    with _engine_log() as engine_log, labmodes.whoami_servers(lab), \
            labmodes.balancer(lab, "dr", realserver_setup=False) as eng:
        echo(f"\nThe DR balancer runs in {lab.ns('lb')}: {VIP}:{PORT} round "
             f"robin over {', '.join(lab.reals)}.")

        # -- 1. the failure
        echo(_STEP1.format(vip=VIP, port=PORT))
        def show(r):
            res.before.append(r)
            echo(format_request(len(res.before), r, macs))

        forget(lab, "client", VIP)
        show(request(lab, eng, "the client's cache entry for the VIP had "
                               "expired: it asks who has it"))
        show(request(lab, eng, "nothing changed in between"))

        echo(_ANNOUNCE)
        ann = res.announcement = wait_for_announcement(lab, eng, lb_mac)
        if ann.due is None:
            echo("  (the engine had made its last announcement already)")
        elif ann.seen is not None:
            echo(f"  The announcement was due {ann.due:.1f} s after the "
                 f"start; at {ann.seen:.2f} s the client's cache\n  held "
                 f"{_mac_cell(ann.mac_after, macs)} for {VIP}.")
        else:
            echo(f"  The announcement was due {ann.due:.1f} s after the "
                 f"start; {ANNOUNCE_WAIT:g} s later the client's cache\n"
                 f"  still held {_mac_cell(ann.mac_after, macs)}.")

        echo(_ANNOUNCE_BACK.format(broken=BROKEN, vip=VIP))
        for _ in lab.reals:
            forget(lab, BROKEN, lab.ip("client"))
            r = request(lab, eng, f"{BROKEN}'s cache entry for the client "
                                  "had expired")
            show(r)
            if r.crossed and r.mac_before == lb_mac \
                    and r.mac_after == bad_mac:
                echo(f"     It began through the balancer, then the cache "
                     f"flipped under it: only\n     "
                     f"{_plural(r.frames, 'frame')} of that connection "
                     f"reached the balancer.")
            if r.mac_after != lb_mac:
                break
        show(request(lab, eng, "nothing changed in between"))

        echo("\n  The client's cache for the VIP held, in turn: "
             + " -> ".join(owner(m, macs) for m in res.cache_history))
        echo(f"  {len(res.bypassed)} of {len(res.before)} requests never "
             f"reached the balancer: it cannot balance, count,\n  drain "
             f"or health-check what it never sees.")

        # -- 2. finding it
        echo(_STEP2)
        res.check_before = run_arp_check(lab, lb_mac)
        echo(format_arp_check(res.check_before, macs))
        stats = eng.stats()
        res.engine_conflicts = stats["arp_conflicts"]
        res.engine_log = list(engine_log)
        conflicts0 = stats["arp"].get("conflicts", 0)
        if res.engine_conflicts:
            echo("  The engine saw it too: it hears the segment's ARP "
                 "broadcasts, and one came\n  from another MAC with the "
                 "VIP as its sender.")
            for vip, found in res.engine_conflicts.items():
                echo(f"    arp_conflicts {vip}: "
                     + ", ".join(f"{m} ({owner(m, macs)})" for m in found))
            for line in res.engine_log:
                echo(f"    engine log: {line}")
        else:
            echo("  The engine saw no ARP frame claiming the VIP "
                 "(arp_conflicts is empty).")

        # -- 3. the fix
        echo(_STEP3.format(broken=BROKEN, vip=VIP))
        res.setup_output = _realserver_setup(lab, BROKEN)
        for line in res.setup_output.splitlines() or ["(no output)"]:
            echo(f"    {line}")
        echo(f"  Again the client's entry for {VIP} expires, and before "
             f"each request\n  {BROKEN}'s entry for the client too.")
        forget(lab, "client", VIP)
        for k in range(max(2, 2 * len(lab.reals))):
            forget(lab, BROKEN, lab.ip("client"))
            r = request(lab, eng, "after the fix" + (
                ": the cache entry had expired" if k == 0 else ""))
            res.after.append(r)
            echo(format_request(len(res.before) + k + 1, r, macs))
        res.cache_after = cached_mac(lab, "client", VIP)
        res.conflict_frames_after = \
            eng.stats()["arp"].get("conflicts", 0) - conflicts0
        res.check_after = run_arp_check(lab, lb_mac)
        echo(format_arp_check(res.check_after, macs))
        crossed = sum(r.crossed for r in res.after)
        echo(f"  {crossed} of {len(res.after)} requests crossed the "
             f"balancer; the client's cache holds "
             f"{_mac_cell(res.cache_after, macs)};\n  the engine saw "
             f"{_plural(res.conflict_frames_after, 'more ARP frame')} "
             f"naming the VIP as sender.")
    return res


def run(echo: Callable[[str], None], name: str = "arp",
        reals: int = 2) -> bool:
    """`pyfwd lab arp-problem`: build a one-arm lab called ``name`` with
    ``reals`` real servers, run the lesson, remove the lab.  Returns True
    when the failure was seen and the fix worked.  Raises LabError if the
    lab cannot be built (e.g. it exists already) or a step cannot run."""
    from .lab import Lab

    with Lab(name, topology="one-arm", reals=reals) as lab:
        res = lesson(lab, echo)
    echo(f"\nlab '{name}' removed")
    if res.ok:
        echo(f"The ARP problem was shown ({len(res.bypassed)} requests "
             f"bypassed the balancer, arp-check named {BROKEN})\nand fixed "
             f"(every request crossed the balancer, arp-check passed).")
    else:
        echo("The lesson did not show what it should: failure seen "
             f"{'yes' if res.failure_seen else 'no'}, fix worked "
             f"{'yes' if res.fixed else 'no'}.")
    return res.ok


_INTRO = """\
pyfwd lab arp-problem: the ARP problem of direct routing (DR), shown.

In DR the balancer changes only the destination MAC of the client's
packets: they reach a real server still addressed to the VIP, so every
real server holds {vip} on its loopback and answers the client
directly.  The client finds who has {vip} with ARP, and only the
balancer may answer.  A real server whose kernel answers too takes
clients away from the balancer.

Here {broken} is that real server.  The lab, one Ethernet segment:"""

_STEP1 = """
1. What goes wrong.  The client requests http://{vip}:{port}/.
   For each request: what happened just before, the MAC the client's ARP
   cache held for the VIP (before -> after), who answered, and whether the
   balancer counted a new flow for it."""

_ANNOUNCE = """
   Now the balancer announces the VIP: a gratuitous ARP, which the engine
   sends 0, 1 and 3 s after it starts.  Every host that has an entry for
   the VIP must take the balancer's MAC."""

_ANNOUNCE_BACK = """
   And back: with arp_announce=0, when {broken} has to ask for the client's
   MAC, it names the VIP as the asker (the source of the reply it is about
   to send), and the client takes that as news: the VIP is at {broken}."""

_STEP2 = """
2. Finding it.  Ask who has the VIP from any host of the segment and list
   every answer: any MAC but the balancer's is the ARP problem."""

_STEP3 = """
3. The fix, on {broken}: arp_ignore=1 (answer ARP only for addresses of the
   interface asked on, so not for the VIP on lo) and arp_announce=2 (ask
   with the interface's own address, never the VIP).
  {broken}$ pyfwd realserver setup --vip {vip}"""
