"""`pyfwd lab arp-problem`: the ARP problem of direct routing, shown.

In DR every real server holds the VIP on ``lo``.  Unless it is told not to
(``pyfwd realserver setup``: arp_ignore=1, arp_announce=2), its kernel
answers "who has the VIP?" like any address of its own, and its own ARP
requests carry the VIP as their sender.  Clients on the segment then cache
that real server's MAC for the VIP, and their connections go straight to it:
the balancer never sees them.

The lesson builds a one-arm lab and goes in five steps, each a function that
prints its part and returns what it measured:

1. ``break_real()``: real1 gets the VIP on lo and nothing else;
2. ``show_failure()``: requests from the client, each with the MAC the
   client's ARP cache held for the VIP before and after, who answered, and
   what the balancer counted meanwhile; the engine's announcement;
3. ``find_it()``: what `pyfwd arp-check` and the engine itself report;
4. ``fix_it()``: `pyfwd realserver setup` on real1;
5. ``show_right()``: the requests and the check again.

Measuring is kept apart from the text (``format_*``): the tests assert on
the values, the student reads the text.  Nothing printed claims a result
that was not measured.
"""

import contextlib
import errno
import logging
import re
import socket
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pyfwd.lab import modes as labmodes
from pyfwd.errors import LabError
from pyfwd.neighbours.frames import mac_to_str

__all__ = ["VIP", "BROKEN", "Request", "Announcement", "ArpCheckRun",
           "Result", "mac_of", "owner", "parse_arp_check", "cache_history",
           "frame_counts", "punts_handled", "format_times", "format_request",
           "format_announcement", "format_arp_check", "request",
           "wait_for_announcement", "run_arp_check", "break_real",
           "show_failure", "find_it", "fix_it", "show_right", "lesson",
           "run"]

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


def owner(mac: Optional[str], owners: dict) -> str:
    """Whose MAC it is: its role in ``owners`` ({MAC: role}, as
    labmodes.mac_owners gives it), "none" for None, "unknown" for a MAC of
    no role."""
    if mac is None:
        return "none"
    return owners.get(mac.lower(), "unknown")


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


def format_times(times) -> str:
    """(0.0, 1.0, 3.0) -> "0, 1 and 3 s"."""
    words = [f"{t:g}" for t in times]
    if len(words) < 2:
        return f"{''.join(words) or 'no time'} s"
    return f"{', '.join(words[:-1])} and {words[-1]} s"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _mac_cell(mac: Optional[str], owners: dict) -> str:
    return "(none)" if mac is None else f"{mac} {owner(mac, owners)}"


def _counted(r: Request) -> str:
    """What the balancer counted while ``r`` ran, in words."""
    if not r.frames:
        return "the balancer counted no frame while it ran"
    other = r.frames - r.forwarded - r.arp
    kinds = [f"{r.forwarded} forwarded to a real server" if r.forwarded
             else "", f"{r.arp} ARP" if r.arp else "",
             f"{other} other" if other > 0 else ""]
    text = (f"the balancer counted {_plural(r.frames, 'frame')} while it "
            f"ran: {', '.join(k for k in kinds if k)}")
    arp = [f"it answered {_plural(r.arp_answered, 'ARP request')} for the "
           f"VIP" if r.arp_answered else "",
           f"{_plural(r.arp_claims, 'ARP frame')} from another MAC named the "
           f"VIP as sender" if r.arp_claims else ""]
    if any(arp):
        text += f"\n     ({'; '.join(a for a in arp if a)})"
    return text


def format_request(n: int, r: Request, owners: dict) -> str:
    """One request in lines: what came first and the cache, who answered
    and whether the balancer made a flow for it, what the balancer counted
    while it ran."""
    cache = _mac_cell(r.mac_before, owners)
    if r.mac_after != r.mac_before:
        cache += f" -> {_mac_cell(r.mac_after, owners)}"
    who = f"answered by {r.node}" if r.node else f"FAILED ({r.error})"
    path = (f"crossed the balancer ({_plural(r.flows, 'new flow')} there)"
            if r.crossed else "BYPASSED the balancer (no new flow there)")
    return (f"  {n}. {r.cause}\n"
            f"     client's cache for {VIP}: {cache}\n"
            f"     {who}; {path}\n"
            f"     {_counted(r)}")


def format_announcement(ann: Announcement, owners: dict) -> str:
    """What waiting for the announcement showed, as it was measured."""
    if ann.due is None:
        return "  (the engine had made its last announcement already)"
    head = f"  The announcement was due {ann.due:g} s after the start"
    if ann.already_held:
        return (f"{head}; the client's cache\n  already held "
                f"{_mac_cell(ann.mac_before, owners)} for {VIP}: it "
                f"changed nothing there.")
    if ann.took:
        return (f"{head}; at {ann.seen:.2f} s the client's cache\n  went "
                f"from {_mac_cell(ann.mac_before, owners)} to "
                f"{_mac_cell(ann.mac_after, owners)} for {VIP}.")
    return (f"{head}; {ANNOUNCE_WAIT:g} s later the client's cache\n"
            f"  still held {_mac_cell(ann.mac_after, owners)}.")


def format_arp_check(run: ArpCheckRun, owners: dict) -> str:
    lines = [f"  client$ pyfwd arp-check --iface eth0 --vip {VIP} "
             f"--balancer-mac {run.balancer_mac}"]
    for line in run.output.splitlines():
        mac = parse_arp_check(line)
        who = f"   <- {owner(mac[0], owners)}" if mac else ""
        lines.append(f"    {line}{who}")
    lines.append(f"  exit status {run.returncode}")
    return "\n".join(lines)


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


def _add_vip_on_lo(lab, role: str) -> None:
    """The VIP on role's lo, and nothing else: the ARP sysctls stay at the
    lab's 0 (arp_ignore=0, arp_announce=0), like a forgotten real server."""
    def job():
        with IPRoute() as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.addr("add", index=lo, address=VIP, prefixlen=32)
    _netlink(lab, role, job, f"adding {VIP}/32 on lo")


def _settled_counts(eng) -> dict:
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
    c0 = _settled_counts(eng)
    ok, said = labmodes.curl(lab, "client", URL, timeout=CURL_TIMEOUT)
    c1 = _settled_counts(eng)
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
    pyfwd.control.ha.GARP_REPEAT by default, in seconds after eng.started) and
    read the client's cache for the VIP until it goes from another MAC to
    ``lb_mac``, or ``wait`` seconds after the announcement was due."""
    if times is None:
        from pyfwd.control.ha import GARP_REPEAT as times

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
        r = lab.run("client", labmodes.PYFWD + [
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
def _engine_log():
    logger = logging.getLogger("pyfwd")
    handler = _Collect()
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


# ---------------------------------------------------------------------------
# The lesson, step by step: each step prints its part and returns its
# measured part of the Result, as {field: value}.


def break_real(lab, echo, owners: dict) -> dict:
    """The other reals get `pyfwd realserver setup`; real1 gets the VIP on
    lo and nothing else.  Returns real1's ARP sysctls, read back."""
    echo(_INTRO.format(vip=VIP, port=PORT, broken=BROKEN))
    for mac, role in owners.items():
        echo(f"  {role:<7} {lab.ip(role):<11} MAC {mac}")
    good = [r for r in lab.reals if r != BROKEN]
    if good:
        labmodes.setup_reals(lab, roles=good, timeout=CHECK_TIMEOUT)
    _add_vip_on_lo(lab, BROKEN)
    sysctls = {k: lab.sysctl(BROKEN, f"net.ipv4.conf.all.{k}")
               for k in ("arp_ignore", "arp_announce")}
    echo(f"\n`pyfwd realserver setup --vip {VIP}` ran on "
         f"{', '.join(good) or 'no real server'}.\n{BROKEN} got {VIP}/32 "
         f"on lo and nothing else ("
         + ", ".join(f"{k}={v}" for k, v in sysctls.items()) + ").")
    return {"broken_sysctls": sysctls}


def show_failure(lab, eng, echo, owners: dict) -> dict:
    """Requests with real1 answering ARP: a fresh lookup, the engine's
    announcement, real1's own who-has.  Returns the requests ("before")
    and the announcement."""
    from pyfwd.control.ha import GARP_REPEAT

    lb_mac, bad_mac = mac_of(owners, "lb"), mac_of(owners, BROKEN)
    before = []

    def show(r):
        before.append(r)
        echo(format_request(len(before), r, owners))
        return r

    echo(_STEP1.format(vip=VIP, port=PORT))
    forget(lab, "client", VIP)
    show(request(lab, eng, "the client's cache entry for the VIP was "
                           "deleted (as an expiry would)"))
    show(request(lab, eng, "nothing changed in between"))

    echo(_ANNOUNCE.format(times=format_times(GARP_REPEAT)))
    ann = wait_for_announcement(lab, eng, lb_mac, GARP_REPEAT)
    echo(format_announcement(ann, owners))

    echo(_ANNOUNCE_BACK.format(broken=BROKEN, vip=VIP))
    # Round robin gives real1 one new flow in every len(reals): within that
    # many requests (each a new flow while the cache holds the balancer's
    # MAC) one reaches real1 and makes it ask for the client.
    tries_for_round_robin_to_reach_real1 = len(lab.reals)
    for _ in range(tries_for_round_robin_to_reach_real1):
        forget(lab, BROKEN, lab.ip("client"))
        r = show(request(lab, eng, f"{BROKEN}'s cache entry for the client "
                                   "was deleted"))
        if r.crossed and r.mac_before == lb_mac and r.mac_after == bad_mac:
            echo(f"     It began through the balancer (a new flow), then "
                 f"the client's cache went\n     to {BROKEN} under it: the "
                 f"balancer forwarded only "
                 f"{_plural(r.forwarded, 'frame')} to a real\n     server "
                 f"while it ran.")
        if r.mac_after != lb_mac:
            break
    show(request(lab, eng, "nothing changed in between"))

    bypassed = [r for r in before if r.bypassed]
    echo("\n  The client's cache for the VIP held, in turn: "
         + " -> ".join(owner(m, owners) for m in
                       cache_history(before)))
    none_forwarded = bypassed and not any(r.forwarded for r in bypassed)
    echo(textwrap.fill(
        f"{len(bypassed)} of {len(before)} requests made no flow on the "
        f"balancer" + (" and it forwarded none of their frames"
                       if none_forwarded else "")
        + ": it cannot balance, count, drain or health-check what it never "
        "sees.", width=76, initial_indent="  ", subsequent_indent="  "))
    return {"before": before, "announcement": ann}


def find_it(lab, eng, echo, owners: dict, engine_log: list) -> dict:
    """`pyfwd arp-check` from the client, and what the engine recorded.
    Returns the check, the engine's arp_conflicts and its warnings."""
    echo(_STEP2)
    check = run_arp_check(lab, mac_of(owners, "lb"))
    echo(format_arp_check(check, owners))
    conflicts = eng.stats()["arp_conflicts"]
    if conflicts:
        echo("  The engine saw it too: it hears the segment's ARP "
             "broadcasts, and at least\n  one came from another MAC with "
             "the VIP as its sender.")
        for vip, found in conflicts.items():
            echo(f"    arp_conflicts {vip}: "
                 + ", ".join(f"{m} ({owner(m, owners)})" for m in found))
        for line in engine_log:
            echo(f"    engine log: {line}")
    else:
        echo("  The engine saw no ARP frame claiming the VIP "
             "(arp_conflicts is empty).")
    return {"check_before": check, "engine_conflicts": conflicts,
            "engine_log": list(engine_log)}


def fix_it(lab, echo) -> dict:
    """`pyfwd realserver setup --vip VIP` on real1.  Returns its output."""
    echo(_STEP3.format(broken=BROKEN, vip=VIP))
    said = labmodes.setup_reals(lab, roles=[BROKEN],
                                timeout=CHECK_TIMEOUT)[BROKEN].strip()
    for line in said.splitlines() or ["(no output)"]:
        echo(f"    {line}")
    return {"setup_output": said}


def show_right(lab, eng, echo, owners: dict, first: int) -> dict:
    """Requests after the fix, numbered from ``first``, each after real1's
    entry for the client was deleted; then the client's cache, the ARP
    frames from another MAC naming the VIP the engine saw during the
    step, and arp-check."""
    lb_mac = mac_of(owners, "lb")
    claims_before = _settled_counts(eng)["arp_claims"]
    echo(f"  Again the client's entry for {VIP} is deleted, and before "
         f"each request\n  {BROKEN}'s entry for the client too.")
    forget(lab, "client", VIP)
    after = []
    two_round_robin_rounds = 2 * len(lab.reals)     # every real answers
    for k in range(two_round_robin_rounds):
        forget(lab, BROKEN, lab.ip("client"))
        r = request(lab, eng, "after the fix" + (
            ": the client's cache entry was deleted" if k == 0 else ""))
        after.append(r)
        echo(format_request(first + k, r, owners))
    cache = cached_mac(lab, "client", VIP)
    conflict_frames = _settled_counts(eng)["arp_claims"] - claims_before
    check = run_arp_check(lab, lb_mac)
    echo(format_arp_check(check, owners))
    crossed = sum(r.crossed for r in after)
    echo(f"  {crossed} of {len(after)} requests crossed the balancer; the "
         f"client's cache holds {_mac_cell(cache, owners)};\n  the engine "
         f"saw {_plural(conflict_frames, 'more ARP frame')} from another "
         f"MAC naming the VIP as sender.")
    return {"after": after, "cache_after": cache,
            "conflict_frames_after": conflict_frames, "check_after": check}


def lesson(lab, echo: Callable[[str], None]) -> Result:
    """Show the ARP problem in ``lab`` (a one-arm lab that is up, as
    `Lab(name, "one-arm", reals)` makes it) and fix it; returns what was
    measured.  Prints to ``echo`` as it goes.  Raises LabError if the lab
    is not one-arm or a step cannot run (a server does not start, a
    command fails or does not finish in time)."""
    if lab.topology != "one-arm":
        raise LabError(f"the ARP problem lesson needs a one-arm lab, "
                       f"{lab.name!r} is {lab.topology}")
    owners = labmodes.mac_owners(lab)
    broken = break_real(lab, echo, owners)

    with _engine_log() as engine_log, labmodes.whoami_servers(lab), \
            labmodes.balancer(lab, "dr", realserver_setup=False) as eng:
        echo(f"\nThe DR balancer runs in {lab.ns('lb')}: {VIP}:{PORT} round "
             f"robin over {', '.join(lab.reals)}.")
        failure = show_failure(lab, eng, echo, owners)
        found = find_it(lab, eng, echo, owners, engine_log)
        fixed = fix_it(lab, echo)
        right = show_right(lab, eng, echo, owners,
                           first=len(failure["before"]) + 1)
    return Result(owners, **broken, **failure, **found, **fixed, **right)


def run(echo: Callable[[str], None], name: str = "arp",
        reals: int = 2) -> bool:
    """`pyfwd lab arp-problem`: build a one-arm lab called ``name`` with
    ``reals`` real servers, run the lesson, remove the lab.  Returns True
    when the failure was seen and the fix worked.  Raises LabError if the
    lab cannot be built (e.g. it exists already) or a step cannot run."""
    from pyfwd.lab.topology import Lab

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
   cache held for the VIP (before -> after), who answered, whether the
   balancer counted a new flow for it, and the frames it counted while
   the request ran."""

_ANNOUNCE = """
   Now the balancer announces the VIP: a gratuitous ARP, which the engine
   sends {times} after it starts.  A host that has an entry for the
   VIP should take the balancer's MAC from it."""

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
