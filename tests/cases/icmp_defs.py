"""ICMP errors follow their flow, and NAT routes (TTL): packet cases.

DR: an ICMP or ICMPv6 error about a VIP flow quotes the real's reply as
it went out (from VIP:port to the client); the core reverses the quoted
tuple, finds the client's flow and sends the error to that flow's real
with the MACs rewritten as for the flow's frames (the IP packet is left
as it is).  Without a flow, a Maglev (or sh) VIP sends it where a new
flow of that tuple would go; any other scheduler counts a drop.  A quote
that is cut short or of another protocol is a counted drop.

NAT/SNAT: ICMPv6 errors are translated as ICMP ones are (nat_defs), and
every frame sent on is routed: TTL or hop limit one less, 1 -> dropped.

sequences() gives (name, make_core, steps): the steps run in order on a
fresh core; reasons() every reason the cases show.
"""

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6EchoRequest,
                                ICMPv6PacketTooBig, ICMPv6TimeExceeded,
                                IPv6, IPv6ExtHdrDestOpt)
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pyfwd.dataplane.core import Core
from pyfwd.frames import mac_to_bytes
from pyfwd.model import Real, Service, Vip

from . import csum_defs as cd
from . import nat_defs as nd
from .harness import Case

LB_MAC, CLIENT_MAC, ROUTER_MAC = ("02:00:00:00:00:02", "02:00:00:00:00:01",
                                  "02:00:00:00:00:fe")
CLIENT, ROUTER, VIP = "10.0.0.1", "10.0.0.254", "10.0.0.100"
CLIENT6, ROUTER6, VIP6 = "fd00::1", "fd00::fe", "fd00::100"
REAL1, REAL2 = "10.0.0.11", "10.0.0.12"
REAL1_MAC, REAL2_MAC = "02:00:00:00:01:11", "02:00:00:00:01:12"
REALS = [Real(REAL1), Real(REAL2)]

# Published in this order: a case's `vip` is an index into this list.
WEB = Vip.parse(f"{VIP}:80/tcp")            # 0: wrr, the reals in turn
DNS = Vip.parse(f"{VIP}:53/udp")            # 1: maglev
WEB6 = Vip.parse(f"[{VIP6}]:80/tcp")        # 2: wrr
SH = Vip.parse(f"{VIP}:443/tcp")            # 3: sh
PERSIST = Vip.parse(f"{VIP}:8080/tcp")      # 4: maglev, persistence
DR_SERVICES = [Service(WEB, list(REALS), "wrr"),
               Service(DNS, list(REALS), "maglev"),
               Service(WEB6, list(REALS), "wrr"),
               Service(SH, list(REALS), "sh"),
               Service(PERSIST, list(REALS), "maglev", persistence=60)]
DR_MACS = {Real(REAL1).address: mac_to_bytes(REAL1_MAC),
           Real(REAL2).address: mac_to_bytes(REAL2_MAC)}


def dr_core():
    core = Core(mac=LB_MAC, flows=4096)
    core.publish_services(DR_SERVICES, DR_MACS)
    return core


def nat_core():
    core = Core(mac=nd.OUT_MAC, mac2=nd.IN_MAC, flows=4096)
    core.set_snat(Real(nd.SNAT).address, nd.SNAT_PORTS)
    core.publish_services(nd.SERVICES, nd.MACS, nd.OUT_IFS)
    return core


def nat6_core():
    core = Core(mac=nd.OUT_MAC, mac2=nd.IN_MAC, flows=4096)
    core.publish_services(cd.NAT6_SERVICES, cd.NAT6_MACS, cd.NAT6_OUT_IFS)
    return core


def eth(dst=LB_MAC, src=CLIENT_MAC):
    return Ether(dst=dst, src=src)


def syn(sport, dport=80, ttl=64):
    return bytes(eth() / IP(src=CLIENT, dst=VIP, ttl=ttl)
                 / TCP(sport=sport, dport=dport, flags="S"))


def reply(sport, dport=80, size=1400):
    """The IP packet a DR real sends the client: from the VIP."""
    return bytes(IP(src=VIP, dst=CLIENT) / TCP(sport=dport, dport=sport,
                                               flags="A", seq=7, ack=1)
                 / Raw(b"x" * size))


def reply6(sport, size=1400):
    return bytes(IPv6(src=VIP6, dst=CLIENT6)
                 / TCP(sport=80, dport=sport, flags="A") / Raw(b"x" * size))


def frag_needed(quoted, dst=VIP, ttl=64, mac_dst=LB_MAC, mac_src=ROUTER_MAC,
                src=ROUTER, mtu=1280):
    """A router's frag-needed quoting (the first 548 bytes of) quoted."""
    return bytes(Ether(dst=mac_dst, src=mac_src)
                 / IP(src=src, dst=dst, ttl=ttl)
                 / ICMP(type=3, code=4, nexthopmtu=mtu) / Raw(quoted[:548]))


def ptb(quoted, dst=VIP6, hlim=64, mac_dst=LB_MAC, mac_src=ROUTER_MAC,
        src=ROUTER6, mtu=1280):
    """A router's ICMPv6 packet too big (RFC 4443: quotes up to 1280)."""
    return bytes(Ether(dst=mac_dst, src=mac_src)
                 / IPv6(src=src, dst=dst, hlim=hlim)
                 / ICMPv6PacketTooBig(mtu=mtu) / Raw(quoted[:1232]))


def to(frame, mac):
    """frame as DR sends it on: to mac, from the balancer; IP untouched."""
    return bytes(mac_to_bytes(mac) + mac_to_bytes(LB_MAC) + frame[12:])


def case(name, description, frame, reason, out=None, vip=None, in_if=0,
         out_if=None):
    return Case(name, description, bytes(frame), reason, vip=vip, out=out,
                in_if=in_if, out_if=out_if)


def dr_flows():
    """Flows on a wrr VIP go to the reals in turn: errors find theirs."""
    s1, s2, s3 = syn(40001), syn(40002), syn(40003)
    e1, e2 = frag_needed(reply(40001)), frag_needed(reply(40002))
    e9 = frag_needed(reply(40009))
    u = bytes(IP(src=VIP, dst=CLIENT) / UDP(sport=53, dport=5353)
              / Raw(b"a" * 600))
    unreach = bytes(eth(src=ROUTER_MAC) / IP(src=ROUTER, dst=VIP)
                    / ICMP(type=3, code=1) / Raw(u))
    q = bytes(eth() / IP(src=CLIENT, dst=VIP) / UDP(sport=5353, dport=53))
    te = bytes(eth(src=ROUTER_MAC) / IP(src=ROUTER, dst=VIP)
               / ICMP(type=11, code=0) / Raw(reply(40002)[:28]))
    return [
        case("dr-syn-1", "first flow: real1", s1, "forward",
             to(s1, REAL1_MAC), vip=0),
        case("dr-syn-2", "second flow: real2", s2, "forward",
             to(s2, REAL2_MAC), vip=0),
        case("dr-frag-needed-2", "frag-needed about the second flow's "
             "reply: to real2, only the MACs rewritten", e2, "forward_icmp",
             to(e2, REAL2_MAC), vip=0),
        case("dr-frag-needed-1", "about the first flow's: to real1", e1,
             "forward_icmp", to(e1, REAL1_MAC), vip=0),
        case("dr-time-exceeded-2", "time exceeded quoting only the header "
             "and 8 bytes: to real2", te, "forward_icmp",
             to(te, REAL2_MAC), vip=0),
        case("dr-no-flow-wrr", "about no flow of a wrr VIP: nowhere to "
             "send it, counted", e9, "drop_icmp_no_flow", vip=0),
        case("dr-no-flow-maglev", "about no flow of a Maglev VIP: where "
             "its hash sends that flow (the query below)", unreach,
             "forward_icmp", to(unreach, REAL1_MAC), vip=1),
        case("dr-maglev-query", "the query the error was about goes to "
             "the same real", q, "forward", to(q, REAL1_MAC), vip=1),
        case("dr-syn-3", "TTL 1: DR does not route, the frame goes on as "
             "it came", syn(40003, ttl=1), "forward",
             to(syn(40003, ttl=1), REAL1_MAC), vip=0),
        case("dr-syn-3-after", "(the third flow)", s3, "forward",
             to(s3, REAL1_MAC), vip=0),
    ]


def dr_sh():
    """sh hashes the client's address: every flow of it, one real."""
    s = syn(41000, 443)
    e = frag_needed(reply(41001, 443))
    return [
        case("dr-sh-no-flow", "about no flow of an sh VIP: the client's "
             "real", e, "forward_icmp", to(e, REAL2_MAC), vip=3),
        case("dr-sh-syn", "the client's flow: the same real", s, "forward",
             to(s, REAL2_MAC), vip=3),
    ]


def dr_persist():
    """Persistence first, as for a new flow: port 42002 alone hashes to
    real2 (measured on a fresh core), but this client is on real1."""
    s, s2 = syn(42000, 8080), syn(42002, 8080)
    e = frag_needed(reply(42002, 8080))
    return [
        case("dr-persist-syn", "the client's first flow: real1", s,
             "forward", to(s, REAL1_MAC), vip=4),
        case("dr-persist-no-flow", "about another port of it, no flow: "
             "its persistent real", e, "forward_icmp", to(e, REAL1_MAC),
             vip=4),
        case("dr-persist-syn-2", "that port's flow: the same real", s2,
             "forward", to(s2, REAL1_MAC), vip=4),
    ]


def dr6():
    s1, s2 = (bytes(eth() / IPv6(src=CLIENT6, dst=VIP6)
                    / TCP(sport=p, dport=80, flags="S"))
              for p in (40001, 40002))
    e2 = ptb(reply6(40002))
    un = bytes(eth(src=ROUTER_MAC) / IPv6(src=ROUTER6, dst=VIP6)
               / ICMPv6DestUnreach(code=3) / Raw(reply6(40001)[:48]))
    tx = bytes(eth(src=ROUTER_MAC) / IPv6(src=ROUTER6, dst=VIP6)
               / ICMPv6TimeExceeded() / Raw(reply6(40001)))
    return [
        case("dr6-syn-1", "first IPv6 flow: real1", s1, "forward",
             to(s1, REAL1_MAC), vip=2),
        case("dr6-syn-2", "second: real2", s2, "forward", to(s2, REAL2_MAC),
             vip=2),
        case("dr6-packet-too-big", "packet too big about the second "
             "flow's reply: to real2", e2, "forward_icmp",
             to(e2, REAL2_MAC), vip=2),
        case("dr6-unreachable", "unreachable about the first: real1", un,
             "forward_icmp", to(un, REAL1_MAC), vip=2),
        case("dr6-time-exceeded", "time exceeded about the first: real1",
             tx, "forward_icmp", to(tx, REAL1_MAC), vip=2),
        case("dr6-no-flow", "about no flow (wrr): counted",
             ptb(reply6(40009)), "drop_icmp_no_flow", vip=2),
    ]


def malformed():
    """Quotes that name no flow: cut, another protocol, other versions."""
    r = reply(40001)
    opts = bytearray(r[:28])
    opts[0] = 0x44                      # IHL 4: below the minimum
    v6in4 = reply6(40001)
    frag = bytearray(r[:28])
    frag[6:8] = b"\x00\x10"             # offset 16: a later fragment
    icmp_in = bytes(IP(src=VIP, dst=CLIENT) / ICMP(type=0) / Raw(b"p" * 8))
    ext6 = bytes(IPv6(src=VIP6, dst=CLIENT6) / IPv6ExtHdrDestOpt()
                 / TCP(sport=80, dport=40001))
    other_port = frag_needed(reply(40001, 8443))
    return [
        case("icmp-quote-cut-ip", "a quote shorter than an IP header",
             frag_needed(r[:19]), "drop_icmp_quote", vip=0),
        case("icmp-quote-cut-ports", "a whole IP header, 7 bytes of TCP",
             frag_needed(r[:27]), "drop_icmp_quote", vip=0),
        case("icmp-quote-empty", "an error quoting nothing",
             frag_needed(b""), "drop_icmp_quote", vip=0),
        case("icmp-quote-ihl", "a quoted IHL below 5", frag_needed(opts),
             "drop_icmp_quote", vip=0),
        case("icmp-quote-version", "ICMPv4 quoting an IPv6 packet",
             frag_needed(v6in4), "drop_icmp_quote", vip=0),
        case("icmp-quote-fragment", "a quoted later fragment: no ports",
             frag_needed(frag), "drop_icmp_quote", vip=0),
        case("icmp-quote-icmp", "quoting an ICMP packet: no flow's",
             frag_needed(icmp_in), "drop_icmp_quote", vip=0),
        case("icmp6-quote-cut", "packet too big quoting 47 bytes",
             ptb(reply6(40001)[:47]), "drop_icmp_quote", vip=2),
        case("icmp6-quote-exthdr", "quoting a packet with an extension "
             "header (none is walked)", ptb(ext6), "drop_icmp_quote", vip=2),
        case("icmp6-quote-version", "ICMPv6 quoting an IPv4 packet",
             ptb(r), "drop_icmp_quote", vip=2),
        case("icmp-quote-other-port", "about VIP:8443, no service of ours "
             "(an L7 VIP's, say): Python's, as any ICMP to a VIP",
             other_port, "punt_icmp", vip=0),
        case("icmp6-echo-still-punted", "ICMPv6 that is no error: punted",
             bytes(eth() / IPv6(src=CLIENT6, dst=VIP6)
                   / ICMPv6EchoRequest()), "punt_icmp", vip=2),
    ]


def quote_cuts():
    """The DR frag-needed about flow 1 quoting 0..60 bytes (the IP length
    kept right): below 28 bytes a counted drop, from 28 the real."""
    s = syn(40001)
    out = [case("icmp-cut-flow", "the flow", s, "forward", to(s, REAL1_MAC),
                vip=0)]
    for k in range(61):
        e = frag_needed(reply(40001)[:k])
        if k < 28:
            out.append(case(f"icmp-cut-{k}", f"quote of {k} bytes", e,
                            "drop_icmp_quote", vip=0))
        else:
            out.append(case(f"icmp-cut-{k}", f"quote of {k} bytes", e,
                            "forward_icmp", to(e, REAL1_MAC), vip=0))
    return out


def nat6():
    """IPv6 NAT: errors translated both ways, as nat_defs' IPv4 ones."""
    om, im, cm = nd.OUT_MAC, nd.IN_MAC, nd.CLIENT_MAC
    rm = nd.REAL1_MAC

    def f6(dst_mac, src_mac, src, dst, l4, hlim=64):
        return bytes(Ether(dst=dst_mac, src=src_mac)
                     / IPv6(src=src, dst=dst, hlim=hlim) / l4)

    v, c, r = cd.VIP6, cd.CLIENT6, cd.REAL6_1
    syn = f6(om, cm, c, v, TCP(sport=40000, dport=80, flags="S"))
    syn_out = f6(rm, im, c, r, TCP(sport=40000, dport=8080, flags="S"))
    sa = f6(im, rm, r, c, TCP(sport=8080, dport=40000, flags="SA")
            / Raw(b"y" * 1300))
    sa_out = f6(cm, om, v, c, TCP(sport=80, dport=40000, flags="SA")
                / Raw(b"y" * 1300))
    inside = "fd50::fe"
    return [
        case("nat6-syn", "SYN to [VIP]:80 -> real:8080", syn, "forward",
             nd.routed(syn_out), vip=0, out_if=1),
        case("nat6-synack", "the real's answer, from the VIP", sa,
             "forward_reply", nd.routed(sa_out), in_if=1, out_if=0),
        case("nat6-ptb-to-vip", "packet too big about the answer, to the "
             "VIP: to the real, quoting what the real sent",
             ptb(sa_out[14:], v, mac_dst=om, src=ROUTER6), "forward_icmp",
             nd.routed(ptb(sa[14:], r, mac_dst=rm, mac_src=im,
                           src=ROUTER6)), vip=0, out_if=1),
        case("nat6-unreach-to-client", "unreachable about the translated "
             "SYN, inside: to the client, quoting what it sent",
             f6(im, rm, inside, c, ICMPv6DestUnreach(code=1)
                / Raw(syn_out[14:])), "forward_icmp",
             nd.routed(f6(cm, om, inside, c, ICMPv6DestUnreach(code=1)
                          / Raw(syn[14:]))), in_if=1, out_if=0),
        case("nat6-ptb-no-flow", "about no flow: counted",
             ptb(f6(cm, om, v, c, TCP(sport=80, dport=40009))[14:], v,
                 mac_dst=om), "drop_icmp_no_flow", vip=0),
        case("nat6-icmp6-empty", "ICMPv6 from a real with no byte of "
             "header (a fuzzer's find: once read past the end)",
             bytes(Ether(dst=im, src=rm) / IPv6(src=r, dst=c, nh=58)),
             "pass_not_vip", in_if=1),
        case("nat6-hlim-1", "hop limit 1: a router drops it, counted",
             f6(om, cm, c, v, TCP(sport=40001, dport=80, flags="S"),
                hlim=1), "drop_ttl_expired", vip=0),
        case("nat6-ptb-hlim-1", "an error with hop limit 1: dropped",
             ptb(sa_out[14:], v, mac_dst=om, hlim=1), "drop_ttl_expired",
             vip=0),
    ]


def nat_ttl():
    om, cm, im = nd.OUT_MAC, nd.CLIENT_MAC, nd.IN_MAC

    def syn4(sport, ttl):
        return bytes(Ether(dst=om, src=cm) / IP(src=nd.CLIENT, dst=nd.VIP,
                                                ttl=ttl)
                     / TCP(sport=sport, dport=80, flags="S"))

    def out4(sport, ttl):
        return bytes(Ether(dst=nd.REAL1_MAC, src=im)
                     / IP(src=nd.CLIENT, dst=nd.REAL1, ttl=ttl)
                     / TCP(sport=sport, dport=8080, flags="S"))

    def ans(sport, ttl):
        return bytes(Ether(dst=im, src=nd.REAL1_MAC)
                     / IP(src=nd.REAL1, dst=nd.CLIENT, ttl=ttl)
                     / TCP(sport=8080, dport=sport, flags="SA"))

    sa_out = bytes(Ether(dst=cm, src=om) / IP(src=nd.VIP, dst=nd.CLIENT)
                   / TCP(sport=80, dport=40000, flags="SA"))
    empty = bytes(Ether(dst=im, src=nd.REAL1_MAC)
                  / IP(src=nd.REAL1, dst=nd.CLIENT, proto=1))
    return [
        case("nat-icmp-empty", "ICMP from a real with no byte of header",
             empty, "pass_not_vip", in_if=1),
        case("nat-ttl-1", "TTL 1 to a NAT VIP: dropped, counted, no flow",
             syn4(40000, 1), "drop_ttl_expired", vip=0),
        case("nat-ttl-2", "TTL 2: goes on with TTL 1, its header sum "
             "right", syn4(40000, 2), "forward", out4(40000, 1), vip=0,
             out_if=1),
        case("nat-ttl-255", "TTL 255 (the sum's carry): 254",
             syn4(40001, 255), "forward", out4(40001, 254), vip=0,
             out_if=1),
        case("nat-answer-ttl-1", "the real's answer with TTL 1: dropped",
             ans(40000, 1), "drop_ttl_expired", in_if=1),
        case("nat-icmp-ttl-1", "an ICMP error with TTL 1: dropped",
             frag_needed(sa_out[14:], nd.VIP, ttl=1, mac_dst=om,
                         mac_src=nd.ROUTER_MAC, src=nd.ROUTER),
             "drop_ttl_expired", vip=0),
    ]


def sequences():
    """(name, make_core, steps): each runs in order on a fresh core."""
    return [("dr-flows", dr_core, dr_flows()), ("dr-sh", dr_core, dr_sh()),
            ("dr-persist", dr_core, dr_persist()),
            ("dr6", dr_core, dr6()), ("malformed", dr_core, malformed()),
            ("quote-cuts", dr_core, quote_cuts()),
            ("nat6", nat6_core, nat6()), ("nat-ttl", nat_core, nat_ttl())]


def reasons():
    return {c.reason for _, _, steps in sequences() for c in steps}
