"""NAT and SNAT packet cases: a flow's frames in order, both directions,
TCP and UDP, with and without port translation, and ICMP errors about a
translated flow.  Expected frames are built by scapy (so their checksums
are right) and compared byte for byte."""

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pyfwd.model import Real, Service, Vip
from pyfwd.frames import mac_to_bytes

from .harness import Case

OUT_MAC, IN_MAC = "02:00:00:00:01:02", "02:00:00:00:02:01"   # lb
CLIENT_MAC, ROUTER_MAC = "02:00:00:00:01:01", "02:00:00:00:01:fe"
REAL1_MAC, REAL2_MAC = "02:00:00:00:02:11", "02:00:00:00:02:12"
SREAL_MAC = "02:00:00:00:01:11"
CLIENT, ROUTER, VIP, SVIP = "10.0.0.1", "10.0.0.254", "10.0.0.100", \
    "10.0.0.101"
REAL1, REAL2, SREAL, SNAT = "192.168.50.11", "192.168.50.12", \
    "10.0.0.11", "10.0.0.2"
SNAT_PORTS = (61000, 61001)

WEB = Vip.parse(f"{VIP}:80/tcp")        # NAT, 80 -> 8080
DNS = Vip.parse(f"{VIP}:53/udp")        # NAT, no port translation
SWEB = Vip.parse(f"{SVIP}:80/tcp")      # SNAT, 80 -> 8080
SDNS = Vip.parse(f"{SVIP}:53/udp")      # SNAT
SERVICES = [Service(WEB, [Real.parse(f"{REAL1}:8080")], "wrr", "nat"),
            Service(DNS, [Real.parse(REAL2)], "wrr", "nat"),
            Service(SWEB, [Real.parse(f"{SREAL}:8080")], "wrr", "snat"),
            Service(SDNS, [Real.parse(SREAL)], "wrr", "snat")]


MACS = {Real(REAL1).address: mac_to_bytes(REAL1_MAC),
        Real(REAL2).address: mac_to_bytes(REAL2_MAC),
        Real(SREAL).address: mac_to_bytes(SREAL_MAC)}
OUT_IFS = {Real(REAL1).address: 1, Real(REAL2).address: 1,
           Real(SREAL).address: 0}


# three NAT reals of 8080 behind one interface, for the tests that spread
# many flows (tests/unit/test_nat_core.py, tests/cases/test_handoff.py)
POOL = [Real.parse(f"192.168.50.{10 + i}:8080") for i in (1, 2, 3)]
POOL_MACS = {r.address: bytes([2, 0, 0, 0, 2, 0x10 + i])
             for i, r in enumerate(POOL, start=1)}
POOL_OUT_IFS = {r.address: 1 for r in POOL}


def tcp(src, sport, dst, dport, flags, mac_dst, mac_src, payload=b""):
    return bytes(Ether(dst=mac_dst, src=mac_src) / IP(src=src, dst=dst)
                 / TCP(sport=sport, dport=dport, flags=flags, seq=1000,
                       ack=0 if flags == "S" else 5000)
                 / (Raw(payload) if payload else b""))


def seg(vip, sport, flags="S", client=CLIENT):
    """A client's TCP segment to vip (a Vip) from port sport."""
    return tcp(client, sport, vip.address.compressed, vip.port, flags,
               OUT_MAC, CLIENT_MAC)


def answer(frame_out, flags="SA"):
    """The real server's answer to a frame the core sent it."""
    p = Ether(frame_out)
    return bytes(Ether(dst=p.src, src=p.dst)
                 / IP(src=p[IP].dst, dst=p[IP].src)
                 / TCP(sport=p[TCP].dport, dport=p[TCP].sport, flags=flags))


def udp(src, sport, dst, dport, mac_dst, mac_src, payload=b"q",
        chksum=None):
    u = UDP(sport=sport, dport=dport)
    if chksum is not None:
        u.chksum = chksum
    return bytes(Ether(dst=mac_dst, src=mac_src) / IP(src=src, dst=dst) / u
                 / Raw(payload))


def ip_of(frame):
    """The IP packet inside an Ethernet frame."""
    return frame[14:]


def icmp_err(src, dst, quoted, mac_dst, mac_src, mtu=1400):
    """A frag-needed from src to dst quoting the IP packet `quoted`."""
    return bytes(Ether(dst=mac_dst, src=mac_src) / IP(src=src, dst=dst)
                 / ICMP(type=3, code=4, nexthopmtu=mtu) / Raw(quoted))


def routed(frame):
    """frame as a router sends it on: NAT and SNAT route, so the TTL (the
    IPv4 header checksum recomputed) or hop limit is one less."""
    from scapy.layers.inet6 import IPv6
    p = Ether(frame)
    if p.haslayer(IPv6):
        p[IPv6].hlim -= 1
    else:
        p[IP].ttl -= 1
        del p[IP].chksum
    return bytes(p)


def step(name, description, frame, reason, out=None, in_if=0, out_if=None,
         vip=None):
    """Every frame NAT/SNAT sends on is routed (routed(out))."""
    return Case(name, description, frame, reason, vip=vip,
                out=None if out is None else routed(out), in_if=in_if,
                out_if=out_if)


def nat_tcp():
    syn = tcp(CLIENT, 40000, VIP, 80, "S", OUT_MAC, CLIENT_MAC)
    syn_out = tcp(CLIENT, 40000, REAL1, 8080, "S", REAL1_MAC, IN_MAC)
    sa = tcp(REAL1, 8080, CLIENT, 40000, "SA", IN_MAC, REAL1_MAC)
    sa_out = tcp(VIP, 80, CLIENT, 40000, "SA", CLIENT_MAC, OUT_MAC)
    data = tcp(CLIENT, 40000, VIP, 80, "PA", OUT_MAC, CLIENT_MAC, b"GET /")
    data_out = tcp(CLIENT, 40000, REAL1, 8080, "PA", REAL1_MAC, IN_MAC,
                   b"GET /")
    return [
        step("nat-syn", "client SYN to VIP:80 -> real:8080 (inside)", syn,
             "forward", syn_out, 0, 1, vip=0),
        step("nat-synack", "the real's SYN-ACK -> from VIP:80 to client",
             sa, "forward_reply", sa_out, 1, 0),
        step("nat-data", "the client's data follows the flow", data,
             "forward", data_out, 0, 1, vip=0),
        # A router near the client cannot pass our reply (VIP -> client):
        # its frag-needed reaches the VIP and must reach the real, quoting
        # the packet as the real sent it.
        step("nat-icmp-to-vip", "frag-needed about a reply, to the VIP",
             icmp_err(ROUTER, VIP, ip_of(sa_out), OUT_MAC, ROUTER_MAC),
             "forward_icmp",
             icmp_err(ROUTER, REAL1, ip_of(sa), REAL1_MAC, IN_MAC), 0, 1,
             vip=0),
        # A router on the inside cannot pass the translated request: its
        # frag-needed goes to the client, quoting what the client sent.
        step("nat-icmp-to-client", "frag-needed about a request, inside",
             icmp_err("192.168.50.254", CLIENT, ip_of(syn_out), IN_MAC,
                      "02:00:00:00:02:fe"),
             "forward_icmp",
             icmp_err("192.168.50.254", CLIENT, ip_of(syn), CLIENT_MAC,
                      OUT_MAC), 1, 0),
        step("nat-stray-reply", "an answer of no flow: dropped (steered "
             "to us, the kernel never has it)",
             tcp(REAL1, 8080, CLIENT, 40001, "SA", IN_MAC, REAL1_MAC),
             "drop_no_flow", in_if=1),
    ]


def nat_udp():
    q = udp(CLIENT, 5353, VIP, 53, OUT_MAC, CLIENT_MAC)
    q_out = udp(CLIENT, 5353, REAL2, 53, REAL2_MAC, IN_MAC)
    a = udp(REAL2, 53, CLIENT, 5353, IN_MAC, REAL2_MAC, b"answer")
    a_out = udp(VIP, 53, CLIENT, 5353, CLIENT_MAC, OUT_MAC, b"answer")
    z = udp(CLIENT, 5354, VIP, 53, OUT_MAC, CLIENT_MAC, chksum=0)
    z_out = udp(CLIENT, 5354, REAL2, 53, REAL2_MAC, IN_MAC, chksum=0)
    return [
        step("nat-udp-query", "UDP to VIP:53 -> real:53 (no port change)",
             q, "forward", q_out, 0, 1, vip=1),
        step("nat-udp-answer", "the answer, from VIP:53", a,
             "forward_reply", a_out, 1, 0),
        step("nat-udp-zero-sum", "a UDP checksum of 0 stays 0", z,
             "forward", z_out, 0, 1, vip=1),
    ]


def snat_tcp():
    p0 = SNAT_PORTS[0]
    syn = tcp(CLIENT, 40000, SVIP, 80, "S", OUT_MAC, CLIENT_MAC)
    syn_out = tcp(SNAT, p0, SREAL, 8080, "S", SREAL_MAC, OUT_MAC)
    sa = tcp(SREAL, 8080, SNAT, p0, "SA", OUT_MAC, SREAL_MAC)
    sa_out = tcp(SVIP, 80, CLIENT, 40000, "SA", CLIENT_MAC, OUT_MAC)
    return [
        step("snat-syn", "SYN -> from our address and port to real:8080",
             syn, "forward", syn_out, 0, 0, vip=2),
        step("snat-synack", "the answer to our port -> VIP:80 to client",
             sa, "forward_reply", sa_out, 0, 0),
        # the client's ACK completes the handshake: established, the flow
        # keeps its port (a half-open one would give it up to a new flow)
        step("snat-ack", "the client's ACK -> from our port to real:8080",
             tcp(CLIENT, 40000, SVIP, 80, "A", OUT_MAC, CLIENT_MAC),
             "forward", tcp(SNAT, p0, SREAL, 8080, "A", SREAL_MAC, OUT_MAC),
             0, 0, vip=2),
        step("snat-icmp-to-vip", "frag-needed about a reply, to the VIP",
             icmp_err(ROUTER, SVIP, ip_of(sa_out), OUT_MAC, ROUTER_MAC),
             "forward_icmp",
             icmp_err(ROUTER, SREAL, ip_of(sa), SREAL_MAC, OUT_MAC), 0, 0,
             vip=2),
        step("snat-icmp-to-us", "frag-needed about a request, to us",
             icmp_err(ROUTER, SNAT, ip_of(syn_out), OUT_MAC, ROUTER_MAC),
             "forward_icmp",
             icmp_err(ROUTER, CLIENT, ip_of(syn), CLIENT_MAC, OUT_MAC), 0,
             0),
    ]


def snat_udp():
    p1 = SNAT_PORTS[1]
    q = udp(CLIENT, 7000, SVIP, 53, OUT_MAC, CLIENT_MAC)
    q_out = udp(SNAT, p1, SREAL, 53, SREAL_MAC, OUT_MAC)
    a = udp(SREAL, 53, SNAT, p1, OUT_MAC, SREAL_MAC, b"answer")
    a_out = udp(SVIP, 53, CLIENT, 7000, CLIENT_MAC, OUT_MAC, b"answer")
    return [
        step("snat-udp-query", "UDP -> from our second port", q, "forward",
             q_out, 0, 0, vip=3),
        step("snat-udp-answer", "the answer, back to the client", a,
             "forward_reply", a_out, 0, 0),
        step("snat-ports-full", "a third flow: both SNAT ports are taken",
             udp(CLIENT, 7001, SVIP, 53, OUT_MAC, CLIENT_MAC),
             "drop_ports_full", vip=3),
    ]


def sequences():
    """(name, steps): each runs in order on a fresh core."""
    return [("nat-tcp", nat_tcp()), ("nat-udp", nat_udp()),
            ("snat-tcp+udp", snat_tcp() + snat_udp())]
