"""What `pyfwd ctl rate` and `pyfwd ctl zero` add to the engine's reports,
after ipvsadm's `-L --rate` and `-Z`.

`CtlViews` (engine.views) keeps:

- an estimator of rates per VIP and real server: new flows (CPS), packets
  and bytes per second toward the real servers (InPPS, InBPS).  The control
  thread samples the counters every RATE_INTERVAL seconds (tick(): no work
  per packet) and smooths them as IPVS's estimator does: an exponentially
  weighted moving average, each sample weighing RATE_WEIGHT (1/4: about 8 s
  to follow a change);
- the baselines of `ctl zero`: the counters at the last zero, subtracted
  from what `ctl show` and `ctl stats` print.  The counters themselves are
  never reset: Engine.stats() (the Prometheus metrics, the stats file)
  keeps them whole and monotonic.

    views = CtlViews(engine)
    views.tick(time.monotonic())        # the control thread, every TICK
    views.rate()                        # {"interval", "vips": [...]}
    views.zero("pacs-web")              # or None: every counter
    views.retain(pairs)                 # Engine._publish: pairs configured
    views.show()                        # Engine.show() minus the baselines
    views.stats()                       # Engine.stats() minus the baselines
    views.flows("pacs-web", limit=100)  # the flows alive (dataplane.flows)

OutPPS/OutBPS are not given: the core counts the real servers' answers
(NAT, SNAT) in its totals only, not per real server (and DR never sees
them).
"""

import contextlib
import time

from .ledger import COUNTERS as REAL_KEYS     # active, inactive: gauges
from .metrics import CORE_METRICS, QUEUE_METRICS
from ..dataplane.flows import list_flows
from ..errors import ConfigError, PyfwdError
from .protocol import FLOWS_LIMIT_DEFAULT

RATE_INTERVAL = 2.0     # s between two samples (IPVS's estimator's too)
RATE_WEIGHT = 0.25      # the weight of a sample in the average (IPVS: 1/4)
RATE_OF = {"flows_new": "cps", "frames": "in_pps", "bytes": "in_bps"}
# Core.stats() keys that are gauges, never zeroed.
GAUGES = frozenset(k for table in (CORE_METRICS, QUEUE_METRICS)
                   for k, (_, kind, _) in table.items() if kind == "gauge")


class CtlViews:
    """The rates and zero baselines of `engine` (a control.engine.Engine,
    or a fake with show(), stats(), service(), report.ledger (a
    control.ledger.RealLedger) and core (real_stats(), stats(worker=),
    workers)); lock: the one its publishes hold (the ledger's)."""

    def __init__(self, engine, lock=None):
        self.engine = engine
        self._lock = lock or contextlib.nullcontext()
        self._last = None       # (when, {(vip, real): counters})
        self._avg = {}          # (vip, real) -> {rate name: average}
        self._next = 0.0
        self._reals = {}        # zero's baselines: (vip, real) -> counters
        self._totals = {}       # and vip -> its totals (show()'s)
        self._core = None       # and the core's ({key: n}), queues'
        self._queues = None
        self.zeroed = None      # when (epoch seconds), what

    # --- rates --------------------------------------------------------

    def tick(self, now):
        """Sample when RATE_INTERVAL has passed since the last sample."""
        if now < self._next:
            return
        self._next = now + RATE_INTERVAL
        with self._lock:
            counters = l4_counters(self.engine.core,
                                   self.engine.report.ledger)
        self.sample(now, counters)

    def sample(self, now, counters):
        """One sample: {(vip, real): {REAL_KEYS...}} read at `now`."""
        last, self._last = self._last, (now, counters)
        if last is None or now <= last[0]:
            return
        span = now - last[0]
        avg = {}
        for k, c in counters.items():
            before = last[1].get(k)
            old = self._avg.get(k, {})
            avg[k] = {}
            for key, name in RATE_OF.items():
                delta = c[key] - before[key] if before else 0
                rate = max(delta, 0) / span     # < 0: the real came back
                prev = old.get(name, 0.0)
                avg[k][name] = prev + (rate - prev) * RATE_WEIGHT
        self._avg = avg

    def rate(self):
        """`ctl rate`: {"interval", "weight", "vips": [{"name", "vip",
        "cps", "in_pps", "in_bps", "reals": [{"real", "cps", ...}]}]}
        (bytes per second; 0 until two samples were taken; an L7 VIP's
        real servers: 0, HAProxy counts them)."""
        self._started()
        vips = []
        for v in self.engine.show():
            reals = []
            for r in v.get("reals") or ():
                avg = self._avg.get((v["vip"], r["real"]), {})
                reals.append({"real": r["real"],
                              **{n: round(avg.get(n, 0.0), 1)
                                 for n in RATE_OF.values()}})
            vips.append({"name": v.get("name"), "vip": v["vip"],
                         **{n: round(sum(r[n] for r in reals), 1)
                            for n in RATE_OF.values()},
                         "reals": reals})
        return {"interval": RATE_INTERVAL, "weight": RATE_WEIGHT,
                "vips": vips}

    # --- zero ---------------------------------------------------------

    def zero(self, vip=None):
        """`ctl zero`: from now on, ctl's show and stats count from zero:
        the counters of vip's real servers (its name or ADDR:PORT/PROTO),
        or (None) every counter they show.  The metrics do not change.
        ConfigError when there is no such VIP."""
        only = str(self.engine.service(vip).vip) if vip else None
        self._started()
        vips = self.engine.show()
        shown = _counters(vips)
        for k, c in shown.items():
            if only is None or k[0] == only:
                self._reals[k] = c
        for v in vips:
            if isinstance(v.get("totals"), dict) and \
                    (only is None or v.get("vip") == only):
                self._totals[v.get("vip")] = \
                    {k: v["totals"].get(k) or 0 for k in REAL_KEYS}
        if only is None:
            self._core = dict(_flat(self.engine.core.stats()))
            self._queues = [dict(_flat(self.engine.core.stats(worker=i)))
                            for i in range(self.engine.core.workers)]
        self.zeroed = {"at": time.time(), "vip": only}
        return {"zeroed": only or "all",
                "reals": sum(1 for k in shown
                             if only is None or k[0] == only)}

    def retain(self, pairs):
        """After a publish: keep the baselines of the configured (vip, real
        key) `pairs` only; a pair or VIP that left and comes back counts
        from 0 again (control.ledger)."""
        keep = {(str(v), k) for v, k in pairs}
        for k in [k for k in self._reals if k not in keep]:
            del self._reals[k]
        vips = {v for v, _ in keep}
        for v in [v for v in self._totals if v not in vips]:
            del self._totals[v]

    def show(self):
        """Engine.show() with the counters counted from the last zero."""
        self._started()
        return self._less_vips(self.engine.show())

    def stats(self):
        """Engine.stats() with the counters counted from the last zero:
        per real server, the core's and the queues'."""
        self._started()
        s = self.engine.stats()
        s["vips"] = self._less_vips(s.get("vips") or [])
        if self._core is not None:
            s["core"] = _less(s.get("core") or {}, self._core)
            s["queues"] = [_less(q, b) for q, b in
                           zip(s.get("queues") or (), self._queues)]
        if self.zeroed:
            s["zeroed"] = self.zeroed
        return s

    # --- flows --------------------------------------------------------

    def flows(self, vip=None, limit=FLOWS_LIMIT_DEFAULT):
        """`ctl flows`: {"flows": [...] (dataplane.flows.list_flows' rows),
        "total" (how many match), "limit"}; the flows to vip only (its
        name or ADDR:PORT/PROTO) when given; limit 0: all of them.
        ConfigError for an unknown VIP, an L7 one (HAProxy's connections)
        or a negative limit; DataplaneError when a loop does not answer."""
        if isinstance(limit, bool) or not isinstance(limit, int) or \
                limit < 0:
            raise ConfigError(f"limit {limit!r}: expected 0 (all) or more")
        service = self.engine.service(vip) if vip else None
        if service is not None and service.mode == "l7":
            raise ConfigError(f"vip {service.label} is L7: HAProxy holds "
                              "its connections (its runtime API: show "
                              "sess)")
        self._started()
        rows, total = list_flows(self.engine.core,
                                 service.vip if service else None, limit,
                                 getattr(self.engine, "xsk", None))
        return {"flows": rows, "total": total, "limit": limit}

    def _started(self):
        if self.engine.core is None:
            raise PyfwdError("the engine is not started: no data plane "
                             "to read")

    def _less_vips(self, vips):
        for v in vips:
            base = self._totals.get(v.get("vip"))
            if base and isinstance(v.get("totals"), dict):
                v["totals"] = {k: _minus(n, base.get(k))
                               for k, n in v["totals"].items()}
            for r in v.get("reals") or ():
                base = self._reals.get((v.get("vip"), r.get("real")))
                if not base:
                    continue
                if any(r.get(k, 0) < base[k] for k in REAL_KEYS):
                    # counting again from 0 (re-added): drop the baseline
                    del self._reals[(v.get("vip"), r.get("real"))]
                    continue
                for k in REAL_KEYS:
                    r[k] = r.get(k, 0) - base[k]
        return vips


def l4_counters(core, ledger):
    """{(vip, real): {REAL_KEYS}} of the L4 VIPs' real servers: the
    ledger's, which never go down (a real's id handed to another comes
    with its counts); under the lock of the ledger's publishes."""
    if core is None:
        return {}
    per, out = core.real_stats(), {}
    for vip, key in ledger.l4_pairs():
        c = ledger.counters((vip, key), per)
        out[(str(vip), key)] = {k: c[k] for k in REAL_KEYS}
    return out


def _counters(vips):
    """{(vip, real): {REAL_KEYS}} of a show() result."""
    return {(v.get("vip"), r.get("real")):
            {k: r.get(k) or 0 for k in REAL_KEYS}
            for v in vips for r in v.get("reals") or ()}


def _flat(core):
    """(key, n) of a Core.stats() dict's counters: verdict and reason as
    `verdict.NAME`, gauges left out."""
    for k, v in core.items():
        if isinstance(v, dict):
            yield from ((f"{k}.{n}", x) for n, x in v.items())
        elif k not in GAUGES and isinstance(v, int):
            yield k, v


def _less(current, base):
    """current (a Core.stats() dict) minus base (_flat of an older one);
    a counter below its base (a fresh core) stays as it is."""
    out = {}
    for k, v in current.items():
        if isinstance(v, dict):
            out[k] = {n: _minus(x, base.get(f"{k}.{n}")) for n, x in v.items()}
        elif k in GAUGES:
            out[k] = v
        else:
            out[k] = _minus(v, base.get(k))
    return out


def _minus(value, base):
    if (not isinstance(value, int) or isinstance(value, bool)
            or base is None or value < base):
        return value
    return value - base


__all__ = ["CtlViews", "RATE_INTERVAL", "RATE_WEIGHT"]
