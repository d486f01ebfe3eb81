"""DICOM C-ECHO health checks against real peers on loopback: dcmtk's
storescp (accepting, refusing, killed and restarted) and plain TCP servers
that are not DICOM.

No root needed.  Every storescp is started by the test on 127.0.0.1 with a
free port, with TCP_NODELAY=1 (FACTS.md), by full path (/usr/bin/storescp:
pynetdicom's tools may shadow dcmtk's on PATH), and killed by its pid.

storescp 3.6.7 has no option to refuse an unknown called AE title (it answers
whatever AE title it is called by; only --refuse, which refuses everything),
so the AE mismatch case is a positive test: a check calling "ANY-SCP" at a
storescp whose own title is "OTHER" succeeds.
"""

import os
import socket
import subprocess
import threading
import time

import pytest

from pyfwd.control.health import probes
from pyfwd.control.health.monitor import HealthMonitor
from pyfwd.control.health.spec import HealthSpec

pytestmark = pytest.mark.timeout(30)

STORESCP = "/usr/bin/storescp"


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _listening(port):
    """True if something listens on TCP port (any address), judged from
    /proc/net/tcp{,6} so that we do not open an association to find out."""
    want = f":{port:04X} "
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if (fields[1] + " ").endswith(want) and fields[3] == "0A":
                    return True
    return False


@pytest.fixture
def storescp(tmp_path):
    """Factory: start(*args, port=None) -> port of a running storescp.  All
    are killed at teardown; kill(port) kills one early."""
    if not os.path.exists(STORESCP):
        pytest.fail("dcmtk is not installed: apt-get install -y dcmtk")
    procs = {}

    def start(*args, port=None):
        port = port or _free_port()
        log = open(tmp_path / f"storescp-{port}.log", "ab")
        proc = subprocess.Popen(
            [STORESCP, "-od", str(tmp_path), *args, str(port)],
            env={**os.environ, "TCP_NODELAY": "1"}, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        log.close()
        procs[port] = proc
        end = time.monotonic() + 5
        while not _listening(port):
            if proc.poll() is not None:
                pytest.fail(f"storescp exited {proc.returncode}: "
                            + (tmp_path / f"storescp-{port}.log").read_text())
            if time.monotonic() > end:
                pytest.fail(f"storescp did not listen on {port} in 5 s")
            time.sleep(0.02)
        return port

    def kill(port):
        proc = procs.pop(port)
        proc.kill()
        proc.wait(5)

    start.kill = kill
    yield start
    for proc in procs.values():
        proc.kill()
        proc.wait(5)


SPEC = HealthSpec(type="dicom", timeout=2.0, interval=2.0)


def test_echo_storescp(storescp):
    port = storescp("-aet", "ANY-SCP")
    ok, detail = probes.check(SPEC, "127.0.0.1", port)
    assert ok, detail
    assert detail.startswith("C-ECHO ok in ") and "release" not in detail
    # a second echo right after: the first association was released cleanly
    assert probes.check(SPEC, "127.0.0.1", port)[0]


def test_echo_storescp_other_ae_title(storescp):
    # storescp answers any called AE title (see the module docstring)
    port = storescp("-aet", "OTHER")
    ok, detail = probes.check(SPEC, "127.0.0.1", port)
    assert ok, detail
    spec = HealthSpec.from_dict({"type": "dicom", "called_ae": "OTHER",
                                 "calling_ae": "LB-HEALTH", "timeout": 2})
    assert probes.check(spec, "127.0.0.1", port)[0]


def test_echo_storescp_that_demands_implementation_uid(storescp):
    # --reject refuses associations without an Implementation Class UID:
    # ours carries one
    port = storescp("--reject")
    ok, detail = probes.check(SPEC, "127.0.0.1", port)
    assert ok, detail


def test_echo_storescp_refusing(storescp):
    port = storescp("--refuse")
    ok, detail = probes.check(SPEC, "127.0.0.1", port)
    assert not ok
    assert detail.startswith("A-ASSOCIATE-RJ: "), detail


def test_echo_nothing_listening():
    ok, detail = probes.check(SPEC, "127.0.0.1", _free_port())
    assert (ok, detail) == (False, "connect: Connection refused")


class PlainServer:
    """A TCP server on 127.0.0.1 that accepts and then does ``behaviour``:
    "silent" (reads, says nothing), "close" (closes at once), "read-close"
    (reads the request, closes), or bytes to send after reading, then
    close."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            while True:
                c, _ = self.sock.accept()
                self.conns.append(c)
                if self.behaviour == "close":
                    c.close()
                elif self.behaviour == "read-close":
                    c.recv(4096)
                    c.close()
                elif isinstance(self.behaviour, bytes):
                    c.recv(4096)
                    c.sendall(self.behaviour)
                    c.close()
        except OSError:
            pass                                # closed by close()

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for c in self.conns:
            c.close()
        self.thread.join(2)


@pytest.mark.parametrize("behaviour,words", [
    ("silent", "associate: timed out after 0.5 s"),
    # closed before our request arrived: a FIN (clean close) or, if our
    # request hit the closed socket first, a RST
    ("close", ("connection closed by peer after A-ASSOCIATE-RQ",
               "associate: Connection reset by peer")),
    ("read-close", "connection closed by peer after A-ASSOCIATE-RQ"),
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not DICOM: PDU type 0x48"),
    (b"\x03\x00\x00\x00\x00\x04\x00\x01\x01\x07",
     "A-ASSOCIATE-RJ: called AE title not recognized (permanent, by "
     "service user)"),
    (b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00",
     "A-ABORT by provider: not specified"),
])
def test_echo_fails_against_non_dicom(behaviour, words):
    srv = PlainServer(behaviour)
    spec = HealthSpec(type="dicom", timeout=0.5, interval=1.0)
    try:
        t0 = time.monotonic()
        ok, detail = probes.check(spec, "127.0.0.1", srv.port)
        took = time.monotonic() - t0
    finally:
        srv.close()
    assert not ok
    assert detail.startswith(words), detail
    assert took < 1.0


def test_monitor_follows_storescp_down_and_up(storescp):
    port = storescp("-aet", "ANY-SCP")
    changes = []
    changed = threading.Condition()

    def on_change(key, up, detail):
        with changed:
            changes.append((key, up, detail))
            changed.notify_all()

    def wait_for(n):
        with changed:
            assert changed.wait_for(lambda: len(changes) >= n, timeout=5), \
                changes

    spec = HealthSpec(type="dicom", interval=0.2, timeout=0.2, rise=2,
                      fall=2)
    key = ("pacs-dicom", f"127.0.0.1:{port}")
    mon = HealthMonitor(on_change)
    mon.set_targets({key: (spec, "127.0.0.1", port, "pacs-dicom")})
    mon.start()
    try:
        time.sleep(0.3)
        st = mon.state(key)
        assert st["up"] and st["last_ok"] is True, st
        storescp.kill(port)
        wait_for(1)
        assert changes[0][:2] == (key, False)
        assert "Connection refused" in changes[0][2]
        storescp("-aet", "ANY-SCP", port=port)
        wait_for(2)
        assert changes[1][:2] == (key, True)
        assert changes[1][2].startswith("C-ECHO ok")
    finally:
        mon.stop()
    assert len(changes) == 2
