"""A VIP's health check as configured: HealthSpec and its validation.

The config table of a VIP (TOML inline table)::

    health = { type = "dicom", interval = 2.0, timeout = 1.0, rise = 2,
               fall = 2, called_ae = "PACS", calling_ae = "PYFWD" }

``HealthSpec.from_dict`` validates it (ConfigError naming ``where.key``,
the value and what was expected); ``target_address`` and
``HealthSpec.check_port`` validate what a check is pointed at.  Pure: no
sockets, no threads.
"""

import dataclasses
import ipaddress
import math
import shlex

from ...errors import ConfigError

TYPES = ("tcp", "http", "https", "dicom", "command")

# Keys every type takes, and the keys only some types take.
_COMMON_KEYS = ("type", "interval", "timeout", "rise", "fall", "port",
                "via_vip")
_TYPE_KEYS = {
    "tcp": (),
    "http": ("path", "expect", "body", "host"),
    "https": ("path", "expect", "body", "host"),
    "dicom": ("called_ae", "calling_ae"),
    "command": ("command",),
}


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
    # also a TCP handshake with the VIP through the real's MAC (vipprobe.py;
    # a DR VIP's only: config.py checks the mode)
    via_vip: bool = False
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
        if "via_vip" in d:
            if not isinstance(d["via_vip"], bool):
                raise _where_key(where, "via_vip", d["via_vip"],
                                 "true or false")
            kw["via_vip"] = d["via_vip"]
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

    def check_port(self, port):
        """The port a check of a real server at ``port`` probes: this
        spec's port when set, else ``port``.  ConfigError when that is not
        an integer from 1 to 65535."""
        p = self.port if self.port is not None else port
        if isinstance(p, bool) or not isinstance(p, int) or \
                not 1 <= p <= 65535:
            raise ConfigError(f"health check port {port!r}: expected an "
                              "integer from 1 to 65535 (or a port in the "
                              "health table)")
        return p


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


def target_address(address):
    """The ipaddress of a check's target (an ipaddress object or a string,
    IPv6 in brackets or not); ConfigError for anything else."""
    try:
        return ipaddress.ip_address(str(address).strip("[]"))
    except ValueError:
        raise ConfigError(f"health check address {address!r}: expected an "
                          "IPv4 or IPv6 address") from None
