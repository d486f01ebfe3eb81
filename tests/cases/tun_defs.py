"""Packet cases of L4 TUN (mode = "tun"): the client's packet, unchanged,
inside an outer IPv4 (IPIP) or IPv6 (IP6IP6) header from the balancer to
the real server, sent to the router toward the real's subnet; and what
the core answers a packet too big for the tunnel with.

The balancer LB (10.0.0.2, fd00::2) shares a segment with the client and
a router; the real servers live behind the router (192.168.60.0/24,
fd60::/64), so the next hop of every tunnel is the router's MAC.
"""

from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: F401 (TCP: tests)
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from pyfwd.frames import mac_to_bytes
from pyfwd.model import Real, Service, Vip

from .harness import Case, unfinished

LB_MAC, CLIENT_MAC = "02:00:00:00:03:02", "02:00:00:00:03:01"
ROUTER_MAC = "02:00:00:00:03:fe"
LB4, LB6 = "10.0.0.2", "fd00::2"
CLIENT4, CLIENT6 = "198.51.100.7", "2001:db8:7::7"   # beyond the router
VIP4, VIP6 = "10.0.0.100", "fd00::100"
REAL4, REAL6 = "192.168.60.11", "fd60::11"
REAL6B = "fd61::11"     # on interface slot 1, which has no IPv6 source
MTU = 1500

WEB = Vip.parse(f"{VIP4}:80/tcp")
DNS = Vip.parse(f"{VIP4}:53/udp")
WEB6 = Vip.parse(f"[{VIP6}]:80/tcp")
DNS6 = Vip.parse(f"[{VIP6}]:53/udp")
SERVICES = [Service(WEB, [Real(REAL4)], "maglev", "tun"),
            Service(DNS, [Real(REAL4)], "maglev", "tun"),
            Service(WEB6, [Real(REAL6)], "maglev", "tun"),
            Service(DNS6, [Real(REAL6B)], "maglev", "tun")]
MACS = {Real(REAL4).address: mac_to_bytes(ROUTER_MAC),
        Real(REAL6).address: mac_to_bytes(ROUTER_MAC),
        Real(REAL6B).address: mac_to_bytes(ROUTER_MAC)}
OUT_IFS = {Real(REAL6B).address: 1}


def inner4(size=0, df=True, flags="S", sport=40000, tos=0, ident=7):
    """The client's TCP segment to the VIP (size bytes of payload)."""
    return (IP(src=CLIENT4, dst=VIP4, flags="DF" if df else 0, tos=tos,
               id=ident, ttl=57)
            / TCP(sport=sport, dport=80, flags=flags, seq=1000)
            / (Raw(b"x" * size) if size else b""))


def inner6(size=0, flags="S", sport=40000):
    return (IPv6(src=CLIENT6, dst=VIP6, hlim=57, tc=0x20)
            / TCP(sport=sport, dport=80, flags=flags, seq=1000)
            / (Raw(b"x" * size) if size else b""))


def from_client(pkt, vlan=None):
    l2 = Ether(dst=LB_MAC, src=ROUTER_MAC)
    return bytes(l2 / Dot1Q(vlan=vlan) / pkt if vlan else l2 / pkt)


def encap4(inner, vlan=None):
    """What the real's next hop must receive: IPIP, outer TTL 64, no DF
    (as Katran: routers beyond may fragment it), TOS and identification
    copied from the inner header."""
    l2 = Ether(dst=ROUTER_MAC, src=LB_MAC)
    outer = IP(src=LB4, dst=REAL4, proto=4, ttl=64, flags=0,
               tos=inner.tos, id=inner.id)
    return bytes((l2 / Dot1Q(vlan=vlan) if vlan else l2) / outer
                 / Raw(bytes(inner)))


def encap6(inner, label):
    """IP6IP6 (next header 41), hop limit 64, the inner traffic class;
    the flow label is the flow's hash (the test reads it from the output
    and checks that it is set and stable)."""
    return bytes(Ether(dst=ROUTER_MAC, src=LB_MAC)
                 / IPv6(src=LB6, dst=REAL6, nh=41, hlim=64, tc=inner.tc,
                        fl=label)
                 / Raw(bytes(inner)))


def too_big4(inner, mtu=MTU):
    """ICMP fragmentation needed from the VIP to the client, the tunnel's
    MTU (less 20) in it, quoting up to 548 bytes (576 in all)."""
    quoted = bytes(inner)[:576 - 28]
    return bytes(Ether(dst=ROUTER_MAC, src=LB_MAC)
                 / IP(src=VIP4, dst=CLIENT4, ttl=64, id=0, flags=0, proto=1)
                 / ICMP(type=3, code=4, nexthopmtu=mtu - 20)
                 / Raw(quoted))


def too_big6(inner, mtu=MTU):
    quoted = bytes(inner)[:1280 - 48]
    return bytes(Ether(dst=ROUTER_MAC, src=LB_MAC)
                 / IPv6(src=VIP6, dst=CLIENT6, hlim=64, nh=58)
                 / ICMPv6PacketTooBig(mtu=mtu - 40) / Raw(quoted))


def cases():
    """The v4 cases whose output is fully known (no flow label)."""
    fit = MTU - 20 - 40          # inner payload that just fits once wrapped
    udp = (IP(src=CLIENT4, dst=VIP4, ttl=50) / UDP(sport=5353, dport=53)
           / Raw(b"query"))
    frag = IP(src=CLIENT4, dst=VIP4, frag=100, proto=6) / Raw(b"y" * 64)
    return [
        Case("tun4-syn", "SYN to a TUN VIP: inside IPIP to the real, via "
             "the router", from_client(inner4()), "forward", vip=0,
             out=encap4(inner4()), out_if=0),
        Case("tun4-nodf", "no DF inside, TOS and identification copied",
             from_client(inner4(df=False, flags="PA", sport=40001,
                                tos=0x10, ident=4242)), "forward", vip=0,
             out=encap4(inner4(df=False, flags="PA", sport=40001, tos=0x10,
                               ident=4242))),
        Case("tun4-udp", "UDP to a TUN VIP: IPIP", from_client(udp),
             "forward", vip=1, out=encap4(udp)),
        Case("tun4-vlan", "a tagged frame keeps its tag outside",
             from_client(inner4(sport=40002), vlan=12), "forward", vip=0,
             out=encap4(inner4(sport=40002), vlan=12), vlan_tci=12),
        Case("tun4-fits", "a packet of MTU - 20 bytes just fits",
             from_client(inner4(fit, flags="PA", sport=40003)), "forward",
             vip=0, out=encap4(inner4(fit, flags="PA", sport=40003))),
        Case("tun4-too-big", "one byte more, DF: ICMP frag needed back "
             "to the client, MTU 1480",
             from_client(inner4(fit + 1, flags="PA", sport=40004)),
             "forward_too_big", vip=0,
             out=too_big4(inner4(fit + 1, flags="PA", sport=40004))),
        Case("tun4-too-big-nodf", "too big without DF: dropped (the "
             "balancer does not fragment)",
             from_client(inner4(fit + 1, df=False, flags="PA",
                                sport=40005)), "drop_tun_too_big", vip=0),
        Case("tun4-gso", "a GSO frame (AF_PACKET, a veth's TSO): no IPIP "
             "segmentation here, dropped and counted",
             from_client(inner4(sport=40006)), "drop_tun_gso", vip=0,
             gso=True),
        Case("tun6-no-source", "to a real on a slot without an IPv6 "
             "source: dropped, counted",
             from_client(IPv6(src=CLIENT6, dst=VIP6) / UDP(sport=5353,
                                                           dport=53)),
             "drop_tun_no_room", vip=3),
        Case("tun4-csum", "an unfinished TCP sum (a veth's) is completed "
             "inside the tunnel", unfinished(from_client(inner4(
                 flags="PA", sport=40007) / Raw(b"data"))), "forward", vip=0,
             out=encap4(inner4(flags="PA", sport=40007) / Raw(b"data")),
             csum_partial=True, csum="completed"),
        Case("tun4-csum-dropped", "unfinished and too big without DF: "
             "dropped as it came, its sum not completed",
             unfinished(from_client(inner4(fit + 1, df=False, flags="PA",
                                           sport=40008))),
             "drop_tun_too_big", vip=0, csum_partial=True),
        Case("tun4-fragment", "a non-first fragment to a TUN VIP: dropped "
             "as for DR", from_client(frag), "drop_fragment",
             vip=0, flags=4),
    ]
