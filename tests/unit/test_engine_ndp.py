"""The engine's IPv6 wiring without root: punted NDP answered only while
active (standby counts what it withheld), announcements carry an
unsolicited NA per IPv6 VIP, IPv6 next hops go to the NDP look-up, another
MAC advertising a VIP is logged once.  The parts (control.punts.Punts,
control.nexthops.NextHops, control.ha.HaState) get a fake core, socket and
kernel look-ups through their constructors."""

import ipaddress
import logging

from scapy.layers.inet6 import (ICMPv6ND_NA, ICMPv6ND_NS,
                                ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr,
                                IPv6)
from scapy.layers.l2 import ARP, Ether

from pyfwd.control.engine import Engine
from pyfwd.control.ha import HaState
from pyfwd.control.nexthops import NextHops
from pyfwd.control.punts import Punts
from pyfwd.control.services import real_addresses
from pyfwd.model import Real, Service, Vip
from pyfwd.neighbours import ndp

LB_MAC = "02:00:00:00:01:02"
CLIENT_MAC = "02:00:00:00:01:01"
REAL_MAC = "02:00:00:00:01:11"
VIP4, VIP6 = "10.0.0.100", "fd00:0:0:1::100"
VIPS4, VIPS6 = [ipaddress.ip_address(VIP4)], [ipaddress.ip_address(VIP6)]


class FakeCore:
    def __init__(self):
        self.punts = []

    def drain_punts(self):
        out, self.punts = self.punts, []
        return out


class FakeSock:
    def __init__(self):
        self.sent = []
        self.closed = False

    def send(self, frame):
        self.sent.append(bytes(frame))

    def close(self):
        self.closed = True


def services():
    return [Service(Vip.parse(f"{VIP4}:80/tcp"), [Real.parse("10.0.0.11")]),
            Service(Vip.parse(f"[{VIP6}]:80/tcp"),
                    [Real.parse("[fd00:0:0:1::11]")])]


def make_punts(role="active", ha=None, **kw):
    """Punts for VIP4 and VIP6 with a fake core and socket (punts.core,
    punts.sock) and an HaState in `role` (or `ha`); kw: Punts' options."""
    return Punts(FakeCore(), FakeSock(), LB_MAC, ha or HaState(role),
                 vips4=VIPS4, vips6=VIPS6, **kw)


def announce(punts):
    """What the engine's announcement does with its VIPs, through punts."""
    punts.announce(VIPS4, VIPS6)
    return [VIP4, VIP6]


def ns():
    group = str(ndp.solicited_node(VIP6))
    return bytes(Ether(dst=ndp.multicast_mac(group), src=CLIENT_MAC)
                 / IPv6(src="fd00:0:0:1::1", dst=group, hlim=255)
                 / ICMPv6ND_NS(tgt=VIP6)
                 / ICMPv6NDOptSrcLLAddr(lladdr=CLIENT_MAC))


def test_active_answers_ns_for_the_ipv6_vip():
    punts = make_punts()
    punts.core.punts = [ns(), bytes(Ether(dst="ff:ff:ff:ff:ff:ff",
                                          src=CLIENT_MAC)
                                    / ARP(hwsrc=CLIENT_MAC, psrc="10.0.0.1",
                                          pdst=VIP4))]
    punts.answer_punts()
    kinds = [Ether(f) for f in punts.sock.sent]
    assert len(kinds) == 2
    assert any(ARP in k for k in kinds)
    na = next(k for k in kinds if ICMPv6ND_NA in k)
    assert na[ICMPv6ND_NA].tgt == VIP6 and na.dst == CLIENT_MAC
    assert punts.ndp.counters["answered"] == 1


def test_standby_withholds_and_counts():
    punts = make_punts("standby")
    punts.core.punts = [ns(), ns()]
    punts.answer_punts()
    assert punts.sock.sent == []
    assert punts.ha.counters["ndp_withheld"] == 2
    assert punts.ha.counters["arp_withheld"] == 0


def test_announce_sends_garp_and_unsolicited_na():
    punts = make_punts()
    announce(punts)
    frames = [Ether(f) for f in punts.sock.sent]
    assert len(frames) == 2
    garp = next(f for f in frames if ARP in f)
    assert garp[ARP].psrc == garp[ARP].pdst == VIP4
    na = next(f for f in frames if ICMPv6ND_NA in f)
    assert na[IPv6].dst == "ff02::1" and na[ICMPv6ND_NA].tgt == VIP6
    assert (na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O) == (0, 1)
    assert na[ICMPv6NDOptDstLLAddr].lladdr == LB_MAC
    assert punts.ha.counters["garp_bursts"] == 1
    standby = make_punts("standby")
    announce(standby)
    assert standby.sock.sent == []
    assert standby.ha.counters["garp_bursts"] == 0


def test_set_role_announces_ipv6_vips_too():
    eng = Engine("eth0", services(), role="standby")   # not started
    result = eng.set_role("active")
    assert result["announce"] == [VIP4, VIP6]


def test_a_real_advertising_the_vip_is_logged_once(caplog):
    punts = make_punts()
    na = bytes(Ether(dst="33:33:00:00:00:01", src=REAL_MAC)
               / IPv6(src="fd00:0:0:1::11", dst="ff02::1", hlim=255)
               / ICMPv6ND_NA(tgt=VIP6, O=1)
               / ICMPv6NDOptDstLLAddr(lladdr=REAL_MAC))
    with caplog.at_level(logging.WARNING, logger="pyfwd"):
        punts.core.punts = [na, na]
        punts.answer_punts()
        punts.core.punts = [na]
        punts.answer_punts()
    said = [r.getMessage() for r in caplog.records if "NDP problem" in
            r.getMessage()]
    assert len(said) == 1, said
    assert REAL_MAC in said[0] and VIP6 in said[0]
    assert "realserver setup --vip fd00:0:0:1::100" in said[0]
    # standby: the MAC is the active node's, not a problem
    sb = make_punts("standby")
    sb.core.punts = [na]
    sb.answer_punts()
    assert sb.ha.peers == {REAL_MAC: VIP6}
    assert sb.ndp.conflicts == {}


def test_ipv6_next_hops_go_to_ndp():
    routes = {ipaddress.ip_address("10.0.0.11"): ("eth0", None),
              ipaddress.ip_address("fd00:0:0:1::11"): ("eth0", None)}
    asked = {}

    def fake(version, mac):
        def refresh(ifname, ips):
            asked[version] = (ifname, list(ips))
            return {ip: mac for ip in ips}
        return refresh
    hops = NextHops(["eth0"], route=lambda a: (routes[a][0], a),
                    arp_lookup=fake(4, b"\x02" * 6),
                    ndp_lookup=fake(6, None))
    hops = hops.find(real_addresses(services()))
    assert asked == {4: ("eth0", [ipaddress.ip_address("10.0.0.11")]),
                     6: ("eth0", [ipaddress.ip_address("fd00:0:0:1::11")])}
    assert hops[ipaddress.ip_address("10.0.0.11")] == (b"\x02" * 6, 0, None)
    mac, slot, why = hops[ipaddress.ip_address("fd00:0:0:1::11")]
    assert mac is None and "no neighbour discovery answer on eth0" in why
