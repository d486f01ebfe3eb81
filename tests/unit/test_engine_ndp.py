"""The engine's IPv6 wiring without root: punted NDP answered only while
active (standby counts what it withheld), announcements carry an
unsolicited NA per IPv6 VIP, IPv6 next hops go to neighbour_macs, another
MAC advertising a VIP is logged once.  A fake core and socket stand in
for the data plane."""

import ipaddress
import logging

from scapy.layers.inet6 import (ICMPv6ND_NA, ICMPv6ND_NS,
                                ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr,
                                IPv6)
from scapy.layers.l2 import ARP, Ether

from pyfwd.control import engine as engine_mod
from pyfwd.neighbours import ndp
from pyfwd.neighbours.arp import ArpResponder
from pyfwd.neighbours.frames import mac_to_bytes
from pyfwd.neighbours.icmp import EchoResponder
from pyfwd.control.engine import Engine
from pyfwd.model import Real, Service, Vip

LB_MAC = "02:00:00:00:01:02"
CLIENT_MAC = "02:00:00:00:01:01"
REAL_MAC = "02:00:00:00:01:11"
VIP4, VIP6 = "10.0.0.100", "fd00:0:0:1::100"


class FakeCore:
    def __init__(self):
        self.punts = []

    def drain_punts(self):
        out, self.punts = self.punts, []
        return out


class FakeSock:
    def __init__(self):
        self.sent = []

    def send(self, frame):
        self.sent.append(bytes(frame))


def make_engine(role="active"):
    services = [Service(Vip.parse(f"{VIP4}:80/tcp"), [Real.parse("10.0.0.11")]),
                Service(Vip.parse(f"[{VIP6}]:80/tcp"),
                        [Real.parse("[fd00:0:0:1::11]")])]
    eng = Engine("eth0", services, role=role)
    eng.mac = mac_to_bytes(LB_MAC)
    eng.core = FakeCore()
    eng._sock = FakeSock()
    eng.responder = ArpResponder(LB_MAC, eng._ipv4_vips())
    eng.echo = EchoResponder(LB_MAC, eng._ipv4_vips())
    eng.ndp = ndp.NdpResponder(LB_MAC, eng._ipv6_vips())
    return eng


def ns():
    group = str(ndp.solicited_node(VIP6))
    return bytes(Ether(dst=ndp.multicast_mac(group), src=CLIENT_MAC)
                 / IPv6(src="fd00:0:0:1::1", dst=group, hlim=255)
                 / ICMPv6ND_NS(tgt=VIP6)
                 / ICMPv6NDOptSrcLLAddr(lladdr=CLIENT_MAC))


def test_active_answers_ns_for_the_ipv6_vip():
    eng = make_engine()
    eng.core.punts = [ns(), bytes(Ether(dst="ff:ff:ff:ff:ff:ff",
                                        src=CLIENT_MAC)
                                  / ARP(hwsrc=CLIENT_MAC, psrc="10.0.0.1",
                                        pdst=VIP4))]
    eng._answer_punts()
    kinds = [Ether(f) for f in eng._sock.sent]
    assert len(kinds) == 2
    assert any(ARP in k for k in kinds)
    na = next(k for k in kinds if ICMPv6ND_NA in k)
    assert na[ICMPv6ND_NA].tgt == VIP6 and na.dst == CLIENT_MAC
    assert eng.ndp.counters["answered"] == 1


def test_standby_withholds_and_counts():
    eng = make_engine("standby")
    eng.core.punts = [ns(), ns()]
    eng._answer_punts()
    assert eng._sock.sent == []
    assert eng.ha_counters["ndp_withheld"] == 2
    assert eng.ha_counters["arp_withheld"] == 0


def test_announce_sends_garp_and_unsolicited_na():
    eng = make_engine()
    eng._announce()
    frames = [Ether(f) for f in eng._sock.sent]
    assert len(frames) == 2
    garp = next(f for f in frames if ARP in f)
    assert garp[ARP].psrc == garp[ARP].pdst == VIP4
    na = next(f for f in frames if ICMPv6ND_NA in f)
    assert na[IPv6].dst == "ff02::1" and na[ICMPv6ND_NA].tgt == VIP6
    assert (na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O) == (0, 1)
    assert na[ICMPv6NDOptDstLLAddr].lladdr == LB_MAC
    standby = make_engine("standby")
    standby._announce()
    assert standby._sock.sent == []


def test_set_role_announces_ipv6_vips_too():
    eng = make_engine("standby")
    result = eng.set_role("active")
    assert result["announce"] == [VIP4, VIP6]


def test_a_real_advertising_the_vip_is_logged_once(caplog):
    eng = make_engine()
    na = bytes(Ether(dst="33:33:00:00:00:01", src=REAL_MAC)
               / IPv6(src="fd00:0:0:1::11", dst="ff02::1", hlim=255)
               / ICMPv6ND_NA(tgt=VIP6, O=1)
               / ICMPv6NDOptDstLLAddr(lladdr=REAL_MAC))
    with caplog.at_level(logging.WARNING, logger="pyfwd"):
        eng.core.punts = [na, na]
        eng._answer_punts()
        eng.core.punts = [na]
        eng._answer_punts()
    said = [r.getMessage() for r in caplog.records if "NDP problem" in
            r.getMessage()]
    assert len(said) == 1, said
    assert REAL_MAC in said[0] and VIP6 in said[0]
    assert "realserver setup --vip fd00:0:0:1::100" in said[0]
    # standby: the MAC is the active node's, not a problem
    sb = make_engine("standby")
    sb.core.punts = [na]
    sb._answer_punts()
    assert sb.ha_peers == {REAL_MAC: VIP6}
    assert sb.ndp.conflicts == {}


def test_ipv6_next_hops_go_to_ndp(monkeypatch):
    eng = make_engine()
    routes = {ipaddress.ip_address("10.0.0.11"): ("eth0", None),
              ipaddress.ip_address("fd00:0:0:1::11"): ("eth0", None)}
    monkeypatch.setattr(engine_mod, "route_to",
                        lambda a: (routes[a][0], a))
    asked = {}
    macs = {4: b"\x02" * 6, 6: None}

    def neighbour_macs(ifname, ips):
        version = ips[0].version            # one family a call
        asked[version] = (ifname, list(ips))
        return {ip: macs[version] for ip in ips}
    monkeypatch.setattr(engine_mod, "neighbour_macs", neighbour_macs)
    hops = eng._next_hops()
    assert asked == {4: ("eth0", [ipaddress.ip_address("10.0.0.11")]),
                     6: ("eth0", [ipaddress.ip_address("fd00:0:0:1::11")])}
    assert hops[ipaddress.ip_address("10.0.0.11")] == (b"\x02" * 6, 0, None)
    mac, slot, why = hops[ipaddress.ip_address("fd00:0:0:1::11")]
    assert mac is None and "no neighbour discovery answer on eth0" in why
