"""The metrics listener: Prometheus's /metrics over HTTP, and the routes
other parts add to the same listener.

    server = MetricsServer(engine.stats, ("127.0.0.1", 10104)).start()
    server.url                  # http://127.0.0.1:10104/metrics
    server.stop()

/metrics serves a registry of its own: the engine's families
(control.metrics.EngineCollector over get_stats()), the process's
(process_*: CPU, memory, open files, start time) and the platform's
(python_info, python_gc_*).  The format follows the scrape's Accept
header (prometheus_client's choose_encoder): OpenMetrics when asked,
the text format 0.0.4 otherwise.

Routes: {path: handler}; a handler gets the request (a _Handler: its
.path, .headers, .command, .rfile, the MetricsServer as .server.owner)
and returns (status, content type, body bytes[, {header: value}]).  A
path that ends in "/" also serves every path under it (`/static/`).
Adding a page is one entry:

    MetricsServer(engine.stats, address, routes={"/": page})

A whole application can take its requests instead (`web`: an object
whose handle(request, body) answers the GET, HEAD or POST requests it
owns and returns True, False to leave one to the routes; body is False
for HEAD).  POST goes nowhere else: 405 when web does not take it.

The default port, 10104, is on no exporter's list (Prometheus keeps the
9100-9999 range for them; 10104 echoes DICOM's 104).
"""

import http.server
import ipaddress
import logging
import re
import socket
import threading
from urllib.parse import urlsplit

from prometheus_client import (CollectorRegistry, GCCollector,
                               PlatformCollector, ProcessCollector)
from prometheus_client.exposition import choose_encoder

from .metrics import EngineCollector
from ..errors import ConfigError

log = logging.getLogger("pyfwd.control.metrics")

DEFAULT_PORT = 10104
DEFAULT_ADDRESS = ("127.0.0.1", DEFAULT_PORT)
TEXT = "text/plain; charset=utf-8"


def parse_address(text, default_host=DEFAULT_ADDRESS[0]):
    """`ADDR:PORT` -> (host, port): 127.0.0.1:10104, [::1]:10104, :10104
    or 10104 (on `default_host`, loopback).  Port 0 picks a free port.

    Raises ConfigError naming the text and the expected form.
    """
    form = ("expected ADDR:PORT, e.g. 127.0.0.1:10104, [::1]:10104 or "
            ":10104")
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"metrics address {text!r}: {form}")
    s = text.strip()
    if s.isdigit():
        host, port = default_host, s
    elif s.startswith("["):
        m = re.fullmatch(r"\[([^\]]+)\]:(\d+)", s)
        if not m:
            raise ConfigError(f"metrics address {text!r}: {form}")
        host, port = m.group(1), m.group(2)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"metrics address {text!r}: {host!r} is not "
                              "an IPv6 address") from None
    else:
        host, sep, port = s.rpartition(":")
        if not sep:
            raise ConfigError(f"metrics address {text!r}: {form}")
        if ":" in host:
            raise ConfigError(f"metrics address {text!r}: write an IPv6 "
                              "address in brackets, e.g. [::1]:10104")
        host = host or default_host
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?",
                                host):
                raise ConfigError(f"metrics address {text!r}: {host!r} is "
                                  "not an address or host name") from None
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"metrics address {text!r}: port {port!r}: "
                          "expected 0 to 65535")
    return host, int(port)


def metrics_registry(get_stats):
    """A registry of the engine's families over get_stats(), the
    process's and the platform's (see the module's docstring)."""
    registry = CollectorRegistry()
    registry.register(EngineCollector(get_stats))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def serve_metrics(request):
    """The /metrics route: the server's registry, encoded as the scrape's
    Accept header asks."""
    encoder, ctype = choose_encoder(request.headers.get("Accept"))
    return 200, ctype, encoder(request.server.owner.registry)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "pyfwd"
    timeout = 10                # a slow client does not hold a thread

    def do_GET(self):
        self._respond(body=True)

    def do_HEAD(self):
        self._respond(body=False)

    def do_POST(self):
        web = self.server.owner.web
        if web is None or not web.handle(self, True):
            self.close_connection = True    # its body is left unread
            self._send(405, TEXT, b"method not allowed\n", True,
                       {"Allow": "GET, HEAD"})

    def _route(self):
        """The handler of this request's path, or None."""
        path = urlsplit(self.path).path
        routes = self.server.owner.routes
        if path in routes:
            return routes[path]
        under = [p for p in routes if p.endswith("/") and p != "/"
                 and path.startswith(p)]
        return routes[max(under, key=len)] if under else None

    def _respond(self, body):
        web = self.server.owner.web
        if web is not None and web.handle(self, body):
            return              # the application's (control.web)
        handler = self._route()
        if handler is None:
            self._send(404, TEXT, b"not found: try /metrics\n", body)
            return
        try:
            code, ctype, data, *headers = handler(self)
        except Exception as exc:    # the request fails, the server stays
            log.exception("metrics listener: %s failed", self.path)
            self._send(500, TEXT, f"error: {exc}\n".encode(), body)
            return
        self._send(code, ctype, data, body, *headers)

    def _send(self, code, ctype, data, body, headers=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format, *args):    # noqa: A002 (http.server's)
        log.debug("metrics: %s %s", self.address_string(), format % args)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_port = False    # a second engine on the port must fail

    def __init__(self, address, owner):
        self.owner = owner
        self.address_family = (socket.AF_INET6 if ":" in address[0]
                               else socket.AF_INET)
        super().__init__(address, _Handler)


class MetricsServer:
    """Serves the metrics at http://ADDRESS/metrics, and `routes`; 404
    elsewhere.

    get_stats: a callable returning an Engine.stats() snapshot; an
    exception from it answers that scrape with 500 (logged).  address:
    (host, port), port 0 picks a free port (see .port once started).
    routes: {path: handler} served besides /metrics; web: an application
    that takes its own requests first (see the module's docstring).
    registry: what /metrics serves (metrics_registry()).
    """

    def __init__(self, get_stats, address=DEFAULT_ADDRESS, routes=None,
                 web=None):
        self.get_stats, self.web = get_stats, web
        self.address = tuple(address)
        self.registry = metrics_registry(get_stats)
        self.routes = {"/metrics": serve_metrics, **(routes or {})}
        self._httpd = None
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def port(self):
        """The bound port (useful with port 0); None before start()."""
        return self._httpd.server_address[1] if self._httpd else None

    @property
    def base_url(self):
        """http://HOST:PORT of the running server."""
        host = self._httpd.server_address[0]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def url(self):
        """http://HOST:PORT/metrics of the running server."""
        return f"{self.base_url}/metrics"

    def start(self):
        """Bind and serve in a background thread; returns self.  Raises
        ConfigError when the address cannot be bound."""
        if self._httpd is not None:
            return self
        try:
            self._httpd = _HTTPServer(self.address, self)
        except OSError as exc:
            host, port = self.address[0], self.address[1]
            host = f"[{host}]" if ":" in host else host
            raise ConfigError(f"metrics address {host}:{port}: "
                              f"{exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="pyfwd-metrics", daemon=True)
        self._thread.start()
        log.info("metrics at %s", self.url)
        return self

    def stop(self):
        """Stop serving and close the socket.  Idempotent."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)
        self._httpd = None


__all__ = ["DEFAULT_ADDRESS", "DEFAULT_PORT", "MetricsServer",
           "metrics_registry", "parse_address", "serve_metrics"]
