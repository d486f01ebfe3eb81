"""``via_vip``: a DR real server's check through the VIP, as clients reach
it, so that a real server that lost the VIP from its lo is taken out.

A DR real server answers at the VIP only while the VIP is on its lo; its
own address keeps answering the ordinary checks without it.  The balancer's
kernel cannot simply connect to the VIP (pyfwd answers for it, or no route
leads to a real), so the probe writes the frames itself:

1. a TCP SYN from the balancer's own address (the kernel's source address
   toward the real) and a port the kernel reserved for it (a bound socket)
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
packet socket sees it.  DR VIPs over TCP, IPv4 or IPv6 (an answer with
IPv6 extension headers is not recognised), untagged frames only;
``check_via_vip`` refuses other modes and UDP.
"""

import ipaddress
import secrets
import socket
import struct
import time

from .probes import check as _check
from .spec import target_address
from ...errors import ConfigError, PyfwdError
from ...frames import ETH_P_IP, ETH_P_IPV6, eth_header, mac_to_str
from ...model import Vip, hostport
from ...neighbours.framesocket import FrameSocket
from ...neighbours.icmp import checksum

__all__ = ["check_via_vip", "checker", "probe", "syn_frame", "rst_frame",
           "answer", "answer_filter"]

_IP = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")     # version/class/flow, length, next
_TCP = struct.Struct("!HHIIBBHHH")      # ports, seq, ack, offset, flags, ...
_SYN, _RST, _ACK = 0x02, 0x04, 0x10
_TTL = 64
_WINDOW = 1024
_ETH = 14


def check_via_vip(where, mode, vip):
    """ConfigError unless a VIP of ``mode`` at ``vip`` (model.Vip) can take
    ``via_vip``: DR and TCP."""
    if mode != "dr":        # TUN's reals are not on our segment
        raise ConfigError(f"{where}.via_vip = true: only for mode = \"dr\" "
                          f"(this VIP's mode is {mode!r}; its real servers "
                          "do not own the VIP)")
    if vip.protocol != "tcp":
        raise ConfigError(f"{where}.via_vip = true: a TCP handshake, for "
                          f"TCP VIPs only (this one is {vip.protocol})")


def _frame(dst_mac, src_mac, src, dst, sport, dport, seq, ack, flags):
    """An Ethernet/IPv4 or IPv6/TCP frame without payload, checksums
    filled in."""
    tcp = bytearray(_TCP.pack(sport, dport, seq, ack, 5 << 4, flags,
                              _WINDOW, 0, 0))
    if src.version == 4:
        pseudo = struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
        ip = bytearray(_IP.pack(0x45, 0, _IP.size + len(tcp), 0, 0x4000,
                                _TTL, socket.IPPROTO_TCP, 0, src.packed,
                                dst.packed))
        struct.pack_into("!H", ip, 10, checksum(ip))
    else:
        pseudo = struct.pack("!I3xB", len(tcp), socket.IPPROTO_TCP)
        ip = _IP6.pack(6 << 28, len(tcp), socket.IPPROTO_TCP, _TTL,
                       src.packed, dst.packed)
    struct.pack_into("!H", tcp, 16,
                     checksum(src.packed + dst.packed + pseudo + tcp))
    return eth_header(dst_mac, src_mac, ETH_P_IP if src.version == 4
                      else ETH_P_IPV6) + bytes(ip) + bytes(tcp)


def syn_frame(dst_mac, src_mac, src, vip, sport, port, seq):
    """Our SYN (src, sport) -> (vip, port), to the real's MAC."""
    return _frame(dst_mac, src_mac, src, vip, sport, port, seq, 0, _SYN)


def rst_frame(dst_mac, src_mac, src, vip, sport, port, seq):
    """The RST that ends the half-open connection its SYN-ACK opened;
    ``seq`` is what the SYN-ACK acked."""
    return _frame(dst_mac, src_mac, src, vip, sport, port, seq, 0, _RST)


def _tcp_offset(frame, src, vip):
    """Where the TCP header of an unfragmented frame from vip to src
    starts (no IPv6 extension header), or None."""
    if src.version == 4:
        if len(frame) < _ETH + _IP.size or \
                frame[12:14] != ETH_P_IP.to_bytes(2, "big"):
            return None
        vihl, _, _, _, frag, _, proto, _, s, d = _IP.unpack_from(frame, _ETH)
        ihl = (vihl & 0x0f) * 4
        ok = vihl >> 4 == 4 and ihl >= 20 and not frag & 0x1fff
    else:
        if len(frame) < _ETH + _IP6.size or \
                frame[12:14] != ETH_P_IPV6.to_bytes(2, "big"):
            return None
        vtf, _, proto, _, s, d = _IP6.unpack_from(frame, _ETH)
        ihl, ok = _IP6.size, vtf >> 28 == 6
    if (not ok or proto != socket.IPPROTO_TCP or s != vip.packed
            or d != src.packed or len(frame) < _ETH + ihl + _TCP.size):
        return None
    return _ETH + ihl


def answer(frame, src, vip, sport, port, seq):
    """What ``frame`` says to our SYN (seq ``seq``): ("synack" | "rst",
    source MAC) when it is a SYN-ACK acking it or an RST from vip:port to
    src:sport (IPv4 or IPv6, as src and vip), else None.  Never raises for
    bad bytes."""
    off = _tcp_offset(frame, src, vip)
    if off is None:
        return None
    tsport, tdport, _, ack, _, flags, _, _, _ = _TCP.unpack_from(frame, off)
    if tsport != port or tdport != sport:
        return None
    mac = bytes(frame[6:12])
    if flags & _RST:
        return "rst", mac
    if flags & (_SYN | _ACK) == _SYN | _ACK and ack == (seq + 1) & 0xffffffff:
        return "synack", mac
    return None


_DROP = "drop"


def answer_filter(vip, port, sport):
    """A classic BPF program that passes only the TCP frames from vip:port
    to port ``sport``: IPv4 unfragmented, IPv6 without extension headers,
    untagged."""
    vip = ipaddress.ip_address(vip)
    ldh, ldw, ldb, jeq = 0x28, 0x20, 0x30, 0x15
    if vip.version == 4:
        prog = [(ldh, 0, 0, 12), (jeq, 0, _DROP, ETH_P_IP),
                (ldw, 0, 0, 26), (jeq, 0, _DROP, int(vip)),
                (ldb, 0, 0, 23), (jeq, 0, _DROP, socket.IPPROTO_TCP),
                (ldh, 0, 0, 20), (0x45, _DROP, 0, 0x1fff),   # jset: a piece
                (0xb1, 0, 0, _ETH),             # ldxb 4*([14]&0xf): x = IHL
                (0x48, 0, 0, _ETH), (jeq, 0, _DROP, port),   # ldh [x+14]
                (0x48, 0, 0, _ETH + 2), (jeq, 0, _DROP, sport)]
    else:
        prog = [(ldh, 0, 0, 12), (jeq, 0, _DROP, ETH_P_IPV6)]
        for i in range(4):
            word = int.from_bytes(vip.packed[4 * i:4 * i + 4], "big")
            prog += [(ldw, 0, 0, 22 + 4 * i), (jeq, 0, _DROP, word)]
        tcp = _ETH + _IP6.size
        prog += [(ldb, 0, 0, 20), (jeq, 0, _DROP, socket.IPPROTO_TCP),
                 (ldh, 0, 0, tcp), (jeq, 0, _DROP, port),
                 (ldh, 0, 0, tcp + 2), (jeq, 0, _DROP, sport)]
    prog += [(0x06, 0, 0, 0xffff), (0x06, 0, 0, 0)]     # ret: take, drop
    drop = len(prog) - 1
    return [(code, drop - i - 1 if jt == _DROP else jt,
             drop - i - 1 if jf == _DROP else jf, k)
            for i, (code, jt, jf, k) in enumerate(prog)]


def _source(real):
    """The balancer's address toward ``real`` (the kernel's choice, as for
    a connection; no packet is sent)."""
    family = socket.AF_INET if real.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((str(real), 9))
        return ipaddress.ip_address(s.getsockname()[0].split("%")[0])


def probe(ifname, real_mac, real, vip, port, timeout, *, source=None):
    """One SYN to vip:port through ``real_mac`` on ``ifname`` (see the
    module's docstring), from ``source`` (default: the kernel's source
    address toward ``real``).  Returns (ok, detail); never raises for a
    failing peer."""
    t0 = time.monotonic()
    end = t0 + timeout
    if vip.version != real.version:
        return False, f"the VIP {vip} and the real {real}: not one family"
    try:
        src = source or _source(real)
    except OSError as exc:
        return False, f"no address toward {real}: {exc.strerror or exc}"
    at = hostport(vip, port)
    where = f"{at} through {mac_to_str(real_mac)}"
    seq = secrets.randbits(32)
    family = socket.AF_INET if src.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_STREAM) as reserve:
        try:
            reserve.bind((str(src), 0))     # the port is ours meanwhile
            sport = reserve.getsockname()[1]
            with FrameSocket(ifname, ETH_P_IP if src.version == 4
                             else ETH_P_IPV6,
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
                        return False, (f"SYN-ACK from {at} came from "
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
