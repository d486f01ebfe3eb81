"""Punted frames: what the data plane hands the control plane to answer.

The C core punts the frames it does not own (ARP, ICMP echo to a VIP,
neighbour discovery and ping6 for the IPv6 VIPs) onto a ring; `Punts`
drains it in batches, asks the responders of pyfwd.neighbours for the
replies and sends them through the socket it was given, while the node is
active (a standby node counts what it withheld).  It also sends the
announcements (gratuitous ARP, unsolicited neighbour advertisements), logs
the other MACs that claim a VIP (an ARP problem, or the HA peer), and
holds the IPv6 VIPs' solicited-node multicast groups (`Groups`).

Answering is fair (issue 17): it never waits on the engine's lock, which
HAProxy runtime calls, a reload or a neighbour solicitation may hold for
seconds.  Its own thread (control.puntthread) drains the ring and answers
from immutable snapshots that the engine replaces with one attribute
store each: the responders' VIP sets (frozensets, PuntView) and the role
(HaState.role, read before every reply leaves).  ARP and
NDP answers are rate-limited per asking MAC and in total
(neighbours.ratelimit), and the tables that others' frames fill (the
conflicts, the conflicts logged, HaState.peers) are bounded.

    punts = Punts(core, sock, mac, ha, limits=NeighbourLimits())
    punts.update_vips(ipv4_vips, ipv6_vips)     # on every publish
    punts.answer_punts()                        # the punt thread, in a loop
    punts.settle()                              # after a role change
    punts.announce(ipv4_vips, ipv6_vips)        # start, takeover
"""

import logging
import socket
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass

from ..neighbours.arp import ArpResponder, gratuitous, ipv4
from ..neighbours.icmp import EchoResponder
from ..neighbours.ndp import (NdpResponder, ipv6, solicited_node,
                              unsolicited_na)
from ..neighbours.responder import MAX_CONFLICTS

log = logging.getLogger("pyfwd")

ARP_PROBLEM = "ARP problem: %s answers ARP for VIP %s"
NDP_PROBLEM = ("NDP problem: %s claims IPv6 VIP %s (advertises it, probes "
               "for it or solicits from it)")


@dataclass(frozen=True)
class PuntView:
    """What the punt thread answers for: the IPv4 and IPv6 VIPs
    (frozensets of addresses).  Never changed: replaced whole."""

    vips4: frozenset = frozenset()
    vips6: frozenset = frozenset()

    @classmethod
    def of(cls, vips4, vips6):
        """A view of these addresses; ConfigError for a bad one."""
        return cls(frozenset(ipv4(a, "vip") for a in vips4),
                   frozenset(ipv6(a, "vip") for a in vips6))


class Punts:
    """Answers punted frames for the VIPs while `ha` says active.

    core: has drain_punts() -> [frame] (a dataplane Core); sock: has
    send(frame) (a FrameSocket on the interface); mac: the interface's
    MAC, the replies' source; ha: a control.ha.HaState (role, counters,
    peers); groups: a Groups or None; limits: a
    neighbours.ratelimit.NeighbourLimits for the ARP and NDP answers, or
    None (no limit).  The responders are public: arp, echo (ping to the
    IPv4 VIPs), ndp (neighbour discovery and ping6 for the IPv6 VIPs);
    only the thread that calls answer_punts() touches them.
    view: the PuntView answered from; conflicts_logged: the (VIP, MAC)
    pairs already logged (the MAX_CONFLICTS most recent).

    Threads: answer_punts() runs in one thread (the punt thread) and takes
    no lock but `send_lock`, held for one send() at a time; update_vips(),
    announce() and settle() run in the engine's.  A role change is
    HaState.role, read before every reply leaves: after set_role() and
    settle() return, no reply of the old role leaves (settle() waits for
    the one send() that may have read the old role).
    """

    def __init__(self, core, sock, mac, ha, *, vips4=(), vips6=(),
                 groups=None, limits=None):
        self.core = core
        self.sock = sock
        self.mac = mac
        self.ha = ha
        self.groups = groups
        self.send_lock = threading.Lock()
        self.view = PuntView.of(vips4, vips6)
        self._applied = self.view
        def limiter():
            return None if limits is None else limits.limiter()
        self.arp = ArpResponder(mac, self.view.vips4, limiter=limiter())
        self.echo = EchoResponder(mac, self.view.vips4)
        self.ndp = NdpResponder(mac, self.view.vips6, limiter=limiter())
        self.conflicts_logged = OrderedDict()
        self.work = {"batches": 0, "frames": 0, "largest_batch": 0,
                     "views": 0, "conflicts_unlogged": 0}
        if groups is not None:
            groups.join(self.view.vips6)

    def update_vips(self, vips4, vips6):
        """Answer for these VIPs from now on (and hold the IPv6 ones'
        solicited-node groups): a new view; the responders' VIP sets are
        replaced at once (each one store of a frozenset: a frame is
        answered from the old set or the new one), the punt thread prunes
        their conflicts at its next batch.  ConfigError for a bad address
        (nothing changes)."""
        view = PuntView.of(vips4, vips6)
        self.arp.set_vips(view.vips4)   # each one store of a frozenset
        self.echo.set_vips(view.vips4)
        self.ndp.set_vips(view.vips6)
        self.view = view
        if self.groups is not None:
            self.groups.join(view.vips6)

    def settle(self):
        """Return once no reply decided under the previous role can still
        leave (the engine calls it after a role change)."""
        with self.send_lock:
            pass

    def answer_punts(self):
        """Drain the punted frames and answer them; how many were
        drained.  Takes no lock of the engine's."""
        frames = self.core.drain_punts()
        if frames:
            self.answer(frames)
        return len(frames)

    def answer(self, frames):
        """Answer a batch of punted frames (ARP first, then NDP, then
        pings); log new conflicts.  Each responder sees the frames of its
        ethertype (and those not plainly one of the three: tagged,
        truncated) and counts the rest as it would have (a ping flood
        costs one parse a frame, not three)."""
        view = self.view
        if view is not self._applied:   # VIPs left: their conflicts go
            self.arp.prune()
            self.ndp.prune()
            self._applied = view
            self.work["views"] += 1
        w = self.work
        w["batches"] += 1
        w["frames"] += len(frames)
        w["largest_batch"] = max(w["largest_batch"], len(frames))
        arp, ip4, ip6, other = _by_ethertype(frames)
        replies = self.arp.handle_batch(arp + other)
        self.arp.counters["ignored"] += len(ip4) + len(ip6)
        nd = self.ndp.counters
        before = nd["answered"] + nd["dad_answered"]
        nd_replies = self.ndp.handle_batch(ip6 + other)     # NDP, ping6
        nd["not_ipv6"] += len(arp) + len(ip4)
        pongs = self.echo.handle_batch(ip4 + other)         # ping to a VIP
        self.echo.counters["not_ipv4"] += len(arp) + len(ip6)
        if self.ha.active:
            self._send(replies + nd_replies + pongs)
        else:                           # the active node answers
            self.ha.withheld(arp=len(replies),
                             ndp=nd["answered"] + nd["dad_answered"]
                             - before)
        self._check_conflicts(self.arp, ARP_PROBLEM)
        self._check_conflicts(self.ndp, NDP_PROBLEM)

    def _send(self, frames):
        """Send while the role is active, checked before each frame."""
        for frame in frames:
            with self.send_lock:
                if not self.ha.active:
                    return
                self.sock.send(frame)

    def _check_conflicts(self, responder, problem):
        """Log (once) the other MACs that claimed a VIP; while standby
        they are the active node: noted as HA peers, not a problem."""
        for vip, macs in list(responder.conflicts.items()):
            for mac in list(macs):
                if not self.ha.active:
                    del macs[mac]
                    self.ha.peer_claims(mac, vip)
                elif (vip, mac) not in self.conflicts_logged:
                    self._log_conflict(vip, mac, problem)
            if not macs:
                del responder.conflicts[vip]

    def _log_conflict(self, vip, mac, problem):
        """Log a new (VIP, MAC) claim once; past MAX_CONFLICTS of them
        (a flood of forged claims) the oldest are forgotten and the new
        ones no longer logged: they are counted (fairness())."""
        logged = self.conflicts_logged
        full = len(logged) >= MAX_CONFLICTS
        if full:
            logged.popitem(last=False)
            self.work["conflicts_unlogged"] += 1
            if self.work["conflicts_unlogged"] == 1:
                log.warning("more than %d MACs claim the VIPs (a flood of "
                            "forged claims?): new ones are counted, no "
                            "longer logged", MAX_CONFLICTS)
        logged[(vip, mac)] = None
        if not self.ha.split_brain(mac, vip) and not full:
            log.warning(problem + ": run `pyfwd realserver setup --vip %s` "
                        "on that real server", mac, vip, vip)

    def announce(self, vips4, vips6):
        """While active: a gratuitous ARP for every IPv4 VIP and an
        unsolicited neighbour advertisement for every IPv6 one (counted
        as one burst).  Standby sends nothing."""
        if not self.ha.active:
            return
        self.ha.announced()
        for addr in vips4:
            self.sock.send(gratuitous(self.mac, addr))
        for addr in vips6:
            self.sock.send(unsolicited_na(self.mac, addr))

    def counters(self):
        """The responders' counters and conflicts, as stats() has them
        (copies: the punt thread goes on changing them)."""
        return {"arp": dict(self.arp.counters),
                "icmp": dict(self.echo.counters),
                "ndp": dict(self.ndp.counters),
                "arp_conflicts": _conflicts(self.arp),
                "ndp_conflicts": _conflicts(self.ndp)}

    def fairness(self):
        """stats()["punt"]: the punt thread's work (batches, frames,
        largest_batch, views taken up, conflicts_unlogged: claims past
        the bounded log), the rate limiters' counters by
        kind (arp, ndp: limited_source, limited_total, sources_evicted;
        empty without limits) and the conflicts pushed out of the bounded
        tables (arp_conflicts_evicted, ndp_conflicts_evicted)."""
        return {**dict(self.work),
                "arp": _limited(self.arp), "ndp": _limited(self.ndp),
                "arp_conflicts_evicted": self.arp.conflicts_evicted,
                "ndp_conflicts_evicted": self.ndp.conflicts_evicted}

    def close(self):
        """Close the socket; leave the groups."""
        self.sock.close()
        if self.groups is not None:
            self.groups.close()


_ETHERTYPES = {b"\x08\x06": 0, b"\x08\x00": 1, b"\x86\xdd": 2}


def _by_ethertype(frames):
    """([ARP], [IPv4], [IPv6], [the rest]) of untagged frames by their
    ethertype; the rest (tagged, shorter than a header, other) go to every
    responder."""
    out = ([], [], [], [])
    for frame in frames:
        out[_ETHERTYPES.get(bytes(frame[12:14]), 3)].append(frame)
    return out


def _limited(responder):
    return dict(responder.limiter.counters) \
        if responder.limiter is not None else {}


def _conflicts(responder):
    return {str(v): sorted(dict(m))
            for v, m in dict(responder.conflicts).items()}


class Groups:
    """The solicited-node multicast groups of the IPv6 VIPs, held on the
    interface so that a NIC filtering multicast MACs and switches snooping
    MLD deliver the VIPs' neighbour solicitations here (the kernel sends
    the MLD reports; the XDP program takes the solicitations).

    sock: an IPv6 datagram socket (kernel.multicast_socket) or anything
    with setsockopt() and close(); ifindex, iface: the interface.
    held: the groups joined (IPv6Address).
    """

    def __init__(self, sock, ifindex, iface):
        self.sock = sock
        self.iface = iface
        self._index = struct.pack("@I", ifindex)
        self.held = set()

    def join(self, vips):
        """Hold the groups of `vips` (and only those)."""
        want = {solicited_node(a) for a in vips}
        for group in sorted(want - self.held):
            try:
                self.sock.setsockopt(socket.IPPROTO_IPV6,
                                     socket.IPV6_JOIN_GROUP,
                                     group.packed + self._index)
            except OSError as exc:
                log.warning("%s: cannot join %s (neighbour solicitations "
                            "for an IPv6 VIP may not reach us): %s",
                            self.iface, group, exc.strerror or exc)
                continue
            self.held.add(group)
        for group in sorted(self.held - want):
            try:
                self.sock.setsockopt(socket.IPPROTO_IPV6,
                                     socket.IPV6_LEAVE_GROUP,
                                     group.packed + self._index)
            except OSError:
                pass
            self.held.discard(group)

    def close(self):
        """Close the socket: the kernel leaves the groups."""
        self.sock.close()
        self.held = set()


__all__ = ["Punts", "PuntView", "Groups"]
