"""The dashboard's requests: the page, its assets and the JSON API.

    GET  /                 the page (static/index.html)
    GET  /static/NAME      its script and style sheet (the files of static/)
    GET  /api/state        {"time", "actions", "engine", "ha", "totals",
                            "vips", "events", "problem"} (state())
    GET  /api/events       {"events": [...]} (?since=SEQ: the later ones)
    POST /api/action       {"action": "drain" | "halt" | "online" |
                            "weight", "vip", "real"[, "weight"]}

The browser computes the rates (frames, bytes, new flows per second) from
successive /api/state snapshots: their counters and "time".

An action needs a token (control.web.token) sent as the header
X-Pyfwd-Token, and passes the same-origin checks (same_origin()): Origin,
if sent, is the listener's own (the Host header's); Sec-Fetch-Site, if
sent, is same-origin; the body is application/json.  Without a token
configured the dashboard is read-only.  A refusal answers 403, a bad body
400, with {"ok": false, "error": ...}; an action runs as the control
socket's command of the same name (`control(line)`: ControlServer's
serialized path), so it is atomic, kept in the state file, and refused
with the same errors as `pyfwd ctl`.  Every answer carries the security
headers (SECURITY_HEADERS); nothing here raises to the HTTP server.

Every request to the dashboard's paths (is_ours()) must name this
machine in its Host header, as an IP address, localhost or its own name
(foreign_host()), else 421 Misdirected Request: a page whose DNS name
was pointed here afterwards (DNS rebinding) reads nothing.  /metrics
answers any Host (Prometheus scrapes by whatever name it was given).

    app = Dashboard(engine, control=server.handle_line, token=token)
    MetricsServer(engine.stats, address, web=app)   # calls app.handle()
"""

import functools
import ipaddress
import json
import logging
import os
import socket
import time
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

from .token import same_token
from ...errors import PyfwdError

log = logging.getLogger("pyfwd.control.web")

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
TYPES = {".html": "text/html; charset=utf-8",
         ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8",
         ".svg": "image/svg+xml"}
JSON = "application/json"
TOKEN_HEADER = "X-Pyfwd-Token"
MAX_BODY = 8192             # bytes of an action's body
EVENTS_SHOWN = 50           # events in /api/state (all: /api/events)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors "
                               "'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# The actions and their fields beside "action" (as the control commands
# of the same name take them: control.protocol.COMMANDS).
ACTIONS = {"drain": ("vip", "real"), "halt": ("vip", "real"),
           "online": ("vip", "real"), "weight": ("vip", "real", "weight")}


class Response(NamedTuple):
    """An answer: status, Content-Type, body (bytes), extra headers."""

    status: int
    ctype: str
    body: bytes
    headers: dict = {}


def json_response(status, obj, headers=None):
    """obj as a JSON answer (values JSON cannot say become text)."""
    return Response(status, JSON, json.dumps(obj, default=str).encode(),
                    headers or {})


def refuse(status, message, headers=None):
    """{"ok": false, "error": message} with `status`."""
    return json_response(status, {"ok": False, "error": message}, headers)


def is_ours(path):
    """True for the paths the dashboard answers (the rest: metrics')."""
    return path == "/" or path.startswith(("/static/", "/api/"))


class Dashboard:
    """The dashboard of `engine` (stats(), show(), events: an EventLog).

    control: a callable taking one control request line (bytes) and
    returning its reply line (ControlServer.handle_line), or None: no
    actions.  token: the token actions need (a str, or a TokenFile: its
    current() one), or None: read-only.  static: the folder of the
    page's files (read once, here).
    """

    def __init__(self, engine, control=None, token=None, static=STATIC,
                 clock=time.time):
        self.engine = engine
        self.control = control
        self.token = token
        self._clock = clock
        self.files = {}
        for name in sorted(os.listdir(static)):
            ext = os.path.splitext(name)[1]
            if ext in TYPES:
                with open(os.path.join(static, name), "rb") as f:
                    self.files[name] = (TYPES[ext], f.read())

    @property
    def actions(self):
        """True when actions may be taken (a token and a control path)."""
        return self.token is not None and self.control is not None

    # --- the HTTP server's side ---------------------------------------------

    def handle(self, handler, body=True):
        """Answer the request of `handler` (control.metrics_http's: its
        reply() writes the answer) if it is ours (is_ours(), or any
        POST); False to leave it to the caller.  body: False for HEAD."""
        method = handler.command
        if not is_ours(urlsplit(handler.path).path) and method != "POST":
            return False
        data = b""
        if method == "POST":
            data, problem = read_body(handler)
            if problem:
                handler.close_connection = True
                self.send(handler, refuse(400, problem), body)
                return True
        try:
            out = self.respond(method, handler.path, handler.headers, data)
        except Exception:       # a bug: said, answered, the server goes on
            log.exception("dashboard: %s %s failed", method, handler.path)
            out = refuse(500, "internal error (logged)")
        if out.status in (403, 421):
            log.warning("dashboard: refused %s %s from %s: %s", method,
                        handler.path, handler.client_address[0],
                        json.loads(out.body)["error"])
        self.send(handler, out, body)
        return True

    @staticmethod
    def send(handler, out, body=True):
        """Write Response `out` on handler, with SECURITY_HEADERS."""
        handler.reply(out.status, out.ctype, out.body, body,
                      {**SECURITY_HEADERS, **out.headers})

    # --- requests -------------------------------------------------------------

    def respond(self, method, target, headers, body=b""):
        """The Response to one request: method, target (path?query),
        headers (a mapping, case-insensitive as http.server's), body."""
        url = urlsplit(target)
        path = url.path
        why = foreign_host(headers.get("Host"))
        if why and is_ours(path):
            return refuse(421, why)
        if method == "POST":
            if path != "/api/action":
                return refuse(405, f"POST {path}: only /api/action takes "
                              "POST", {"Allow": "GET, HEAD"})
            return self.action(headers, body)
        if method not in ("GET", "HEAD"):
            return refuse(405, f"{method} is not answered here",
                          {"Allow": "GET, HEAD, POST"})
        if path == "/":
            return self.file("index.html")
        if path.startswith("/static/"):
            return self.file(path[len("/static/"):])
        if path == "/api/state":
            return json_response(200, self.state())
        if path == "/api/events":
            since = parse_qs(url.query).get("since", ["0"])[-1]
            if not since.isdigit():
                return refuse(400, f"since={since!r}: expected an event's "
                              "sequence number (0: all)")
            return json_response(200, {"events": self.engine.events.list(
                since=int(since))})
        if path == "/api/action":
            return refuse(405, "/api/action takes POST", {"Allow": "POST"})
        return refuse(404, f"{path}: no such page (try / or /metrics)")

    def file(self, name):
        """One of the static files, by name; 404 for any other."""
        if name not in self.files:
            return refuse(404, f"/static/{name}: no such file")
        ctype, data = self.files[name]
        return Response(200, ctype, data, {})

    def state(self):
        """What the page shows (see the module's docstring): the engine
        (status()), HA, the data plane's totals, every VIP and real server
        (show()), the latest events; "problem": why the engine is not
        alive (its status() error), else None."""
        e = self.engine
        problem = None
        try:
            stats = e.stats()
        except PyfwdError as exc:       # a loop not alive: still show
            problem = str(exc)
            stats = {"vips": e.show()}
        core = stats.get("core") or {}
        ha = stats.get("ha") or {}
        return {"time": round(self._clock(), 3), "actions": self.actions,
                "problem": problem,
                "engine": {k: stats.get(k) for k in (
                    "iface", "inside_iface", "pid", "uptime", "config")},
                "backend": (stats.get("xsk") or {}).get("backend"),
                "ha": {k: ha.get(k) for k in ("role", "since",
                                              "transitions")},
                "totals": {k: core.get(k) for k in ("frames", "bytes",
                                                    "flows_new")},
                "vips": stats.get("vips") or [],
                "events": e.events.list(limit=EVENTS_SHOWN)}

    def action(self, headers, body):
        """POST /api/action (see the module's docstring)."""
        if not self.actions:
            return refuse(403, "read-only dashboard: no token configured "
                          "(pyfwd start --dashboard-token FILE)")
        why = same_origin(headers)
        if why:
            return refuse(403, why)
        ctype = (headers.get("Content-Type") or "").split(";")[0]
        if ctype.strip().lower() != JSON:
            return refuse(403, f"Content-Type {ctype.strip() or 'none'!s}: "
                          f"actions take {JSON}")
        token = self.token
        if hasattr(token, "current"):
            token = token.current()
            if token is None:
                return refuse(403, "the token file changed and will not do "
                              "now: the engine's log says why")
        if not same_token(token, headers.get(TOKEN_HEADER)):
            return refuse(403, f"no token or a wrong one ({TOKEN_HEADER})")
        try:
            request = parse_action(body)
        except ValueError as exc:
            return refuse(400, str(exc))
        reply = json.loads(self.control(json.dumps(request).encode()))
        if reply.get("ok"):
            log.info("dashboard: %s", " ".join(
                str(v) for v in request.values()))
            return json_response(200, reply)
        status = 500 if reply["error"].startswith("internal error") else 400
        return json_response(status, reply)


def read_body(handler):
    """(body bytes, None) of a POST on handler, or (b"", why not): no or
    a bad Content-Length, a body over MAX_BODY bytes, a short read."""
    length = handler.headers.get("Content-Length")
    if length is None or not length.strip().isdigit():
        return b"", "a POST needs a Content-Length"
    n = int(length)
    if n > MAX_BODY:
        return b"", f"body of {n} bytes: at most {MAX_BODY}"
    try:
        data = handler.rfile.read(n)
    except OSError as exc:
        return b"", f"body not read: {exc}"
    if len(data) != n:
        return b"", "body shorter than its Content-Length"
    handler.read_done()
    return data, None


@functools.cache
def own_names():
    """This machine's names, lower case: "localhost", its host name and
    its fully qualified one (looked up once, on first need)."""
    return frozenset(n.lower().rstrip(".") for n in (
        "localhost", socket.gethostname(), socket.getfqdn()) if n)


def foreign_host(host):
    """None when the Host header `host` names this machine: an IP address
    (v4, or v6 in brackets), "localhost" or this machine's own name
    (own_names()), with or without a port; else why not.  A name that is
    not ours may be one an attacker's DNS points here (DNS rebinding: the
    browser would take the attacker's page and the dashboard for one
    origin).  No Host (HTTP/1.0) passes: a browser always sends one."""
    if host is None:
        return None
    name = host.strip()
    if name.startswith("["):
        literal, sep, rest = name[1:].partition("]")
        try:
            ipaddress.IPv6Address(literal)
            if sep and (not rest or rest[:1] == ":" and rest[1:].isdigit()):
                return None
        except ValueError:
            pass
    else:
        head, sep, port = name.rpartition(":")
        if sep and port.isdigit():
            name = head
        try:
            ipaddress.IPv4Address(name)
            return None
        except ValueError:
            if name.lower().rstrip(".") in own_names():
                return None
    return (f"Host {host!r} is not this machine: the dashboard answers "
            "by IP address, localhost or this machine's name only")


def same_origin(headers):
    """None when the request may come from the page itself, else why not:
    Origin, if sent, must be http(s)://HOST with the Host header's HOST;
    Sec-Fetch-Site, if sent, must be same-origin."""
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        return f"Sec-Fetch-Site {site!r}: actions come from the page itself"
    origin = headers.get("Origin")
    if origin is None:
        return None
    host = headers.get("Host")
    if not host:
        return "an Origin and no Host header"
    if origin not in (f"http://{host}", f"https://{host}"):
        return f"Origin {origin!r} is not this dashboard's ({host})"
    return None


def parse_action(body):
    """An action's JSON body -> the control request {"cmd", fields...};
    ValueError saying what is wrong (the field types are checked by the
    control protocol, as for `pyfwd ctl`)."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("body must be a JSON object like {\"action\": "
                         "\"drain\", \"vip\": ..., \"real\": ...}")
    action = obj.get("action")
    if action not in ACTIONS:
        raise ValueError(f"action {action!r}: expected one of "
                         f"{', '.join(ACTIONS)}")
    fields = ACTIONS[action]
    extra = sorted(k for k in obj if k != "action" and k not in fields)
    if extra:
        raise ValueError(f"{action}: unknown field {extra[0]!r} (expects "
                         f"{', '.join(fields)})")
    missing = [k for k in fields if k not in obj]
    if missing:
        raise ValueError(f"{action}: missing field {missing[0]!r} (expects "
                         f"{', '.join(fields)})")
    return {"cmd": action, **{k: obj[k] for k in fields}}


__all__ = ["Dashboard", "Response", "same_origin", "parse_action",
           "ACTIONS", "SECURITY_HEADERS", "TOKEN_HEADER"]
