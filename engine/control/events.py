"""The engine's event log: what happened to the VIPs and real servers.

A bounded list of the latest events (EVENTS_MAX), for the dashboard
(control.web) and its /api/events: health checks that flipped, the
operator's changes (drain, halt, online, weight, add/del VIP and real,
forget), reloads, HA role changes.  The engine records them where they
happen, with one add() each:

    events = EventLog()
    events.add("state", "pacs-web", "10.0.0.11", "drain")
    events.list(since=0)    # -> [{"seq": 1, "time": 1733..., "kind":
                            #      "state", "vip": "pacs-web", ...}]

Thread-safe (health checks report from their own threads); never raises
for a value it is given (they are turned into text).
"""

import collections
import itertools
import threading
import time

EVENTS_MAX = 200
# The kinds of event: what the dashboard can filter or colour by.
KINDS = ("start", "health", "state", "weight", "vip", "real", "forget",
         "reload", "ha")


class EventLog:
    """The latest `size` events, oldest first (see the module's
    docstring).  clock: wall-clock seconds (time.time), for tests."""

    def __init__(self, size=EVENTS_MAX, clock=time.time):
        self._events = collections.deque(maxlen=size)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._clock = clock

    def add(self, kind, vip=None, real=None, text=""):
        """Record one event: kind (KINDS), the VIP's label and the real's
        key it is about (None: not about one), what happened (text).
        Returns the event (a dict)."""
        with self._lock:
            event = {"seq": next(self._seq),
                     "time": round(self._clock(), 3), "kind": str(kind),
                     "vip": None if vip is None else str(vip),
                     "real": None if real is None else str(real),
                     "text": str(text)}
            self._events.append(event)
        return dict(event)

    def list(self, since=0, limit=None):
        """The events after sequence number `since`, oldest first; the
        last `limit` of them when limit is given.  Copies: JSON-ready."""
        with self._lock:
            out = [dict(e) for e in self._events if e["seq"] > since]
        return out[-limit:] if limit else out

    def __len__(self):
        with self._lock:
            return len(self._events)


__all__ = ["EventLog", "EVENTS_MAX", "KINDS"]
