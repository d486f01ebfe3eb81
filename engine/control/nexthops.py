"""The real servers' next hops: where a frame for each real server goes.

For every real server (and fallback) of the L4 VIPs, the kernel's route
names an output interface and a next hop (the real itself, or a router);
ARP (IPv4) or the kernel's neighbour discovery (IPv6) names the next hop's
MAC.  A real whose route leaves by another interface, or whose next hop
does not answer, is not scheduled, and `why` says so.

    hops = NextHops(["eth0"])
    changed = hops.apply(hops.find(addresses))  # find() waits for ARP
    hops.macs[addr], hops.via(addr), hops.why[addr]

The kernel look-ups are parameters, so tests give fakes: route(address)
-> (interface name | None, next hop address); arp_lookup(ifname, [IPv4])
and ndp_lookup(ifname, [IPv6]) -> {address: MAC bytes | None}.
"""

import logging
import threading
import time

from ..model import Real
from ..frames import mac_to_str
from ..neighbours.kernel import neighbour_macs, route_to

log = logging.getLogger("pyfwd")


class NextHops:
    """The next hops toward the real servers, by address.

    ifaces: the engine's interfaces, the first is slot 0 (the outside one)
    and the second, if any, slot 1 (the inside one, two-arm NAT).
    macs: {address: next hop MAC (6 bytes) or None}; out_ifs: {address:
    interface slot}; why: {address: why it has no next hop, or None}.
    """

    def __init__(self, ifaces, *, route=None, arp_lookup=None,
                 ndp_lookup=None):
        self.ifaces = list(ifaces)
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
                          None if mac else f"MAC unknown{via}: no {how} "
                          f"answer on {oif}")
        return out

    def apply(self, hops):
        """Take the next hops find() returned; log what changed; True if
        a MAC or an interface did."""
        changed = False
        for a, (mac, slot, why) in hops.items():
            old = self.macs.get(a)
            if mac is None and (old is not None or a not in self.macs):
                log.warning("real %s: %s: not scheduled", a, why)
            elif mac is not None and mac != old:
                log.info("real %s: next hop MAC %s on %s", a,
                         mac_to_str(mac), self.ifaces[slot])
            changed |= (mac != old or slot != self.out_ifs.get(a))
            self.macs[a], self.out_ifs[a], self.why[a] = mac, slot, why
        return changed

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


__all__ = ["NextHops", "Refresh"]
