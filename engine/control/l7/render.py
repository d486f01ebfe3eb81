"""HAProxy's configuration text for the L7 VIPs, and the names in it.

Each L7 VIP is one `listen NAME` section, so the frontend and the backend
share the name that `set_state`/`set_weight` take.  Real servers get no
HAProxy checks: pyfwd's own health checks set their state through the
runtime API.  The engine names a section with l7_name() and a server with
l7_server() (from the real's key), so names stay the same across reloads
and HAProxy keeps a server's state by name.

Schedulers map to HAProxy's `balance`: rr, wrr -> roundrobin; lc, wlc ->
leastconn; sh -> source; maglev -> source with `hash-type consistent` (a
consistent hash of the client address: adding or removing a real moves only
its share of clients, which is what maglev is for; it is not Google's maglev
table).  HAProxy weights run from 0 to 256: a backend whose weights go higher
is scaled down proportionally (`haproxy_weights`).
"""

import functools
import grp
import ipaddress
import logging
import pwd
import re
from dataclasses import dataclass, field

from .options import MAXCONN, TIME_RE, L7Options
from .rewrite import rewrite_lines
from ...errors import ConfigError
from ...model import hostport

log = logging.getLogger("pyfwd.haproxy")

HAPROXY_WEIGHT_MAX = 256

# pyfwd scheduler -> (HAProxy balance algorithm, hash-type or None)
BALANCE = {"rr": ("roundrobin", None), "wrr": ("roundrobin", None),
           "lc": ("leastconn", None), "wlc": ("leastconn", None),
           "sh": ("source", None), "maglev": ("source", "consistent")}

DEFAULT_TIMEOUTS = {"connect": "5s", "client": "60s", "server": "60s",
                    "tunnel": "1h"}     # tunnel: idle TCP (DICOM), websocket

# HAProxy's workers run as this user (Debian's haproxy package makes it),
# else as FALLBACK_USER; the master stays root (it binds, reloads).
HAPROXY_USER = "haproxy"
FALLBACK_USER = "nobody"


def sanitize(name):
    """A name HAProxy accepts everywhere: every other character becomes _."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(name)) or "_"


@functools.lru_cache(maxsize=None)
def haproxy_user():
    """(user, group) HAProxy's workers run as: HAPROXY_USER and its group,
    else FALLBACK_USER and its group (warned once), else None (root,
    warned once)."""
    for name in (HAPROXY_USER, FALLBACK_USER):
        try:
            pw = pwd.getpwnam(name)
            group = grp.getgrgid(pw.pw_gid).gr_name
        except KeyError:
            continue
        if name != HAPROXY_USER:
            log.warning("no user %r (apt-get install haproxy makes it): "
                        "HAProxy's workers run as %r", HAPROXY_USER, name)
        return name, group
    log.warning("neither user %r nor %r exists: HAProxy's workers run as "
                "root", HAPROXY_USER, FALLBACK_USER)
    return None


def l7_name(service):
    """HAProxy's frontend/backend name of an L7 VIP (a model.Service)."""
    return sanitize(service.name or
                    f"vip_{service.vip.address}_{service.vip.port}")


def l7_server(real):
    """HAProxy's server name of a real server: stable, from its key
    (`10.0.0.11:8080` is `r_10_0_0_11_8080`)."""
    return "r_" + sanitize(real.key)


def haproxy_weights(weights):
    """pyfwd weights (0..65535) -> HAProxy weights (0..256), same ratios.

    Unchanged when they all fit; otherwise scaled so the largest is 256, a
    non-zero weight never rounding down to 0 (0 means drained).
    """
    weights = list(weights)
    top = max(weights, default=0)
    if top <= HAPROXY_WEIGHT_MAX:
        return weights
    return [0 if w == 0 else max(1, round(w * HAPROXY_WEIGHT_MAX / top))
            for w in weights]


def _quote(value):
    """A double-quoted HAProxy config word: no env expansion, no splitting."""
    return '"' + (str(value).replace("\\", "\\\\").replace('"', '\\"')
                  .replace("$", "\\$")) + '"'



@dataclass
class L7Vip:
    """One L7 VIP as HAProxy gets it: one `listen` section.

    name: the section's name (sanitized to [A-Za-z0-9_-]): the backend name
    of `HAProxy.set_state`; vip: anything with `.address` and `.port`
    (a pyfwd.model.Vip); reals: [(server_name, address, port, weight)] with
    pyfwd weights; scheduler: a pyfwd scheduler name; timeouts: overrides of
    DEFAULT_TIMEOUTS (connect, client, server, tunnel), HAProxy time values;
    persistence: seconds a client sticks to its server by its address (a
    stick table on src), 0 for none.
    """

    name: str
    vip: object
    reals: list = field(default_factory=list)
    scheduler: str = "rr"
    options: L7Options = field(default_factory=L7Options)
    timeouts: dict = field(default_factory=dict)
    persistence: int = 0


def l7_vips(services):
    """The L7Vips of the engine's L7 services: every configured real server
    (their state is set live through the runtime API), named by l7_name()
    and l7_server()."""
    return [L7Vip(l7_name(s), s.vip,
                  [(l7_server(r), r.address, r.port or s.vip.port, r.weight)
                   for r in s.reals],
                  s.scheduler, s.l7 or L7Options(),
                  (s.l7 or L7Options()).timeouts(), s.persistence)
            for s in services]


def render(vips, runtime_socket, user="auto"):
    """HAProxy's configuration text for a list of L7Vip.

    user: (user, group) the workers run as, None for root, "auto" for
    haproxy_user().  The global maxconn is the sum of the VIPs' (each
    L7Options.maxconn).  Every bind is `transparent` (IP_TRANSPARENT): HAProxy
    binds a VIP address that is not on the interface (a standby node's)
    and serves it once the address comes.

    Raises ConfigError for an unknown scheduler, a bad timeout, a bad weight,
    or two VIPs (or two servers of a VIP) with the same sanitized name.
    """
    if user == "auto":
        user = haproxy_user()
    if user and any(v.options.l7_source == "client" for v in vips):
        # usesrc clientip: every connection to a real server binds a
        # foreign address (IP_TRANSPARENT); HAProxy 2.6 refuses a `user`
        # then ("Some configuration options require full privileges").
        user = None
    maxconn = sum(v.options.maxconn for v in vips) or MAXCONN
    out = [
        "# Written by pyfwd (pyfwd.control.l7): pyfwd rewrites this file.",
        "global",
        "    master-worker",
        f"    stats socket {_quote(runtime_socket)} mode 600 level admin "
        "expose-fd listeners",
        f"    maxconn {maxconn}",
    ]
    if user:
        out += [f"    user {_quote(user[0])}", f"    group {_quote(user[1])}"]
    out += [
        # HAProxy's own messages (server state changes, alerts) to our pipe;
        # per-request logs (level info) are left out.
        "    log stderr format raw local0 notice",
        "",
        "defaults",
        "    log global",
    ]
    out += [f"    timeout {k} {v}" for k, v in DEFAULT_TIMEOUTS.items()]
    seen = set()
    for v in vips:
        name = sanitize(v.name)
        if name in seen:
            raise ConfigError(f"vip {v.name!r}: name {name!r} is taken by "
                              "another L7 VIP")
        seen.add(name)
        out += [""] + _render_vip(v, name)
    return "\n".join(out) + "\n"


def _source_lines(v, source):
    """The `source` line of l7_source (none for "balancer")."""
    if source == "balancer":
        return []
    if source == "client":
        any_ = "::" if v.vip.address.version == 6 else "0.0.0.0"
        return [f"    source {any_} usesrc clientip"]
    addr = v.vip.address if source == "vip" else ipaddress.ip_address(source)
    if addr.version != v.vip.address.version:
        raise ConfigError(f"vip {v.name}: l7_source {source}: the VIP's "
                          f"family (IPv{v.vip.address.version})")
    return [f"    source {addr}"]


def _render_vip(v, name):
    o = v.options
    where = f"vip {name}"
    if v.scheduler not in BALANCE:
        raise ConfigError(f"{where}: scheduler {v.scheduler!r}: expected one "
                          f"of {', '.join(BALANCE)}")
    balance, hash_type = BALANCE[v.scheduler]
    bind = f"    bind {hostport(v.vip.address, v.vip.port)} transparent"
    if o.tls_cert:
        bind += f" ssl crt {_quote(o.tls_cert)}"
    lines = [f"listen {name}", f"    mode {o.l7_mode}", bind,
             f"    maxconn {o.maxconn}", f"    balance {balance}"]
    if hash_type:
        lines.append(f"    hash-type {hash_type}")
    if v.persistence:
        table = "ipv6" if v.vip.address.version == 6 else "ip"
        lines += [f"    stick-table type {table} size 100k expire "
                  f"{v.persistence}s", "    stick on src"]
    lines += _source_lines(v, o.l7_source)
    for key, value in v.timeouts.items():
        if key not in DEFAULT_TIMEOUTS or not isinstance(value, str) \
                or not TIME_RE.match(value):
            raise ConfigError(f"{where}: timeout {key} = {value!r}: expected "
                              f"one of {', '.join(DEFAULT_TIMEOUTS)} = a "
                              "time like 5s, 500ms or 1h")
        lines.append(f"    timeout {key} {value}")
    if o.l7_mode == "http":
        lines.append(f"    timeout http-request {o.timeout_http_request}")
        if o.xff_drop_client:       # before ours is added
            lines.append("    http-request del-header X-Forwarded-For")
        if o.forwardfor:
            lines.append("    option forwardfor")
        if o.tls_cert:
            lines.append("    http-request set-header X-Forwarded-Proto https")
        for h in o.del_headers:
            lines.append(f"    http-request del-header {h}")
        for h, value in o.set_headers:
            lines.append(f"    http-request set-header {h} {_quote(value)}")
        if o.cookie:
            lines.append(f"    cookie {o.cookie} insert indirect nocache")
        lines += rewrite_lines(o.rewrite, _quote)
    names = set()
    for sname, _, _, w in v.reals:
        if (isinstance(w, bool) or not isinstance(w, int)
                or not 0 <= w <= 65535):
            raise ConfigError(f"{where}: server {sname} weight {w!r}: "
                              "expected an integer from 0 to 65535")
    weights = haproxy_weights(r[3] for r in v.reals)
    for (sname, address, port, _), weight in zip(v.reals, weights):
        sname = sanitize(sname)
        if sname in names:
            raise ConfigError(f"{where}: server {sname} listed twice")
        names.add(sname)
        line = (f"    server {sname} {hostport(address, port)} "
                f"weight {weight}")
        if o.l7_mode == "http" and o.cookie:
            line += f" cookie {sname}"
        if o.send_proxy:
            line += " send-proxy-v2"
        lines.append(line)
    return lines


__all__ = ["HAPROXY_WEIGHT_MAX", "BALANCE", "DEFAULT_TIMEOUTS", "sanitize",
           "HAPROXY_USER", "FALLBACK_USER", "haproxy_user",
           "l7_name", "l7_server", "haproxy_weights", "L7Vip",
           "l7_vips", "render"]
