"""The metrics listener: Prometheus's /metrics over HTTP, and the web
application that shares it (control.web, the dashboard).

    server = MetricsServer(engine.stats, ("127.0.0.1", 10104)).start()
    server.url                  # http://127.0.0.1:10104/metrics
    server.stop()

/metrics serves a registry of its own: the engine's families
(control.metrics.EngineCollector over get_stats()), the process's
(process_*: CPU, memory, open files, start time) and the platform's
(python_info, python_gc_*).  The format follows the scrape's Accept
header (prometheus_client's choose_encoder): OpenMetrics when asked,
the text format 0.0.4 otherwise.  Any other path is 404.

An application takes its requests first (`web`: an object whose
handle(request, body) answers the GET, HEAD or POST requests it owns
and returns True, False to leave one to /metrics; body is False for
HEAD).  The request is the handler: its .path, .headers, .command,
.rfile, .reply() to answer and .read_done() once a POST's body is read.
POST goes nowhere else: 405 when web does not take it.

A slow client cannot hold the listener: at most MAX_REQUESTS
connections are served at once (a thread each); beyond them, the one
that has been sending its request the longest, over READ_GRACE seconds,
is cut to make room, else the new one is closed at once.  Every
connection is cut at DEADLINE seconds, whatever it is doing.  A client
that leaves mid-answer is a debug line, not a traceback.

The default port, 10104, is on no exporter's list (Prometheus keeps the
9100-9999 range for them; 10104 echoes DICOM's 104).
"""

import http.server
import ipaddress
import logging
import re
import socket
import sys
import threading
import time
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
MAX_REQUESTS = 16       # connections served at once, a thread each
DEADLINE = 15.0         # seconds a connection may last, all in
READ_GRACE = 1.0        # seconds a request may take to arrive before
                        # it may be cut to make room for another


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


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "pyfwd"
    timeout = 10                # per read; the whole request: DEADLINE

    def do_GET(self):
        self._respond(body=True)

    def do_HEAD(self):
        self._respond(body=False)

    def do_POST(self):
        web = self.server.owner.web
        if web is None or not web.handle(self, True):
            self.close_connection = True    # its body is left unread
            self.reply(405, TEXT, b"method not allowed\n", True,
                       {"Allow": "GET, HEAD"})

    def parse_request(self):
        ok = super().parse_request()
        if ok and self.command != "POST":   # a POST's body is still to come
            self.read_done()
        return ok

    def read_done(self):
        """Say the request is read (its body too, for a POST): from now
        on it is cut only at DEADLINE, not to make room for another."""
        self.server.read_done(self.request)

    def _respond(self, body):
        owner = self.server.owner
        if owner.web is not None and owner.web.handle(self, body):
            return              # the application's (control.web)
        if urlsplit(self.path).path != "/metrics":
            self.reply(404, TEXT, b"not found: try /metrics\n", body)
            return
        encoder, ctype = choose_encoder(self.headers.get("Accept"))
        try:
            data = encoder(owner.registry)
        except Exception as exc:    # the request fails, the server stays
            log.exception("metrics listener: %s failed", self.path)
            self.reply(500, TEXT, f"error: {exc}\n".encode(), body)
            return
        self.reply(200, ctype, data, body)

    def reply(self, code, ctype, data, body=True, headers=None):
        """Answer `code` with `data` (bytes) of Content-Type `ctype` and
        `headers` ({name: value}); body: False for HEAD (the headers
        only).  The one writer of answers, control.web's included."""
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


class _Connection:
    """One connection being served: since when, whether its request is
    still being read, whether it was cut."""

    __slots__ = ("since", "reading", "cut")

    def __init__(self, since):
        self.since, self.reading, self.cut = since, True, False


class _HTTPServer(http.server.ThreadingHTTPServer):
    """A thread per connection, at most MAX_REQUESTS at once, each cut
    at DEADLINE seconds (by the serving thread: service_actions())."""

    daemon_threads = True
    allow_reuse_port = False    # a second engine on the port must fail
    request_queue_size = 64     # a burst waits to be accepted (or refused)

    def __init__(self, address, owner):
        self.owner = owner
        self.address_family = (socket.AF_INET6 if ":" in address[0]
                               else socket.AF_INET)
        self.refused = 0        # connections closed at once: all slots busy
        self.cut = 0            # connections shut down: slow or late
        self._slots = threading.BoundedSemaphore(MAX_REQUESTS)
        self._lock = threading.Lock()
        self._open = {}         # socket -> _Connection
        super().__init__(address, _Handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False) and not self._make_room():
            self.refused += 1
            log.debug("metrics: %s refused: %d requests in progress",
                      client_address[0], MAX_REQUESTS)
            self.shutdown_request(request)
            return
        with self._lock:
            self._open[request] = _Connection(time.monotonic())
        try:
            super().process_request(request, client_address)
        except BaseException:   # no thread: its slot is free again
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def shutdown_request(self, request):
        with self._lock:        # never cut a closed (reused) descriptor
            self._open.pop(request, None)
            super().shutdown_request(request)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("metrics: %s went away: %s", client_address[0], exc)
        else:
            log.exception("metrics listener: a request from %s failed",
                          client_address[0])

    def read_done(self, request):
        """The request on `request` is read: it may not be cut to make
        room (_make_room()), only at DEADLINE."""
        with self._lock:
            conn = self._open.get(request)
            if conn is not None:
                conn.reading = False

    def service_actions(self):
        """Cut the connections older than DEADLINE (every poll)."""
        now = time.monotonic()
        with self._lock:
            for request, conn in self._open.items():
                if not conn.cut and now - conn.since > DEADLINE:
                    self._cut(request, conn, "over the deadline")

    def _make_room(self):
        """All slots busy: cut the connection that has been sending its
        request the longest, over READ_GRACE seconds, and take its slot
        (a slow client must not keep a scrape out).  False when there is
        none to cut."""
        now = time.monotonic()
        with self._lock:
            slow = [(conn.since, request) for request, conn in
                    self._open.items() if conn.reading and not conn.cut
                    and now - conn.since > READ_GRACE]
            if not slow:
                return False
            request = min(slow, key=lambda item: item[0])[1]
            self._cut(request, self._open[request], "too slow to ask")
        return self._slots.acquire(timeout=1.0)

    def _cut(self, request, conn, why):
        """Shut `request` down: its thread reads the end, its writes
        fail, it ends (and frees its slot).  Under self._lock."""
        conn.cut, conn.reading = True, False
        self.cut += 1
        try:
            log.debug("metrics: %s cut: %s", request.getpeername()[0], why)
            request.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass                # already gone


class MetricsServer:
    """Serves the metrics at http://ADDRESS/metrics, and `web`; 404
    elsewhere.

    get_stats: a callable returning an Engine.stats() snapshot; an
    exception from it answers that scrape with 500 (logged).  address:
    (host, port), port 0 picks a free port (see .port once started).
    web: an application that takes its own requests first (see the
    module's docstring).
    registry: what /metrics serves (metrics_registry()).
    """

    def __init__(self, get_stats, address=DEFAULT_ADDRESS, web=None):
        self.get_stats, self.web = get_stats, web
        self.address = tuple(address)
        self.registry = metrics_registry(get_stats)
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
           "metrics_registry", "parse_address"]
