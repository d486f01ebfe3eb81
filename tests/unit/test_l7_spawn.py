"""control.l7.haproxy's spawner: HAProxy's master is forked with a
parent-death signal from a thread that lives as long as the HAProxy (a
plain `sleep` stands in for it here: no root, no HAProxy)."""

import subprocess
import threading
import time

from pyfwd.control.spawner import Spawner


def _wait_gone(proc, timeout=3.0):
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        time.sleep(0.02)
    return proc.poll()


def test_a_child_outlives_the_thread_that_asked_for_it():
    spawner = Spawner()
    box = {}
    t = threading.Thread(target=lambda: box.setdefault(
        "proc", spawner.popen(["sleep", "30"], stdin=subprocess.DEVNULL)))
    t.start()
    t.join()                        # the asking thread is gone ...
    proc = box["proc"]
    try:
        time.sleep(0.3)
        assert proc.poll() is None  # ... the child is not
    finally:
        spawner.close()             # the forking thread ends: SIGTERM
    assert _wait_gone(proc) == -15


def test_popen_errors_reach_the_caller():
    spawner = Spawner()
    try:
        try:
            spawner.popen(["/nonexistent/haproxy"])
        except FileNotFoundError:
            pass
        else:
            raise AssertionError("no error")
    finally:
        spawner.close()
