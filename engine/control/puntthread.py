"""The punt thread: ARP, NDP and pings answered whatever else the engine does.

The engine's control thread also refreshes MACs, writes the stats file,
watches HAProxy and announces the VIPs, some of it under the engine's
lock, which a reload, an HAProxy runtime call or a neighbour solicitation
may hold for seconds.  ARP must not wait behind that: a client whose ARP
entry for a VIP expired loses its connections within a few seconds.  So
one thread of its own drains the punt ring every TICK and answers (a
control.punts.Punts, which reads only immutable snapshots and takes no
lock of the engine's).  While nothing is punted the pause doubles up to
IDLE_TICK, so that an idle engine's Python thread does not take the
forwarding core 200 times a second; the first frame drained brings it
back to TICK.  A drain allocates nothing (Core.drain_punts reuses its
buffers).

    thread = PuntThread(punts).start()
    ...
    thread.stop()
"""

import logging
import threading

from ..errors import PyfwdError

__all__ = ["PuntThread", "TICK", "IDLE_TICK", "DRAINS"]

log = logging.getLogger("pyfwd")

TICK = 0.005        # s between drains of the punt ring while frames come
IDLE_TICK = 0.02    # s between drains once it has been empty a while: an
                    # ARP answer waits that long at most, and the ring's 192
                    # slots for pings hold 20 ms of a 9.5k/s ping flood
DRAINS = 8          # full batches drained back to back before a pause
BATCH = 256         # frames one drain returns at most (Core.drain_punts)


class PuntThread:
    """Runs punts.answer_punts() every `tick` seconds while frames come
    (every `idle_tick` at most when none do: the pause doubles after each
    empty round), and again at once while a drain comes back full (up to
    DRAINS times).  An error is
    logged (the same message once in a row: a link that is down fails
    every drain) and the loop carries on.  beats: loops run (a
    heartbeat); errors: errors met."""

    def __init__(self, punts, tick=TICK, name="pyfwd-punts",
                 idle_tick=IDLE_TICK):
        self.punts = punts
        self.tick = tick
        self.idle_tick = max(idle_tick, tick)
        self.name = name
        self.beats = 0
        self.errors = 0
        self._said = None
        self._stop = threading.Event()
        self._thread = None

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def start(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name,
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=2.0):
        """Stop the loop and wait for it (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self):
        pause = self.tick
        while not self._stop.wait(pause):
            self.beats += 1
            pause = self.pause_after(pause, self.drain())

    def pause_after(self, pause, drained):
        """The pause before the next round, after one that drained
        `drained` frames following a pause of `pause` s."""
        return self.tick if drained else min(pause * 2, self.idle_tick)

    def drain(self):
        """One round: drain until the ring is empty (or DRAINS full
        batches); the frames answered."""
        total = 0
        for _ in range(DRAINS):
            try:
                n = self.punts.answer_punts()
            except (PyfwdError, OSError) as exc:   # e.g. the link is down
                self.errors += 1
                if str(exc) != self._said:
                    self._said = str(exc)
                    log.error("punts: %s", exc)
                return total
            except Exception:           # a bug: said, and carried on
                self.errors += 1
                log.exception("punts: unexpected error")
                return total
            self._said = None
            total += n
            if n < BATCH:
                break
        return total
