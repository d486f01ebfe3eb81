"""``FrameSocket``: the balancer's raw packet socket on one interface.

The engine sends every frame it writes itself through one: the answers to
punted frames (ARP replies, ICMP echo replies, neighbour advertisements)
and the announcements of the VIPs (gratuitous ARP, unsolicited NA).  The
ARP look-ups (kernel.py's ``neighbour_macs()``, check.py's
``arp_check()``) also read the ARP replies from one.
"""

import ctypes
import errno
import select
import socket
import struct
import time
from typing import Iterator, Optional

from ..errors import PyfwdError
from ..frames import ETH_P_ARP, mac_to_str

__all__ = ["FrameSocket"]

_PACKET_OUTGOING = 4
_RECV_SIZE = 4096
_SO_ATTACH_FILTER = 26
_SOCK_FILTER = struct.Struct("HBBI")     # struct sock_filter: code, jt, jf, k


class FrameSocket:
    """An AF_PACKET SOCK_RAW socket bound to ``ifname``, in the calling
    thread's network namespace (it keeps that namespace for its life,
    whichever thread uses it later).

    It sends whole Ethernet frames, as given, and receives the frames of
    ``ethertype`` (ETH_P_ARP by default; 0: none, a socket that only
    sends).  ``bpf_filter``: a classic BPF program, [(code, jt, jf, k)],
    attached before the socket is bound, so that no other frame is ever
    queued.  Raises PyfwdError if the interface does not exist or the
    socket cannot be opened (e.g. not root).  A context manager;
    ``fileno()`` allows select/poll.
    """

    def __init__(self, ifname: str, ethertype: int = ETH_P_ARP,
                 bpf_filter=None):
        self.ifname = ifname
        # protocol 0 receives nothing until bind(): no frame from another
        # interface can slip in between socket() and bind()
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as exc:
            hint = " (CAP_NET_RAW is needed)" if exc.errno in (
                errno.EPERM, errno.EACCES) else ""
            raise PyfwdError(f"cannot open a packet socket for {ifname!r}: "
                             f"{exc.strerror or exc}{hint}") from exc
        try:
            if bpf_filter:
                _attach(self._sock, bpf_filter)
            self._sock.bind((ifname, ethertype))
        except OSError as exc:
            self._sock.close()
            reason = "no such interface in this network namespace" \
                if exc.errno == errno.ENODEV else exc.strerror or str(exc)
            raise PyfwdError(f"interface {ifname!r}: {reason}") from exc
        # (ifname, proto, pkttype, hatype, hwaddr): the bound device's MAC
        self._mac = bytes(self._sock.getsockname()[4][:6])

    @property
    def mac(self) -> bytes:
        """The interface's MAC (6 bytes), as the kernel told the socket."""
        return self._mac

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, frame) -> int:
        """Send one Ethernet frame; returns the bytes sent.  Raises
        PyfwdError (with the OSError as cause) if the kernel refuses it,
        e.g. the link is down."""
        try:
            return self._sock.send(frame)
        except OSError as exc:
            raise PyfwdError(f"sending a frame on {self.ifname}: "
                             f"{exc.strerror or exc}") from exc

    def recv(self, timeout: Optional[float] = None) -> Optional[bytes]:
        """The next frame received on the interface (outgoing copies are
        skipped), waiting up to ``timeout`` seconds (None: forever, 0: just
        poll).  Returns None on timeout.  Raises PyfwdError (with the
        OSError as cause) if the kernel reports an error, e.g. the interface
        went away."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if deadline is None else \
                max(0.0, deadline - time.monotonic())
            try:
                ready, _, _ = select.select([self._sock], [], [], wait)
                if not ready:
                    return None
                frame, addr = self._sock.recvfrom(_RECV_SIZE)
            except OSError as exc:
                raise PyfwdError(f"receiving on {self.ifname}: "
                                 f"{exc.strerror or exc}") from exc
            # a socket bound to one protocol gets no outgoing copies today;
            # the check keeps that true if it is ever bound to ETH_P_ALL
            if addr[2] != _PACKET_OUTGOING:
                return frame

    def recv_until(self, deadline: float) -> Iterator[bytes]:
        """The frames received until ``deadline`` (time.monotonic()), as
        they come; raises like recv()."""
        while True:
            left = deadline - time.monotonic()
            frame = self.recv(left) if left > 0 else None
            if frame is None:
                return
            yield frame

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "FrameSocket":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FrameSocket({self.ifname!r}, mac={mac_to_str(self._mac)})"


def _attach(sock, program) -> None:
    """SO_ATTACH_FILTER: struct sock_fprog {len, pointer to the program}
    (the kernel copies the program)."""
    buf = ctypes.create_string_buffer(
        b"".join(_SOCK_FILTER.pack(*insn) for insn in program))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER,
                    struct.pack("HL", len(program), ctypes.addressof(buf)))
