"""One probe's TCP conversation with a peer, all within one deadline.

``converse(address, port, timeout, talk)`` connects and hands ``talk`` a
Conversation; every socket operation gets what is left of ``timeout``.  A
failing peer is a value, never an exception: ``converse`` turns a
ProbeError (the peer answered, but not what the probe expects) into
``(False, its message)`` and an OSError (refused, reset, timed out, TLS)
into ``(False, "PHASE: why")``, PHASE being the step the conversation was
in ("connect" until ``talk`` says otherwise).
"""

import socket
import ssl
import time

from ...errors import PyfwdError


class ProbeError(PyfwdError):
    """A peer answered, but not what the probe expects (raised by the
    DICOM and HTTP parsers; ``converse`` turns it into ``(False,
    reason)``)."""


class Deadline:
    """The time left of one probe; every socket operation gets the rest."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self):
        left = self.end - time.monotonic()
        if left <= 0:
            raise socket.timeout(f"timed out after {self.seconds:g} s")
        return left

    def arm(self, sock):
        sock.settimeout(self.left())


def oserror_reason(exc, deadline):
    """A short text of why a socket operation failed."""
    if isinstance(exc, socket.timeout):
        return f"timed out after {deadline.seconds:g} s"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    return exc.strerror or str(exc) or type(exc).__name__


class Conversation:
    """What ``talk`` gets: ``sock`` (replace it to wrap it in TLS: the one
    here is closed at the end), ``deadline``, and ``phase``, the step it is
    in (set it before each step: an OSError's reason starts with it)."""

    def __init__(self, sock, deadline):
        self.sock = sock
        self.deadline = deadline
        self.phase = "connect"

    def send(self, data):
        self.deadline.arm(self.sock)
        self.sock.sendall(data)

    def recv_some(self, n=65536):
        """Up to n bytes; b"" when the peer closed."""
        self.deadline.arm(self.sock)
        return self.sock.recv(n)

    def recv_exact(self, n, what):
        """Exactly n bytes; ProbeError when the peer closes first (``what``
        says when: "after C-ECHO-RQ")."""
        buf = bytearray()
        while len(buf) < n:
            chunk = self.recv_some(n - len(buf))
            if not chunk:
                raise ProbeError(f"connection closed by peer {what}"
                                 + (f" after {len(buf)} bytes" if buf
                                    else ""))
            buf += chunk
        return bytes(buf)


def _connect(address, port, deadline):
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline.arm(sock)
        sock.connect((str(address), port))
    except BaseException:
        sock.close()
        raise
    return sock


def converse(address, port, timeout, talk):
    """Connect to address:port (an ipaddress object and an int) and return
    ``talk(conversation)``, which returns (ok, detail), all within
    ``timeout`` seconds; the socket is closed afterwards.  Returns (False,
    reason) for a ProbeError or an OSError (see the module docstring);
    other exceptions propagate (a bug, not a peer)."""
    deadline = Deadline(timeout)
    conv = None
    try:
        conv = Conversation(_connect(address, port, deadline), deadline)
        return talk(conv)
    except ProbeError as exc:
        return False, str(exc)
    except OSError as exc:
        phase = conv.phase if conv is not None else "connect"
        return False, f"{phase}: {oserror_reason(exc, deadline)}"
    finally:
        if conv is not None:
            conv.sock.close()
