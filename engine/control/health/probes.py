"""The health probes: tcp, http, https and command (dicom: dicom.py), and
``check``, which runs the one a HealthSpec names against one real server.

``tcp``      the TCP handshake completes.
``http``     ``GET path HTTP/1.0`` answers status ``expect`` (and the body
             contains ``body``, if given).
``https``    the same over TLS.  The server's certificate is NOT verified:
             the probe addresses a backend by its IP address, usually behind
             a certificate made out to the VIP's name, and asks "does it
             answer", not "is it who it claims to be".  SNI is sent only when
             ``host`` is a name.
``dicom``    a DICOM C-ECHO (dicom.check_dicom).
``command``  an external program exits 0 within ``timeout`` (see
             ``check_command`` for its environment).

Every probe returns (ok, detail) and never raises for a failing peer.
"""

import ipaddress
import os
import signal
import ssl
import subprocess
import time

from .connection import ProbeError, converse
from .dicom import check_dicom
from .spec import TYPES, target_address
from ...errors import PyfwdError

# How much of an HTTP response we read at most (headers plus the part of the
# body searched for ``body``).
HTTP_READ_LIMIT = 64 * 1024


def check_tcp(spec, address, port):
    """Connect and close.  Returns (True, "connected in N ms") or (False,
    reason); never raises for a failing peer."""
    t0 = time.monotonic()
    return converse(address, port, spec.timeout, lambda conv: (
        True, f"connected in {(time.monotonic() - t0) * 1e3:.1f} ms"))


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
    host = spec.host
    if host is None:
        host = f"[{address}]" if address.version == 6 else str(address)
        if port != (443 if tls else 80):
            host = f"{host}:{port}"
    return converse(address, port, spec.timeout,
                    lambda conv: _get(conv, spec, host, tls))


def _get(conv, spec, host, tls):
    """check_http's conversation, once connected."""
    if tls:
        conv.phase = "TLS handshake"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conv.deadline.arm(conv.sock)
        conv.sock = ctx.wrap_socket(conv.sock,
                                    server_hostname=_sni(spec.host))
    conv.phase = "request"
    conv.send(build_http_request(spec.path, host))
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conv.recv_some()
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
    length = int(length) if length.isascii() and length.isdigit() else None
    while want not in body and len(body) < HTTP_READ_LIMIT and (
            length is None or len(body) < length):
        chunk = conv.recv_some(HTTP_READ_LIMIT - len(body))
        if not chunk:
            break
        body += chunk
    if want in body:
        return True, f"HTTP {status}, body has {spec.body!r}"
    return False, (f"HTTP {status}, body lacks {spec.body!r} "
                   f"({len(body)} bytes read)")


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
    addr = target_address(address)
    p = spec.check_port(port)
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
