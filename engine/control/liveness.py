"""Is the engine alive?  Every data-plane loop, the control thread and
the punt thread.

A part is alive while its thread runs and its heartbeat moves: a C loop
counts its iterations (an idle one wakes from poll() every 100 ms at
most: dataplane.io.Xsk.loops()), the control thread its ticks (every
100 ms, control.engine.TICK).  `Liveness` remembers each count and when it last saw it move; a
count that has not moved for longer than the part's stall threshold is a
stalled part.  The answer is a list of problems, each naming the part and
what is wrong with it; [] is alive.

Its readers: the control command `status` (which keepalived's check runs:
an engine that is not alive fails it and the peer takes over), the
service manager's watchdog (WATCHDOG=1 stops) and the HA lease.  Each
call is an observation: with several readers at their own pace, a count
that moved since any of them looked is alive.
"""

import threading
import time

# Seconds a heartbeat may stand still.  A loop beats ten times a second
# when idle, far more when busy.  The control thread may wait behind
# HAProxy's start or reload (up to its 5 s start timeout) and the engine's
# lock, legitimately: a stuck one is told from a slow one after 10 s.
LOOP_STALL = 2.0
CONTROL_STALL = 10.0


class Liveness:
    """The judge (see the module's docstring); thread-safe.

    loop_stall, control_stall: the thresholds (s); clock: monotonic
    seconds, for tests.
    """

    def __init__(self, loop_stall=LOOP_STALL, control_stall=CONTROL_STALL,
                 *, clock=time.monotonic):
        self.loop_stall = loop_stall
        self.control_stall = control_stall
        self._clock = clock
        self._seen = {}         # part name -> (count, when it last moved)
        self._lock = threading.Lock()

    def problems(self, loops, control, punts=None):
        """What is not alive: a list of sentences, [] when all is.

        loops: the data plane's loops as Xsk.loops() gives them ({"name",
        "running", "beats", "ended"}); control: the control thread as
        {"name", "running", "beats"}, or None (not started: nothing to
        judge, as with no loops); punts: the thread that answers ARP, NDP
        and pings (control.puntthread), the same way, judged as a loop is
        (it beats every 5 to 20 ms and waits on no lock but its own send).
        """
        found = []
        parts = [(f"data-plane loop {lp['name']}", lp, self.loop_stall)
                 for lp in loops]
        if control is not None:
            parts.append((f"control thread {control['name']}", control,
                          self.control_stall))
        if punts is not None:
            parts.append((f"punt thread {punts['name']}", punts,
                          self.loop_stall))
        now = self._clock()
        with self._lock:
            for name, part, stall in parts:
                problem = self._judge(name, part, stall, now)
                if problem:
                    found.append(problem)
            # forget parts that are gone (a stopped engine, a restart)
            names = {name for name, _, _ in parts}
            for name in list(self._seen):
                if name not in names:
                    del self._seen[name]
        return found

    def _judge(self, name, part, stall, now):
        beats = part["beats"]
        last = self._seen.get(name)
        if last is None or last[0] != beats:
            self._seen[name] = (beats, now)
            since = now
        else:
            since = last[1]
        if not part["running"]:
            why = part.get("ended")
            return f"{name}: has ended{f' ({why})' if why else ''}"
        if now - since > stall:
            return (f"{name}: stalled, no heartbeat for "
                    f"{now - since:.1f} s (more than {stall:g} s)")
        return None


class EngineLiveness:
    """`engine.liveness()`: what is not alive in a control.engine.Engine,
    [] when every data-plane loop and the control thread run and beat.
    Takes no lock (a stuck engine must still answer).  judge: the Liveness
    that keeps the counts (tests give it other thresholds)."""

    def __init__(self, engine, judge=None):
        self.engine = engine
        self.judge = judge or Liveness()

    def __call__(self):
        e = self.engine
        # the backend (None before start and after stop), the control
        # thread and its tick count, which _control() advances
        return self.judge.problems(*engine_parts(e.xsk, e._thread, e.ticks,
                                                 e.punt_thread))


def engine_parts(xsk, thread, ticks, punt_thread=None):
    """The parts of an engine to judge: (its data plane's loops, its
    control thread, its punt thread) from its backend (an Xsk or Afp, or
    None), the control thread (a threading.Thread, or None), that thread's
    tick count and the punt thread (a control.puntthread.PuntThread, or
    None)."""
    loops = xsk.loops() if xsk is not None else []
    control = None if thread is None else {
        "name": thread.name, "running": thread.is_alive(), "beats": ticks}
    punts = None if punt_thread is None else {
        "name": punt_thread.name, "running": punt_thread.running,
        "beats": punt_thread.beats}
    return loops, control, punts


def problem_text(problems):
    """The one-line error of a not-alive engine (`status` answers it)."""
    return "engine not alive: " + "; ".join(problems)


__all__ = ["Liveness", "EngineLiveness", "engine_parts", "problem_text",
           "LOOP_STALL", "CONTROL_STALL"]
