"""What the engine tells: status(), show(), stats() and the stats file.

`Report` builds the answers of the control commands `status`, `show` and
`stats` (and the metrics, which render stats()) from the engine's public
parts: its services and admin state, the data plane's counters (core),
the next hops (hops), the punt answering (punts), the HA state (ha), the
L7 sync (l7) and the health monitor.  It reads and never changes them;
the engine calls show() and stats() under its lock.  Its own part is the
ledger (control.ledger.RealLedger) that published() keeps: per real and
VIP counters that never go down, and when each real last changed.
"""

import dataclasses
import json
import logging
import os
import time

from .ledger import COUNTERS, RealLedger
from .l7.render import l7_name, l7_server
from .liveness import problem_text
from .state import atomic_write
from ..dataplane import fastpath
from ..dataplane.native import QUEUE_COUNTERS
from ..errors import DataplaneError, PyfwdError
from ..frames import mac_to_str

log = logging.getLogger("pyfwd.control.report")

# What show() adds to the health detail of a real its VIP quiesces
# (model.ON_DOWN) rather than resets.
QUIESCED = "; quiesced (on_down): no new flows, established ones go on"


def tun_status(e):
    """TUN's tunnel ends on the outside interface, JSON-ready: {"source4",
    "source6", "mtu"}; None unless a VIP is TUN."""
    ends = getattr(e, "tun_ends", None)
    if ends is None or not any(s.mode == "tun" for s in e.services):
        return None
    return {"source4": ends.source4 and str(ends.source4),
            "source6": ends.source6 and str(ends.source6), "mtu": ends.mtu}


class Report:
    """The reports of `engine` (a control.engine.Engine or a fake with its
    public attributes: iface, inside_iface, config_path, started, info,
    snat, services, state, health, monitor, fallback_active, tables, core,
    hops, punts, ha, l7, and liveness(); changes, if any: its
    control.changes.Changes; xsk, if any: its dataplane.io backend).  pid
    and clock: os.getpid and time.monotonic, for tests; wall: the
    ledger's clock (time.time)."""

    def __init__(self, engine, *, pid=os.getpid, clock=time.monotonic,
                 wall=time.time):
        self.engine = engine
        self._pid = pid
        self._clock = clock
        self.ledger = RealLedger(wall)

    def published(self):
        """After a publish (Engine._publish): account the real servers'
        counters by (VIP, real) and stamp the ones whose condition (admin
        state, health, scheduled) changed (control.ledger).  Returns the
        configured (VIP, real key) pairs, L7 ones and fallbacks included."""
        e = self.engine
        unscheduled = e.tables.unscheduled if e.tables else {}
        configured = [(s.vip, r.key) for s in e.services if s.mode != "l7"
                      for r in s.reals + ([s.fallback] if s.fallback
                                          else [])]
        conditions = {k: (e.state.get(k, "online"),
                          e.health.get(k, (None,))[0], k in unscheduled)
                      for k in ((s.vip, r.key) for s in e.services
                                for r in s.reals)}
        # HAProxy's counters before it reloads (_l7_sync comes next)
        l7 = [s for s in e.services if s.mode == "l7"]
        rows = e.l7.rows() if l7 else {}
        l7rows = {(s.vip, r.key): rows.get((l7_name(s), l7_server(r)), {})
                  for s in l7 for r in s.reals}
        self.ledger.published(configured, e.core.ids.mapping(),
                              e.core.real_stats(), conditions, l7rows,
                              vips=[s.vip for s in e.services])
        return configured + list(l7rows)

    def status(self):
        """Engine-wide facts: interfaces, pid, uptime, counts, modes, TUN's
        tunnel ends (when a VIP is TUN), the flow timeouts (seconds, by [engine.timeouts] key), the cap on new
        flows per second per queue (0: none), HA.
        PyfwdError naming each part that is not alive (a data-plane loop
        ended or stalled, the control thread stuck: engine.liveness()), so
        that keepalived's check fails and the peer takes over."""
        e = self.engine
        bgp = getattr(e, "bgp", None)       # fakes: none
        problems = e.liveness()
        if problems:
            raise PyfwdError(problem_text(problems))
        return {"iface": e.iface, "inside_iface": e.inside_iface,
                "pid": self._pid(),
                "uptime": round(self._clock() - e.started, 3)
                if e.started else 0.0,
                "vips": len(e.services),
                "reals": sum(len(s.reals) for s in e.services),
                "xsk": xsk_status(e),
                "snat": [str(e.snat[0]), e.snat[1], e.snat[2]]
                if e.snat else None,
                "tun": tun_status(e),
                "haproxy": e.l7.status(),
                "config": e.config_path,
                "timeouts": e.core.timeouts() if e.core else None,
                "new_flows_per_second": e.core.new_flows_per_second()
                if e.core else None,
                "ha": e.ha.status(),
                "bgp": bgp.status() if bgp else None}

    def show(self):
        """Every VIP with its real servers: weight, admin state, health,
        whether new flows go to it (and why not), next hop, live and new
        flows, frames and bytes (HAProxy's rows for an L7 VIP)."""
        e = self.engine
        per_real = e.core.real_stats()
        l7rows = e.l7.rows()
        bgp = getattr(e, "bgp", None)
        said = set(bgp.announced or []) if bgp else set()
        # tables.fingerprint() per VIP (fakes' tables: none)
        prints = getattr(e.tables, "fingerprints", None) or {}
        vips = []
        for s in e.services:
            fb = s.vip in e.fallback_active
            reals = [self._real(s, r, per_real, l7rows) for r in s.reals]
            if fb:
                reals.append(self._real(s, s.fallback, per_real, l7rows,
                                        fallback=True))
            vips.append({"name": s.label, "vip": str(s.vip),
                         "totals": self._totals(s, reals, per_real),
                         "mode": s.mode, "scheduler": s.scheduler,
                         "persistence": s.persistence,
                         "on_down": s.on_down,
                         "fallback": s.fallback.key if s.fallback else None,
                         "fallback_active": fb,
                         "changed": self._marks(s.vip),
                         "table": prints.get(s.vip),
                         "bgp": None if bgp is None else
                         ("announced" if str(s.vip.address) in said
                          else "withdrawn"),
                         "reals": reals})
        return vips

    def _real(self, s, r, per_real, l7rows, fallback=False):
        e = self.engine
        k = (s.vip, r.key)
        st = "fallback" if fallback else e.state.get(k, "online")
        up, detail = e.health.get(k, (None, None))
        checked = s.health is not None and not fallback
        if checked and up is None and e.monitor:
            try:
                mon = e.monitor.state(k)
            except KeyError:        # not checked yet
                mon = {"up": True, "last_detail": None}
            up, detail = mon["up"], mon.get("last_detail")
        mac = e.hops.macs.get(r.address)
        why = e.tables.unscheduled.get(k)
        if st == "halt":
            why = "halted"
        elif up is False:
            why = f"health: {detail}"
            if s.mode != "l7" and s.on_down == "quiesce" and mac:
                why += QUIESCED     # in the tables at weight 0
        scheduled = why is None
        if scheduled and s.mode != "l7":
            why = e.hops.note(r.address)    # on a MAC kept unanswered
        if s.mode == "l7":
            counters = l7rows.get((l7_name(s), l7_server(r)), {})
            if self.ledger.seen:        # over HAProxy's restarts
                counters = self.ledger.observed(k, counters)
        elif self.ledger.seen:
            counters = self.ledger.counters(k, per_real)
        else:                   # nothing published yet (fakes): raw
            rid = e.core.ids.lookup(*k)
            counters = per_real.get(rid, {}) if rid is not None else {}
        return {"real": r.key, "weight": r.weight, "state": st,
                "changed": [] if fallback else self._marks(s.vip, r.key),
                "last_change": None if fallback else
                self.ledger.last_change(k),
                "health": None if not checked else
                ("up" if up else "down"),
                "health_detail": detail,
                "scheduled": scheduled, "why": why,
                "mac": mac_to_str(mac) if mac else None,
                "via": e.hops.via(r.address),
                "active": counters.get("active", 0),
                "inactive": counters.get("inactive", 0),
                "frames": counters.get("frames", 0),
                "bytes": counters.get("bytes", 0),
                "flows_new": counters.get("flows_new", 0),
                **({"haproxy_state": counters.get("haproxy_state"),
                    "haproxy_status": counters.get("haproxy_status")}
                   if s.mode == "l7" else {})}

    def _totals(self, s, reals, per_real):
        """A VIP's frames, bytes and new flows since it was added: the
        ledger's (its departed reals' included), else (nothing published:
        fakes) the sums of the rows."""
        if self.ledger.seen:
            return self.ledger.vip_totals(s.vip, per_real)
        return {k: sum(r.get(k) or 0 for r in reals) for k in COUNTERS}

    def _marks(self, vip, real=None):
        """What an operator changed of vip's real `real` (None: of the
        VIP) through ctl, and since when: [{"by", "what", "since"[,
        "value"][, "conflict"]}] (control.state)."""
        changes = getattr(self.engine, "changes", None)    # fakes: none
        return changes.operator.marks(vip, real) if changes else []

    def stats(self, core):
        """A JSON-ready snapshot: status(), the data plane's counters
        (`core`, read by the caller outside the lock), per VIP and real
        server (as show()), per queue, the punt responders' counters and
        conflicts (arp, icmp, ndp, arp_conflicts, ndp_conflicts), the
        punt thread's fairness counters (punt: Punts.fairness()), what the
        kernel counted at the sockets (sockets(): drops before a loop);
        started_at (wall-clock seconds of the start), config_reload
        (Changes.reload_status()) and room (the workers' capacity:
        Core.room(), the fast path's flows) for the metrics."""
        e = self.engine
        punts = {**e.punts.counters(), "punt": e.punts.fairness()} \
            if e.punts else {k: {} for k in ("arp", "icmp", "ndp",
                                             "arp_conflicts",
                                             "ndp_conflicts", "punt")}
        changes = getattr(e, "changes", None)       # fakes: none
        return {**self.status(), "core": core, "vips": self.show(),
                "started_at": getattr(e, "started_at", None),
                "config_reload": changes.reload_status() if changes
                else None, "room": room(e),
                "queues": [{k: q[k] for k in QUEUE_COUNTERS}
                           for q in (e.core.stats(worker=i)
                                     for i in range(e.core.workers))],
                "sockets": self.sockets(), **punts}

    def sockets(self):
        """What the kernel counted at the data plane's sockets, frames it
        dropped there before a loop saw them: {backend ("xdp" |
        "afpacket"): [{"queue", "iface", counter: value...}]} (the rows of
        dataplane.io.Xsk.sock_stats(); names: native.SOCK_COUNTERS); {}
        when no backend runs, or when the kernel refused a read (logged)."""
        e = self.engine
        xsk, info = getattr(e, "xsk", None), getattr(e, "info", None)
        if xsk is None or info is None or not hasattr(xsk, "sock_stats"):
            return {}
        try:
            rows = xsk.sock_stats()
        except DataplaneError as exc:
            log.warning("socket counters: %s", exc)
            return {}
        return {info.backend: rows} if rows else {}


def room(e):
    """Core.room() with the XDP fast path's flows and map size when it is
    on (fast_flows, fast_slots); None without a core (or a fake's)."""
    core = getattr(e, "core", None)
    if core is None or not hasattr(core, "room"):
        return None
    out = core.room()
    if getattr(e.info, "fastpath", "off") == "on":
        out.update(fast_flows=fastpath.flows(core),
                   fast_slots=fastpath.FLOWS_MAX)
    return out


def write_stats(path, snapshot):
    """Write a stats() snapshot to `path` as JSON, atomically."""
    atomic_write(path, json.dumps(snapshot, indent=1), mode=0o644,
                 durable=False)


def xsk_status(e):
    """status()'s data plane: the XskInfo as set up, and for AF_XDP with
    busy polling asked, whether it engages (Xsk.busy_poll_state)."""
    if not e.info:
        return None
    out = dataclasses.asdict(e.info)
    state = getattr(e.xsk, "busy_poll_state", None)
    if out.get("busy_poll") and state:
        out["busy_polling"] = state()
    return out


__all__ = ["Report", "write_stats", "xsk_status"]
