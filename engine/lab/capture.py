"""Packet capture in a namespace lab, at the switch side of each host
interface, like a switch's mirror port; classic pcap files; and the one
validating Ethernet/IPv4/TCP header parser the lab lessons share.

Why the switch side: the balancer forwards with XDP or AF_XDP, so a packet
socket on the balancer's own eth0/eth1 misses most of its traffic (XDP
redirects received frames before the taps; AF_XDP transmits skip them).
Every lab host interface is one end of a veth pair whose other end, named
after the host role, is a port of ``br0`` in a switch namespace (see
pyfwd.lab.topology).  On that port, a frame the bridge transmits
(PACKET_OUTGOING) is one the host receives, and a frame the port receives
is one the host sent.  Frames the bridge floods to the port that the
host's NIC would drop (unicast to another MAC) are left out.

One reader thread drains every socket (epoll); the sockets have a large
receive buffer, so a burst of tens of thousands of frames waits in the
kernel rather than being dropped.  Whatever is missed is accounted for:
``Capture.complete`` is False and ``Capture.lost`` says what and where.
Memory: each kept frame is held (up to ``snaplen`` bytes) until the Capture
is dropped; a small snaplen keeps counting a long transfer cheap.
"""

import ctypes
import os
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Optional, Union

from ..frames import mac_to_bytes, mac_to_str
from ..errors import LabError
from .words import plural

__all__ = ["Frame", "Capture", "Tcp4", "parse_tcp4", "write_pcap",
           "read_pcap", "SNAPLEN"]

SNAPLEN = 65535
RCVBUF = 64 << 20           # per socket; SO_RCVBUFFORCE (root)
SETTLE = 0.05               # stop(): quiet time that ends the last drain
SETTLE_MAX = 1.0            # stop(): longest wait for the sockets to quiet
DRAIN_MAX = 4096            # frames read from one socket in one go
DISCARD_MAX = 1 << 20       # stop(): frames counted unread, at most

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_TIMESTAMPNS = 35         # SO_TIMESTAMPNS_OLD: struct timespec, 64-bit
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
_TIMESPEC = struct.Struct("=qq")
# a classic BPF program of one instruction, "ret #0": accept nothing.  Once
# attached, no new frame is queued (nor counted as dropped); those already
# queued stay readable.  (bind() with protocol 0 would keep the old hook.)
_ACCEPT_NOTHING = ctypes.create_string_buffer(struct.pack("=HBBI", 0x06,
                                                          0, 0, 0))
_ACCEPT_NOTHING_PROG = struct.pack("HP", 1,
                                   ctypes.addressof(_ACCEPT_NOTHING))

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
# MAC addresses and TCP/IPv4 headers (pure)


class Tcp4(NamedTuple):
    """The headers of one Ethernet/IPv4/TCP frame (see parse_tcp4)."""

    src_mac: str            # "aa:bb:cc:dd:ee:ff"
    dst_mac: str
    vlan: Optional[int]     # the 802.1Q VLAN id, None if untagged
    src_ip: str             # "10.0.0.1"
    dst_ip: str
    ttl: int
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int              # the TCP flags byte (FIN 0x01 ... CWR 0x80)
    payload_len: int        # TCP payload bytes, from the IP total length


_ETH_IPV4 = 0x0800
_ETH_8021Q = 0x8100
_IPPROTO_TCP = 6
_IPPROTO_IPIP = 4       # TUN: the client's packet inside IPv4
_IPV4 = struct.Struct("!BxHxxHBB")  # version+IHL, length, frag, ttl, proto
_TCP = struct.Struct("!HHIIBB")     # ports, seq, ack, data offset, flags


def parse_tcp4(data: bytes, wirelen: Optional[int] = None) -> Optional[Tcp4]:
    """The headers of an Ethernet/IPv4/TCP frame, else None.

    ``data``: the frame as captured (it may be cut after the TCP header);
    ``wirelen``: its length on the wire, if known (then an IP total length
    beyond the frame is refused too).  One 802.1Q tag is accepted.

    None for anything else or anything malformed: not IPv4, IP version not
    4, IHL < 5, a fragment (first or not), not TCP, TCP data offset < 5, an
    IP total length shorter than the IP and TCP headers (or longer than the
    frame), or a capture that ends before the fixed TCP header.  An IPIP
    packet (TUN) gives the headers of the TCP segment inside it (one
    level).  Never raises for any bytes.
    """
    if len(data) < 14:
        return None
    ethertype, = struct.unpack_from("!H", data, 12)
    ip, vlan = 14, None
    if ethertype == _ETH_8021Q:
        if len(data) < 18:
            return None
        tci, ethertype = struct.unpack_from("!HH", data, 14)
        ip, vlan = 18, tci & 0x0fff
    if ethertype != _ETH_IPV4 or len(data) < ip + 20:
        return None
    ver_ihl, total, frag, ttl, proto = _IPV4.unpack_from(data, ip)
    ihl = (ver_ihl & 0x0f) * 4
    if proto == _IPPROTO_IPIP and ver_ihl >> 4 == 4 and ihl >= 20 and \
            not frag & 0x3fff and len(data) >= ip + ihl + 20:
        ip += ihl               # the inner header: read as the outer was
        ver_ihl, total, frag, ttl, proto = _IPV4.unpack_from(data, ip)
        ihl = (ver_ihl & 0x0f) * 4
    # 0x3fff: more fragments, or a fragment offset (DF, 0x4000, is fine)
    if ver_ihl >> 4 != 4 or ihl < 20 or frag & 0x3fff or \
            proto != _IPPROTO_TCP:
        return None
    tcp = ip + ihl
    if len(data) < tcp + 20:
        return None
    sport, dport, seq, ack, off, flags = _TCP.unpack_from(data, tcp)
    doff = (off >> 4) * 4
    if doff < 20 or total < ihl + doff:
        return None
    if wirelen is not None and total > wirelen - ip:
        return None
    return Tcp4(mac_to_str(data[6:12]), mac_to_str(data[0:6]), vlan,
                socket.inet_ntoa(data[ip + 12:ip + 16]),
                socket.inet_ntoa(data[ip + 16:ip + 20]), ttl, sport, dport,
                seq, ack, flags, total - ihl - doff)


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
    """The records of a classic Ethernet pcap file as ``(ts, data,
    wirelen)`` tuples, in file order.  Reads both byte orders and the
    microsecond and nanosecond variants.  Raises ValueError for anything
    else (pcapng, another link type, a truncated file)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < _PCAP_HEADER.size:
        raise ValueError(f"{path}: too short for a pcap header")
    for order in "<>":
        magic, = struct.unpack(order + "I", blob[:4])
        if magic in (PCAP_MAGIC, PCAP_MAGIC_NS):
            break
    else:
        raise ValueError(f"{path}: not a classic pcap file (magic "
                         f"{blob[:4].hex()})")
    _, major, _, _, _, _, linktype = struct.unpack(
        order + _PCAP_HEADER.format[1:], blob[:_PCAP_HEADER.size])
    if major != 2:
        raise ValueError(f"{path}: pcap version {major}, expected 2")
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: link type {linktype}, expected "
                         f"{LINKTYPE_ETHERNET} (Ethernet)")
    scale = 1e-6 if magic == PCAP_MAGIC else 1e-9
    record = struct.Struct(order + "IIII")
    out, pos = [], _PCAP_HEADER.size
    while pos < len(blob):
        if pos + record.size > len(blob):
            raise ValueError(f"{path}: truncated record header at byte "
                             f"{pos}")
        sec, frac, caplen, wirelen = record.unpack_from(blob, pos)
        pos += record.size
        if pos + caplen > len(blob):
            raise ValueError(f"{path}: truncated record at byte {pos}")
        out.append((sec + frac * scale, blob[pos:pos + caplen], wirelen))
        pos += caplen
    return out


# ---------------------------------------------------------------------------
# Capturing in a lab


@dataclass(eq=False)            # hashed by identity: the reader keys on it
class _Tap:
    """One packet socket on the switch port of (role, ifname)."""

    role: str
    ifname: str
    mac: bytes
    switch_role: str
    port: str
    sock: Optional[socket.socket] = None
    frames: list = field(default_factory=list)  # (ts, sent, data, wirelen)
    drops: int = 0              # dropped by the kernel: the buffer was full
    unread: int = 0             # still queued when stop() gave up waiting
    error: Optional[OSError] = None     # reading stopped on this error
    error_ts: float = 0.0               # ... at this time

    @property
    def where(self) -> str:
        return f"{self.role} {self.ifname}"


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) + \
        f".{int(ts % 1 * 1000):03d}"


class Capture:
    """Capture every frame each of ``roles``' interfaces sends or receives.

    ``roles``: lab roles ("client", "lb", "real1", ...), each captured on
    all its interfaces.  ``snaplen``: bytes kept of each frame (its wire
    length is always kept).  Nothing happens until ``__enter__`` (or
    ``start()``); ``stop()``, also called on ``__exit__``, waits for the
    sockets to quiet, reads what is left and closes them.

    After stop(), ``complete`` says whether every frame was kept; if not,
    ``lost`` says what was missed where, ``drops`` counts the frames known
    lost and ``error`` holds the error that stopped reading.

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
                                       mac_to_bytes(iface.mac), iface.switch,
                                       iface.port))
        self._thread = None
        self._wake_r = self._wake_w = None
        self._stopping = False
        self._stopped = False
        self._error = None          # what ended the reader thread
        self._error_ts = 0.0

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
        self._thread = threading.Thread(target=self._reader,
                                        args=(self._wake_r,), daemon=True,
                                        name=f"pyfwd-capture:{self._lab.name}")
        try:
            self._thread.start()
        except BaseException:
            self._thread = None
            self._close()
            raise
        self._wake_r = None         # the reader's now: it closes it
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
        most SETTLE_MAX), read the rest, join the thread, close the
        sockets.  Idempotent.

        Re-raises an exception other than OSError that ended the reader (a
        bug); an OSError is kept in ``error`` (see ``complete``).  The
        sockets are closed even if the wait is interrupted (Ctrl-C); the
        reader still wakes then (see ``_reader``) and ends by itself.
        """
        if self._stopped:
            return
        self._stopped = True
        try:
            if self._thread is not None:
                self._stopping = True
                try:
                    os.write(self._wake_w, b"x")
                except BrokenPipeError:
                    pass        # the reader has ended, its end is closed
                self._thread.join()
        finally:
            self._close()
        if self._error is not None and not isinstance(self._error, OSError):
            raise self._error

    def _close(self) -> None:
        for tap in self._taps:
            sock, tap.sock = tap.sock, None
            if sock is None:
                continue
            try:
                _, drops = struct.unpack("=II", sock.getsockopt(
                    SOL_PACKET, PACKET_STATISTICS, 8))
                tap.drops += drops
            except OSError:
                pass            # closed under us by Lab.down()
            sock.close()
        # _wake_r is still ours only if the reader never started
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)
        self._wake_r = self._wake_w = None

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- the reader

    def _reader(self, wake_r: int) -> None:
        """The reader thread.  It owns ``wake_r``, the read end of the
        wake-up pipe, and closes it when it ends.  stop() writes a byte to
        the write end, then closes the sockets and that write end, even
        when its wait is cut short.  If stop() closed ``wake_r`` as well,
        the close would take the pipe out of the epoll set, and the byte's
        wake-up with it when this thread had not run yet (a loaded
        machine): it would sleep in select() for good."""
        sel = selectors.DefaultSelector()
        # the sockets, kept here: an interrupted stop() closes the taps'
        live = {tap: tap.sock for tap in self._taps}
        buf = bytearray(self._snaplen)
        anc = socket.CMSG_SPACE(_TIMESPEC.size)

        def read(tap, final=False) -> int:
            # one socket failing (its port removed by Lab.down()) ends
            # reading it, not the others
            sock = live[tap]
            try:
                if final:       # let no new frame in, then empty the queue
                    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                                    _ACCEPT_NOTHING_PROG)
                n = self._drain(tap, sock, buf, anc)
                if final:
                    tap.unread += _discard(sock)
                return n
            except OSError as e:
                tap.error, tap.error_ts = e, time.time()
                del live[tap]
                try:
                    sel.unregister(sock)
                except (KeyError, ValueError, OSError):
                    pass
                return 0

        try:
            for tap, sock in live.items():
                sel.register(sock, selectors.EVENT_READ, tap)
            sel.register(wake_r, selectors.EVENT_READ, None)
            while not self._stopping and live:
                for key, _ in sel.select():
                    if key.data in live:
                        read(key.data)
            # the last frames: until the sockets have been quiet a moment
            begin = quiet_since = time.monotonic()
            while live:
                got = sum(read(tap) for tap in list(live))
                now = time.monotonic()
                if got:
                    quiet_since = now
                if now - quiet_since >= SETTLE or now - begin >= SETTLE_MAX:
                    break
                time.sleep(0.005)
            for tap in list(live):      # cut short by SETTLE_MAX: count
                read(tap, final=True)   # what is still queued
        except Exception as e:          # noqa: BLE001 (stop() re-raises)
            self._error, self._error_ts = e, time.time()
        finally:
            sel.close()
            os.close(wake_r)

    def _drain(self, tap: _Tap, sock, buf: bytearray, anc: int) -> int:
        """Read the frames waiting on ``sock``, at most DRAIN_MAX (so that
        a flood cannot keep the reader from noticing stop()); returns how
        many were read."""
        keep, mac, snaplen = tap.frames.append, tap.mac, self._snaplen
        for n in range(DRAIN_MAX):
            try:
                size, ancdata, _, addr = sock.recvmsg_into(
                    [buf], anc, socket.MSG_TRUNC)
            except BlockingIOError:
                return n
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
        return DRAIN_MAX

    # -- results

    @property
    def drops(self) -> int:
        """Frames known lost (after stop()): dropped by the kernel because
        a socket buffer was full, or still queued when stop() stopped
        waiting.  Frames missed after an ``error`` are not counted."""
        return sum(tap.drops + tap.unread for tap in self._taps)

    @property
    def error(self) -> Optional[BaseException]:
        """The exception that stopped reading (every socket's, else the
        first socket's), or None."""
        if self._error is not None:
            return self._error
        return next((t.error for t in self._taps if t.error is not None),
                    None)

    @property
    def complete(self) -> bool:
        """After stop(): True if every frame was kept."""
        return not self.drops and self.error is None

    @property
    def lost(self) -> list:
        """What the capture missed, one sentence per interface and cause
        ("lb eth1: 12 frames dropped by the kernel (socket buffer full)");
        [] if it is complete."""
        out = []
        for tap in self._taps:
            if tap.drops:
                out.append(f"{tap.where}: {plural(tap.drops, 'frame')} "
                           "dropped by the kernel (socket buffer full)")
            if tap.unread:
                out.append(f"{tap.where}: {plural(tap.unread, 'frame')} "
                           f"still queued after {SETTLE_MAX:g} s of "
                           "stopping, not read")
            if tap.error is not None:
                out.append(f"{tap.where}: nothing read after "
                           f"{_clock(tap.error_ts)} ({tap.error})")
        if self._error is not None:
            out.append(f"every interface: nothing read after "
                       f"{_clock(self._error_ts)} "
                       f"({type(self._error).__name__}: {self._error})")
        return out

    def frames(self, role: Optional[str] = None) -> list:
        """The frames of ``role`` (all roles if None), in time order.
        Call after stop() for the complete list."""
        out = [Frame(ts, tap.role, tap.ifname, sent, data, wirelen)
               for tap in self._taps if role is None or tap.role == role
               for ts, sent, data, wirelen in list(tap.frames)]
        out.sort(key=lambda f: f.ts)
        return out

    def save_pcap(self, path: str, roles: Union[str, Iterable[str]]) -> int:
        """Write the frames of ``roles`` (one role or several), in time
        order, to ``path`` as a classic pcap file; returns the count."""
        if isinstance(roles, str):
            roles = [roles]
        roles = set(roles)
        return write_pcap(path, [f for f in self.frames() if f.role in roles],
                          self._snaplen)


def _discard(sock) -> int:
    """Read and drop what is queued on ``sock`` (at most DISCARD_MAX);
    returns how many frames."""
    scratch = bytearray(1)
    for n in range(DISCARD_MAX):
        try:
            sock.recv_into(scratch, 1)
        except BlockingIOError:
            return n
    return DISCARD_MAX
