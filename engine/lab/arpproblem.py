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

Measuring is kept apart from the text: pyfwd.lab.arpmeasure measures and
holds the values (the tests assert on them), this module prints them
(``format_*``) and runs the steps.  Nothing printed claims a result that
was not measured.
"""

import textwrap
from typing import Callable, Optional

from ..errors import LabError
from . import modes as labmodes
from .arpmeasure import (ANNOUNCE_WAIT, BROKEN, CHECK_TIMEOUT, PORT,
                         VIP, Announcement, ArpCheckRun, Request,
                         Result, add_vip_on_lo, cache_history,
                         cached_mac, engine_warnings, forget, mac_of,
                         parse_arp_check, request, run_arp_check,
                         settled_counts, wait_for_announcement)
from .words import plural

__all__ = ["owner", "format_times", "format_request", "format_announcement",
           "format_arp_check", "break_real", "show_failure", "find_it",
           "fix_it", "show_right", "lesson", "run"]


# ---------------------------------------------------------------------------
# Words


def owner(mac: Optional[str], owners: dict) -> str:
    """Whose MAC it is: its role in ``owners`` ({MAC: role}, as
    labmodes.mac_owners gives it), "none" for None, "unknown" for a MAC of
    no role."""
    if mac is None:
        return "none"
    return owners.get(mac.lower(), "unknown")


def format_times(times) -> str:
    """(0.0, 1.0, 3.0) -> "0, 1 and 3 s"."""
    words = [f"{t:g}" for t in times]
    if len(words) < 2:
        return f"{''.join(words) or 'no time'} s"
    return f"{', '.join(words[:-1])} and {words[-1]} s"


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
    text = (f"the balancer counted {plural(r.frames, 'frame')} while it "
            f"ran: {', '.join(k for k in kinds if k)}")
    arp = [f"it answered {plural(r.arp_answered, 'ARP request')} for the "
           f"VIP" if r.arp_answered else "",
           f"{plural(r.arp_claims, 'ARP frame')} from another MAC named the "
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
    path = (f"crossed the balancer ({plural(r.flows, 'new flow')} there)"
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
    add_vip_on_lo(lab, BROKEN)
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
    from ..control.ha import GARP_REPEAT

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
                 f"{plural(r.forwarded, 'frame')} to a real\n     server "
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
    claims_before = settled_counts(eng)["arp_claims"]
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
    conflict_frames = settled_counts(eng)["arp_claims"] - claims_before
    check = run_arp_check(lab, lb_mac)
    echo(format_arp_check(check, owners))
    crossed = sum(r.crossed for r in after)
    echo(f"  {crossed} of {len(after)} requests crossed the balancer; the "
         f"client's cache holds {_mac_cell(cache, owners)};\n  the engine "
         f"saw {plural(conflict_frames, 'more ARP frame')} from another "
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

    with engine_warnings() as engine_log, labmodes.whoami_servers(lab), \
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
    from .topology import Lab

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
