"""The health monitor: checks real servers in the background and reports
when one goes down or comes back.

keepalived-style: each real server of a VIP is probed every ``interval``
seconds; an up real goes down after ``fall`` consecutive failed probes and a
down real comes back after ``rise`` consecutive successful ones.  This module
only decides and reports (``HealthMonitor`` calls ``on_change``); what a down
real means for the tables is the caller's business.
"""

import concurrent.futures
import logging
import threading
import time

from .probes import check
from .spec import HealthSpec, target_address
from ...errors import ConfigError, PyfwdError

log = logging.getLogger("pyfwd.control.health")


class _Target:
    __slots__ = ("spec", "address", "port", "vip", "up", "last_ok",
                 "last_detail", "successes", "failures", "since", "next_due",
                 "running", "checks")

    def __init__(self, spec, address, port, vip, up, now):
        self.spec, self.address, self.port, self.vip = spec, address, port, vip
        self.up = up
        self.last_ok = None
        self.last_detail = "not checked yet"
        self.successes = 0
        self.failures = 0
        self.since = now
        self.next_due = now
        self.running = False
        self.checks = 0

    def same_server(self, address, port):
        return self.address == address and self.port == port


class HealthMonitor:
    """Checks many targets in the background and reports state changes.

    A target is (spec, address, port, vip) under a key the caller chooses
    (any hashable, e.g. (vip_name, real_key)).  Each is checked every
    spec.interval seconds (the first check right away), on a pool of up to
    ``max_workers`` threads, so a slow target does not delay the others; a
    target is never checked twice at once (if its check outlasts the
    interval, the next one starts when it ends).

    State: a new target starts up (``initial_up=True``, as keepalived does
    without ``alpha``) so that a balancer that starts does not drop traffic
    while the first checks run; a dead real then goes down after ``fall``
    failed checks.  With ``initial_up=False`` reals start down and carry
    traffic after ``rise`` good checks.  An up target goes down after
    spec.fall consecutive failures, a down target up after spec.rise
    consecutive successes.

    on_change(key, up, detail) is called on every flip, from one of the
    monitor's threads, never while the monitor's lock is held (it may call
    state()); calls for one key never overlap and come in order; none comes
    after stop() returned.  It is not called for a target's initial state.
    An exception in on_change is logged and ignored.  Do not call stop()
    from on_change, nor while holding a lock that on_change takes (stop()
    waits for an on_change in progress, up to its ``wait``).
    """

    def __init__(self, on_change, clock=time.monotonic, initial_up=True,
                 max_workers=32, check=check):
        self._on_change = on_change
        self._clock = clock
        self._initial_up = initial_up
        self._max_workers = max_workers
        self._check = check
        self._targets = {}
        self._lock = threading.Lock()
        self._cb_lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread = None
        self._pool = None
        self._futures = set()
        self._futures_lock = threading.Lock()   # not _lock: see _done
        self._stopping = False
        self._stopped = False

    # -- targets and state ---------------------------------------------------

    def set_targets(self, targets):
        """Replace the set of targets with ``{key: (spec, address, port,
        vip)}``, live.

        A key whose spec, address, port and vip are unchanged keeps its
        state and schedule.  A key whose spec or vip changed but still points
        at the same address and port keeps its up/down state, restarts its
        counters and is checked right away.  A new key (or a key now pointing
        at another server) starts in the initial state and is checked right
        away.  Keys not in ``targets`` are dropped; the result of a check
        in flight for them is discarded.

        Raises ConfigError for a spec that is not a HealthSpec, an invalid
        address or port; then nothing is changed.
        """
        new = {}
        for key, (spec, address, port, vip) in targets.items():
            if not isinstance(spec, HealthSpec):
                raise ConfigError(f"health target {key!r}: spec {spec!r}: "
                                  "expected a HealthSpec")
            addr = target_address(address)
            spec.check_port(port)
            new[key] = (spec, addr, port, vip)
        with self._lock:
            now = self._clock()
            old = self._targets
            self._targets = {}
            for key, (spec, addr, port, vip) in new.items():
                t = old.get(key)
                if t is not None and t.same_server(addr, port):
                    if t.spec != spec or t.vip != vip:
                        t.spec, t.vip = spec, vip
                        t.successes = t.failures = 0
                        t.next_due = now
                    self._targets[key] = t
                else:
                    self._targets[key] = _Target(spec, addr, port, vip,
                                                 self._initial_up, now)
            self._wake.notify_all()

    def state(self, key):
        """The state of one target: a dict with up (bool), last_ok (bool, or
        None before the first check), last_detail (str), successes and
        failures (consecutive counts), since (clock time of the last flip, or
        of when the target was added), checks (total).  Raises KeyError for
        an unknown key."""
        with self._lock:
            return self._state(self._targets[key])

    def states(self):
        """{key: state(key)} of every target."""
        with self._lock:
            return {k: self._state(t) for k, t in self._targets.items()}

    @staticmethod
    def _state(t):
        return {"up": t.up, "last_ok": t.last_ok,
                "last_detail": t.last_detail, "successes": t.successes,
                "failures": t.failures, "since": t.since, "checks": t.checks}

    # -- the state machine ---------------------------------------------------

    def _take_due(self, now):
        """Mark the due targets running; returns [(key, target)]."""
        due = []
        for key, t in self._targets.items():
            if not t.running and t.next_due <= now:
                t.running = True
                # Keep the cadence; when late by a whole interval (a check
                # that outlasted it, a busy pool), start again from now.
                t.next_due += t.spec.interval
                if t.next_due <= now:
                    t.next_due = now + t.spec.interval
                due.append((key, t))
        return due

    def _run_one(self, key, t):
        """Check one target and apply the result (on any thread)."""
        try:
            ok, detail = self._check(t.spec, t.address, t.port, t.vip)
        except Exception as exc:        # a bug, not a peer: count, go on
            log.exception("health check of %r raised", key)
            ok, detail = False, f"check raised {type(exc).__name__}: {exc}"
        flip = None
        with self._lock:
            if self._targets.get(key) is not t:
                t.running = False       # dropped or replaced meanwhile
                return
            flip = self._apply(t, bool(ok), detail)
        try:
            if flip is not None:
                with self._cb_lock:
                    if not self._stopped:
                        try:
                            self._on_change(key, flip, detail)
                        except Exception:
                            log.exception("health on_change(%r) raised", key)
        finally:
            with self._lock:
                t.running = False
                self._wake.notify_all()

    def _apply(self, t, ok, detail):
        """Count one result; returns the new state if it flipped, else
        None.  Called with the lock held."""
        now = self._clock()
        t.checks += 1
        t.last_ok, t.last_detail = ok, detail
        if ok:
            t.successes += 1
            t.failures = 0
            if not t.up and t.successes >= t.spec.rise:
                t.up, t.since = True, now
                return True
        else:
            t.failures += 1
            t.successes = 0
            if t.up and t.failures >= t.spec.fall:
                t.up, t.since = False, now
                return False
        return None

    def run_pending(self):
        """Run the checks that are due now, in the calling thread, one after
        the other; returns how many ran.  For tests (with a fake clock and
        check) and for a caller that drives the monitor itself instead of
        start()."""
        with self._lock:
            due = self._take_due(self._clock())
        for key, t in due:
            self._run_one(key, t)
        return len(due)

    # -- the background thread ------------------------------------------------

    def start(self):
        """Start checking in the background.  Raises PyfwdError if already
        started."""
        with self._lock:
            if self._thread is not None:
                raise PyfwdError("health monitor already started")
            self._stopping = self._stopped = False
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._max_workers,
                thread_name_prefix="pyfwd-health")
            self._thread = threading.Thread(target=self._loop,
                                            name="pyfwd-health", daemon=True)
            self._thread.start()

    def stop(self, wait=2.0):
        """Stop checking: no check starts and no on_change is called after
        this returns (unless an on_change already running outlasts ``wait``:
        then a warning is logged).  Waits up to ``wait`` seconds in all for
        the checks in flight (they end at their timeout anyway; their
        results update state() but are not reported).  Idempotent; start()
        may be called again afterwards."""
        end = time.monotonic() + wait
        with self._lock:
            thread, pool = self._thread, self._pool
            self._stopping = True
            self._stopped = True        # read under _cb_lock by _run_one
            self._wake.notify_all()
        # Wait for an on_change in progress; bounded, so that a caller that
        # holds a lock its on_change wants does not deadlock with us.
        if self._cb_lock.acquire(timeout=wait):
            self._cb_lock.release()
        else:
            log.warning("health: on_change still running after %g s", wait)
        if thread is None:
            return
        thread.join(max(0.0, end - time.monotonic()))
        pool.shutdown(wait=False, cancel_futures=True)
        with self._futures_lock:
            futures = set(self._futures)
        concurrent.futures.wait(futures,
                                timeout=max(0.0, end - time.monotonic()))
        with self._lock:
            self._thread = self._pool = None

    def _loop(self):
        with self._lock:
            while not self._stopping:
                now = self._clock()
                for key, t in self._take_due(now):
                    try:
                        fut = self._pool.submit(self._run_one, key, t)
                    except RuntimeError:        # pool shut down: stopping
                        t.running = False
                        return
                    with self._futures_lock:
                        self._futures.add(fut)
                    fut.add_done_callback(self._done)
                waits = [t.next_due for t in self._targets.values()
                         if not t.running]
                delay = min(waits) - now if waits else None
                # Sleep on the real clock; a fake clock is for run_pending.
                self._wake.wait(None if delay is None
                                else min(max(delay, 0.0), 60.0))

    def _done(self, fut):
        # May run in _loop's thread, under _lock (a future already done when
        # the callback is added): so it takes only _futures_lock.
        with self._futures_lock:
            self._futures.discard(fut)
        exc = fut.exception() if not fut.cancelled() else None
        if exc is not None:
            log.error("health check task failed: %r", exc)
