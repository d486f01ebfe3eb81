"""Frames for the core microbenchmarks (pyfwd.bench.micro), built with
struct: no scapy, since the installed `pyfwd bench` has no tests.

Ethernet/IPv4 TCP and UDP frames with correct checksums (``ipv4_frame``),
the same frame as many clients send it (``vary``), a real server's answer
(``answer``), the same frame as a veth hands it over when its sender keeps
tx checksum offload on (``unfinished``), and the sets the benchmarks run:
established DR and NAT flows (DR ones of any frame size), NAT SYNs each
opening a flow, malformed frames the parser drops.  A batch is BATCH
frames, a round CALLS batches.
"""

import ipaddress
import struct

from .system import BenchError
from ..frames import mac_to_bytes, mac_to_str
from ..neighbours.icmp import checksum

__all__ = ["BATCH", "CALLS", "LB_MAC", "OUT_MAC", "IN_MAC", "CLIENT_MAC",
           "CLIENT", "VIP", "DR_REALS", "NAT_REALS", "NAT_PORT", "TCP", "UDP",
           "ipv4_frame", "ipv4_parts", "vary", "answer", "unfinished",
           "dr_frames", "nat_frames", "nat_new_frames", "drop_frames"]

BATCH = 64                  # frames per pyfwd_core_burst call
CALLS = 32                  # batches per round

# The lab's addresses (the same values as tests/cases, without importing
# them: the installed `pyfwd bench` has no tests).
LB_MAC = "02:00:00:00:00:02"
OUT_MAC, IN_MAC = "02:00:00:00:01:02", "02:00:00:00:02:01"
CLIENT_MAC = "02:00:00:00:00:01"
CLIENT, VIP = "10.0.0.1", "10.0.0.100"
DR_REALS = {"10.0.0.11": "02:00:00:00:01:11", "10.0.0.12": "02:00:00:00:01:12"}
NAT_REALS = {"192.168.50.11": "02:00:00:00:02:11",
             "192.168.50.12": "02:00:00:00:02:12"}
NAT_PORT = 8080

TCP, UDP = 6, 17
TCP_SYN, TCP_ACK, TCP_PSH = 0x02, 0x10, 0x08


def _pseudo(ip, length):
    """The IPv4 pseudo-header of a TCP/UDP segment of length bytes."""
    return ip[12:20] + struct.pack("!BBH", 0, ip[9], length)


def _l4_csum(ip, l4):
    """The TCP/UDP checksum of segment l4 in IPv4 header ip."""
    s = checksum(_pseudo(ip, len(l4)) + l4)
    return 0xFFFF if s == 0 and ip[9] == UDP else s


def ipv4_frame(dst_mac, src_mac, src, dst, proto, sport, dport,
               flags=TCP_ACK, payload=b""):
    """An Ethernet/IPv4/TCP (or UDP) frame with correct checksums."""
    if proto == TCP:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1000,
                         5000 if flags & TCP_ACK else 0, 5 << 4, flags,
                         65535, 0, 0) + payload
        sum_off = 16
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        sum_off = 6
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1,
                               0x4000, 64, proto, 0,
                               ipaddress.IPv4Address(src).packed,
                               ipaddress.IPv4Address(dst).packed))
    ip[10:12] = struct.pack("!H", checksum(bytes(ip)))
    l4 = bytearray(l4)
    l4[sum_off:sum_off + 2] = struct.pack("!H", _l4_csum(ip, bytes(l4)))
    return (mac_to_bytes(dst_mac) + mac_to_bytes(src_mac) + b"\x08\x00"
            + bytes(ip) + bytes(l4))


def ipv4_parts(frame):
    """(IPv4 header length in bytes, protocol) of an untagged IPv4 frame,
    or None."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[14] >> 4 != 4:
        return None
    return (frame[14] & 15) * 4, frame[23]


def vary(frame, i, checksums=True):
    """frame (untagged IPv4 TCP/UDP) as the i-th of many clients sends it:
    the source address and port changed so that every i is another flow
    (50000 ports per address)."""
    parts = ipv4_parts(frame)
    if parts is None or parts[1] not in (TCP, UDP):
        raise BenchError("vary: expected an untagged IPv4 TCP/UDP frame")
    ihl = parts[0]
    f = bytearray(frame)
    src = int.from_bytes(f[26:30], "big") + i // 50000
    f[26:30] = (src & 0xFFFFFFFF).to_bytes(4, "big")
    f[14 + ihl:16 + ihl] = struct.pack("!H", 10000 + i % 50000)
    if checksums:
        end = 14 + int.from_bytes(f[16:18], "big")
        ip, l4 = f[14:14 + ihl], f[14 + ihl:end]
        sum_off = 16 if parts[1] == TCP else 6
        if parts[1] == TCP or l4[6:8] != b"\0\0":
            l4[sum_off:sum_off + 2] = b"\0\0"
            f[14 + ihl + sum_off:16 + ihl + sum_off] = struct.pack(
                "!H", _l4_csum(ip, bytes(l4)))
        f[24:26] = b"\0\0"
        f[24:26] = struct.pack("!H", checksum(bytes(f[14:14 + ihl])))
    return bytes(f)


def unfinished(frame):
    """frame (untagged IPv4 TCP/UDP, no UDP checksum 0) as a veth hands it
    over when its sender keeps tx checksum offload on: the checksum field
    holds the pseudo-header sum, folded and not complemented (csrc/csum.c:
    what the core completes)."""
    parts = ipv4_parts(frame)
    if parts is None or parts[1] not in (TCP, UDP):
        raise BenchError("unfinished: expected an untagged IPv4 TCP/UDP "
                         "frame")
    ihl, proto = parts
    end = 14 + int.from_bytes(frame[16:18], "big")
    at = 14 + ihl + (16 if proto == TCP else 6)
    field = ~checksum(_pseudo(frame[14:14 + ihl], end - 14 - ihl)) & 0xFFFF
    return frame[:at] + struct.pack("!H", field) + frame[at + 2:]


def answer(frame, flags=TCP_SYN | TCP_ACK):
    """The real server's answer to a frame the core sent it (IPv4)."""
    ihl, proto = ipv4_parts(frame)
    sport, dport = struct.unpack("!HH", frame[14 + ihl:18 + ihl])
    src = str(ipaddress.IPv4Address(frame[30:34]))
    dst = str(ipaddress.IPv4Address(frame[26:30]))
    return ipv4_frame(mac_to_str(frame[6:12]), mac_to_str(frame[0:6]), src,
                      dst, proto, dport, sport, flags)


DR_PAYLOAD = b"GET / HTTP/1.1\r\n"
FRAME_HEADERS = 14 + 20 + 20        # Ethernet, IPv4, TCP: no options


def dr_frames(n=BATCH, size=None):
    """n established flows' packets to VIP:80 (n client ports), of `size`
    bytes of frame each (None: a short request)."""
    payload = DR_PAYLOAD
    if size is not None:
        if size < FRAME_HEADERS:
            raise BenchError(f"a frame of {size} bytes: a TCP/IPv4 frame "
                             f"takes {FRAME_HEADERS} at least")
        payload = (DR_PAYLOAD * (size // len(DR_PAYLOAD) + 1))[
            :size - FRAME_HEADERS]
    return [ipv4_frame(LB_MAC, CLIENT_MAC, CLIENT, VIP, TCP, 40000 + i, 80,
                       TCP_ACK | TCP_PSH, payload)
            for i in range(n)]


def nat_frames(n=BATCH):
    """n NAT flows' client packets to VIP:80."""
    return [ipv4_frame(OUT_MAC, CLIENT_MAC, CLIENT, VIP, TCP, 40000 + i, 80,
                       TCP_ACK | TCP_PSH, b"GET / HTTP/1.1\r\n")
            for i in range(n)]


def nat_new_frames(n=CALLS * BATCH, template=None):
    """n SYNs to VIP:80, each of another client address:port."""
    template = template or ipv4_frame(OUT_MAC, CLIENT_MAC, CLIENT, VIP, TCP,
                                      40000, 80, TCP_SYN)
    return [vary(template, i) for i in range(n)]


def drop_frames():
    """Malformed frames, one per way of being broken the parser checks on
    the way to L4 (each must come out dropped)."""
    good = ipv4_frame(LB_MAC, CLIENT_MAC, CLIENT, VIP, TCP, 40000, 80,
                      TCP_SYN)

    def patch(frame, off, value):
        f = bytearray(frame)
        f[off:off + len(value)] = value
        return bytes(f)

    return [
        good[:13],                              # runt
        patch(good, 14, b"\x55"),               # IPv4 version 5
        patch(good, 14, b"\x44"),               # IHL 4
        patch(good, 16, b"\x05\xdc"),           # total length 1500
        patch(good, 20, b"\x20\x00"),           # MF: a fragment to the VIP
        patch(good, 46, b"\x40"),               # TCP data offset 4
        patch(good[:44], 16, b"\x00\x1e"),     # 10 bytes of TCP header
    ]
