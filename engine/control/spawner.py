"""Children that die with pyfwd: a daemon pyfwd supervises (HAProxy,
BIRD) is forked with a parent-death signal (PR_SET_PDEATHSIG, SIGTERM).
The kernel sends it when the *thread* that forked ends, so every fork of
one daemon happens in one thread of its own (Spawner), which lives until
the daemon is stopped: the signal comes when pyfwd's process dies, SIGKILL
included, not when a control request's thread ends.

    spawner = Spawner("pyfwd-bird-spawner")
    proc = spawner.popen(argv, stdout=...)      # as subprocess.Popen
    ...; spawner.close()
"""

import os
import queue
import signal
import subprocess
import threading

from .._netns import enter, libc

__all__ = ["Spawner"]

PR_SET_PDEATHSIG = 1


class Spawner:
    """One thread that forks a supervised daemon (HAProxy's master, BIRD)
    each time it starts, and lives until close(): PR_SET_PDEATHSIG fires
    when the forking thread ends, so it must not be a control request's
    thread.  The thread enters the network namespace of the thread that
    made the Spawner (the child binds there)."""

    def __init__(self, name="pyfwd-spawner"):
        self._jobs = queue.Queue()
        self._ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=name)
        self._thread.start()

    def _run(self):
        try:
            enter(self._ns)
        except OSError as exc:
            self._fail = exc
        else:
            self._fail = None
        finally:
            os.close(self._ns)
        while True:
            job = self._jobs.get()
            if job is None:
                return
            args, kwargs, box, done = job
            try:
                if self._fail:
                    raise self._fail
                box["proc"] = subprocess.Popen(*args, **kwargs)
            except BaseException as exc:    # handed to the caller
                box["error"] = exc
            done.set()

    def popen(self, *args, **kwargs):
        """subprocess.Popen(*args, **kwargs) from the spawner's thread,
        with a parent-death SIGTERM; raises what Popen raises."""
        parent = os.getpid()
        box, done = {}, threading.Event()
        kwargs["preexec_fn"] = lambda: _die_with(parent)
        self._jobs.put((args, kwargs, box, done))
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["proc"]

    def close(self):
        """End the thread (once the processes it forked are gone)."""
        self._jobs.put(None)
        self._thread.join(timeout=5)


def _die_with(parent):
    """In the child, before exec: SIGTERM when the forking thread ends;
    exit now if the parent is gone already (it died before the prctl)."""
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        os._exit(126)
    if os.getppid() != parent:
        os._exit(126)
