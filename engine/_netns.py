"""Work inside another network namespace from a thread of this process.

setns(2) with CLONE_NEWNET changes only the calling thread, so the work runs
in a short-lived thread that enters the namespace (or unshares a new one),
runs one function, and ends.  The engine uses it to change addresses in its
own namespace from any thread; the lab, to build and drive its namespaces.
"""

import ctypes
import os
import threading

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000

libc = ctypes.CDLL(None, use_errno=True)


class EnterError(OSError):
    """The thread could not enter (or unshare) the namespace."""


def check(ret, what, error=OSError):
    """`error` naming `what` and errno when a libc call returned non-zero."""
    if ret != 0:
        err = ctypes.get_errno()
        raise error(err, f"{what}: {os.strerror(err)}")


def in_netns(fd, fn, *, timeout=10.0, name="pyfwd-netns"):
    """fn() in a thread that entered the network namespace of `fd` (None:
    a new one, unshared); its result, or its exception raised here.

    Raises EnterError (an OSError) when the namespace cannot be entered
    (or made), TimeoutError
    when fn has not returned within `timeout` seconds (the thread is a
    daemon and is left to finish).  `fd` stays open: it is the caller's.
    """
    box = {}

    def run():
        try:
            if fd is None:
                check(libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)",
                      EnterError)
            else:
                enter(fd)
            box["value"] = fn()
        except BaseException as exc:    # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{name}: no answer within {timeout:g}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def enter(fd):
    """Move this thread into the network namespace of `fd`, unless it is
    there already (then no setns, and no CAP_SYS_ADMIN, is needed).
    EnterError when it cannot."""
    if not _same_netns(fd):
        check(libc.setns(fd, CLONE_NEWNET), "setns", EnterError)


def _same_netns(fd):
    """True when this thread is in the network namespace of `fd` already
    (then no setns, and no CAP_SYS_ADMIN, is needed)."""
    here = os.stat("/proc/thread-self/ns/net")
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
