"""The active role as a lease that keepalived's engine check renews.

keepalived's notify scripts run once per transition: a keepalived killed
with SIGKILL runs none, and its engine would stay active while the peer's
keepalived, hearing no more adverts, makes the peer active too (two nodes
answering ARP for the VIPs, two holding the real servers' gateway).  So
the engine also watches its keepalived: the vrrp_script that checks the
engine every second runs `pyfwd ctl ha-renew`, which renews a lease of
`seconds` (2.5 by default, [ha] lease); an active engine whose armed
lease runs out stands down (the same path as `ha standby`), logged with
the reason and counted (lease_expired).

Armed by renewals, not by configuration: a lease is armed from a renewal
until it runs out, so an engine without keepalived (nobody renews) or one
made active by hand after its keepalived stopped (the lease ran out
meanwhile) is never stood down by it.  A lapse while standby only
disarms it.  seconds = 0 turns it off: renewals are answered but never
arm it.

    lease = Lease(2.5)
    lease.renew()           # from `ctl ha-renew`
    lease.lapsed()          # True once, when an armed lease has run out

No sockets, no threads: the clock is injected (monotonic seconds).
"""

import time

from ..errors import ConfigError

__all__ = ["LEASE", "LEASE_MIN", "LEASE_MAX", "Lease", "check_seconds"]

LEASE = 2.5             # s: default; under 3 s from keepalived's death
LEASE_MIN = 2.0         # s: two of keepalived's 1 s checks (ha.TRACK_INTERVAL)
LEASE_MAX = 60.0


def check_seconds(value, where="ha.lease"):
    """`value` as float seconds: 0 (off) or LEASE_MIN..LEASE_MAX;
    ConfigError naming `where` and the value otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not (value == 0 or LEASE_MIN <= value <= LEASE_MAX):
        raise ConfigError(f"{where} = {value!r}: expected 0 (no lease) or "
                          f"{LEASE_MIN:g} to {LEASE_MAX:g} seconds (longer "
                          "than two of keepalived's checks, a second "
                          "apart)")
    return float(value)


class Lease:
    """A lease of `seconds` (0: never armed), renewed by renew(); armed from
    a renewal until it runs out.  Not thread-safe on its own: renew() and
    lapsed() each read and write two attributes; a renewal racing a lapse
    at the very end of the lease leaves it either renewed or lapsed, both
    sound."""

    def __init__(self, seconds=LEASE, *, clock=time.monotonic):
        self.seconds = check_seconds(seconds)
        self._clock = clock
        self.expires = None         # clock time; None: not armed
        self.renewals = 0

    @property
    def armed(self):
        return self.expires is not None

    def renew(self):
        """Arm (again) for `seconds` from now; False when the lease is off
        (seconds 0)."""
        self.renewals += 1
        if not self.seconds:
            return False
        self.expires = self._clock() + self.seconds
        return True

    def left(self):
        """Seconds until an armed lease runs out (0 when it has), or None
        when it is not armed."""
        if self.expires is None:
            return None
        return max(0.0, self.expires - self._clock())

    def lapsed(self):
        """True once when an armed lease has run out (it is then disarmed),
        else False."""
        if self.expires is None or self._clock() < self.expires:
            return False
        self.expires = None
        return True

    def status(self):
        """{"seconds", "armed", "left" (s or None), "renewals"}."""
        left = self.left()
        return {"seconds": self.seconds, "armed": self.armed,
                "left": None if left is None else round(left, 3),
                "renewals": self.renewals}
