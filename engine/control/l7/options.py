"""The L7 keys of a [[vip]] table (`L7Options`), parsed and checked."""

import os
import re
from dataclasses import dataclass
from typing import Optional

from ...errors import ConfigError

L7_MODES = ("http", "tcp")

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
    """

    l7_mode: str = "http"
    forwardfor: bool = True
    cookie: Optional[str] = None
    tls_cert: Optional[str] = None
    send_proxy: bool = False
    set_headers: tuple = ()     # ((name, value), ...), in config order
    del_headers: tuple = ()     # (name, ...)

    # The [[vip]] keys of an L7 VIP, with the TOML type each takes.
    KEYS = {"l7_mode": str, "forwardfor": bool, "cookie": str,
            "tls_cert": str, "send_proxy": bool, "set_headers": dict,
            "del_headers": list}

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

        return cls(l7_mode=mode, forwardfor=forwardfor, cookie=cookie,
                   tls_cert=tls_cert, send_proxy=send_proxy,
                   set_headers=tuple(set_headers.items()),
                   del_headers=tuple(del_headers))


__all__ = ["L7_MODES", "L7Options"]
