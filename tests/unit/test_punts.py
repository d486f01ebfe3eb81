"""control.punts without root: pings to a VIP answered through the socket
Punts is given, a real server answering ARP for a VIP logged once with the
fix, the counters stats() reports, the solicited-node groups joined and
left through a fake socket."""

import ipaddress
import logging
import socket
import struct

from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether

from pyfwd.control.punts import Groups
from pyfwd.neighbours import ndp

from .test_engine_ndp import (CLIENT_MAC, LB_MAC, VIP4, VIP6, make_punts)


def ping(dst=VIP4):
    return bytes(Ether(dst=LB_MAC, src=CLIENT_MAC)
                 / IP(src="10.0.0.1", dst=dst) / ICMP(id=7, seq=1))


def test_ping_to_a_vip_is_answered_while_active():
    punts = make_punts()
    punts.core.punts = [ping(), ping("10.0.0.99")]  # the second: no VIP
    punts.answer_punts()
    [reply] = [Ether(f) for f in punts.sock.sent]
    assert reply[IP].src == VIP4 and reply[ICMP].type == 0
    assert reply.src == LB_MAC and reply.dst == CLIENT_MAC
    assert punts.counters()["icmp"]["answered"] == 1
    standby = make_punts("standby")
    standby.core.punts = [ping()]
    standby.answer_punts()
    assert standby.sock.sent == []


def test_a_real_answering_arp_for_a_vip_is_logged_once(caplog):
    punts = make_punts()
    real = "02:00:00:00:01:11"
    claim = bytes(Ether(dst=CLIENT_MAC, src=real)
                  / ARP(op=2, hwsrc=real, psrc=VIP4, hwdst=CLIENT_MAC,
                        pdst="10.0.0.1"))
    with caplog.at_level(logging.WARNING, logger="pyfwd"):
        for _ in range(2):
            punts.core.punts = [claim]
            punts.answer_punts()
    said = [r.getMessage() for r in caplog.records
            if "ARP problem" in r.getMessage()]
    assert said == [f"ARP problem: {real} answers ARP for VIP {VIP4}: run "
                    f"`pyfwd realserver setup --vip {VIP4}` on that real "
                    "server"]
    assert punts.counters()["arp_conflicts"] == {VIP4: [real]}
    assert punts.ha.counters["split_brain"] == 0


def test_counters_have_every_responder():
    punts = make_punts()
    c = punts.counters()
    assert set(c) == {"arp", "icmp", "ndp", "arp_conflicts",
                      "ndp_conflicts"}
    assert c["ndp"]["answered"] == 0 and c["arp_conflicts"] == {}


def test_nothing_punted_takes_no_lock():
    # the engine's lock is never taken (issue 17: fair punting); the only
    # lock is Punts' own, held for one send() (control.punts.settle())
    class Lock:
        taken = 0

        def __enter__(self):
            Lock.taken += 1

        def __exit__(self, *a):
            pass
    punts = make_punts()
    punts.send_lock = Lock()
    punts.answer_punts()
    assert Lock.taken == 0
    punts.core.punts = [ping()]
    punts.answer_punts()
    assert Lock.taken == 1


class FakeMcSock:
    def __init__(self, refuse=()):
        self.calls = []
        self.refuse = set(refuse)
        self.closed = False

    def setsockopt(self, level, opt, value):
        group = ipaddress.IPv6Address(value[:16])
        if group in self.refuse:
            raise OSError(19, "No such device")
        self.calls.append((opt, str(group), value[16:]))

    def close(self):
        self.closed = True


def test_groups_join_and_leave_only_what_changed(caplog):
    other = "fd00:0:0:1::2:200"
    g1, g2 = ndp.solicited_node(VIP6), ndp.solicited_node(other)
    sock = FakeMcSock(refuse=[g2])
    groups = Groups(sock, 7, "eth0")
    index = struct.pack("@I", 7)
    with caplog.at_level(logging.WARNING, logger="pyfwd"):
        groups.join([VIP6, other])
    assert sock.calls == [(socket.IPV6_JOIN_GROUP, str(g1), index)]
    assert groups.held == {g1}                  # g2 refused: not held
    assert f"eth0: cannot join {g2}" in caplog.text
    sock.calls.clear()
    groups.join([VIP6])                         # nothing new
    assert sock.calls == []
    groups.join([])
    assert sock.calls == [(socket.IPV6_LEAVE_GROUP, str(g1), index)]
    assert groups.held == set()
    groups.close()
    assert sock.closed


def test_punts_hold_the_ipv6_vips_groups_and_close_them():
    sock = FakeMcSock()
    punts = make_punts(groups=Groups(sock, 1, "eth0"))
    assert punts.groups.held == {ndp.solicited_node(VIP6)}   # at once
    punts.update_vips([], [VIP6])
    assert punts.groups.held == {ndp.solicited_node(VIP6)}
    assert punts.arp.vips == frozenset() and punts.echo.vips == frozenset()
    punts.close()
    assert sock.closed and punts.sock.closed
