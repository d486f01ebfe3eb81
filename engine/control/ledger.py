"""Counters that never go down, and when each real server last changed.

The data plane counts per real-server id (dataplane.tables.RealIds): an id
is released when its real leaves the tables (removed, halted, down with
on_down "reset", the fallback no longer needed) and handed to another
real later, with the counts it had.  Read raw, a real's counters would
restart from 0 after a halt and `online`, a newcomer would start from
someone else's counts, and a VIP's totals (the sum of its reals') would
drop when a real leaves.  Prometheus reads any drop as a counter reset.

`RealLedger` keeps, per (VIP, real key) pair, what its earlier ids
counted (`acc`) and what its current id had when it got it (`base`): a
pair's counter is acc + (raw - base) and never goes down while the pair
is configured.  A pair that leaves the configuration hands its counts to
its VIP (`departed`), so that the VIP's totals never go down either.  A
VIP that is deleted takes its totals with it: re-added, it starts from 0
(a counter reset, as for a restarted engine).

An L7 VIP's counters are HAProxy's, which start again from 0 whenever
HAProxy reloads (every change of its servers) or restarts: `observed()`
carries them over such a drop (`offset`), so that they never go down
either; what HAProxy counted between the last look and its reload is
lost (the engine looks at every publish, before HAProxy reloads, and at
every scrape).

It also stamps, in wall-clock seconds, when each real's condition (admin
state, health, scheduled or not) last changed: the metrics' and the
dashboard's "last change".

The engine calls published() after every publish (under its lock);
Changes snapshots and restores the ledger with the ids on a rollback.
Pure: no native handle, testable with dicts.
"""

import time

COUNTERS = ("frames", "bytes", "flows_new")
# Live flows of a real's id now, never carried over (ipvsadm's ActiveConn
# and InActConn): active established or half-open, inactive closing.
GAUGES = ("active", "inactive")
_ZERO = dict.fromkeys(COUNTERS, 0)


def _add(into, counts, sign=1):
    for k in COUNTERS:
        into[k] = into.get(k, 0) + sign * counts.get(k, 0)


class RealLedger:
    """See the module's docstring.  clock: wall-clock seconds (tests)."""

    def __init__(self, clock=time.time):
        self._clock = clock
        self._ids = {}          # pair -> id, as last published
        self._base = {}         # pair -> counts its id had when it got it
        self._acc = {}          # pair -> counts of its earlier ids
        self._departed = {}     # vip -> counts of its reals that left
        self._cond = {}         # pair -> its condition, as last seen
        self._changed = {}      # pair -> wall-clock time of the change
        self._l7_last = {}      # L7 pair -> HAProxy's counts, last seen
        self._l7_offset = {}    # L7 pair -> what HAProxy counted before
        self._seen = False

    @property
    def seen(self):
        """Whether published() ran (a Report over fakes may never)."""
        return self._seen

    def published(self, configured, ids, raw, conditions=None, l7=(),
                  vips=()):
        """Account for a publish.  configured: the (vip, real key) pairs
        of the L4 VIPs' configuration (their reals and fallbacks, in the
        tables or not); ids: {pair: id} now in the tables; raw: the data
        plane's counters by id (Core.real_stats()), read after the
        publish; conditions: {pair: anything comparable} of every real
        (L7 ones too), whose change is stamped; l7: {pair: HAProxy's
        counters} of the L7 VIPs' configured reals; vips: every
        configured VIP (one without reals keeps its totals)."""
        self._seen = True
        configured = set(configured)
        l7 = dict(l7)
        for pair, rid in self._ids.items():
            if ids.get(pair) != rid:        # its id was released
                _add(self._acc.setdefault(pair, dict(_ZERO)),
                     self._own(pair, rid, raw))
                del self._base[pair]
        for pair, rid in ids.items():
            if self._ids.get(pair) != rid:  # a new id: count from here
                self._base[pair] = {k: raw.get(rid, {}).get(k, 0)
                                    for k in COUNTERS}
        self._ids = dict(ids)
        for pair, counts in l7.items():
            self.observed(pair, counts)
        configured |= set(l7)
        for pair in [p for p in self._l7_last if p not in l7]:
            _add(self._acc.setdefault(pair, dict(_ZERO)),
                 self._l7_total(pair))
            del self._l7_last[pair], self._l7_offset[pair]
        vips = {vip for vip, _ in configured} | set(vips)
        for pair in [p for p in self._acc if p not in configured]:
            counts = self._acc.pop(pair)
            if pair[0] in vips:             # its VIP keeps what it counted
                _add(self._departed.setdefault(pair[0], dict(_ZERO)),
                     counts)
        for vip in [v for v in self._departed if v not in vips]:
            del self._departed[vip]         # deleted: a counter reset
        if conditions is not None:
            self._stamp(conditions)

    def _own(self, pair, rid, raw):
        """What pair's current id counted since the pair got it (never
        below 0)."""
        now, base = raw.get(rid, {}), self._base.get(pair, _ZERO)
        return {k: max(0, now.get(k, 0) - base.get(k, 0)) for k in COUNTERS}

    def observed(self, pair, counts):
        """An L7 real's counters from HAProxy's (`counts`: its row, {}
        when HAProxy did not answer), carried over HAProxy's restarts:
        the row with frames, bytes and flows_new that never go down."""
        last = self._l7_last.setdefault(pair, dict(_ZERO))
        offset = self._l7_offset.setdefault(pair, dict(_ZERO))
        for k in COUNTERS:
            now = counts.get(k)
            if not isinstance(now, int) or isinstance(now, bool):
                continue                # not told: the last stands
            if now < last[k]:           # HAProxy started again
                offset[k] += last[k]
            last[k] = now
        out = self._l7_total(pair)
        _add(out, self._acc.get(pair, _ZERO))   # counted as L4 before
        return {**counts, **out}

    def _l7_total(self, pair):
        out = dict(self._l7_offset[pair])
        _add(out, self._l7_last[pair])
        return out

    def _stamp(self, conditions):
        now = self._clock()
        for pair, cond in conditions.items():
            if pair not in self._cond or self._cond[pair] != cond:
                self._changed[pair] = now
            self._cond[pair] = cond
        for pair in [p for p in self._cond if p not in conditions]:
            del self._cond[pair], self._changed[pair]

    def counters(self, pair, raw):
        """{"frames", "bytes", "flows_new", "active", "inactive"} of pair:
        the three counters since it was configured, the GAUGES of its id
        now (0 without one)."""
        out = dict(self._acc.get(pair, _ZERO))
        rid = self._ids.get(pair)
        out.update(dict.fromkeys(GAUGES, 0))
        if rid is not None:
            _add(out, self._own(pair, rid, raw))
            out.update({k: raw.get(rid, {}).get(k, 0) for k in GAUGES})
        return out

    def l4_pairs(self):
        """The L4 VIPs' pairs it counts: those in the tables and those
        with earlier counts (halted, down)."""
        return {p for p in (*self._ids, *self._acc)
                if p not in self._l7_last}

    def vip_totals(self, vip, raw):
        """{"frames", "bytes", "flows_new"} of vip since it was added: its
        configured reals' (fallback included) and the departed ones'."""
        out = dict(self._departed.get(vip, _ZERO))
        for pair in {p for p in (*self._acc, *self._ids) if p[0] == vip}:
            _add(out, self.counters(pair, raw))
        for pair in self._l7_last:
            if pair[0] == vip:
                _add(out, self._l7_total(pair))
        return out

    def last_change(self, pair):
        """Wall-clock seconds when pair's condition last changed (or it
        was first seen), None if never seen."""
        return self._changed.get(pair)


__all__ = ["RealLedger", "COUNTERS"]
