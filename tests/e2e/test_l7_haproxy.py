"""pyfwd.control.l7.HAProxy against a real HAProxy on loopback.

No root, no namespaces: the backends are python http.server threads on
127.0.0.1 free ports, the frontend a free port of 127.0.0.1 (a pyfwd Vip
refuses loopback, so the VIP is a plain object with .address and .port:
render() reads nothing else).  Every HAProxy is stopped by the fixture; the
only processes killed are ours, by pid.  HAProxy must be installed
(apt-get install haproxy): without it these tests fail, they do not skip.
"""

import http.client
import ipaddress
import os
import shutil
import signal
import socketserver
import subprocess
import tempfile
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pyfwd.errors import ConfigError
from pyfwd.control.l7.haproxy import HAProxy
from pyfwd.control.l7.options import L7Options
from pyfwd.control.l7.render import BALANCE, L7Vip, render

from ..certs import self_signed
from .procs import alive

pytestmark = pytest.mark.timeout(60)

LO = ipaddress.ip_address("127.0.0.1")
SLOW_CHUNKS, SLOW_CHUNK, SLOW_DELAY = 25, 4096, 0.1     # a 2.5 s download


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", str(SLOW_CHUNKS * SLOW_CHUNK))
            self.end_headers()
            for _ in range(SLOW_CHUNKS):
                self.wfile.write(b"x" * SLOW_CHUNK)
                self.wfile.flush()
                time.sleep(SLOW_DELAY)
            return
        body = (f"{self.server.tag}\n"
                f"xff={self.headers.get('X-Forwarded-For')}\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        pass        # a client (HAProxy) hanging up early is not our test


def _free_port():
    with socketserver.TCPServer(("127.0.0.1", 0), None) as s:
        return s.server_address[1]


@pytest.fixture
def backends():
    """start(tag) -> port of a running backend that answers its tag."""
    servers = []

    def start(tag):
        srv = _Server(("127.0.0.1", 0), _Handler)
        srv.tag = tag
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv.server_address[1]

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def proxy():
    """An HAProxy object in a short private directory (unix socket paths
    are limited to 107 bytes); stopped at the end whatever happened."""
    if shutil.which("haproxy") is None:
        pytest.fail("HAProxy not installed: apt-get install haproxy")
    d = tempfile.mkdtemp(prefix="pfl7")
    h = HAProxy(os.path.join(d, "haproxy.cfg"), os.path.join(d, "rt.sock"))
    yield h
    h.stop()
    shutil.rmtree(d, ignore_errors=True)


def _vip(port, reals, scheduler="rr", **opts):
    return L7Vip("web", types.SimpleNamespace(address=LO, port=port),
                 reals, scheduler, L7Options.from_dict(opts))


def _get(port, path="/", timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def _tags(port, n):
    out = []
    for _ in range(n):
        status, body = _get(port)
        assert status == 200, body
        out.append(body.split("\n")[0])
    return out


def _row(rows, **match):
    hits = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(hits) == 1, (match, rows)
    return hits[0]


def test_check_binary(proxy):
    v = proxy.check_binary()
    major, minor = (int(x) for x in v.split(".")[:2])
    assert (major, minor) >= (2, 0), v


def test_spread_drain_weight(proxy, backends):
    a, b = backends("A"), backends("B")
    port = _free_port()
    proxy.start(render([_vip(port, [("ra", LO, a, 1), ("rb", LO, b, 1)])],
                       proxy.runtime_socket))
    tags = _tags(port, 20)
    assert {"A", "B"} == set(tags) and tags.count("A") == 10, tags
    status, body = _get(port)
    assert "xff=127.0.0.1" in body          # option forwardfor

    st = {r["server"]: r for r in proxy.servers_state()}
    assert st["ra"]["admin_state"] == "ready"
    assert st["ra"]["oper_state"] == "running"
    assert (st["ra"]["backend"], st["ra"]["port"]) == ("web", a)

    proxy.set_state("web", "ra", "drain")
    assert _row(proxy.servers_state(), server="ra")["admin_state"] == "drain"
    assert _row(proxy.stats(), pxname="web", svname="ra")["status"] == "DRAIN"
    assert set(_tags(port, 10)) == {"B"}

    proxy.set_state("web", "ra", "maint")
    assert _row(proxy.servers_state(), server="ra")["admin_state"] == "maint"
    assert _row(proxy.stats(), pxname="web", svname="ra")["status"] == "MAINT"
    proxy.set_state("web", "ra", "ready")
    assert "A" in _tags(port, 4)

    proxy.set_weight("web", "rb", 3)
    assert _row(proxy.stats(), pxname="web", svname="rb")["weight"] == 3
    assert _row(proxy.servers_state(), server="rb")["weight"] == 3
    tags = _tags(port, 20)
    assert tags.count("B") == 15, tags        # 3:1 round robin

    stot = _row(proxy.stats(), pxname="web", svname="ra")["stot"]
    assert stot >= 10
    with pytest.raises(Exception, match="No such server"):
        proxy.set_state("web", "nosuch", "ready")


def test_cookie_persistence(proxy, backends):
    a, b = backends("A"), backends("B")
    port = _free_port()
    proxy.start(render([_vip(port, [("ra", LO, a, 1), ("rb", LO, b, 1)],
                             cookie="SRV")], proxy.runtime_socket))
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/")
    r = c.getresponse()
    first = r.read().decode().split("\n")[0]
    cookie = r.getheader("Set-Cookie")
    c.close()
    assert cookie.startswith(f"SRV=r{first.lower()}"), cookie
    for _ in range(6):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/", headers={"Cookie": cookie.split(";")[0]})
        assert c.getresponse().read().decode().startswith(first)
        c.close()


def test_reload_keeps_inflight_download(proxy, backends):
    a, b = backends("A"), backends("B")
    port = _free_port()
    proxy.start(render([_vip(port, [("ra", LO, a, 1)])],
                       proxy.runtime_socket))
    old_worker = proxy.worker_pid()
    result = {}

    def download():
        try:
            result["got"] = _get(port, "/slow", timeout=15)
        except Exception as e:        # reported by the assertion below
            result["error"] = e

    t = threading.Thread(target=download)
    t.start()
    time.sleep(0.5)                   # the download is under way
    proxy.reload(render([_vip(port, [("ra", LO, a, 1), ("rb", LO, b, 1)])],
                        proxy.runtime_socket))
    new_worker = proxy.worker_pid()
    assert new_worker != old_worker
    assert old_worker in proxy.procs()["old_workers"]   # still finishing
    assert t.is_alive()
    assert "B" in _tags(port, 6)      # the new server takes requests
    t.join(15)
    assert "error" not in result, result
    status, body = result["got"]
    assert status == 200 and len(body) == SLOW_CHUNKS * SLOW_CHUNK
    deadline = time.monotonic() + 5   # the old worker leaves when done
    while alive(old_worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(old_worker)


def test_worker_killed_is_recovered(proxy, backends):
    a = backends("A")
    port = _free_port()
    proxy.start(render([_vip(port, [("ra", LO, a, 1)])],
                       proxy.runtime_socket))
    worker = proxy.procs()["workers"][0]
    assert worker == proxy.worker_pid()
    os.kill(worker, signal.SIGKILL)
    ok, deadline = False, time.monotonic() + 8
    while time.monotonic() < deadline:
        proxy.ensure_running()
        try:
            ok = _tags(port, 1) == ["A"]
        except OSError:
            ok = False
        if ok and proxy.restarts:
            break
        time.sleep(0.2)
    assert ok and proxy.restarts == 1
    assert proxy.worker_pid() not in (None, worker)
    assert proxy.ensure_running() is False          # healthy: nothing to do


def test_hung_worker_is_restarted(proxy, backends):
    """A worker that stops answering (SIGSTOP) while the master lives:
    after stale_after seconds the group is ended and started again."""
    a = backends("A")
    port = _free_port()
    proxy.start(render([_vip(port, [("ra", LO, a, 1)])],
                       proxy.runtime_socket))
    worker, master = proxy.worker_pid(), proxy.proc.pid
    os.kill(worker, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 10
        while not proxy.restarts and time.monotonic() < deadline:
            proxy.ensure_running()
            time.sleep(0.2)
        assert proxy.restarts == 1
        assert proxy.proc.pid != master and not alive(worker)
        assert _tags(port, 3) == ["A"] * 3
    finally:
        if alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_master_killed_is_restarted(proxy, backends):
    a = backends("A")
    port = _free_port()
    proxy.start(render([_vip(port, [("ra", LO, a, 1)])],
                       proxy.runtime_socket))
    master = proxy.proc.pid
    worker = proxy.worker_pid()
    os.kill(master, signal.SIGKILL)
    proxy.proc.wait(5)
    assert proxy.ensure_running() is True
    assert proxy.restarts == 1 and proxy.proc.pid != master
    assert _tags(port, 2) == ["A", "A"]
    assert not alive(worker)          # the orphan was ended with its group


def test_stop_leaves_nothing(proxy, backends):
    a = backends("A")
    port = _free_port()
    proxy.start(render([_vip(port, [("ra", LO, a, 1)])],
                       proxy.runtime_socket))
    pids = [proxy.proc.pid] + proxy.procs()["workers"]
    files = [proxy.config_path, proxy.runtime_socket, proxy.master_socket]
    assert all(os.path.exists(f) for f in files)
    proxy.stop()
    assert not any(alive(p) for p in pids), pids
    assert not any(os.path.exists(f) for f in files), files
    with pytest.raises(OSError):
        _get(port, timeout=1)
    assert os.listdir(os.path.dirname(proxy.config_path)) == []


def test_bad_config_carries_haproxys_message(proxy):
    bad = render([], proxy.runtime_socket) + \
        "\nlisten x\n    bind 127.0.0.1:1\n    balance nosuchalgo\n"
    with pytest.raises(ConfigError, match=r"HAProxy rejects the "
                       r"configuration: parsing \[.*haproxy.cfg:\d+\] : "
                       r"balance only supports"):
        proxy.start(bad)
    assert proxy.proc is None and not os.path.exists(proxy.config_path)


def test_bad_reload_keeps_the_running_one(proxy, backends):
    a = backends("A")
    port = _free_port()
    text = render([_vip(port, [("ra", LO, a, 1)])], proxy.runtime_socket)
    proxy.start(text)
    worker = proxy.worker_pid()
    with pytest.raises(ConfigError, match="HAProxy rejects"):
        proxy.reload(text + "\nlisten y\n    bogus-keyword 1\n")
    with open(proxy.config_path) as f:
        assert f.read() == text
    assert proxy.worker_pid() == worker and _tags(port, 1) == ["A"]


@pytest.fixture(scope="module")
def pem(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("pem"), "pyfwd-test")[2]


@pytest.mark.parametrize("scheduler", sorted(BALANCE))
def test_render_passes_haproxy_check(proxy, pem, scheduler):
    """What render() writes, every option and scheduler, is valid HAProxy."""
    reals = [("r_10_0_0_11_80", "10.0.0.11", 80, 1),
             ("r_fd00__12_80", "fd00::12", 80, 700)]
    vips = [
        L7Vip("web", types.SimpleNamespace(address=LO, port=8443), reals,
              scheduler, L7Options.from_dict({
                  "cookie": "SRV", "tls_cert": pem, "send_proxy": True,
                  "set_headers": {"X-Client": "%[src]",
                                  "X-Odd": 'a "b" $HOME 100%%'},
                  "del_headers": ["X-Debug"]})),
        L7Vip("dicom", types.SimpleNamespace(
            address=ipaddress.ip_address("fd00::100"), port=104), reals,
            scheduler, L7Options.from_dict({"l7_mode": "tcp"}),
            {"tunnel": "2h", "connect": "500ms"}),
    ]
    proxy.validate(render(vips, proxy.runtime_socket))


def test_tls_termination(proxy, backends, pem):
    a = backends("A")
    port = _free_port()
    proxy.start(render([_vip(port, [("ra", LO, a, 1)], tls_cert=pem,
                             set_headers={"X-Via": "pyfwd"})],
                       proxy.runtime_socket))
    r = subprocess.run(["curl", "-sk", f"https://127.0.0.1:{port}/"],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout.startswith("A\n"), (r.stdout, r.stderr)
