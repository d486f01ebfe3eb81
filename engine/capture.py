"""Packet capture in a namespace lab, at the switch side of each host
interface, like a switch's mirror port; and classic pcap files.

Why the switch side: the balancer forwards with XDP or AF_XDP, so a packet
socket on the balancer's own eth0/eth1 misses most of its traffic (XDP
redirects received frames before the taps; AF_XDP transmits skip them).
Every lab host interface is one end of a veth pair whose other end, named
after the host role, is a port of ``br0`` in a switch namespace (see
pyfwd.lab).  On that port, a frame the bridge transmits (PACKET_OUTGOING)
is one the host receives, and a frame the port receives is one the host
sent.  Frames the bridge floods to the port that the host's NIC would drop
(unicast to another MAC) are left out.

One reader thread drains every socket (epoll); the sockets have a large
receive buffer, so a burst of tens of thousands of frames waits in the
kernel rather than being dropped; ``Capture.drops`` says if any were.
Memory: each kept frame is held (up to ``snaplen`` bytes) until the Capture
is dropped; a small snaplen keeps counting a long transfer cheap.
"""

import os
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Optional, Union

from .errors import LabError

__all__ = ["Frame", "Capture", "write_pcap", "read_pcap", "SNAPLEN"]

SNAPLEN = 65535
RCVBUF = 64 << 20           # per socket; SO_RCVBUFFORCE (root)
SETTLE = 0.05               # stop(): quiet time that ends the last drain
SETTLE_MAX = 1.0            # stop(): longest wait for the sockets to quiet

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_TIMESTAMPNS = 35         # SO_TIMESTAMPNS_OLD: struct timespec, 64-bit
SO_RCVBUFFORCE = 33
_TIMESPEC = struct.Struct("=qq")

PCAP_MAGIC = 0xa1b2c3d4     # microsecond timestamps
PCAP_MAGIC_NS = 0xa1b23c4d
LINKTYPE_ETHERNET = 1
_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")


@dataclass(frozen=True)
class Frame:
    """One frame seen at a host interface."""

    ts: float        # seconds since the epoch (kernel timestamp)
    role: str        # lab role: "client", "lb", "real1", ...
    ifname: str      # the host's interface: "eth0", "eth1"
    sent: bool       # True: the host sent it; False: the host received it
    data: bytes      # the frame, up to snaplen bytes
    wirelen: int     # its length on the wire


# ---------------------------------------------------------------------------
# pcap files (pure)


def write_pcap(path: str, frames: Iterable[Frame],
               snaplen: int = SNAPLEN) -> int:
    """Write ``frames`` in the given order to ``path`` as a classic pcap
    file (LINKTYPE_ETHERNET, microsecond timestamps); returns how many."""
    count = 0
    with open(path, "wb") as f:
        f.write(_PCAP_HEADER.pack(PCAP_MAGIC, 2, 4, 0, 0, snaplen,
                                  LINKTYPE_ETHERNET))
        for frame in frames:
            usec = round(frame.ts * 1_000_000)
            f.write(_PCAP_RECORD.pack(usec // 1_000_000, usec % 1_000_000,
                                      len(frame.data), frame.wirelen))
            f.write(frame.data)
            count += 1
    return count


def read_pcap(path: str) -> list:
    """The records of a classic pcap file as ``(ts, data, wirelen)``
    tuples, in file order.  Reads both byte orders and the microsecond and
    nanosecond variants.  Raises ValueError if it is not such a file."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < _PCAP_HEADER.size:
        raise ValueError(f"{path}: too short for a pcap header")
    for order in "<>":
        magic, = struct.unpack(order + "I", blob[:4])
        if magic in (PCAP_MAGIC, PCAP_MAGIC_NS):
            break
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    scale = 1e-6 if magic == PCAP_MAGIC else 1e-9
    record = struct.Struct(order + "IIII")
    out, pos = [], _PCAP_HEADER.size
    while pos + record.size <= len(blob):
        sec, frac, caplen, wirelen = record.unpack_from(blob, pos)
        pos += record.size
        if pos + caplen > len(blob):
            raise ValueError(f"{path}: truncated record at byte {pos}")
        out.append((sec + frac * scale, blob[pos:pos + caplen], wirelen))
        pos += caplen
    return out


# ---------------------------------------------------------------------------
# Capturing in a lab


@dataclass
class _Tap:
    """One packet socket on the switch port of (role, ifname)."""

    role: str
    ifname: str
    mac: bytes
    switch_role: str
    port: str
    sock: Optional[socket.socket] = None
    frames: list = None         # (ts, sent, data, wirelen)
    drops: int = 0


def _mac_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class Capture:
    """Capture every frame each of ``roles``' interfaces sends or receives.

    ``roles``: lab roles ("client", "lb", "real1", ...), each captured on
    all its interfaces.  ``snaplen``: bytes kept of each frame (its wire
    length is always kept).  Nothing happens until ``__enter__`` (or
    ``start()``); ``stop()``, also called on ``__exit__``, waits for the
    sockets to quiet, reads what is left and closes them.

    Raises LabError for an unknown role; OSError if a socket cannot be
    opened (needs root, and the lab up).
    """

    def __init__(self, lab, roles, snaplen: int = SNAPLEN,
                 rcvbuf: int = RCVBUF):
        if isinstance(roles, str):
            roles = [roles]
        self._lab = lab
        self._snaplen = snaplen
        self._rcvbuf = rcvbuf
        self._taps = []
        for role in roles:
            node = lab.node(role)
            if node.kind != "host":
                raise LabError(f"cannot capture on {role!r}: it is a "
                               f"switch, capture its hosts")
            for iface in node.interfaces:
                self._taps.append(_Tap(role, iface.name,
                                       _mac_bytes(iface.mac), iface.switch,
                                       iface.port, frames=[]))
        self._thread = None
        self._wake_r = self._wake_w = None
        self._stopping = False
        self._stopped = False

    # -- life cycle

    def start(self) -> "Capture":
        """Open the sockets and start the reader thread; returns self."""
        if self._thread is not None or self._stopped:
            raise LabError("a Capture starts once")
        try:
            for tap in self._taps:
                tap.sock = self._open(tap)
        except BaseException:
            self._close()
            raise
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._reader, daemon=True,
                                        name=f"pyfwd-capture:{self._lab.name}")
        self._thread.start()
        return self

    def _open(self, tap: _Tap) -> socket.socket:
        # protocol 0 receives nothing until bind() names the port: no frame
        # from another port of the switch slips in
        sock = self._lab.socket(tap.switch_role, socket.AF_PACKET,
                                socket.SOCK_RAW, 0)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self._rcvbuf)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            # the interface name is resolved in the socket's namespace
            sock.bind((tap.port, ETH_P_ALL))
            sock.setblocking(False)
            # zero the drop counter: it counts from bind()
            sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except BaseException:
            sock.close()
            raise
        return sock

    def stop(self) -> None:
        """Stop capturing: wait until no frame came for SETTLE seconds (at
        most SETTLE_MAX), read the rest, close the sockets, join the
        thread.  Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._stopping = True
            os.write(self._wake_w, b"x")
            self._thread.join()
        self._close()

    def _close(self) -> None:
        for tap in self._taps:
            if tap.sock is not None:
                try:
                    _, drops = struct.unpack("=II", tap.sock.getsockopt(
                        SOL_PACKET, PACKET_STATISTICS, 8))
                    tap.drops += drops
                except OSError:
                    pass            # closed under us by Lab.down()
                tap.sock.close()
                tap.sock = None
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)
        self._wake_r = self._wake_w = None

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- the reader

    def _reader(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            for tap in self._taps:
                sel.register(tap.sock, selectors.EVENT_READ, tap)
            sel.register(self._wake_r, selectors.EVENT_READ, None)
            buf = bytearray(self._snaplen)
            anc = socket.CMSG_SPACE(_TIMESPEC.size)
            while not self._stopping:
                for key, _ in sel.select():
                    if key.data is not None:
                        self._drain(key.data, buf, anc)
            # the last frames: until the sockets have been quiet a moment
            begin = quiet_since = time.monotonic()
            while True:
                got = sum(self._drain(tap, buf, anc) for tap in self._taps)
                now = time.monotonic()
                if got:
                    quiet_since = now
                if now - quiet_since >= SETTLE or now - begin >= SETTLE_MAX:
                    break
                time.sleep(0.005)
        except OSError:
            pass        # a socket closed under us (Lab.down()): keep the rest
        finally:
            sel.close()

    def _drain(self, tap: _Tap, buf: bytearray, anc: int) -> int:
        """Read every frame waiting on tap's socket; how many were read."""
        sock, keep, mac = tap.sock, tap.frames.append, tap.mac
        snaplen, n = self._snaplen, 0
        while True:
            try:
                size, ancdata, _, addr = sock.recvmsg_into(
                    [buf], anc, socket.MSG_TRUNC)
            except BlockingIOError:
                return n
            n += 1
            data = bytes(buf[:min(size, snaplen)])
            sent = addr[2] != PACKET_OUTGOING
            # what the bridge sends the host: keep what its NIC would take
            if not sent and data[:6] != mac and not data[0] & 1:
                continue
            ts = time.time()
            for level, kind, value in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack(value[:_TIMESPEC.size])
                    ts = sec + nsec * 1e-9
            keep((ts, sent, data, size))

    # -- results

    @property
    def drops(self) -> int:
        """Frames the kernel dropped because a socket buffer was full
        (known after stop(); 0 means the capture is complete)."""
        return sum(tap.drops for tap in self._taps)

    def frames(self, role: Optional[str] = None) -> list:
        """The frames of ``role`` (all roles if None), in time order.
        Call after stop() for the complete list."""
        out = [Frame(ts, tap.role, tap.ifname, sent, data, wirelen)
               for tap in self._taps if role is None or tap.role == role
               for ts, sent, data, wirelen in list(tap.frames)]
        out.sort(key=lambda f: f.ts)
        return out

    def write_pcap(self, path: str, roles: Union[str, Iterable[str]]) -> int:
        """Write the frames of ``roles`` (one role or several), in time
        order, to ``path`` as a classic pcap file; returns the count."""
        if isinstance(roles, str):
            roles = [roles]
        roles = set(roles)
        return write_pcap(path, [f for f in self.frames() if f.role in roles],
                          self._snaplen)
