"""Punted frames: what the data plane hands the control plane to answer.

The C core punts the frames it does not own (ARP, ICMP echo to a VIP,
neighbour discovery and ping6 for the IPv6 VIPs) onto a ring; `Punts`
drains it in batches, asks the responders of pyfwd.neighbours for the
replies and sends them through the socket it was given, while the node is
active (a standby node counts what it withheld).  It also sends the
announcements (gratuitous ARP, unsolicited neighbour advertisements), logs
the other MACs that claim a VIP (an ARP problem, or the HA peer), and
holds the IPv6 VIPs' solicited-node multicast groups (`Groups`).

    punts = Punts(core, sock, mac, ha, lock=engine_lock)
    punts.update_vips(ipv4_vips, ipv6_vips)     # on every publish
    punts.answer_punts()                        # every control tick
    punts.announce(ipv4_vips, ipv6_vips)        # start, takeover
"""

import logging
import socket
import struct
import threading

from ..neighbours.arp import ArpResponder, gratuitous
from ..neighbours.icmp import EchoResponder
from ..neighbours.ndp import NdpResponder, solicited_node, unsolicited_na

log = logging.getLogger("pyfwd")

ARP_PROBLEM = "ARP problem: %s answers ARP for VIP %s"
NDP_PROBLEM = ("NDP problem: %s claims IPv6 VIP %s (advertises it, probes "
               "for it or solicits from it)")


class Punts:
    """Answers punted frames for the VIPs while `ha` says active.

    core: has drain_punts() -> [frame] (a dataplane Core); sock: has
    send(frame) (a FrameSocket on the interface); mac: the interface's
    MAC, the replies' source; ha: a control.ha.HaState (role, counters,
    peers); groups: a Groups or None; lock: taken around answering, so
    that update_vips() and a role change never see half a batch (the
    engine's lock: set_role must not return while replies of the old role
    leave).  The responders are public: arp, echo (ping to the IPv4 VIPs),
    ndp (neighbour discovery and ping6 for the IPv6 VIPs).
    conflicts_logged: the (VIP, MAC) pairs already logged.
    """

    def __init__(self, core, sock, mac, ha, *, vips4=(), vips6=(),
                 groups=None, lock=None):
        self.core = core
        self.sock = sock
        self.mac = mac
        self.ha = ha
        self.groups = groups
        self.lock = lock if lock is not None else threading.RLock()
        self.arp = ArpResponder(mac, vips4)
        self.echo = EchoResponder(mac, vips4)
        self.ndp = NdpResponder(mac, vips6)
        self.conflicts_logged = set()
        if groups is not None:
            groups.join(vips6)

    def update_vips(self, vips4, vips6):
        """Answer for these VIPs from now on (and hold the IPv6 ones'
        solicited-node groups)."""
        self.arp.update_vips(vips4)
        self.echo.update_vips(vips4)
        self.ndp.update_vips(vips6)
        if self.groups is not None:
            self.groups.join(vips6)

    def answer_punts(self):
        """Drain the punted frames and answer them (under the lock)."""
        frames = self.core.drain_punts()
        if not frames:
            return
        with self.lock:
            self.answer(frames)

    def answer(self, frames):
        """Answer a batch of punted frames; log new conflicts."""
        replies = self.arp.handle_batch(frames)
        pongs = self.echo.handle_batch(frames)      # ping to a VIP
        nd = self.ndp.counters
        before = nd["answered"] + nd["dad_answered"]
        nd_replies = self.ndp.handle_batch(frames)  # NDP, ping6
        if self.ha.active:
            for reply in replies + pongs + nd_replies:
                self.sock.send(reply)
        else:                           # the active node answers
            self.ha.withheld(arp=len(replies),
                             ndp=nd["answered"] + nd["dad_answered"]
                             - before)
        self._check_conflicts(self.arp, ARP_PROBLEM)
        self._check_conflicts(self.ndp, NDP_PROBLEM)

    def _check_conflicts(self, responder, problem):
        """Log (once) the other MACs that claimed a VIP; while standby
        they are the active node: noted as HA peers, not a problem."""
        for vip, macs in list(responder.conflicts.items()):
            for mac in list(macs):
                if not self.ha.active:
                    del macs[mac]
                    self.ha.peer_claims(mac, vip)
                elif (vip, mac) not in self.conflicts_logged:
                    self.conflicts_logged.add((vip, mac))
                    if not self.ha.split_brain(mac, vip):
                        log.warning(problem + ": run `pyfwd realserver "
                                    "setup --vip %s` on that real server",
                                    mac, vip, vip)
            if not macs:
                del responder.conflicts[vip]

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
        """The responders' counters and conflicts, as stats() has them."""
        return {"arp": dict(self.arp.counters),
                "icmp": dict(self.echo.counters),
                "ndp": dict(self.ndp.counters),
                "arp_conflicts": _conflicts(self.arp),
                "ndp_conflicts": _conflicts(self.ndp)}

    def close(self):
        """Close the socket; leave the groups."""
        self.sock.close()
        if self.groups is not None:
            self.groups.close()


def _conflicts(responder):
    return {str(v): sorted(m) for v, m in responder.conflicts.items()}


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


__all__ = ["Punts", "Groups"]
