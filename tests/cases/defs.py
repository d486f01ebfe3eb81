"""Packet cases of the core's classifier, built with scapy from shared
constants.  Each well-formed case is also cut short at every byte to make
the truncation cases; see `truncations`.
"""

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import (ICMPv6EchoRequest, ICMPv6MLReport2,
                                ICMPv6ND_NA, ICMPv6ND_NS,
                                ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr,
                                IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                                IPv6ExtHdrHopByHop)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from pyfwd.model import Real, Service, Vip
from pyfwd.frames import mac_to_bytes

from .harness import Case

LB_MAC = "02:00:00:00:00:02"
CLIENT_MAC = "02:00:00:00:00:01"
OTHER_MAC = "02:00:00:00:00:99"
CLIENT4, LB4, VIP4, OTHER4 = "10.0.0.1", "10.0.0.2", "10.0.0.100", "10.0.0.7"
CLIENT6, VIP6, OTHER6 = "fd00::1", "fd00::100", "fd00::7"

REAL1, REAL2 = "10.0.0.11", "10.0.0.12"
REAL1_MAC, REAL2_MAC = "02:00:00:00:01:11", "02:00:00:00:01:12"
MACS = {Real(REAL1).address: mac_to_bytes(REAL1_MAC),
        Real(REAL2).address: mac_to_bytes(REAL2_MAC)}

# Published in this order: a case's `vip` is an index into this list.
VIPS = [
    Vip.parse(f"{VIP4}:80/tcp"),        # 0: PACS web viewer -> real1
    Vip.parse(f"{VIP4}:53/udp"),        # 1 -> real2
    Vip.parse(f"{VIP4}:11112/tcp"),     # 2: DICOM -> real1
    Vip.parse(f"[{VIP6}]:80/tcp"),      # 3 -> real2
    Vip.parse(f"[{VIP6}]:53/udp"),      # 4 -> real1
    Vip.parse(f"{VIP4}:104/tcp"),       # 5: DICOM, its one real drained
]
REAL_OF = [REAL1_MAC, REAL2_MAC, REAL1_MAC, REAL2_MAC, REAL1_MAC, None]
SERVICES = [Service(v, [Real(REAL1 if mac == REAL1_MAC else REAL2,
                             weight=0 if mac is None else 1)])
            for v, mac in zip(VIPS, REAL_OF)]

F_VLAN, F_IP_OPTIONS, F_FRAGMENT = 1, 2, 4


def eth(dst=LB_MAC, src=CLIENT_MAC):
    return Ether(dst=dst, src=src)


def syn(dport=80, dst=VIP4):
    return IP(src=CLIENT4, dst=dst) / TCP(sport=40000, dport=dport, flags="S")


def syn6(dport=80, dst=VIP6):
    return IPv6(src=CLIENT6, dst=dst) / TCP(sport=40000, dport=dport,
                                            flags="S")


def solicited_node(addr):
    import ipaddress
    low = ipaddress.IPv6Address(addr).packed[-3:]
    return str(ipaddress.IPv6Address(bytes.fromhex("ff020000000000000000"
                                                   "0001ff") + low))


def ns_for(target):
    return (Ether(dst="33:33:ff:00:01:00", src=CLIENT_MAC)
            / IPv6(src=CLIENT6, dst=solicited_node(target), hlim=255)
            / ICMPv6ND_NS(tgt=target))


def case(name, description, pkt, reason, **kw):
    frame = bytes(pkt)
    if reason == "forward":     # DR: the real's MAC, ours as the source
        kw.setdefault("out", dr(frame, REAL_OF[kw["vip"]]))
    return Case(name, description, frame, reason, **kw)


def dr(frame, real_mac):
    """frame as DR sends it to real_mac: only the two MACs change."""
    return mac_to_bytes(real_mac) + mac_to_bytes(LB_MAC) + frame[12:]


def wellformed():
    """Well-formed frames, one or more per verdict and reason."""
    return [
        # forward
        case("tcp-syn-vip", "TCP SYN to VIP:80", eth() / syn(),
             "forward", vip=0),
        case("udp-vip", "UDP datagram to VIP:53",
             eth() / IP(src=CLIENT4, dst=VIP4) / UDP(sport=5353, dport=53)
             / Raw(b"q" * 20), "forward", vip=1),
        case("dicom-vip", "DICOM association (TCP 11112) to the VIP",
             eth() / syn(11112) / Raw(b"\x01\x00"), "forward", vip=2),
        case("tcp6-syn-vip", "TCP SYN to [VIP6]:80", eth() / syn6(),
             "forward", vip=3),
        case("udp6-vip", "UDP to [VIP6]:53",
             eth() / IPv6(src=CLIENT6, dst=VIP6) / UDP(sport=1, dport=53)
             / Raw(b"x"), "forward", vip=4),
        case("vlan-tcp-vip", "802.1Q-tagged SYN to VIP:80",
             eth() / Dot1Q(vlan=42, prio=5) / syn(), "forward", vip=0,
             flags=F_VLAN, vlan_tci=(5 << 13) | 42),
        case("qtag-ad-tcp-vip", "802.1ad-tagged SYN to VIP:80",
             eth() / Dot1AD(vlan=7) / syn(), "forward", vip=0,
             flags=F_VLAN, vlan_tci=7),
        case("ip-options-vip", "SYN with an IPv4 record-route option",
             eth() / IP(src=CLIENT4, dst=VIP4, options=[IPOption_RR()])
             / TCP(dport=80, flags="S"), "forward", vip=0,
             flags=F_IP_OPTIONS),
        case("ip6-exthdr-vip", "SYN behind hop-by-hop and dest options",
             eth() / IPv6(src=CLIENT6, dst=VIP6) / IPv6ExtHdrHopByHop()
             / IPv6ExtHdrDestOpt() / TCP(dport=80, flags="S"),
             "forward", vip=3, flags=F_IP_OPTIONS),
        case("padded-udp-vip", "short UDP padded to 60 bytes by Ethernet",
             eth() / IP(src=CLIENT4, dst=VIP4) / UDP(dport=53)
             / Raw(b"a") / Raw(b"\x00" * 17), "forward", vip=1),
        case("broadcast-mac-vip", "SYN to VIP sent to the broadcast MAC",
             eth(dst="ff:ff:ff:ff:ff:ff") / syn(), "forward", vip=0),
        # punt
        case("arp-who-has-vip", "ARP who-has VIP (broadcast)",
             Ether(dst="ff:ff:ff:ff:ff:ff", src=CLIENT_MAC)
             / ARP(op=1, hwsrc=CLIENT_MAC, psrc=CLIENT4, pdst=VIP4),
             "punt_arp", vip=0),
        case("arp-reply-claims-vip",
             "a real server answering the balancer's who-has VIP "
             "(the ARP problem)",
             Ether(dst=LB_MAC, src=OTHER_MAC)
             / ARP(op=2, hwsrc=OTHER_MAC, psrc=VIP4, hwdst=LB_MAC,
                   pdst=LB4), "punt_arp", vip=0),
        case("icmp-echo-vip", "ping to the VIP", eth()
             / IP(src=CLIENT4, dst=VIP4) / ICMP(), "punt_icmp", vip=0),
        case("icmp6-echo-vip", "ping6 to the VIP", eth()
             / IPv6(src=CLIENT6, dst=VIP6) / ICMPv6EchoRequest(),
             "punt_icmp", vip=3),
        case("ndp-ns-vip6", "neighbour solicitation for the IPv6 VIP",
             ns_for(VIP6), "punt_ndp", vip=3),
        case("ndp-ns-vip6-lladdr", "NS for the IPv6 VIP as Linux sends it "
             "(source link-layer address option)",
             ns_for(VIP6) / ICMPv6NDOptSrcLLAddr(lladdr=CLIENT_MAC),
             "punt_ndp", vip=3),
        case("ndp-ns-vip6-dad", "duplicate address detection probe (from "
             "::) for the IPv6 VIP",
             Ether(dst="33:33:ff:00:01:00", src=OTHER_MAC)
             / IPv6(src="::", dst=solicited_node(VIP6), hlim=255)
             / ICMPv6ND_NS(tgt=VIP6), "punt_ndp", vip=3),
        case("ndp-ns-vip6-unicast", "unicast NS to the IPv6 VIP (neighbour "
             "unreachability detection): ICMPv6 to the VIP",
             eth() / IPv6(src=CLIENT6, dst=VIP6, hlim=255)
             / ICMPv6ND_NS(tgt=VIP6), "punt_icmp", vip=3),
        case("ndp-na-to-vip6-claims", "unicast NA to the IPv6 VIP whose "
             "target is the VIP: a claim, as above",
             eth(src=OTHER_MAC) / IPv6(src=OTHER6, dst=VIP6, hlim=255)
             / ICMPv6ND_NA(tgt=VIP6, O=1)
             / ICMPv6NDOptDstLLAddr(lladdr=OTHER_MAC), "punt_icmp", vip=3),
        case("ndp-na-vip6", "unsolicited NA to all nodes: another MAC "
             "claims the IPv6 VIP",
             Ether(dst="33:33:00:00:00:01", src=OTHER_MAC)
             / IPv6(src=OTHER6, dst="ff02::1", hlim=255)
             / ICMPv6ND_NA(tgt=VIP6, O=1)
             / ICMPv6NDOptDstLLAddr(lladdr=OTHER_MAC), "punt_ndp", vip=3),
        # pass
        case("other-mac", "unicast frame to another host's MAC",
             eth(dst=OTHER_MAC) / syn(), "pass_other_mac"),
        case("lldp", "an LLDP frame (ethertype 0x88cc)",
             Ether(dst="01:80:c2:00:00:0e", src=CLIENT_MAC, type=0x88cc)
             / Raw(b"\x02\x07\x04" + b"\x00" * 40), "pass_ethertype"),
        case("qinq", "double-tagged (QinQ) frame: left to the kernel",
             eth() / Dot1AD(vlan=1) / Dot1Q(vlan=2) / syn(),
             "pass_ethertype", flags=F_VLAN),
        case("arp-who-has-other", "ARP who-has the balancer's own address",
             Ether(dst="ff:ff:ff:ff:ff:ff", src=CLIENT_MAC)
             / ARP(op=1, psrc=CLIENT4, pdst=LB4), "pass_arp"),
        case("arp-reply-to-vip", "ARP reply to the VIP: the kernel asked "
             "from it (an L7 VIP shares the address)",
             Ether(dst=LB_MAC, src=CLIENT_MAC)
             / ARP(op=2, hwsrc=CLIENT_MAC, psrc=CLIENT4, hwdst=LB_MAC,
                   pdst=VIP4), "pass_arp"),
        case("ndp-na-to-vip6", "unicast NA to the IPv6 VIP for another "
             "target: the kernel asked from it (an L7 VIP shares it)",
             eth() / IPv6(src=CLIENT6, dst=VIP6, hlim=255)
             / ICMPv6ND_NA(tgt=CLIENT6, S=1)
             / ICMPv6NDOptDstLLAddr(lladdr=CLIENT_MAC), "pass_vip_other",
             vip=3),
        case("arp-not-ipv4", "ARP for another protocol type",
             Ether(dst="ff:ff:ff:ff:ff:ff", src=CLIENT_MAC)
             / ARP(ptype=0x86dd, plen=4, psrc=CLIENT4, pdst=VIP4),
             "pass_arp"),
        case("tcp-not-vip", "SSH to the balancer's own address",
             eth() / IP(src=CLIENT4, dst=LB4) / TCP(dport=22, flags="S"),
             "pass_not_vip"),
        case("tcp6-not-vip", "TCP to another IPv6 address",
             eth() / syn6(dst=OTHER6), "pass_not_vip"),
        case("ndp-ns-other", "neighbour solicitation for another address",
             ns_for(OTHER6), "pass_not_vip"),
        case("ndp-na-other", "unsolicited NA for another address",
             Ether(dst="33:33:00:00:00:01", src=OTHER_MAC)
             / IPv6(src=OTHER6, dst="ff02::1", hlim=255)
             / ICMPv6ND_NA(tgt=OTHER6), "pass_not_vip"),
        case("mld-report", "an MLDv2 report (hop-by-hop header, "
             "multicast): not ours",
             Ether(dst="33:33:00:00:00:16", src=CLIENT_MAC)
             / IPv6(src=CLIENT6, dst="ff02::16", hlim=1)
             / IPv6ExtHdrHopByHop() / ICMPv6MLReport2(), "pass_not_vip"),
        case("udp6-multicast", "UDP to a multicast group",
             Ether(dst="33:33:00:00:00:fb", src=CLIENT_MAC)
             / IPv6(src=CLIENT6, dst="ff02::fb") / UDP(sport=5353,
                                                        dport=5353),
             "pass_not_vip"),
        case("fragment-not-vip", "a fragment to a non-VIP address",
             eth() / IP(src=CLIENT4, dst=LB4, flags="MF") / UDP(dport=9)
             / Raw(b"z" * 16), "pass_not_vip"),
        case("tcp-vip-other-port", "TCP to the VIP on a port not served",
             eth() / syn(22), "pass_vip_other", vip=0),
        case("udp-vip-tcp-port", "UDP to VIP:80, served for TCP only",
             eth() / IP(src=CLIENT4, dst=VIP4) / UDP(dport=80),
             "pass_vip_other", vip=0),
        case("dicom-104-drained", "DICOM to a VIP whose one real drains",
             eth() / syn(104), "drop_no_real", vip=5),
        case("gre-vip", "GRE to the VIP address",
             eth() / IP(src=CLIENT4, dst=VIP4, proto=47) / Raw(b"\0" * 8),
             "pass_vip_other", vip=0),
    ]


def _ip4(**kw):
    return IP(src=CLIENT4, dst=VIP4, **kw)


def malformed():
    """Frames that are broken on purpose; every one is dropped, counted."""
    good = bytes(eth() / syn())
    return [
        case("empty", "a zero-length frame", b"", "drop_runt"),
        case("runt-13", "13 bytes: shorter than an Ethernet header",
             good[:13], "drop_runt"),
        case("oversize", "9217 bytes: over the 9216-byte frame limit",
             eth() / _ip4() / UDP(dport=53) / Raw(b"o" * 9175),
             "drop_oversize"),
        case("vlan-cut", "802.1Q ethertype and only half a tag",
             bytes(eth() / Dot1Q(vlan=1) / syn())[:16], "drop_vlan_trunc"),
        case("arp-cut", "ARP who-has VIP cut after the sender MAC",
             bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=CLIENT_MAC)
                   / ARP(pdst=VIP4))[:28], "drop_arp_trunc"),
        case("ip6-cut", "IPv6 header cut at 30 of its 40 bytes",
             bytes(eth() / syn6())[:14 + 30], "drop_ip6_trunc"),
        case("tcp-header-10", "a 10-byte TCP header, IP length agreeing",
             eth() / _ip4(proto=6) / Raw(bytes(TCP(dport=80))[:10]),
             "drop_l4_trunc", vip=0),
        case("ip-ihl-4", "IPv4 header length 16 bytes (IHL 4)",
             eth() / _ip4(ihl=4) / TCP(dport=80), "drop_ip4_ihl"),
        case("ip-ihl-15-short", "IHL 15 (60 bytes) in a 20-byte header",
             bytes(eth() / _ip4(ihl=15) / TCP(dport=80))[:14 + 40],
             "drop_ip4_trunc"),
        case("ip-version-5", "IPv4 ethertype, version 5",
             eth() / _ip4(version=5) / TCP(dport=80), "drop_ip4_version"),
        case("ip6-version-4", "IPv6 ethertype, version 4",
             Ether(dst=LB_MAC, src=CLIENT_MAC, type=0x86dd)
             / IPv6(version=4, src=CLIENT6, dst=VIP6) / TCP(dport=80),
             "drop_ip6_version"),
        case("ip-totlen-short", "IPv4 total length 10, below its header",
             eth() / _ip4(len=10) / TCP(dport=80), "drop_ip4_totlen"),
        case("ip-totlen-long", "IPv4 total length 1500 in a 54-byte frame",
             eth() / _ip4(len=1500) / TCP(dport=80), "drop_ip4_totlen"),
        case("frag-first-vip", "first fragment (MF) to the VIP",
             eth() / _ip4(flags="MF") / TCP(dport=80), "drop_fragment",
             vip=0, flags=F_FRAGMENT),
        case("frag-later-vip", "a later fragment (offset 185) to the VIP",
             eth() / _ip4(frag=185, proto=6) / Raw(b"k" * 24),
             "drop_fragment", vip=0, flags=F_FRAGMENT),
        case("frag6-vip", "IPv6 fragment header to the VIP",
             eth() / IPv6(src=CLIENT6, dst=VIP6) / IPv6ExtHdrFragment(m=1)
             / TCP(dport=80), "drop_fragment", vip=3, flags=F_FRAGMENT),
        case("ip6-paylen-long", "IPv6 payload length 1000 in a short frame",
             eth() / IPv6(src=CLIENT6, dst=VIP6, plen=1000) / TCP(dport=80),
             "drop_ip6_paylen"),
        case("ip6-exthdr-chain", "nine destination-options headers",
             eth() / IPv6(src=CLIENT6, dst=VIP6)
             / (IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt()) / TCP(dport=80),
             "drop_ip6_exthdr", vip=3),
        case("ip6-exthdr-long", "an extension header longer than the packet",
             eth() / IPv6(src=CLIENT6, dst=VIP6)
             / IPv6ExtHdrDestOpt(len=30) / TCP(dport=80),
             "drop_ip6_exthdr", vip=3),
        case("tcp-doff-4", "TCP data offset 4 (16 bytes)",
             eth() / _ip4() / TCP(dport=80, dataofs=4), "drop_tcp_doff",
             vip=0),
        case("tcp-doff-15", "TCP data offset 15 in a 20-byte header",
             eth() / _ip4() / TCP(dport=80, dataofs=15), "drop_tcp_doff",
             vip=0),
        case("udp-len-7", "UDP length 7, below its header",
             eth() / _ip4() / UDP(dport=53, len=7) / Raw(b"abc"),
             "drop_udp_len", vip=0),
        case("udp-len-long", "UDP length 600 in a 12-byte datagram",
             eth() / _ip4() / UDP(dport=53, len=600) / Raw(b"abcd"),
             "drop_udp_len", vip=0),
    ]


def _with_l3_len(frame, l3_off, family, new_l3_len):
    """Frame cut to l3_off+new_l3_len, with the IP length fixed to match."""
    f = bytearray(frame[:l3_off + new_l3_len])
    if family == "ipv4":
        f[l3_off + 2:l3_off + 4] = new_l3_len.to_bytes(2, "big")
        f[l3_off + 10:l3_off + 12] = b"\0\0"   # checksum: not checked
    else:
        f[l3_off + 4:l3_off + 6] = (new_l3_len - 40).to_bytes(2, "big")
    return bytes(f)


TRUNCATION_BASES = ("tcp-syn-vip", "udp-vip", "dicom-vip", "tcp6-syn-vip",
                    "udp6-vip", "vlan-tcp-vip", "ip-options-vip",
                    "ip6-exthdr-vip", "icmp-echo-vip", "icmp6-echo-vip",
                    "arp-who-has-vip", "ndp-ns-vip6", "ndp-na-vip6",
                    "tcp-not-vip")


def truncations(core_result_of):
    """Every well-formed base frame cut short, both ways.

    1. cut at every byte, lengths left claiming the whole packet (a frame
       that lost its tail): always a drop, never a read past the end;
    2. cut at every byte of the L4 header with the IP length fixed to
       match (a packet that is short but consistent): a drop naming L4.

    core_result_of(frame) gives the Result of the uncut frame, which tells
    where L3 and L4 start.  Returns a list of (Case, allowed_reasons).
    """
    bases = {c.name: c for c in wellformed()}
    out = []
    for name in TRUNCATION_BASES:
        base = bases[name]
        full = base.frame
        r = core_result_of(full)
        l3, l4 = r.l3_off, r.l4_off
        for cut in range(len(full)):
            if cut < 14:
                allowed = {"drop_runt"}
            elif r.flags & F_VLAN and cut < 18:
                allowed = {"drop_vlan_trunc"}
            elif r.family == "arp":
                allowed = {"drop_arp_trunc"}
            elif r.family == "ipv4":
                allowed = {"drop_ip4_trunc" if cut < l3 + 20 or
                           (r.flags & F_IP_OPTIONS and cut < l4)
                           else "drop_ip4_totlen"}
            else:
                allowed = {"drop_ip6_trunc" if cut < l3 + 40
                           else "drop_ip6_paylen"}
            out.append((Case(f"{name}-cut{cut}", f"{base.description}, "
                             f"cut to {cut} of {len(full)} bytes",
                             full[:cut], sorted(allowed)[0]), allowed))
        if r.family not in ("ipv4", "ipv6") or not l4:
            continue
        l4_min = {6: 20, 17: 8, 1: 8, 58: 4}[r.l4proto]
        want = "drop_l4_trunc"
        if r.reason == "punt_ndp":
            want = "pass_not_vip"   # too short to be an NS: not ours
        for keep in range(l4_min):
            frame = _with_l3_len(full, l3, r.family, l4 - l3 + keep)
            out.append((Case(f"{name}-l4short{keep}",
                             f"{base.description}, L4 header {keep} bytes, "
                             "IP length consistent", frame, want),
                        {want}))
        if base.flags & F_IP_OPTIONS and r.family == "ipv6":
            for keep in range(40, l4 - l3):
                frame = _with_l3_len(full, l3, r.family, keep)
                out.append((Case(f"{name}-exthdr{keep}", "IPv6 packet "
                                 f"ending inside its extension headers at "
                                 f"{keep}", frame, "drop_ip6_exthdr"),
                            {"drop_ip6_exthdr"}))
    return out
