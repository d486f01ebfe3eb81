"""``VipResponder``: what the three responders to punted frames share.

The engine's control thread hands every frame drained from the punt ring
to three responders: arp.py's ``ArpResponder`` (ARP for the IPv4 VIPs),
icmp.py's ``EchoResponder`` (ping to an IPv4 VIP) and ndp.py's
``NdpResponder`` (neighbour discovery and ping for the IPv6 VIPs).  Each
answers for a set of VIPs with the balancer's MAC, decides frame by frame,
counts every frame under one reason and records the other MACs claiming a
VIP.  That much is ``VipResponder``; how a frame is decided stays in each
module.

Pure: no sockets, no clock but the one given.
"""

import ipaddress
import time
from collections import OrderedDict
from typing import Callable, Iterable, Optional

from ..frames import Mac, mac_to_bytes, mac_to_str

__all__ = ["VipResponder", "MAX_CONFLICTS"]

MAX_CONFLICTS = 256     # (VIP, MAC) pairs remembered (oldest out)


class VipResponder:
    """A responder for a set of VIPs of one address family, answering with
    ``own_mac`` (6 bytes, given as bytes or text).

    A subclass provides ``_parse_vip(value)`` (one VIP -> IPv4Address or
    IPv6Address, raising ConfigError) and ``_decide(frame)`` -> (reply
    frame or None, reason), where the reason is one of the counter names
    given to ``__init__``; it calls ``_conflict()`` when another MAC claims
    a VIP.

    ``counters`` counts every frame ``handle()`` sees under its reason.
    ``conflicts`` maps each VIP to ``{offending MAC text: last-seen time}``
    (a dict keyed by MAC, so ``mac in conflicts[vip]`` works like a set);
    the time comes from ``clock`` (time.time by default).  It holds at
    most ``max_conflicts`` (VIP, MAC) pairs: a new one beyond that pushes
    out the one seen least recently (counted in ``conflicts_evicted``), so
    a flood of forged claims cannot grow it.

    ``limiter``: a ratelimit.SourceLimiter asked before each answer to a
    neighbour request (ARP, NDP), or None (no limit); with one, the
    subclass adds a counter for the answers it refused.  Not thread-safe:
    one thread drains the punted frames.  Raises ConfigError on a bad MAC
    or VIP.
    """

    def __init__(self, own_mac: Mac, vips: Iterable,
                 counters: Iterable[str],
                 clock: Callable[[], float] = time.time,
                 limiter=None, max_conflicts: int = MAX_CONFLICTS):
        self.own_mac = mac_to_bytes(own_mac)
        self._vips = self._vip_set(vips)
        self._clock = clock
        self.counters = dict.fromkeys(counters, 0)
        self.conflicts = {}
        self.limiter = limiter
        self.max_conflicts = max_conflicts
        self.conflicts_evicted = 0
        self._seen = OrderedDict()      # (vip, MAC text), least recent first

    @staticmethod
    def _parse_vip(value):
        raise NotImplementedError

    def _decide(self, frame):
        raise NotImplementedError

    def _vip_set(self, vips) -> frozenset:
        if isinstance(vips, (str, ipaddress.IPv4Address,
                             ipaddress.IPv6Address)):
            vips = [vips]
        return frozenset(self._parse_vip(v) for v in vips)

    @property
    def vips(self) -> frozenset:
        """The VIPs answered for, as IPv4Address (ARP, echo) or
        IPv6Address (NDP)."""
        return self._vips

    def update_vips(self, vips: Iterable) -> None:
        """Answer for ``vips`` from now on (a replacement, not an addition;
        one address alone is one VIP).  Conflicts recorded for VIPs no
        longer present are forgotten.  Raises ConfigError on a bad address
        or one of the other family (then nothing changes)."""
        self.set_vips(vips)
        self.prune()

    def set_vips(self, vips: Iterable) -> None:
        """update_vips() but for the conflicts: one store of a new
        frozenset, safe from a thread other than the one handling frames,
        which prunes the conflicts later (prune()).  Raises like
        update_vips()."""
        self._vips = self._vip_set(vips)

    def prune(self) -> None:
        """Forget the conflicts recorded for VIPs no longer answered for
        (the thread handling frames calls it)."""
        self.conflicts = {vip: macs for vip, macs in self.conflicts.items()
                          if vip in self._vips}

    def handle(self, frame) -> Optional[bytes]:
        """The reply frame to send for ``frame``, or None (see the
        subclass's docstring).  Never raises for bad bytes."""
        reply, why = self._decide(frame)
        self.counters[why] += 1
        return reply

    def handle_batch(self, frames: Iterable) -> list:
        """``handle()`` over a drained batch: the reply frames to send, in
        order (frames needing no reply are left out)."""
        replies = []
        for frame in frames:
            reply = self.handle(frame)
            if reply is not None:
                replies.append(reply)
        return replies

    def _allow(self, source: bytes) -> bool:
        """May an answer to ``source`` (the asking MAC) leave now?"""
        return self.limiter is None or self.limiter.allow(source)

    def _conflict(self, vip, mac: bytes) -> None:
        """Record that ``mac`` (6 bytes) claims ``vip``, now; push out the
        least recent pair beyond max_conflicts."""
        text = mac_to_str(mac)
        self.conflicts.setdefault(vip, {})[text] = self._clock()
        self._seen[(vip, text)] = None
        self._seen.move_to_end((vip, text))
        while len(self._seen) > self.max_conflicts:
            (old, old_mac), _ = self._seen.popitem(last=False)
            macs = self.conflicts.get(old)
            if macs is not None and old_mac in macs:
                del macs[old_mac]
                self.conflicts_evicted += 1
                if not macs:
                    del self.conflicts[old]
