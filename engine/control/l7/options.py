"""The L7 keys of a [[vip]] table (`L7Options`), parsed and checked."""

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Optional

from .rewrite import Rewrite
from ...errors import ConfigError

L7_MODES = ("http", "tcp")
MAXCONN = 2000              # per L7 VIP (HAProxy's frontend maxconn)
MAXCONN_MAX = 1_000_000
HTTP_REQUEST_TIMEOUT = "10s"    # a whole request's headers (slowloris)

TIMEOUT_MAX = 2_000_000     # seconds (HAProxy's times stop at 2^31 ms)
TIMEOUT_KEYS = ("timeout_client", "timeout_server", "timeout_tunnel")
SOURCE_EXPIRE = 1800        # persistence = "source": seconds of a stick
# l7_source: the address HAProxy connects to the real servers from
L7_SOURCES = ("balancer", "vip", "client")

TIME_RE = re.compile(r"^[0-9]+(us|ms|s|m|h|d)?$")   # an HAProxy time

_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")    # RFC 9110 token


@dataclass(frozen=True)
class L7Options:
    """The L7 keys of a [[vip]] table.

    l7_mode: "http" or "tcp"; forwardfor: add X-Forwarded-For (http only,
    default on in http); cookie: name of an inserted persistence cookie
    (http only, None = off); tls_cert: PEM with certificate and key, TLS is
    terminated on the frontend (http only); send_proxy: PROXY protocol v2 to
    the real servers; set_headers / del_headers: request headers to set or
    remove (http only).  A set_headers value is an HAProxy log-format string:
    `%[src]` inserts the client address, `%%` is a literal percent sign.
    maxconn: the VIP's concurrent connections (more wait in the kernel's
    backlog); timeout_http_request: the time a client has to send a whole
    request's headers (http only); xff_drop_client: remove an
    X-Forwarded-For the client sent before adding ours, so the real server
    sees only the address HAProxy saw (http only; default off, for clients
    behind a proxy the operator trusts).  timeout_client, timeout_server,
    timeout_tunnel: seconds (None: render.DEFAULT_TIMEOUTS), HAProxy's
    `timeout client|server|tunnel` of this VIP (a DICOM C-MOVE streams for
    minutes).  l7_source: "balancer" (the kernel picks the balancer's own
    address), "vip", a local address, or "client" (transparent: HAProxy
    connects from the client's address; the real servers must answer
    through the balancer, see l7/transparent.py).  rewrite: the URL
    rewriting and redirect keys (rewrite.py; http only).
    """

    l7_mode: str = "http"
    forwardfor: bool = True
    cookie: Optional[str] = None
    tls_cert: Optional[str] = None
    send_proxy: bool = False
    set_headers: tuple = ()     # ((name, value), ...), in config order
    del_headers: tuple = ()     # (name, ...)
    maxconn: int = MAXCONN
    timeout_http_request: str = HTTP_REQUEST_TIMEOUT
    xff_drop_client: bool = False
    timeout_client: Optional[int] = None
    timeout_server: Optional[int] = None
    timeout_tunnel: Optional[int] = None
    l7_source: str = "balancer"
    rewrite: Rewrite = Rewrite()

    # The [[vip]] keys of an L7 VIP, with the TOML type each takes.
    KEYS = {"l7_mode": str, "forwardfor": bool, "cookie": str,
            "tls_cert": str, "send_proxy": bool, "set_headers": dict,
            "del_headers": list, "maxconn": int, "timeout_http_request": str,
            "xff_drop_client": bool, **dict.fromkeys(TIMEOUT_KEYS, int),
            "l7_source": str, **Rewrite.KEYS}

    def timeouts(self):
        """{client|server|tunnel: HAProxy time} of the timeouts given."""
        return {k[len("timeout_"):]: f"{getattr(self, k)}s"
                for k in TIMEOUT_KEYS if getattr(self, k) is not None}

    @classmethod
    def from_dict(cls, d, where="vip"):
        """Parse the L7 keys of `d` (other keys are ignored: the caller's).

        `where` prefixes every message (e.g. "vip web").  Raises ConfigError
        naming the key, the value and what was expected.
        """
        def bad(key, value, expected):
            return ConfigError(f"{where}: {key} {value!r}: expected "
                               f"{expected}")

        mode = d.get("l7_mode", "http")
        if mode not in L7_MODES:
            raise bad("l7_mode", mode, "one of " + ", ".join(L7_MODES))
        http = mode == "http"

        def boolean(key, default):
            v = d.get(key, default)
            if not isinstance(v, bool):
                raise bad(key, v, "true or false")
            return v

        forwardfor = boolean("forwardfor", http)
        if forwardfor and not http:
            raise bad("forwardfor", forwardfor,
                      "false with l7_mode tcp (X-Forwarded-For is HTTP; use "
                      "send_proxy)")
        send_proxy = boolean("send_proxy", False)
        xff_drop = boolean("xff_drop_client", False)
        if xff_drop and not http:
            raise bad("xff_drop_client", xff_drop, "false with l7_mode tcp "
                      "(X-Forwarded-For is HTTP)")

        maxconn = d.get("maxconn", MAXCONN)
        if isinstance(maxconn, bool) or not isinstance(maxconn, int) or \
                not 1 <= maxconn <= MAXCONN_MAX:
            raise bad("maxconn", maxconn, f"an integer from 1 to "
                      f"{MAXCONN_MAX}")
        http_timeout = d.get("timeout_http_request", HTTP_REQUEST_TIMEOUT)
        if not isinstance(http_timeout, str) or \
                not TIME_RE.match(http_timeout):
            raise bad("timeout_http_request", http_timeout, "a time like "
                      "10s, 500ms or 1m")
        if not http and "timeout_http_request" in d:
            raise bad("timeout_http_request", http_timeout,
                      "no timeout_http_request with l7_mode tcp")

        cookie = d.get("cookie")
        if cookie is not None:
            if not isinstance(cookie, str) or not _TOKEN_RE.match(cookie):
                raise bad("cookie", cookie, "a cookie name (letters, digits, "
                          "-, _ ...; no spaces or separators)")
            if not http:
                raise bad("cookie", cookie, "no cookie with l7_mode tcp")

        tls_cert = d.get("tls_cert")
        if tls_cert is not None:
            if not isinstance(tls_cert, str) or not tls_cert:
                raise bad("tls_cert", tls_cert, "the path of a PEM file "
                          "holding the certificate and its key")
            if not http:
                raise bad("tls_cert", tls_cert, "no tls_cert with l7_mode "
                          "tcp (TLS is terminated in http mode only)")
            if not os.path.isfile(tls_cert):
                raise bad("tls_cert", tls_cert, "an existing PEM file "
                          "(certificate and key)")

        set_headers = d.get("set_headers", {})
        if not isinstance(set_headers, dict):
            raise bad("set_headers", set_headers, "a table of header name = "
                      "value strings")
        for name, value in set_headers.items():
            if not isinstance(name, str) or not _TOKEN_RE.match(name):
                raise bad("set_headers", name, "a header name (a token: "
                          "letters, digits, -, ...)")
            if (not isinstance(value, str)
                    or any(c in value for c in "\r\n\0")):
                raise bad(f"set_headers.{name}", value, "a string without "
                          "CR, LF or NUL")

        del_headers = d.get("del_headers", [])
        if not isinstance(del_headers, (list, tuple)):
            raise bad("del_headers", del_headers, "a list of header names")
        for name in del_headers:
            if not isinstance(name, str) or not _TOKEN_RE.match(name):
                raise bad("del_headers", name, "a header name (a token: "
                          "letters, digits, -, ...)")
        if not http:
            for key, v in (("set_headers", set_headers),
                           ("del_headers", del_headers)):
                if v:
                    raise bad(key, v, f"no {key} with l7_mode tcp")

        timeouts = {}
        for key in TIMEOUT_KEYS:
            if key in d:
                t = d[key]
                if isinstance(t, bool) or not isinstance(t, int) or \
                        not 1 <= t <= TIMEOUT_MAX:
                    raise bad(key, t, f"seconds from 1 to {TIMEOUT_MAX}")
                timeouts[key] = t

        source = d.get("l7_source", "balancer")
        if source not in L7_SOURCES:
            try:
                ipaddress.ip_address(source)
            except (TypeError, ValueError):
                raise bad("l7_source", source, "balancer, vip, client or "
                          "an address of this host") from None

        return cls(**timeouts, l7_source=source,
                   rewrite=Rewrite.from_dict(d, where, http), l7_mode=mode,
                   forwardfor=forwardfor, cookie=cookie,
                   tls_cert=tls_cert, send_proxy=send_proxy,
                   set_headers=tuple(set_headers.items()),
                   del_headers=tuple(del_headers), maxconn=maxconn,
                   timeout_http_request=http_timeout,
                   xff_drop_client=xff_drop)


__all__ = ["TIMEOUT_MAX", "TIMEOUT_KEYS", "SOURCE_EXPIRE", "L7_SOURCES",
           "L7_MODES", "MAXCONN", "HTTP_REQUEST_TIMEOUT", "TIME_RE",
           "L7Options"]
