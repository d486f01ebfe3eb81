"""The metrics listener (control.metrics_http) over real HTTP on
loopback: /metrics in the text format or OpenMetrics as the scrape asks,
the process's and the platform's families beside the engine's, routes
an application's beside /metrics, errors, slow clients and clients that
leave; and parse_address."""

import http.client
import logging
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families)

from pyfwd.control import metrics, metrics_http
from pyfwd.errors import ConfigError

from .test_metrics import STATS, parse, value

# --- parse_address ----------------------------------------------------------

@pytest.mark.parametrize("text,address", [
    ("127.0.0.1:10104", ("127.0.0.1", 10104)),
    ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ("[::1]:10104", ("::1", 10104)),
    ("[fd00::1]:0", ("fd00::1", 0)),
    (":10104", ("127.0.0.1", 10104)),
    ("10104", ("127.0.0.1", 10104)),
    (" localhost:10104 ", ("localhost", 10104)),
])
def test_parse_address(text, address):
    assert metrics_http.parse_address(text) == address


@pytest.mark.parametrize("text,words", [
    ("", "ADDR:PORT"),
    (None, "ADDR:PORT"),
    ("127.0.0.1", "ADDR:PORT"),
    ("127.0.0.1:http", "'http'"),
    ("127.0.0.1:65536", "0 to 65535"),
    ("127.0.0.1:-1", "0 to 65535"),
    ("::1:10104", "[::1]:10104"),
    ("[::1]10104", "ADDR:PORT"),
    ("[nope]:10104", "IPv6"),
    ("bad host:10104", "host name"),
])
def test_parse_address_errors(text, words):
    with pytest.raises(ConfigError) as exc:
        metrics_http.parse_address(text)
    assert words in str(exc.value)
    assert "metrics address" in str(exc.value)


# --- the HTTP server --------------------------------------------------------

def get(url, accept=None):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept
                                 else {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read()


def test_the_default_port_is_on_no_exporters_list():
    # Prometheus's default port allocations keep 9100-9999 for exporters
    assert metrics_http.DEFAULT_ADDRESS == ("127.0.0.1", 10104)
    assert not 9100 <= metrics_http.DEFAULT_PORT <= 9999


@pytest.fixture
def server():
    calls = []

    def get_stats():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("engine went away")
        return STATS
    srv = metrics_http.MetricsServer(get_stats, ("127.0.0.1", 0)).start()
    srv.calls = calls
    yield srv
    srv.stop()


def test_metrics_over_http(server):
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/metrics"
    status, ctype, body = get(server.url)
    assert status == 200
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    families, samples = parse(body.decode())
    assert value(samples, "pyfwd_frames_by_reason_total",
                 reason="drop_no_real") == 3
    # the engine's, with pyfwd_build_info, the process's, the platform's
    assert "pyfwd_build_info" in families
    assert value(samples, "process_start_time_seconds") > 0
    assert value(samples, "process_resident_memory_bytes") > 0
    assert "python_info" in families
    assert any(n.startswith("python_gc_") for n in families)
    text = metrics.render(STATS, metrics.build_info())
    assert text in body.decode()        # the same families, in order
    status, _, _ = get(server.url + "?name[]=x")        # query ignored
    assert status == 200


def test_openmetrics_when_the_scrape_asks(server):
    status, ctype, body = get(server.url, accept=(
        "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"))
    assert status == 200
    assert ctype.startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.endswith("# EOF\n")
    fams = {f.name: f for f in openmetrics_families(text)}
    assert fams["pyfwd_frames"].type == "counter"
    assert fams["pyfwd_build"].type == "info"
    assert fams["process_start_time_seconds"].type == "gauge"


def test_an_application_takes_its_requests_first():
    class Web:
        def __init__(self):
            self.seen = []

        def handle(self, request, body):
            self.seen.append((request.command, request.path, body))
            if not request.path.startswith("/api/"):
                return False
            n = int(request.headers.get("Content-Length") or 0)
            data = b"posted " + request.rfile.read(n) if n else b"{}"
            request.reply(200, "text/plain", data, body,
                          {"Cache-Control": "no-store"})
            return True
    web = Web()
    srv = metrics_http.MetricsServer(lambda: STATS, ("127.0.0.1", 0),
                                     web=web).start()
    try:
        assert get(srv.base_url + "/api/state") == (200, "text/plain",
                                                    b"{}")
        with urllib.request.urlopen(srv.base_url + "/api/x", timeout=5) as r:
            assert r.headers["Cache-Control"] == "no-store"
        req = urllib.request.Request(srv.base_url + "/api/drain",
                                     data=b"x=1", method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.read() == b"posted x=1"
        assert get(srv.url)[0] == 200       # not its: the listener's
        assert ("GET", "/metrics", True) in web.seen
        assert post_status(srv.url) == 405  # a POST it does not take
    finally:
        srv.stop()
    # without one, POST is refused too
    srv = metrics_http.MetricsServer(lambda: STATS, ("127.0.0.1", 0)).start()
    try:
        assert post_status(srv.url) == 405
    finally:
        srv.stop()


def post_status(url):
    req = urllib.request.Request(url, data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5)
    return exc.value.code


def test_other_paths_are_404(server):
    for path in ("/", "/metricsx", "/metrics/x", "/favicon.ico"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            get(f"http://127.0.0.1:{server.port}{path}")
        assert exc.value.code == 404
    assert server.calls == []           # no stats read for a 404


def test_a_failing_scrape_is_500_and_the_server_carries_on(server):
    get(server.url)
    get(server.url)
    with pytest.raises(urllib.error.HTTPError) as exc:
        get(server.url)
    assert exc.value.code == 500
    assert get(server.url)[0] == 200


def test_ipv6_loopback():
    try:
        srv = metrics_http.MetricsServer(lambda: STATS, ("::1", 0)).start()
    except ConfigError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert srv.url == f"http://[::1]:{srv.port}/metrics"
        assert get(srv.url)[0] == 200
    finally:
        srv.stop()


def test_busy_port_is_a_config_error(server):
    other = metrics_http.MetricsServer(lambda: STATS, ("127.0.0.1", server.port))
    with pytest.raises(ConfigError, match=f"127.0.0.1:{server.port}"):
        other.start()


def test_stop_frees_the_port_and_is_idempotent():
    srv = metrics_http.MetricsServer(lambda: STATS, ("127.0.0.1", 0)).start()
    port = srv.port
    srv.stop()
    srv.stop()
    assert srv.port is None
    with pytest.raises(urllib.error.URLError):
        get(f"http://127.0.0.1:{port}/metrics")




# --- slow clients and clients that leave ------------------------------------

def slow_clients(port, n):
    """n connections that send the start of a request and no more."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            s.sendall(b"GET /metrics HTTP/1.0\r\nX-Slow: ")
        except OSError:
            pass            # closed at once: all slots busy
        socks.append(s)
    return socks


def trickle(socks):
    for s in socks:
        try:
            s.sendall(b"a")
        except OSError:
            pass


def closed_by_the_server(sock, within):
    """True when the server ends `sock` within `within` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass            # an answer (400: its request was cut short)
    except ConnectionError:
        pass
    except TimeoutError:
        return False
    return True


def wait_for(cond, within=5.0):
    end = time.monotonic() + within
    while not cond() and time.monotonic() < end:
        time.sleep(0.05)
    return cond()


def test_slow_clients_neither_hold_the_listener_nor_its_threads(monkeypatch):
    monkeypatch.setattr(metrics_http, "READ_GRACE", 0.5)
    monkeypatch.setattr(metrics_http, "DEADLINE", 3.0)
    threads = threading.active_count()
    srv = metrics_http.MetricsServer(lambda: STATS, ("127.0.0.1", 0)).start()
    socks = []
    try:
        socks = slow_clients(srv.port, 40)
        time.sleep(0.7)
        trickle(socks)
        # one thread each, at most MAX_REQUESTS; the others closed at once
        assert threading.active_count() <= threads + 1 + 16
        assert srv._httpd.refused + srv._httpd.cut >= 40 - 16
        t0 = time.monotonic()
        status, _, body = get(srv.url)      # a slow one is cut for it
        assert status == 200 and b"pyfwd_frames" in body
        assert time.monotonic() - t0 < 2.0
        # every slow one is ended by the deadline at the latest
        assert all(closed_by_the_server(s, 5.0) for s in socks)
        assert wait_for(lambda: threading.active_count() <= threads + 1)
    finally:
        for s in socks:
            s.close()
        srv.stop()


def test_a_client_over_the_deadline_is_cut(monkeypatch):
    monkeypatch.setattr(metrics_http, "DEADLINE", 1.0)
    with metrics_http.MetricsServer(lambda: STATS, ("127.0.0.1", 0)) as srv:
        sock, = slow_clients(srv.port, 1)
        t0 = time.monotonic()
        with sock:
            while time.monotonic() - t0 < 0.8:    # a byte every 0.2 s
                time.sleep(0.2)
                sock.sendall(b"a")
            assert closed_by_the_server(sock, 2.0)
            assert time.monotonic() - t0 < 2.5
        assert srv._httpd.cut == 1
        assert get(srv.url)[0] == 200


class Leaving:
    """An application whose answer fails as when the client has left
    (/api/gone), or with a bug (/api/bug)."""

    def handle(self, request, body):
        if request.path == "/api/gone":
            raise BrokenPipeError(32, "Broken pipe")
        if request.path == "/api/bug":
            raise RuntimeError("a bug")
        return False


def test_a_client_that_leaves_is_a_debug_line_a_bug_one_error(caplog,
                                                               capsys):
    caplog.set_level(logging.DEBUG, logger="pyfwd.control.metrics")
    with metrics_http.MetricsServer(lambda: STATS, ("127.0.0.1", 0),
                                    web=Leaving()) as srv:
        for path in ("/api/gone", "/api/bug"):
            conn = http.client.HTTPConnection("127.0.0.1", srv.port,
                                              timeout=5)
            conn.request("GET", path)
            with pytest.raises(http.client.RemoteDisconnected):
                conn.getresponse()
            conn.close()
        assert wait_for(lambda: any(r.levelno == logging.ERROR
                                    for r in caplog.records))
        assert get(srv.url)[0] == 200
    gone = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelno == logging.DEBUG
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and errors[0].exc_info[0] is RuntimeError
    assert "Traceback" not in capsys.readouterr().err
