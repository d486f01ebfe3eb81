"""The real servers' next hops: where a frame for each real server goes.

For every real server (and fallback) of the L4 VIPs, the kernel's route
names an output interface and a next hop (the real itself, or a router);
ARP (IPv4) or the kernel's neighbour discovery (IPv6) names the next hop's
MAC.  A real whose route leaves by another interface, or whose next hop
does not answer, is not scheduled, and `why` says so.

One unanswered refresh drops nobody's flows: a next hop that stops
answering keeps its last known MAC until it has been unanswered for
`stale` seconds ([engine] neighbour_stale); then its real leaves the
tables (its flows are rescheduled).  A route that leaves by another
interface drops the MAC at once: that is no lost answer but a new path.

    hops = NextHops(["eth0"], stale=60)
    changed = hops.apply(hops.find(addresses))  # find() waits for ARP
    hops.macs[addr], hops.via(addr), hops.why[addr], hops.note(addr)

The kernel look-ups are parameters, so tests give fakes: route(address)
-> (interface name | None, next hop address); arp_lookup(ifname, [IPv4])
and ndp_lookup(ifname, [IPv6]) -> {address: MAC bytes | None}; clock:
monotonic seconds.
"""

import logging
import threading
import time

from ..errors import ConfigError
from ..model import Real
from ..frames import mac_to_str
from ..neighbours.kernel import neighbour_macs, route_to

log = logging.getLogger("pyfwd")

NEIGHBOUR_STALE = 60.0      # s a known MAC outlives unanswered refreshes
NEIGHBOUR_STALE_MAX = 86400.0
UNANSWERED = "MAC unknown"  # how find() says a next hop did not answer


def check_stale(value, where="neighbour_stale"):
    """value (seconds a known MAC outlives unanswered refreshes, 0: none)
    as a float; ConfigError naming `where` unless it is a number from 0 to
    NEIGHBOUR_STALE_MAX."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0 <= value <= NEIGHBOUR_STALE_MAX):
        raise ConfigError(f"{where} = {value!r}: expected seconds from 0 "
                          f"(drop a MAC at the first unanswered refresh) to "
                          f"{NEIGHBOUR_STALE_MAX:.0f}")
    return float(value)


class NextHops:
    """The next hops toward the real servers, by address.

    ifaces: the engine's interfaces, the first is slot 0 (the outside one)
    and the second, if any, slot 1 (the inside one, two-arm NAT).
    macs: {address: next hop MAC (6 bytes) or None}; out_ifs: {address:
    interface slot}; why: {address: why it has no next hop, or None};
    unanswered: {address: since when (clock) its next hop has not answered
    while its last MAC is kept}.  stale: seconds a known MAC is kept
    unanswered (check_stale); clock: monotonic seconds, for tests.
    """

    def __init__(self, ifaces, *, route=None, arp_lookup=None,
                 ndp_lookup=None, stale=NEIGHBOUR_STALE,
                 clock=time.monotonic):
        self.ifaces = list(ifaces)
        self.stale = check_stale(stale)
        self._clock = clock
        self.unanswered = {}
        self._route = route or route_to
        self._lookup = {4: arp_lookup or neighbour_macs,
                        6: ndp_lookup or neighbour_macs}
        self.macs = {}
        self.out_ifs = {}
        self.why = {}

    def find(self, addresses):
        """Ask the routes, then ARP or neighbour discovery, for the next hop
        toward every address: {address: (mac | None, slot, why)}.  Blocks
        while the neighbours are asked (about a second at most); touches
        nothing of this object's state."""
        routes = {a: self._route(a) for a in addresses}
        by_iface = {}
        for oif, hop in routes.values():
            if oif in self.ifaces:
                by_iface.setdefault((oif, hop.version), set()).add(hop)
        found = {}
        for (ifname, version), hops in by_iface.items():
            lookup = self._lookup[version]
            for hop, mac in lookup(ifname, sorted(hops, key=str)).items():
                found[(ifname, hop)] = mac
        out = {}
        for a, (oif, hop) in routes.items():
            if oif not in self.ifaces:
                out[a] = (None, 0, f"route via {oif or 'nowhere'}, not "
                          f"{' or '.join(self.ifaces)}")
            else:
                mac = found.get((oif, hop))
                via = "" if hop == a else f" (via {hop})"
                how = "ARP" if hop.version == 4 else "neighbour discovery"
                out[a] = (mac, self.ifaces.index(oif),
                          None if mac else f"{UNANSWERED}{via}: no {how} "
                          f"answer on {oif}")
        return out

    def apply(self, hops):
        """Take the next hops find() returned; log what changed; True if
        a MAC or an interface did.  A known MAC whose next hop did not
        answer is kept (and logged once) until it has been unanswered for
        `stale` seconds, then dropped (and logged)."""
        changed = False
        now = self._clock()
        for a, (mac, slot, why) in hops.items():
            old = self.macs.get(a)
            if mac is None and old is not None and \
                    self._kept(a, old, slot, why, now):
                continue
            since = self.unanswered.pop(a, None)
            if mac is not None and since is not None:
                log.info("real %s: next hop answers again (after %.0f s "
                         "unanswered)", a, now - since)
            if mac is None and (old is not None or a not in self.macs):
                log.warning("real %s: %s: not scheduled", a, why)
            elif mac is not None and mac != old:
                log.info("real %s: next hop MAC %s on %s", a,
                         mac_to_str(mac), self.ifaces[slot])
            changed |= (mac != old or slot != self.out_ifs.get(a))
            self.macs[a], self.out_ifs[a], self.why[a] = mac, slot, why
        return changed

    def _kept(self, a, old, slot, why, now):
        """Whether the known MAC `old` of address a stays though its next
        hop did not answer (`why`): only an unanswered look-up on the same
        interface, for less than `stale` seconds.  Logs the first keep and
        the drop."""
        if slot != self.out_ifs.get(a) or not why.startswith(UNANSWERED):
            return False
        first = a not in self.unanswered
        since = self.unanswered.setdefault(a, now)
        if now - since < self.stale:
            self.why[a] = None
            if first:
                log.warning("real %s: %s: MAC %s kept for up to %.0f s",
                            a, why, mac_to_str(old), self.stale)
            return True
        if not first:       # stale = 0: no grace, the usual log says it
            log.warning("real %s: MAC %s unanswered for %.0f s "
                        "(neighbour_stale %.0f s): dropped", a,
                        mac_to_str(old), now - since, self.stale)
        return False

    def note(self, address):
        """"MAC kept (unanswered for N s)" while address's next hop keeps
        its last MAC unanswered, else None."""
        since = self.unanswered.get(address)
        if since is None:
            return None
        return f"MAC kept (unanswered for {self._clock() - since:.0f} s)"

    def via(self, address):
        """The name of the interface toward address (the first one when
        it is not known)."""
        return self.ifaces[self.out_ifs.get(address, 0)]

    def explain(self, unscheduled):
        """Replace, in {(vip, real key): why} of the tables, the reason of
        every real that has no next hop with what find() said."""
        for (vip, key) in list(unscheduled):
            why = self.why.get(Real.parse(key).address)
            if why:
                unscheduled[(vip, key)] = why



class Refresh:
    """When the control thread refreshes the next hops: every `period`
    seconds, and at once when a change asks (the kernel's look-ups must run
    in the engine's network namespace, where that thread lives).

    lock: the lock the asking side holds (the engine's); clock: monotonic
    seconds.  due() and done() are the control thread's, wait() the
    asking side's, under the lock.
    """

    def __init__(self, lock, period, *, clock=time.monotonic):
        self.period = period
        self._clock = clock
        self._wanted = threading.Event()
        self._done = threading.Condition(lock)
        self._count = 0
        self._last = clock()

    def due(self):
        """True when a refresh should run now (asked, or period over)."""
        now = self._clock()
        if self._wanted.is_set() or now - self._last >= self.period:
            self._wanted.clear()
            self._last = now
            return True
        return False

    def sleep(self, seconds, stop):
        """The control thread's pause between rounds: `seconds`, cut short
        when a refresh is asked; whether `stop` (an Event) is set."""
        self._wanted.wait(seconds)
        return stop.is_set()

    def done(self):
        """A refresh ran (call it under the lock)."""
        self._count += 1
        self._done.notify_all()

    def wait(self, timeout=5.0):
        """Ask for a refresh and wait, under the lock (released meanwhile),
        until one that started after this call is done; False on timeout."""
        wanted = self._count + 1
        self._wanted.set()
        return self._done.wait_for(lambda: self._count >= wanted,
                                   timeout=timeout)


__all__ = ["NextHops", "Refresh", "NEIGHBOUR_STALE", "check_stale"]
