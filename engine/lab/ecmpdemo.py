"""`pyfwd lab demo --mode ecmp`: three active balancers behind a router's
ECMP, each announcing the VIP by BGP (BIRD), and what consistent hashing
buys when one of them leaves and comes back (the same steps as
tests/e2e/test_ecmp.py, told in words, every figure from this run)."""

import os
import secrets
import shutil
import tempfile
import time

from .ecmp import VIP, EcmpLab, summary
from .topology import Lab

CONNS = 200


def run(say, name="demo", conns=CONNS):
    """Run the demo, printing with say(); True when every connection
    survived the balancer's departure and return."""
    folder = tempfile.mkdtemp(prefix="pyfwd-ecmp-")
    name = (name + secrets.token_hex(2))[:12]
    try:
        with Lab(name, "ecmp", reals=4) as lab:
            e = EcmpLab(lab, folder)
            try:
                return _run(say, lab, e, conns)
            finally:
                e.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(say, lab, e, conns):
    say("== ECMP: three active balancers, the VIP announced by BGP ==")
    say(f"client {lab.ip('client')} -- router {lab.ip('router', 'eth1')} "
        "(BIRD, ECMP, L4 hash) -- lb lb2 lb3 (pyfwd DR, Maglev, BIRD each) "
        "-- real1..3 (real4 waits)")
    t0 = time.monotonic()
    e.up(reals=3)
    took = e.wait_nexthops(3, since=t0)
    say(f"\nsessions on the router: {e.router_sessions()}")
    say(f"the router's route to {VIP}: next hops {', '.join(e.nexthops())} "
        f"({took:.1f} s after the engines started)")
    b = e.ctl("lb", "status")["bgp"]
    say(f"lb says: AS {b['local_as']}, router id {b['router_id']}, "
        f"announcing {', '.join(b['announced'])}, session "
        f"{b['sessions'][0]['state']}")

    say(f"\n-- {conns} long-lived connections (a line every 100 ms each); "
        "lb2 stops, then starts again --")
    load = e.hold(conns, 14)
    time.sleep(3)
    before = e.flows_new()
    t0 = time.monotonic()
    e.stop_lb("lb2")
    gone = e.wait_nexthops(2, since=t0)
    say(f"lb2 stopped: its BIRD said Cease, the router dropped it in "
        f"{gone:.2f} s; its connections now reach lb or lb3")
    time.sleep(3)
    t1 = time.monotonic()
    e.start_lb("lb2")
    back = e.wait_nexthops(3, since=t1)
    joined = time.monotonic()
    say(f"lb2 started again: announced in {back:.1f} s; the router sends "
        "it a share of the connections again, mid-way")
    time.sleep(1)
    after = e.flows_new()
    before["lb2"] = 0
    s = summary(e.result(load), since=joined + 0.5)
    made = {k: after[k] - before.get(k, 0) for k in after}
    say(f"flows made from a mid-connection segment (no SYN seen): "
        + ", ".join(f"{k} {v}" for k, v in sorted(made.items())))
    say(f"result: {s['alive']} of {s['connections']} connections alive, "
        f"{s['changed_real']} changed real server, errors "
        f"{s['errors'] or 'none'}: every balancer's Maglev table is the "
        "same, so a connection lands on its real whichever balancer gets it")
    ok = s["alive"] == conns and s["changed_real"] == 0

    say("\n-- the same, with real4 added as lb2 leaves --")
    load = e.hold(conns, 9)
    time.sleep(3)
    before = e.flows_new()
    for role in ("lb", "lb3"):
        e.ctl(role, "add-real", f"{VIP}:7000/tcp", lab.ip("real4"))
    e.stop_lb("lb2")
    e.wait_nexthops(2)
    r = e.result(load)
    after = e.flows_new()
    s = summary(r)
    moved = conns - s["alive"] + s["changed_real"]
    resched = sum(after[k] - before[k] for k in ("lb", "lb3"))
    say(f"{resched} connections reached a balancer without their flow and "
        f"were scheduled by the new table: {moved} of them moved to another "
        f"real server ({100 * moved / max(resched, 1):.0f}%; Maglev's "
        "expectation with 4 reals: 1/4 = 25%), and real4 reset them; the "
        f"other {conns - moved} went on.")
    say("A balancer that keeps its flows keeps its connections whatever the "
        "table says; only a connection that changes balancer meets the new "
        "table, and Maglev moves ~1/N of those.")
    return ok


__all__ = ["run"]
