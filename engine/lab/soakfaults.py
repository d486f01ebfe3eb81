"""The soak run's faults: when each comes (``schedule``), a thread that
applies them on time (``FaultRunner``), and the windows in which they
excuse failures, from what actually happened (``windows``).

The faults, over a run of S seconds:

- ``reload``: `pyfwd ctl reload` every RELOAD_EVERY seconds;
- ``flap``: a real's health agent (what its checks reach) stops for a
  while, then comes back: the real goes down for every VIP, then up;
- ``drain`` then ``online``, ``halt`` then ``online``: one real of the web
  VIP, for a while each;
- ``add-real`` then ``del-real``: a real not in the file joins the web VIP,
  then leaves it;
- ``restart``: the engine is killed with SIGKILL and started again (once);
- ``haproxy``: the L7 VIP's HAProxy is killed with SIGKILL (once); the
  engine's watchdog starts it again.

Pure but for FaultRunner, which calls what it is given.
"""

import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from .soakjudge import Window

__all__ = ["RELOAD_EVERY", "GRACE", "Fault", "schedule", "FaultRunner",
           "windows", "health_windows"]

RELOAD_EVERY = 5.0
GRACE = 1.0         # s after a fault's end when a failure is still its


@dataclass(frozen=True)
class Fault:
    """``action`` at ``at`` seconds into the load; with ``vip`` and
    ``real`` (a role: real1..) when it concerns one; ``duration``: when
    the matching end (online, del-real, flap's return) follows."""

    at: float
    action: str
    vip: Optional[str] = None
    real: Optional[str] = None
    duration: float = 0.0


def schedule(seconds, reals, web="web", extra="real4"):
    """The faults of a run of ``seconds`` over the roles ``reals`` (in the
    file) and ``extra`` (a real the file does not name), sorted by time.
    Needs at least 3 reals."""
    d = float(seconds)
    hold = max(3.0, min(20.0, 0.06 * d))       # how long a state lasts
    out = [Fault(t, "reload") for t in _every(2.5, RELOAD_EVERY, d)]
    flaps = max(3, int(d // 60))
    for k in range(flaps):
        out.append(Fault(round(d * (0.1 + 0.8 * k / flaps), 1), "flap",
                         real=reals[(k + 2) % len(reals)], duration=hold))
    out += [Fault(round(0.15 * d, 1), "drain", web, reals[0], hold),
            Fault(round(0.30 * d, 1), "restart"),
            Fault(round(0.45 * d, 1), "halt", web, reals[1], hold),
            Fault(round(0.55 * d, 1), "add-real", web, extra,
                  round(0.15 * d, 1)),
            Fault(round(0.78 * d, 1), "haproxy")]
    return sorted(out, key=lambda f: f.at)


def _every(first, step, end):
    t = first
    while t < end:
        yield t
        t += step


_ENDS = {"drain": "online", "halt": "online", "add-real": "del-real",
         "flap": "flap-end"}


@dataclass
class FaultRunner:
    """Apply a schedule from ``start`` (CLOCK_MONOTONIC) on: each action
    calls ``actions[name](fault)`` (names: the faults' actions and their
    ends: online, del-real, flap-end), which returns a dict of what it
    measured (merged into the log) or raises.  ``log`` holds one entry per
    call: {"t", "t_done", "action", "vip", "real", "ok", "detail", ...}."""

    faults: list
    actions: dict
    start: float
    log: list = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self):
        """Every fault and its end in time order; returns when done or
        stopped (ends still due are applied then, so nothing stays
        halted)."""
        todo = []
        for f in self.faults:
            todo.append((f.at, f.action, f))
            if f.action in _ENDS:
                todo.append((f.at + f.duration, _ENDS[f.action], f))
        todo.sort(key=lambda x: x[0])
        for at, action, f in todo:
            if not self.stop.is_set():
                self.stop.wait(max(0.0, self.start + at - time.monotonic()))
            elif action not in _ENDS.values():
                continue
            self._apply(action, f)

    def _apply(self, action, f):
        t = time.monotonic()
        entry = {"t": round(t, 3), "action": action, "vip": f.vip,
                 "real": f.real}
        try:
            entry.update(self.actions[action](f) or {})
            entry["ok"] = True
        except Exception as exc:            # recorded, the run goes on
            entry.update(ok=False, detail=f"{type(exc).__name__}: {exc}")
        entry["t_done"] = round(time.monotonic(), 3)
        self.log.append(entry)


def windows(log, run_end, vip_modes, l7_vip=None):
    """The Windows in which the logged faults excuse failures (see
    pyfwd.lab.soakjudge).  ``vip_modes``: {vip: mode}; a DR VIP's flows
    survive a restart (Maglev), the others' do not."""
    out, opened = [], {}
    for e in sorted(log, key=lambda e: e["t"]):
        a, key = e["action"], (e.get("vip"), e.get("real"))
        if a in ("halt", "add-real", "flap"):
            opened[a, key] = e
        elif a == "online" and ("halt", key) in opened:
            h = opened.pop(("halt", key))
            out.append(Window(h["t"], e["t_done"] + GRACE, "halted",
                              key[0], key[1], cuts=True))
        elif a == "del-real":
            out.append(Window(e["t"], run_end, "removed from the VIP",
                              key[0], key[1], cuts=True))
        elif a == "restart":
            ready = e.get("ready") or run_end
            for vip, mode in vip_modes.items():
                out.append(Window(e["t"], ready + GRACE,
                                  "engine restart (SIGKILL)", vip,
                                  cuts=mode != "dr"))
        elif a == "haproxy" and l7_vip:
            back = e.get("recovered") or run_end
            out.append(Window(e["t"], back + GRACE, "HAProxy killed",
                              l7_vip, cuts=True))
    return out


def health_windows(samples):
    """Windows in which a real's health was down, from per-second samples
    [{"t", "health": {(vip, real): "up"|"down"|None}}] (GRACE either side):
    a real down by its health check is not a healthy real."""
    out, since, last = [], {}, {}
    for s in sorted(samples, key=lambda s: s["t"]):
        for key, h in s["health"].items():
            if h == "down":
                since.setdefault(key, last.get(key, s["t"]))
            elif key in since:
                out.append(Window(since.pop(key) - GRACE, s["t"] + GRACE,
                                  "health check down", *key))
            last[key] = s["t"]
    end = max((s["t"] for s in samples), default=0.0)
    out += [Window(t - GRACE, end + GRACE, "health check down", *key)
            for key, t in since.items()]
    return out
