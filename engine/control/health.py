"""Health checks of real servers, per VIP, as the appliance does them.

keepalived-style: each real server of a VIP is probed every ``interval``
seconds; an up real goes down after ``fall`` consecutive failed probes and a
down real comes back after ``rise`` consecutive successful ones.  This module
only decides and reports (``HealthMonitor`` calls ``on_change``); what a down
real means for the tables is the caller's business.

The config table of a VIP (TOML inline table)::

    health = { type = "dicom", interval = 2.0, timeout = 1.0, rise = 2,
               fall = 2, called_ae = "PACS", calling_ae = "PYFWD" }

Probe types:

``tcp``      the TCP handshake completes.
``http``     ``GET path HTTP/1.0`` answers status ``expect`` (and the body
             contains ``body``, if given).
``https``    the same over TLS.  The server's certificate is NOT verified:
             the probe addresses a backend by its IP address, usually behind
             a certificate made out to the VIP's name, and asks "does it
             answer", not "is it who it claims to be".  SNI is sent only when
             ``host`` is a name.
``dicom``    a DICOM C-ECHO (Verification): A-ASSOCIATE-RQ, C-ECHO-RQ,
             C-ECHO-RSP with status Success, A-RELEASE.  Built here with
             ``struct`` (PS3.7 command set, PS3.8 upper layer PDUs).
``command``  an external program exits 0 within ``timeout`` (see
             ``check_command`` for its environment).

Three tiers, as elsewhere in pyfwd: a failing peer is a value
(``check`` returns ``(False, reason)``), bad input (a config table, an
address) raises ``ConfigError``, and an unexpected error inside a probe is
logged by the monitor and counted as a failed probe.
"""

import concurrent.futures
import dataclasses
import ipaddress
import logging
import math
import os
import shlex
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid

from pyfwd.errors import ConfigError, PyfwdError

log = logging.getLogger(__name__)

TYPES = ("tcp", "http", "https", "dicom", "command")

# Keys every type takes, and the keys only some types take.
_COMMON_KEYS = ("type", "interval", "timeout", "rise", "fall", "port")
_TYPE_KEYS = {
    "tcp": (),
    "http": ("path", "expect", "body", "host"),
    "https": ("path", "expect", "body", "host"),
    "dicom": ("called_ae", "calling_ae"),
    "command": ("command",),
}

# How much of an HTTP response we read at most (headers plus the part of the
# body searched for ``body``).
HTTP_READ_LIMIT = 64 * 1024
# The largest PDU we accept from a DICOM peer while echoing (an A-ASSOCIATE-AC
# is a few hundred bytes; anything near this is not a PACS talking to us).
DICOM_PDU_LIMIT = 1 << 20


class ProbeError(PyfwdError):
    """A peer answered, but not what the probe expects (raised by the DICOM
    and HTTP parsers below; ``check`` turns it into ``(False, reason)``)."""


# ---------------------------------------------------------------------------
# The config table


def _where_key(where, key, value, expected):
    return ConfigError(f"{where}.{key} = {value!r}: expected {expected}")


def _number(where, key, value):
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise _where_key(where, key, value, "a number of seconds > 0")
    return float(value)


def _count(where, key, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _where_key(where, key, value, "an integer >= 1")
    return value


def _ae_title(where, key, value):
    # PS3.5 AE VR: 1 to 16 characters of the default repertoire, no backslash
    # and no control characters; leading and trailing spaces not significant.
    if (not isinstance(value, str) or not value.strip() or len(value) > 16
            or any(not 0x20 <= ord(c) < 0x7f or c == "\\" for c in value)):
        raise _where_key(where, key, value, "a DICOM AE title: 1 to 16 "
                         "printable ASCII characters, no backslash")
    return value.strip()


def _token(value):
    """True if value is a non-empty string with no whitespace or control
    characters (safe to put on an HTTP request line or header)."""
    return (isinstance(value, str) and value != ""
            and all(0x20 < ord(c) < 0x7f for c in value))


@dataclasses.dataclass(frozen=True)
class HealthSpec:
    """How to check the real servers of one VIP.  Immutable and comparable:
    ``HealthMonitor.set_targets`` keeps a target's state when its spec is
    equal to the previous one.  Build it with ``from_dict`` (which validates)
    or directly (which does not)."""

    type: str
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 2
    port: "int | None" = None
    # http, https
    path: str = "/"
    expect: int = 200
    body: "str | None" = None
    host: "str | None" = None
    # dicom
    called_ae: str = "ANY-SCP"
    calling_ae: str = "PYFWD"
    # command: argv
    command: "tuple | None" = None

    @classmethod
    def from_dict(cls, d, where="health"):
        """Validate a config table and return a HealthSpec.

        Raises ConfigError naming ``where.key``, the value and what was
        expected, for: a table that is not a dict, a missing or unknown
        ``type``, an unknown key or one that the type does not take (``path``
        on a tcp check), and every out-of-range value.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"{where} = {d!r}: expected a table such as "
                              "{ type = \"tcp\" }")
        if "type" not in d:
            raise ConfigError(f"{where}.type: missing (expected one of "
                              f"{', '.join(TYPES)})")
        kind = d["type"]
        if kind not in TYPES:
            raise _where_key(where, "type", kind,
                             f"one of {', '.join(TYPES)}")
        allowed = _COMMON_KEYS + _TYPE_KEYS[kind]
        for key in d:
            if key in allowed:
                continue
            takers = [t for t in TYPES if key in _TYPE_KEYS[t]]
            if takers:
                raise ConfigError(f"{where}.{key}: not a key of a {kind} "
                                  f"check (only of {', '.join(takers)})")
            raise ConfigError(f"{where}.{key}: unknown key (expected one of "
                              f"{', '.join(allowed)})")
        kw = {"type": kind}
        if "interval" in d:
            kw["interval"] = _number(where, "interval", d["interval"])
        if "timeout" in d:
            kw["timeout"] = _number(where, "timeout", d["timeout"])
        interval = kw.get("interval", cls.interval)
        timeout = kw.get("timeout", cls.timeout)
        if timeout > interval:
            if "timeout" in d:
                raise _where_key(where, "timeout", d["timeout"],
                                 f"at most interval ({interval:g} s)")
            raise _where_key(where, "interval", d["interval"],
                             f"at least timeout ({timeout:g} s, the "
                             "default)")
        for key in ("rise", "fall"):
            if key in d:
                kw[key] = _count(where, key, d[key])
        if "port" in d:
            port = d["port"]
            if (isinstance(port, bool) or not isinstance(port, int)
                    or not 1 <= port <= 65535):
                raise _where_key(where, "port", port,
                                 "an integer from 1 to 65535")
            kw["port"] = port
        if "path" in d:
            if not _token(d["path"]) or not d["path"].startswith("/"):
                raise _where_key(where, "path", d["path"], "a URL path "
                                 "starting with '/', without spaces")
            kw["path"] = d["path"]
        if "expect" in d:
            e = d["expect"]
            if isinstance(e, bool) or not isinstance(e, int) or \
                    not 100 <= e <= 599:
                raise _where_key(where, "expect", e,
                                 "an HTTP status from 100 to 599")
            kw["expect"] = e
        if "body" in d:
            if not isinstance(d["body"], str) or not d["body"]:
                raise _where_key(where, "body", d["body"],
                                 "a non-empty string")
            kw["body"] = d["body"]
        if "host" in d:
            if not _token(d["host"]):
                raise _where_key(where, "host", d["host"], "a host name "
                                 "for the Host header, without spaces")
            kw["host"] = d["host"]
        for key in ("called_ae", "calling_ae"):
            if key in d:
                kw[key] = _ae_title(where, key, d[key])
        if kind == "command":
            kw["command"] = _argv(where, d.get("command"))
        return cls(**kw)


def _argv(where, value):
    if value is None:
        raise ConfigError(f"{where}.command: missing (expected an array of "
                          "strings or a command line)")
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise _where_key(where, "command", value,
                             f"a command line shlex can split ({exc})") \
                from None
    elif isinstance(value, (list, tuple)):
        argv = list(value)
    else:
        argv = None
    if (not argv or not all(isinstance(a, str) for a in argv)
            or not argv[0]):
        raise _where_key(where, "command", value,
                         "a non-empty array of strings or command line")
    return tuple(argv)


# ---------------------------------------------------------------------------
# Probes


class _Deadline:
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


def _recv_some(sock, deadline, n=65536):
    deadline.arm(sock)
    return sock.recv(n)


def _recv_exact(sock, n, deadline, what):
    buf = bytearray()
    while len(buf) < n:
        chunk = _recv_some(sock, deadline, n - len(buf))
        if not chunk:
            raise ProbeError(f"connection closed by peer {what}"
                             + (f" after {len(buf)} bytes" if buf else ""))
        buf += chunk
    return bytes(buf)


def _oserror_reason(exc, deadline):
    if isinstance(exc, socket.timeout):
        return f"timed out after {deadline.seconds:g} s"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    return exc.strerror or str(exc) or type(exc).__name__


def check_tcp(spec, address, port):
    """Connect and close.  Returns (True, "connected in N ms") or (False,
    reason); never raises for a failing peer."""
    deadline = _Deadline(spec.timeout)
    t0 = time.monotonic()
    try:
        sock = _connect(address, port, deadline)
    except OSError as exc:
        return False, f"connect: {_oserror_reason(exc, deadline)}"
    sock.close()
    return True, f"connected in {(time.monotonic() - t0) * 1e3:.1f} ms"


# -- HTTP -------------------------------------------------------------------


def build_http_request(path, host):
    """The probe's request: HTTP/1.0 (so no chunked answer), one GET."""
    return (f"GET {path} HTTP/1.0\r\nHost: {host}\r\n"
            "User-Agent: pyfwd-health\r\nAccept: */*\r\n"
            "Connection: close\r\n\r\n").encode("ascii")


def parse_http_head(head):
    """Parse the status line and headers of a response (bytes up to but
    excluding the blank line).  Returns (status, {lower-case name: value}).
    Raises ProbeError if it is not an HTTP response."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if (len(parts) < 2 or not parts[0].startswith(b"HTTP/")
            or not parts[1].isdigit() or len(parts[1]) != 3):
        raise ProbeError(f"not an HTTP response: {bytes(lines[0][:40])!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower().decode("latin-1")] = \
                value.strip().decode("latin-1")
    return int(parts[1]), headers


def _sni(host):
    """The TLS server name for a Host value: its name without a port, or
    None for an address (SNI carries names only)."""
    if host is None:
        return None
    name = host
    if name.startswith("["):
        return None                             # [v6]:port
    if name.count(":") == 1:
        name = name.split(":")[0]
    try:
        ipaddress.ip_address(name)
        return None
    except ValueError:
        return name


def check_http(spec, address, port, tls=False):
    """GET spec.path; up if the status is spec.expect and, when spec.body is
    set, the first HTTP_READ_LIMIT bytes of the body contain it.  TLS
    certificates are not verified (see the module docstring).  Returns
    (ok, detail); never raises for a failing peer."""
    deadline = _Deadline(spec.timeout)
    host = spec.host
    if host is None:
        host = f"[{address}]" if address.version == 6 else str(address)
        if port != (443 if tls else 80):
            host = f"{host}:{port}"
    sock = None
    phase = "connect"
    try:
        sock = _connect(address, port, deadline)
        phase = "TLS handshake"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            deadline.arm(sock)
            sock = ctx.wrap_socket(sock, server_hostname=_sni(spec.host))
        phase = "request"
        deadline.arm(sock)
        sock.sendall(build_http_request(spec.path, host))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = _recv_some(sock, deadline)
            if not chunk:
                raise ProbeError("connection closed before a response" if
                                 not buf else "connection closed in headers")
            buf += chunk
            if len(buf) > HTTP_READ_LIMIT:
                raise ProbeError(f"no end of headers in {len(buf)} bytes")
        head, _, body = buf.partition(b"\r\n\r\n")
        body = body[:HTTP_READ_LIMIT]
        status, headers = parse_http_head(head)
        if status != spec.expect:
            return False, f"HTTP {status}, expected {spec.expect}"
        if spec.body is None:
            return True, f"HTTP {status}"
        want = spec.body.encode("utf-8")
        length = headers.get("content-length", "")
        length = int(length) if length.isascii() and length.isdigit() \
            else None
        while want not in body and len(body) < HTTP_READ_LIMIT and (
                length is None or len(body) < length):
            chunk = _recv_some(sock, deadline, HTTP_READ_LIMIT - len(body))
            if not chunk:
                break
            body += chunk
        if want in body:
            return True, f"HTTP {status}, body has {spec.body!r}"
        return False, (f"HTTP {status}, body lacks {spec.body!r} "
                       f"({len(body)} bytes read)")
    except ProbeError as exc:
        return False, str(exc)
    except OSError as exc:
        return False, f"{phase}: {_oserror_reason(exc, deadline)}"
    finally:
        if sock is not None:
            sock.close()


# -- DICOM C-ECHO -----------------------------------------------------------
#
# PS3.8 section 9.3 (upper layer PDUs, all integers big-endian) and PS3.7
# section 9.3.5 / annex E (C-ECHO command set, Implicit VR Little Endian).

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
# A UID under 2.25 (PS3.5 B.2: derived from a UUID), fixed for pyfwd.
IMPLEMENTATION_CLASS_UID = "2.25." + str(
    uuid.uuid5(uuid.NAMESPACE_URL, "https://pyfwd/health/dicom").int)
IMPLEMENTATION_VERSION = "PYFWD_HEALTH"
MAX_PDU_RECEIVE = 16384

PDU_ASSOCIATE_RQ = 0x01
PDU_ASSOCIATE_AC = 0x02
PDU_ASSOCIATE_RJ = 0x03
PDU_P_DATA_TF = 0x04
PDU_RELEASE_RQ = 0x05
PDU_RELEASE_RP = 0x06
PDU_ABORT = 0x07

C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
NO_DATA_SET = 0x0101

# (result, source, reason) texts of an A-ASSOCIATE-RJ (PS3.8 table 9-21).
_RJ_SOURCE = {1: "service user", 2: "service provider (ACSE)",
              3: "service provider (presentation)"}
_RJ_REASON = {
    (1, 1): "no reason given", (1, 2): "application context not supported",
    (1, 3): "calling AE title not recognized",
    (1, 7): "called AE title not recognized",
    (2, 1): "no reason given", (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion", (3, 2): "local limit exceeded",
}
_PC_RESULT = {1: "user rejection", 2: "no reason (provider rejection)",
              3: "abstract syntax not supported",
              4: "transfer syntaxes not supported"}
_ABORT_REASON = {0: "not specified", 1: "unrecognized PDU",
                 2: "unexpected PDU", 4: "unrecognized PDU parameter",
                 5: "unexpected PDU parameter", 6: "invalid PDU parameter"}


def _item(item_type, value):
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def _pdu(pdu_type, body):
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def _ae16(title):
    return title.encode("ascii").ljust(16, b" ")


def build_associate_rq(called_ae, calling_ae, context_id=1,
                       max_pdu=MAX_PDU_RECEIVE):
    """A-ASSOCIATE-RQ proposing one presentation context: Verification with
    Implicit VR Little Endian.  Returns the whole PDU (bytes).

    Layout: type 0x01, reserved, length (u32); protocol version 1 (u16),
    reserved (u16); called AE, calling AE (16 bytes each, space padded);
    32 reserved bytes; items 0x10 (application context), 0x20 (presentation
    context: id, 3 reserved, sub-items 0x30 abstract and 0x40 transfer
    syntax), 0x50 (user information: 0x51 max length, 0x52 implementation
    class UID, 0x55 implementation version).  UIDs in items are not padded.
    """
    pc = (struct.pack(">BBBB", context_id, 0, 0, 0)
          + _item(0x30, VERIFICATION_SOP_CLASS.encode())
          + _item(0x40, IMPLICIT_VR_LE.encode()))
    user = (_item(0x51, struct.pack(">I", max_pdu))
            + _item(0x52, IMPLEMENTATION_CLASS_UID.encode())
            + _item(0x55, IMPLEMENTATION_VERSION.encode()))
    body = (struct.pack(">HH", 1, 0) + _ae16(called_ae) + _ae16(calling_ae)
            + bytes(32) + _item(0x10, APPLICATION_CONTEXT.encode())
            + _item(0x20, pc) + _item(0x50, user))
    return _pdu(PDU_ASSOCIATE_RQ, body)


def _element(tag_elem, value):
    # Implicit VR Little Endian, group 0000: tag (2 x u16), length (u32).
    return struct.pack("<HHI", 0x0000, tag_elem, len(value)) + value


def build_command_set(elements):
    """Encode a group 0000 command set: {element number: value bytes} (sorted,
    with CommandGroupLength (0000,0000) first).  Returns bytes."""
    rest = b"".join(_element(e, v) for e, v in sorted(elements.items())
                    if e != 0x0000)
    return _element(0x0000, struct.pack("<I", len(rest))) + rest


def _ui(uid):
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def build_echo_rq(message_id=1, context_id=1):
    """P-DATA-TF carrying a C-ECHO-RQ command set in one PDV (message control
    header 0x03: command, last fragment).  Returns the whole PDU."""
    cmd = build_command_set({
        0x0002: _ui(VERIFICATION_SOP_CLASS),          # AffectedSOPClassUID
        0x0100: struct.pack("<H", C_ECHO_RQ),         # CommandField
        0x0110: struct.pack("<H", message_id),        # MessageID
        0x0800: struct.pack("<H", NO_DATA_SET),       # CommandDataSetType
    })
    pdv = struct.pack(">IBB", 2 + len(cmd), context_id, 0x03) + cmd
    return _pdu(PDU_P_DATA_TF, pdv)


def build_release_rq():
    """A-RELEASE-RQ: type 0x05, length 4, four reserved bytes."""
    return _pdu(PDU_RELEASE_RQ, bytes(4))


def build_abort():
    """A-ABORT from the service user (source 0, reason 0)."""
    return _pdu(PDU_ABORT, bytes(4))


def parse_pdu_header(header):
    """Split a 6-byte PDU header.  Returns (pdu_type, length).  Raises
    ProbeError for a type that is not a DICOM PDU or an absurd length (a
    peer that is not speaking DICOM)."""
    if len(header) != 6:
        raise ProbeError(f"short PDU header ({len(header)} bytes)")
    pdu_type, _, length = struct.unpack(">BBI", header)
    if not PDU_ASSOCIATE_RQ <= pdu_type <= PDU_ABORT:
        raise ProbeError(f"not DICOM: PDU type 0x{pdu_type:02x} "
                         f"({header!r})")
    if length > DICOM_PDU_LIMIT:
        raise ProbeError(f"not DICOM: PDU length {length}")
    return pdu_type, length


def _items(data, where):
    """Yield (item_type, value) of a run of PS3.8 items."""
    off = 0
    while off < len(data):
        if off + 4 > len(data):
            raise ProbeError(f"truncated item in {where}")
        item_type, _, length = struct.unpack_from(">BBH", data, off)
        value = data[off + 4:off + 4 + length]
        if len(value) != length:
            raise ProbeError(f"truncated item 0x{item_type:02x} in {where}")
        yield item_type, value
        off += 4 + length


def describe_reject(body):
    """A short text of an A-ASSOCIATE-RJ body (4 bytes)."""
    if len(body) < 4:
        return "A-ASSOCIATE-RJ (truncated)"
    _, result, source, reason = struct.unpack_from(">BBBB", body)
    why = _RJ_REASON.get((source, reason), f"reason {reason}")
    kind = {1: "permanent", 2: "transient"}.get(result, f"result {result}")
    return (f"A-ASSOCIATE-RJ: {why} ({kind}, by "
            f"{_RJ_SOURCE.get(source, f'source {source}')})")


def describe_abort(body):
    """A short text of an A-ABORT body (4 bytes)."""
    if len(body) < 4:
        return "A-ABORT"
    source, reason = body[2], body[3]
    if source == 2:
        return f"A-ABORT by provider: {_ABORT_REASON.get(reason, reason)}"
    return "A-ABORT by peer"


def parse_associate_response(pdu_type, body, context_id=1):
    """Judge the answer to our A-ASSOCIATE-RQ.

    Returns the peer's maximum PDU length (0 = unlimited) if it is an
    A-ASSOCIATE-AC accepting presentation context ``context_id`` with
    Implicit VR Little Endian.  Raises ProbeError with a short reason for an
    A-ASSOCIATE-RJ, an A-ABORT, a rejected context or anything malformed.
    """
    if pdu_type == PDU_ASSOCIATE_RJ:
        raise ProbeError(describe_reject(body))
    if pdu_type == PDU_ABORT:
        raise ProbeError(describe_abort(body))
    if pdu_type != PDU_ASSOCIATE_AC:
        raise ProbeError(f"expected A-ASSOCIATE-AC, got PDU type "
                         f"0x{pdu_type:02x}")
    if len(body) < 68:
        raise ProbeError(f"A-ASSOCIATE-AC too short ({len(body)} bytes)")
    max_pdu = 0
    result = None
    for item_type, value in _items(body[68:], "A-ASSOCIATE-AC"):
        if item_type == 0x21 and len(value) >= 4 and value[0] == context_id:
            result = value[2]
            if result == 0:
                ts = [v for t, v in _items(value[4:], "presentation context")
                      if t == 0x40]
                if ts and ts[0].rstrip(b"\0 ").decode("ascii", "replace") \
                        != IMPLICIT_VR_LE:
                    raise ProbeError(f"peer chose transfer syntax "
                                     f"{ts[0].decode('ascii', 'replace')}")
        elif item_type == 0x50:
            for sub, sval in _items(value, "user information"):
                if sub == 0x51 and len(sval) == 4:
                    (max_pdu,) = struct.unpack(">I", sval)
    if result is None:
        raise ProbeError("A-ASSOCIATE-AC without our presentation context")
    if result != 0:
        raise ProbeError(f"Verification rejected: "
                         f"{_PC_RESULT.get(result, f'result {result}')}")
    return max_pdu


def parse_p_data(body):
    """Split a P-DATA-TF body into PDVs.  Returns a list of (context_id,
    control, data); control bit 0 = command, bit 1 = last fragment.
    Raises ProbeError if the PDV lengths do not add up."""
    pdvs = []
    off = 0
    while off < len(body):
        if off + 6 > len(body):
            raise ProbeError("truncated PDV")
        (length,) = struct.unpack_from(">I", body, off)
        if length < 2 or off + 4 + length > len(body):
            raise ProbeError(f"bad PDV length {length}")
        pdvs.append((body[off + 4], body[off + 5],
                     body[off + 6:off + 4 + length]))
        off += 4 + length
    return pdvs


def parse_command_set(data):
    """Decode an Implicit VR Little Endian command set.  Returns {(group,
    element): value bytes}.  Raises ProbeError if malformed."""
    out = {}
    off = 0
    while off < len(data):
        if off + 8 > len(data):
            raise ProbeError("truncated command element")
        group, elem, length = struct.unpack_from("<HHI", data, off)
        if off + 8 + length > len(data):
            raise ProbeError(f"command element ({group:04x},{elem:04x}) "
                             "overruns")
        out[(group, elem)] = data[off + 8:off + 8 + length]
        off += 8 + length
    return out


def _us(cmd, elem):
    value = cmd.get((0x0000, elem))
    if value is None or len(value) != 2:
        return None
    return struct.unpack("<H", value)[0]


def parse_echo_rsp(data, message_id=1):
    """Judge a complete command set received after our C-ECHO-RQ.  Returns
    None if it is a C-ECHO-RSP with Status 0x0000; raises ProbeError with a
    short reason otherwise."""
    cmd = parse_command_set(data)
    field = _us(cmd, 0x0100)
    if field != C_ECHO_RSP:
        raise ProbeError("expected C-ECHO-RSP, got command field "
                         + ("none" if field is None else f"0x{field:04x}"))
    responding = _us(cmd, 0x0120)
    if responding is not None and responding != message_id:
        raise ProbeError(f"C-ECHO-RSP answers message {responding}, "
                         f"not {message_id}")
    status = _us(cmd, 0x0900)
    if status is None:
        raise ProbeError("C-ECHO-RSP without Status")
    if status != 0x0000:
        raise ProbeError(f"C-ECHO-RSP status 0x{status:04x}")


def _read_pdu(sock, deadline, what):
    pdu_type, length = parse_pdu_header(
        _recv_exact(sock, 6, deadline, what))
    return pdu_type, _recv_exact(sock, length, deadline, what)


def check_dicom(spec, address, port):
    """C-ECHO the DICOM application entity at address:port (called AE
    spec.called_ae, calling AE spec.calling_ae), all within spec.timeout.

    Returns (True, detail) once a C-ECHO-RSP with status Success arrived; the
    A-RELEASE that follows is done in the time left, and its failure is only
    mentioned in the detail (the AE has already proved it works).  Returns
    (False, reason) for a refused connection, a timeout, an A-ASSOCIATE-RJ,
    an A-ABORT, a rejected presentation context, a failing status, or a peer
    that is not DICOM; never raises for a failing peer.
    """
    deadline = _Deadline(spec.timeout)
    t0 = time.monotonic()
    sock = None
    associated = False
    phase = "connect"
    try:
        sock = _connect(address, port, deadline)
        phase = "associate"
        deadline.arm(sock)
        sock.sendall(build_associate_rq(spec.called_ae, spec.calling_ae))
        max_pdu = parse_associate_response(
            *_read_pdu(sock, deadline, "after A-ASSOCIATE-RQ"))
        associated = True
        phase = "C-ECHO"
        echo = build_echo_rq(message_id=1)
        if max_pdu and len(echo) - 6 > max_pdu:
            raise ProbeError(f"peer's max PDU length {max_pdu} is too small")
        deadline.arm(sock)
        sock.sendall(echo)
        command = b""
        while True:
            pdu_type, body = _read_pdu(sock, deadline, "after C-ECHO-RQ")
            if pdu_type == PDU_ABORT:
                associated = False
                raise ProbeError(describe_abort(body))
            if pdu_type != PDU_P_DATA_TF:
                raise ProbeError(f"expected P-DATA-TF, got PDU type "
                                 f"0x{pdu_type:02x}")
            last = False
            for _, control, data in parse_p_data(body):
                if control & 0x01:
                    command += data
                    last = last or bool(control & 0x02)
            if last:
                break
            if len(command) > DICOM_PDU_LIMIT:
                raise ProbeError("C-ECHO-RSP too long")
        parse_echo_rsp(command, message_id=1)
        ms = (time.monotonic() - t0) * 1e3
        associated = False
        try:
            deadline.arm(sock)
            sock.sendall(build_release_rq())
            pdu_type, _ = _read_pdu(sock, deadline, "after A-RELEASE-RQ")
            if pdu_type != PDU_RELEASE_RP:
                return True, (f"C-ECHO ok in {ms:.1f} ms (release answered "
                              f"with PDU type 0x{pdu_type:02x})")
        except (OSError, ProbeError) as exc:
            why = (_oserror_reason(exc, deadline)
                   if isinstance(exc, OSError) else str(exc))
            return True, f"C-ECHO ok in {ms:.1f} ms (release: {why})"
        return True, f"C-ECHO ok in {ms:.1f} ms"
    except ProbeError as exc:
        return False, str(exc)
    except OSError as exc:
        return False, f"{phase}: {_oserror_reason(exc, deadline)}"
    finally:
        if sock is not None:
            if associated:                      # free the peer's association
                try:
                    sock.settimeout(0.1)
                    sock.sendall(build_abort())
                except OSError:
                    pass
            sock.close()


# -- command ----------------------------------------------------------------


def check_command(spec, address, port, check_port, vip=None):
    """Run spec.command (argv, no shell) with its environment plus
    PYFWD_REAL_ADDRESS (no brackets for IPv6), PYFWD_REAL_PORT (the real
    server's port, empty if unknown), PYFWD_CHECK_PORT (the port to check:
    spec.port or the real's), PYFWD_VIP (str(vip), empty if None); stdin is
    /dev/null.  It runs in its own process group, all of which is killed
    (SIGKILL) at spec.timeout.  Returns (True, "exit 0") or (False, reason
    with the first line of its output); never raises for a failing command.
    """
    env = dict(os.environ)
    env.update(PYFWD_REAL_ADDRESS=str(address),
               PYFWD_REAL_PORT="" if port is None else str(port),
               PYFWD_CHECK_PORT=str(check_port),
               PYFWD_VIP="" if vip is None else str(vip))
    try:
        proc = subprocess.Popen(spec.command, env=env,
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as exc:
        return False, f"cannot run {spec.command[0]}: " \
                      f"{exc.strerror or exc}"
    try:
        out, _ = proc.communicate(timeout=spec.timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.communicate(timeout=1.0)
        except subprocess.TimeoutExpired:      # a daemonized grandchild
            proc.stdout.close()                # holds the pipe: let it go
            proc.wait()
        return False, f"timed out after {spec.timeout:g} s (killed)"
    if proc.returncode == 0:
        return True, "exit 0"
    first = out.decode("utf-8", "replace").strip().splitlines()
    first = f": {first[0][:120]}" if first else ""
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return False, f"killed by {name}{first}"
    return False, f"exit {proc.returncode}{first}"


# -- dispatch ---------------------------------------------------------------


def _address(address):
    try:
        return ipaddress.ip_address(str(address).strip("[]"))
    except ValueError:
        raise ConfigError(f"health check address {address!r}: expected an "
                          "IPv4 or IPv6 address") from None


def _check_port(spec, port):
    p = spec.port if spec.port is not None else port
    if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 65535:
        raise ConfigError(f"health check port {port!r}: expected an integer "
                          "from 1 to 65535 (or a port in the health table)")
    return p


def check(spec, address, port, vip=None):
    """Probe one real server once, within spec.timeout (a command check may
    take up to about a second more to reap what it killed).

    address is an IPv4 or IPv6 address (ipaddress object or string); port is
    the real server's port, replaced by spec.port when that is set (port may
    be None then); vip is only passed on to command checks.

    Returns (ok, detail): detail is a short human-readable reason.  Never
    raises for a failing peer.  Raises ConfigError for an invalid address or
    port and PyfwdError for a spec of unknown type.
    """
    addr = _address(address)
    p = _check_port(spec, port)
    if spec.type == "tcp":
        return check_tcp(spec, addr, p)
    if spec.type == "http":
        return check_http(spec, addr, p)
    if spec.type == "https":
        return check_http(spec, addr, p, tls=True)
    if spec.type == "dicom":
        return check_dicom(spec, addr, p)
    if spec.type == "command":
        return check_command(spec, addr, port, p, vip)
    raise PyfwdError(f"health check type {spec.type!r}: expected one of "
                     f"{', '.join(TYPES)}")


# ---------------------------------------------------------------------------
# The monitor


class _Target:
    __slots__ = ("spec", "address", "port", "vip", "up", "last_ok",
                 "last_detail", "successes", "failures", "since", "next_due",
                 "running", "checks")

    def __init__(self, spec, address, port, vip, up, now):
        self.spec, self.address, self.port, self.vip = spec, address, port, vip
        self.up = up
        self.last_ok = None
        self.last_detail = "not checked yet"
        self.successes = 0
        self.failures = 0
        self.since = now
        self.next_due = now
        self.running = False
        self.checks = 0

    def same_server(self, address, port):
        return self.address == address and self.port == port


class HealthMonitor:
    """Checks many targets in the background and reports state changes.

    A target is (spec, address, port, vip) under a key the caller chooses
    (any hashable, e.g. (vip_name, real_key)).  Each is checked every
    spec.interval seconds (the first check right away), on a pool of up to
    ``max_workers`` threads, so a slow target does not delay the others; a
    target is never checked twice at once (if its check outlasts the
    interval, the next one starts when it ends).

    State: a new target starts up (``initial_up=True``, as keepalived does
    without ``alpha``) so that a balancer that starts does not drop traffic
    while the first checks run; a dead real then goes down after ``fall``
    failed checks.  With ``initial_up=False`` reals start down and carry
    traffic after ``rise`` good checks.  An up target goes down after
    spec.fall consecutive failures, a down target up after spec.rise
    consecutive successes.

    on_change(key, up, detail) is called on every flip, from one of the
    monitor's threads, never while the monitor's lock is held (it may call
    state()); calls for one key never overlap and come in order; none comes
    after stop() returned.  It is not called for a target's initial state.
    An exception in on_change is logged and ignored.  Do not call stop()
    from on_change, nor while holding a lock that on_change takes (stop()
    waits for an on_change in progress, up to its ``wait``).
    """

    def __init__(self, on_change, clock=time.monotonic, initial_up=True,
                 max_workers=32, check=check):
        self._on_change = on_change
        self._clock = clock
        self._initial_up = initial_up
        self._max_workers = max_workers
        self._check = check
        self._targets = {}
        self._lock = threading.Lock()
        self._cb_lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread = None
        self._pool = None
        self._futures = set()
        self._futures_lock = threading.Lock()   # not _lock: see _done
        self._stopping = False
        self._stopped = False

    # -- targets and state ---------------------------------------------------

    def set_targets(self, targets):
        """Replace the set of targets with ``{key: (spec, address, port,
        vip)}``, live.

        A key whose spec, address, port and vip are unchanged keeps its
        state and schedule.  A key whose spec or vip changed but still points
        at the same address and port keeps its up/down state, restarts its
        counters and is checked right away.  A new key (or a key now pointing
        at another server) starts in the initial state and is checked right
        away.  Keys not in ``targets`` are dropped; the result of a check
        in flight for them is discarded.

        Raises ConfigError for a spec that is not a HealthSpec, an invalid
        address or port; then nothing is changed.
        """
        new = {}
        for key, (spec, address, port, vip) in targets.items():
            if not isinstance(spec, HealthSpec):
                raise ConfigError(f"health target {key!r}: spec {spec!r}: "
                                  "expected a HealthSpec")
            addr = _address(address)
            _check_port(spec, port)
            new[key] = (spec, addr, port, vip)
        with self._lock:
            now = self._clock()
            old = self._targets
            self._targets = {}
            for key, (spec, addr, port, vip) in new.items():
                t = old.get(key)
                if t is not None and t.same_server(addr, port):
                    if t.spec != spec or t.vip != vip:
                        t.spec, t.vip = spec, vip
                        t.successes = t.failures = 0
                        t.next_due = now
                    self._targets[key] = t
                else:
                    self._targets[key] = _Target(spec, addr, port, vip,
                                                 self._initial_up, now)
            self._wake.notify_all()

    def state(self, key):
        """The state of one target: a dict with up (bool), last_ok (bool, or
        None before the first check), last_detail (str), successes and
        failures (consecutive counts), since (clock time of the last flip, or
        of when the target was added), checks (total).  Raises KeyError for
        an unknown key."""
        with self._lock:
            return self._state(self._targets[key])

    def states(self):
        """{key: state(key)} of every target."""
        with self._lock:
            return {k: self._state(t) for k, t in self._targets.items()}

    @staticmethod
    def _state(t):
        return {"up": t.up, "last_ok": t.last_ok,
                "last_detail": t.last_detail, "successes": t.successes,
                "failures": t.failures, "since": t.since, "checks": t.checks}

    # -- the state machine ---------------------------------------------------

    def _take_due(self, now):
        """Mark the due targets running; returns [(key, target)]."""
        due = []
        for key, t in self._targets.items():
            if not t.running and t.next_due <= now:
                t.running = True
                # Keep the cadence; when late by a whole interval (a check
                # that outlasted it, a busy pool), start again from now.
                t.next_due += t.spec.interval
                if t.next_due <= now:
                    t.next_due = now + t.spec.interval
                due.append((key, t))
        return due

    def _run_one(self, key, t):
        """Check one target and apply the result (on any thread)."""
        try:
            ok, detail = self._check(t.spec, t.address, t.port, t.vip)
        except Exception as exc:        # a bug, not a peer: count, go on
            log.exception("health check of %r raised", key)
            ok, detail = False, f"check raised {type(exc).__name__}: {exc}"
        flip = None
        with self._lock:
            if self._targets.get(key) is not t:
                t.running = False       # dropped or replaced meanwhile
                return
            flip = self._apply(t, bool(ok), detail)
        try:
            if flip is not None:
                with self._cb_lock:
                    if not self._stopped:
                        try:
                            self._on_change(key, flip, detail)
                        except Exception:
                            log.exception("health on_change(%r) raised", key)
        finally:
            with self._lock:
                t.running = False
                self._wake.notify_all()

    def _apply(self, t, ok, detail):
        """Count one result; returns the new state if it flipped, else
        None.  Called with the lock held."""
        now = self._clock()
        t.checks += 1
        t.last_ok, t.last_detail = ok, detail
        if ok:
            t.successes += 1
            t.failures = 0
            if not t.up and t.successes >= t.spec.rise:
                t.up, t.since = True, now
                return True
        else:
            t.failures += 1
            t.successes = 0
            if t.up and t.failures >= t.spec.fall:
                t.up, t.since = False, now
                return False
        return None

    def run_pending(self):
        """Run the checks that are due now, in the calling thread, one after
        the other; returns how many ran.  For tests (with a fake clock and
        check) and for a caller that drives the monitor itself instead of
        start()."""
        with self._lock:
            due = self._take_due(self._clock())
        for key, t in due:
            self._run_one(key, t)
        return len(due)

    # -- the background thread ------------------------------------------------

    def start(self):
        """Start checking in the background.  Raises PyfwdError if already
        started."""
        with self._lock:
            if self._thread is not None:
                raise PyfwdError("health monitor already started")
            self._stopping = self._stopped = False
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._max_workers,
                thread_name_prefix="pyfwd-health")
            self._thread = threading.Thread(target=self._loop,
                                            name="pyfwd-health", daemon=True)
            self._thread.start()

    def stop(self, wait=2.0):
        """Stop checking: no check starts and no on_change is called after
        this returns (unless an on_change already running outlasts ``wait``:
        then a warning is logged).  Waits up to ``wait`` seconds in all for
        the checks in flight (they end at their timeout anyway; their
        results update state() but are not reported).  Idempotent; start()
        may be called again afterwards."""
        end = time.monotonic() + wait
        with self._lock:
            thread, pool = self._thread, self._pool
            self._stopping = True
            self._stopped = True        # read under _cb_lock by _run_one
            self._wake.notify_all()
        # Wait for an on_change in progress; bounded, so that a caller that
        # holds a lock its on_change wants does not deadlock with us.
        if self._cb_lock.acquire(timeout=wait):
            self._cb_lock.release()
        else:
            log.warning("health: on_change still running after %g s", wait)
        if thread is None:
            return
        thread.join(max(0.0, end - time.monotonic()))
        pool.shutdown(wait=False, cancel_futures=True)
        with self._futures_lock:
            futures = set(self._futures)
        concurrent.futures.wait(futures,
                                timeout=max(0.0, end - time.monotonic()))
        with self._lock:
            self._thread = self._pool = None

    def _loop(self):
        with self._lock:
            while not self._stopping:
                now = self._clock()
                for key, t in self._take_due(now):
                    try:
                        fut = self._pool.submit(self._run_one, key, t)
                    except RuntimeError:        # pool shut down: stopping
                        t.running = False
                        return
                    with self._futures_lock:
                        self._futures.add(fut)
                    fut.add_done_callback(self._done)
                waits = [t.next_due for t in self._targets.values()
                         if not t.running]
                delay = min(waits) - now if waits else None
                # Sleep on the real clock; a fake clock is for run_pending.
                self._wake.wait(None if delay is None
                                else min(max(delay, 0.0), 60.0))

    def _done(self, fut):
        # May run in _loop's thread, under _lock (a future already done when
        # the callback is added): so it takes only _futures_lock.
        with self._futures_lock:
            self._futures.discard(fut)
        exc = fut.exception() if not fut.cancelled() else None
        if exc is not None:
            log.error("health check task failed: %r", exc)
