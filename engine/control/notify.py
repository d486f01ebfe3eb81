"""The service manager's side channel: sd_notify, written out.

systemd (Type=notify) gives a service $NOTIFY_SOCKET, a datagram unix
socket (a path, or an abstract name written with a leading '@'), and
reads one datagram of newline-separated KEY=VALUE assignments at a time:
READY=1 (started), RELOADING=1 with MONOTONIC_USEC= (reloading), READY=1
again (reloaded), STOPPING=1, STATUS=text, WATCHDOG=1 (alive).  With
WatchdogSec= it sets $WATCHDOG_USEC (and $WATCHDOG_PID): a service that
sends no WATCHDOG=1 within that time is killed and, with
Restart=on-failure, started again.

`Notifier` reads the environment once and removes those variables from
it, so that the programs the engine starts (HAProxy speaks sd_notify too)
do not talk to the service manager in its name.  Without $NOTIFY_SOCKET
every call does nothing.  Sending never raises: a service manager that
went away is logged once.
"""

import logging
import os
import socket
import time

log = logging.getLogger("pyfwd")

ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """sd_notify to $NOTIFY_SOCKET (see the module's docstring).

    env: the environment to read (and clean: os.environ by default); pid:
    this process's (the watchdog is ours only when $WATCHDOG_PID is unset
    or names us).
    """

    def __init__(self, env=None, pid=None):
        env = os.environ if env is None else env
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog = _watchdog(env, os.getpid() if pid is None else pid)
        for key in ENV:
            env.pop(key, None)
        self._sock = None
        self._failed = False

    @property
    def enabled(self):
        """True when a service manager listens."""
        return self.address is not None

    def send(self, *assignments, **fields):
        """Send one datagram: the assignments ("READY=1", ...) and fields
        (STATUS="...") as KEY=VALUE lines.  True if it was sent."""
        if self.address is None:
            return False
        lines = list(assignments) + [f"{k}={v}" for k, v in fields.items()]
        data = "\n".join(line.replace("\n", " ") for line in lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX,
                                           socket.SOCK_DGRAM |
                                           socket.SOCK_CLOEXEC)
            self._sock.sendto(data, self.address)
            return True
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("sd_notify to %s: %s", _shown(self.address),
                            exc.strerror or exc)
            return False

    def ready(self, status):
        """Started (or reloaded): READY=1 and what the service does."""
        return self.send("READY=1", STATUS=status)

    def reloading(self, status="reloading the configuration"):
        """A reload begins: RELOADING=1 with the monotonic clock's µs."""
        return self.send("RELOADING=1", MONOTONIC_USEC=monotonic_usec(),
                         STATUS=status)

    def stopping(self, status="stopping"):
        return self.send("STOPPING=1", STATUS=status)

    def status(self, status):
        return self.send(STATUS=status)

    def alive(self):
        """WATCHDOG=1: call it every watchdog_interval() seconds while
        every part of the engine is alive, and only then."""
        return self.send("WATCHDOG=1")

    def watchdog_interval(self):
        """Seconds between WATCHDOG=1 (half the service manager's
        $WATCHDOG_USEC, as sd_watchdog_enabled(3) advises), or None when no
        watchdog is asked of us."""
        return self.watchdog / 2 if self.watchdog else None

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def monotonic_usec():
    """CLOCK_MONOTONIC in µs, the clock systemd compares RELOADING=1's
    MONOTONIC_USEC with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _address(value):
    """The socket address of $NOTIFY_SOCKET: a path, '@name' (abstract:
    a leading NUL byte), or None (unset, or not a unix socket)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    if value:
        log.warning("NOTIFY_SOCKET=%r: not a unix socket path nor an "
                    "abstract name: not notifying", value)
    return None


def _watchdog(env, pid):
    """$WATCHDOG_USEC in seconds when it is ours ($WATCHDOG_PID unset or
    this pid), else None."""
    usec, for_pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    try:
        if for_pid and int(for_pid) != pid:
            return None
        seconds = int(usec) / 1e6 if usec else 0
    except ValueError:
        log.warning("WATCHDOG_USEC=%r WATCHDOG_PID=%r: not numbers: no "
                    "watchdog", usec, for_pid)
        return None
    return seconds if seconds > 0 else None


def _shown(address):
    return "@" + address[1:].decode(errors="replace") \
        if isinstance(address, bytes) else address


__all__ = ["Notifier", "monotonic_usec"]
