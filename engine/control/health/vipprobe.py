"""``via_vip``: a DR real server's check through the VIP, as clients reach
it, so that a real server that lost the VIP from its lo is taken out.

A DR real server answers at the VIP only while the VIP is on its lo; its
own address keeps answering the ordinary checks without it.  The balancer's
kernel cannot simply connect to the VIP (pyfwd answers for it, or no route
leads to a real), so the probe writes the frames itself:

1. a TCP SYN from the balancer's own address (the interface's, on the
   real's subnet) and a port the kernel reserved for it (a bound socket)
   to VIP:port, sent through a packet socket to the real server's MAC
   (the engine's next hop, as the data plane would send a client's SYN);
2. waits for the answer from VIP:port to that port on a packet socket with
   a classic BPF filter that lets only those frames in: a SYN-ACK acking
   our SYN from the real's MAC is up; an RST is down (nothing listens);
   no answer within the timeout is down (no VIP on lo: the real drops it);
   a SYN-ACK from another MAC is down too (the real forwarded the SYN);
3. sends an RST to whoever sent the SYN-ACK, closing the half-open
   connection on it (the balancer's kernel also answers the SYN-ACK with an
   RST, as no socket is connected there; it may not reach the real).

A handshake, not a conversation: an HTTP or DICOM check through the VIP
would need a whole TCP stack.  The configured check (http, dicom, ...)
still runs against the real's own address first; both must pass, each
within the spec's timeout.  The answer goes to the balancer's own address
and a port below the SNAT range (model.SNAT_PORTS, above the kernel's
ephemeral ports), so the XDP program passes it to the kernel, where the
packet socket sees it.  IPv4 DR VIPs over TCP, untagged frames only;
``check_via_vip`` refuses the rest.
"""

import ipaddress
import secrets
import socket
import struct
import time

from pyroute2 import IPRoute

from .probes import check as _check
from .spec import target_address
from ...errors import ConfigError, PyfwdError
from ...frames import ETH_P_IP, eth_header, mac_to_str
from ...model import Vip
from ...neighbours.framesocket import FrameSocket
from ...neighbours.icmp import checksum
from ...neighbours.kernel import ifindex, primary_ipv4, source_ipv4

__all__ = ["check_via_vip", "checker", "probe", "syn_frame", "rst_frame",
           "answer", "answer_filter"]

_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")      # ports, seq, ack, offset, flags, ...
_SYN, _RST, _ACK = 0x02, 0x04, 0x10
_TTL = 64
_WINDOW = 1024


def check_via_vip(where, mode, vip):
    """ConfigError unless a VIP of ``mode`` at ``vip`` (model.Vip) can take
    ``via_vip``: DR, TCP, IPv4."""
    if mode != "dr":
        raise ConfigError(f"{where}.via_vip = true: only for mode = \"dr\" "
                          f"(this VIP's mode is {mode!r}; its real servers "
                          "do not own the VIP)")
    if vip.protocol != "tcp":
        raise ConfigError(f"{where}.via_vip = true: a TCP handshake, for "
                          f"TCP VIPs only (this one is {vip.protocol})")
    if vip.address.version != 4:
        raise ConfigError(f"{where}.via_vip = true: IPv4 VIPs only (not "
                          "yet for IPv6)")


def _frame(dst_mac, src_mac, src, dst, sport, dport, seq, ack, flags):
    """An Ethernet/IPv4/TCP frame without payload, checksums filled in."""
    src, dst = src.packed, dst.packed
    tcp = bytearray(_TCP.pack(sport, dport, seq, ack, 5 << 4, flags,
                              _WINDOW, 0, 0))
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    struct.pack_into("!H", tcp, 16, checksum(pseudo + tcp))
    ip = bytearray(_IP.pack(0x45, 0, _IP.size + len(tcp), 0, 0x4000, _TTL,
                            socket.IPPROTO_TCP, 0, src, dst))
    struct.pack_into("!H", ip, 10, checksum(ip))
    return eth_header(dst_mac, src_mac, ETH_P_IP) + bytes(ip) + bytes(tcp)


def syn_frame(dst_mac, src_mac, src, vip, sport, port, seq):
    """Our SYN (src, sport) -> (vip, port), to the real's MAC."""
    return _frame(dst_mac, src_mac, src, vip, sport, port, seq, 0, _SYN)


def rst_frame(dst_mac, src_mac, src, vip, sport, port, seq):
    """The RST that ends the half-open connection its SYN-ACK opened;
    ``seq`` is what the SYN-ACK acked."""
    return _frame(dst_mac, src_mac, src, vip, sport, port, seq, 0, _RST)


def answer(frame, src, vip, sport, port, seq):
    """What ``frame`` says to our SYN (seq ``seq``): ("synack" | "rst",
    source MAC) when it is a SYN-ACK acking it or an RST from vip:port to
    src:sport, else None.  Never raises for bad bytes."""
    if len(frame) < 14 + _IP.size + _TCP.size or \
            frame[12:14] != ETH_P_IP.to_bytes(2, "big"):
        return None
    ihl = (frame[14] & 0x0f) * 4
    (vihl, _, _, _, frag, _, proto, _, s, d) = _IP.unpack_from(frame, 14)
    if (vihl >> 4 != 4 or ihl < 20 or proto != socket.IPPROTO_TCP
            or frag & 0x1fff or s != vip.packed or d != src.packed
            or len(frame) < 14 + ihl + _TCP.size):
        return None
    tsport, tdport, _, ack, _, flags, _, _, _ = _TCP.unpack_from(
        frame, 14 + ihl)
    if tsport != port or tdport != sport:
        return None
    mac = bytes(frame[6:12])
    if flags & _RST:
        return "rst", mac
    if flags & (_SYN | _ACK) == _SYN | _ACK and ack == (seq + 1) & 0xffffffff:
        return "synack", mac
    return None


def answer_filter(vip, port, sport):
    """A classic BPF program that passes only IPv4 TCP frames from
    vip:port to port ``sport`` (unfragmented, untagged)."""
    vip = int(ipaddress.IPv4Address(vip))
    return [
        (0x28, 0, 0, 12),               # ldh [12]: ethertype
        (0x15, 0, 12, ETH_P_IP),        # jeq IPv4 or drop
        (0x20, 0, 0, 26),               # ld [26]: source address
        (0x15, 0, 10, vip),             # jeq vip or drop
        (0x30, 0, 0, 23),               # ldb [23]: protocol
        (0x15, 0, 8, socket.IPPROTO_TCP),
        (0x28, 0, 0, 20),               # ldh [20]: flags, fragment offset
        (0x45, 6, 0, 0x1fff),           # jset offset: drop
        (0xb1, 0, 0, 14),               # ldxb 4*([14]&0xf): x = IHL
        (0x48, 0, 0, 14),               # ldh [x+14]: source port
        (0x15, 0, 3, port),
        (0x48, 0, 0, 16),               # ldh [x+16]: destination port
        (0x15, 0, 1, sport),
        (0x06, 0, 0, 0xffff),           # ret: take it
        (0x06, 0, 0, 0),                # ret: drop
    ]


def _source(ifname, real):
    """The balancer's address toward ``real`` on ``ifname``: its address
    on the real's subnet, else its first IPv4 address; None if none."""
    with IPRoute() as ipr:
        src = source_ipv4(ipr, ifindex(ipr, ifname), real)
    return src if int(src) else primary_ipv4(ifname)


def probe(ifname, real_mac, real, vip, port, timeout, *, source=None):
    """One SYN to vip:port through ``real_mac`` on ``ifname`` (see the
    module's docstring), from ``source`` (default: the balancer's address
    toward ``real``).  Returns (ok, detail); never raises for a failing
    peer."""
    t0 = time.monotonic()
    end = t0 + timeout
    try:
        src = source or _source(ifname, real)
    except (PyfwdError, OSError) as exc:
        return False, f"no source address on {ifname}: {exc}"
    if src is None:
        return False, f"{ifname} has no IPv4 address to send from"
    where = f"{vip}:{port} through {mac_to_str(real_mac)}"
    seq = secrets.randbits(32)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as reserve:
        try:
            reserve.bind((str(src), 0))     # the port is ours meanwhile
            sport = reserve.getsockname()[1]
            with FrameSocket(ifname, ETH_P_IP,
                             answer_filter(vip, port, sport)) as fs:
                fs.send(syn_frame(real_mac, fs.mac, src, vip, sport, port,
                                  seq))
                for frame in fs.recv_until(end):
                    got = answer(frame, src, vip, sport, port, seq)
                    if got is None:
                        continue
                    kind, mac = got
                    if kind == "rst":
                        return False, (f"RST from {where}: nothing listens "
                                       f"at the VIP on port {port}")
                    fs.send(rst_frame(mac, fs.mac, src, vip, sport, port,
                                      seq + 1 & 0xffffffff))
                    if mac != real_mac:
                        return False, (f"SYN-ACK from {vip}:{port} came from "
                                       f"{mac_to_str(mac)}, not the real "
                                       f"({mac_to_str(real_mac)}): is "
                                       f"{vip} on its lo?")
                    ms = (time.monotonic() - t0) * 1e3
                    return True, f"SYN-ACK from {where} in {ms:.1f} ms"
        except (PyfwdError, OSError) as exc:
            return False, f"{where}: {exc}"
    return False, (f"no answer from {where} in {timeout:g} s: is {vip} on "
                   "the real's lo?")


def checker(hop, check=_check):
    """A HealthMonitor check: ``check`` (probes.check) and then, for a spec
    with ``via_vip``, probe() through ``hop(address)`` -> (interface name,
    the real's MAC or None), which the engine gives (its next hops).  The
    VIP comes as the monitor's ``vip`` argument (its text,
    ADDR:PORT/tcp)."""
    def run(spec, address, port, vip=None):
        ok, detail = check(spec, address, port, vip)
        if not ok or not spec.via_vip:
            return ok, detail
        addr = target_address(address)
        ifname, mac = hop(addr)
        if mac is None:
            return False, f"{detail}; at the VIP: no MAC known for {addr}"
        if vip is None:
            return False, f"{detail}; at the VIP: no VIP given"
        v = vip if isinstance(vip, Vip) else Vip.parse(str(vip))
        ok, more = probe(ifname, mac, addr, v.address,
                         spec.check_port(port), spec.timeout)
        return ok, f"{detail}; at the VIP: {more}"
    return run
