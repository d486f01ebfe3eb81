"""BIRD's control socket: the protocol `birdc` speaks, in a few lines.

A reply is lines "DDDD-text" (more follows), " text" (a continuation of
the previous code) and ends with "DDDD text" whose code starts with 0
(done: 0000 OK, 0003 Reconfigured ...), 8 or 9 (an error).  One
connection per call: BIRD answers one client at a time quickly, and the
engine asks once a second.

    BirdSocket("/run/pyfwd/bird-eth0.ctl").call("show protocols")
    # -> (0, ["Name Proto ...", "device1 Device ..."])
"""

import re
import socket

from ...errors import PyfwdError

_CODE = re.compile(rb"^(\d{4})([ -])(.*)$")


class BirdError(PyfwdError):
    """BIRD refused a command or its socket does not answer."""


class BirdSocket:
    def __init__(self, path, timeout=2.0):
        self.path = path
        self.timeout = timeout

    def call(self, command):
        """Send one command; (last code, [text lines]).  Raises BirdError
        when the socket does not answer (OSError, timeout) or when BIRD
        answers an error code (8xxx, 9xxx), with BIRD's message."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.path)
                f = s.makefile("rwb")
                read_reply(f)                   # the greeting: 0001
                f.write(command.encode() + b"\n")
                f.flush()
                code, lines = read_reply(f)
        except OSError as exc:
            raise BirdError(f"BIRD control socket {self.path}: "
                            f"{exc.strerror or exc}") from None
        if code >= 8000:
            raise BirdError(f"BIRD: {command}: {' '.join(lines).strip()}")
        return code, lines


def read_reply(f):
    """Read one reply from a binary file; (final code, text lines)."""
    lines = []
    while True:
        raw = f.readline()
        if not raw:
            raise OSError("BIRD closed its control socket")
        raw = raw.rstrip(b"\n")
        m = _CODE.match(raw)
        if m is None:           # a continuation: " text"
            lines.append(raw[1:].decode(errors="replace"))
            continue
        code, more, text = int(m.group(1)), m.group(2), m.group(3)
        lines.append(text.decode(errors="replace"))
        if more == b" " and m.group(1)[:1] in b"089":
            if not lines[-1].strip():
                lines.pop()
            return code, lines


def parse_protocols(lines):
    """`show protocols` lines -> {name: {"proto", "state", "info"}} (the
    header line skipped); info is BGP's session state first ("Established",
    "Active", "Idle" ...) and BIRD's last error after it, if any."""
    out = {}
    for ln in lines:
        parts = ln.split(None, 5)
        if len(parts) < 5 or parts[0] == "Name":
            continue
        name, proto, _table, state = parts[:4]
        info = parts[5] if len(parts) > 5 else ""
        out[name] = {"proto": proto, "state": state, "info": info.strip()}
    return out


def parse_routes(lines):
    """`show route ...` lines -> the prefixes listed, in order."""
    out = []
    for ln in lines:
        first = ln.split(None, 1)[0] if ln.strip() else ""
        if "/" in first and not ln.startswith("Table"):
            out.append(first)
    return out


__all__ = ["BirdSocket", "BirdError", "read_reply", "parse_protocols",
           "parse_routes"]
