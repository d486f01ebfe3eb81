"""pyfwd under a service manager, end to end (root, a one-arm DR lab):

- `pyfwd start` speaks sd_notify to a datagram socket the test owns, as
  systemd's would be: READY=1 only once traffic through the VIP works,
  RELOADING=1/READY=1 around a SIGHUP (the reload takes effect; a bad file
  keeps the running config) and a `ctl reload`, WATCHDOG=1 every
  WATCHDOG_USEC/2, STOPPING=1 on SIGTERM, exit status 0;
- under setpriv with exactly the unit's capability bounding set it
  forwards (DR and an L7 VIP); without one of them it stops with a clear
  error and its exit status;
- liveness: a data-plane loop paused or ended, or the control thread held
  on the engine's lock, and `pyfwd ctl status` fails naming it.
"""

import os
import signal
import socket
import subprocess
import textwrap
import threading
import time

import pytest

from pyfwd.cli.balancer import EXIT_DATAPLANE, EXIT_STOPPED, EXIT_USAGE
from pyfwd.control.engine import Engine
from pyfwd.control.liveness import EngineLiveness, Liveness
from pyfwd.control.server import ControlServer
from pyfwd.lab.programs import PYFWD
from pyfwd.model import Real, Service, Vip

from . import labs

pytestmark = pytest.mark.root

VIP, VIP7 = "10.0.0.100", "10.0.0.101"
UNIT = os.path.join(os.path.dirname(__file__), "..", "..", "tools",
                    "systemd", "pyfwd.service")


@pytest.fixture(scope="module")
def lab():
    lab = labs.build("pfs", "one-arm", reals=2, dr_vip=VIP)
    yield lab
    lab.down()


def config(path, sock, reals=("10.0.0.11",), l7=False):
    text = textwrap.dedent(f"""
        [engine]
        iface = "eth0"
        control_socket = "{sock}"

        [[vip]]
        name = "dr"
        address = "{VIP}"
        port = 80
        """) + "".join(f'[[vip.real]]\naddress = "{r}"\n' for r in reals)
    if l7:
        text += textwrap.dedent(f"""
            [[vip]]
            name = "web7"
            address = "{VIP7}"
            port = 80
            mode = "l7"
            l7_mode = "http"
            scheduler = "rr"
            real = [{{ address = "10.0.0.11", port = 80 }}]
            """)
    path.write_text(text)
    return path


def curl(lab, vip=VIP, timeout=2):
    r = lab.run("client", ["curl", "-sS", "-m", str(timeout),
                           f"http://{vip}/"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


class Manager:
    """The service manager's end of NOTIFY_SOCKET: every datagram, with
    the time it came, as {KEY: VALUE}."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.path = str(path)
        self.got = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            msg = dict(line.split("=", 1) for line in
                       data.decode().split("\n"))
            self.got.append((time.monotonic(), msg))

    def wait(self, key, after=0, timeout=30):
        """The first message with key after index `after`: (index, msg)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, (_, msg) in enumerate(self.got[after:], after):
                if key in msg:
                    return i, msg
            time.sleep(0.02)
        raise AssertionError(f"no {key} from the engine: {self.got}")

    def close(self):
        self._stop = True
        self._thread.join()
        self.sock.close()


def test_sd_notify_reload_watchdog_and_stop(lab, tmp_path):
    sock = tmp_path / "ctl.sock"
    cfg = config(tmp_path / "pyfwd.toml", sock)
    manager = Manager(tmp_path / "notify")
    # stderr is "the journal": a file whose device and inode
    # JOURNAL_STREAM names, as systemd sets it
    journal = open(tmp_path / "journal", "w")
    st = os.fstat(journal.fileno())
    env = dict(os.environ, NOTIFY_SOCKET=manager.path,
               WATCHDOG_USEC="1000000",
               JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    proc = lab.popen("lb", PYFWD + ["start", "--config", str(cfg),
                                    "--busy-poll", "0"], env=env,
                     stdout=subprocess.PIPE, stderr=journal, text=True)
    try:
        i, ready = manager.wait("READY")
        # READY=1 means forwarding: the very first request goes through
        assert "node=real1" in (curl(lab) or ""), proc
        assert ready["STATUS"].startswith("forwarding: 1 VIP(s), 1 real "
                                          "server(s) on eth0")
        assert not [m for _, m in manager.got[:i] if "READY" in m]

        # SIGHUP: the file's new real server answers
        config(cfg, sock, reals=("10.0.0.11", "10.0.0.12"))
        proc.send_signal(signal.SIGHUP)
        j, reloading = manager.wait("RELOADING", after=i + 1)
        assert int(reloading["MONOTONIC_USEC"]) > 0
        k, ready = manager.wait("READY", after=j + 1)
        assert "2 real server(s)" in ready["STATUS"], ready
        nodes = {curl(lab) for _ in range(30)}
        assert any(n and "node=real2" in n for n in nodes), nodes

        # a bad file: logged, the running config kept, READY=1 says so
        cfg.write_text("[[vip]\nbroken")
        proc.send_signal(signal.SIGHUP)
        j, _ = manager.wait("RELOADING", after=k + 1)
        k, ready = manager.wait("READY", after=j + 1)
        assert ready["STATUS"].startswith(
            f"reload failed, running config kept: {cfg}: not valid TOML"), \
            ready
        assert "node=" in (curl(lab) or "")
        assert proc.poll() is None

        # `pyfwd ctl reload` is told to the service manager the same way
        config(cfg, sock, reals=("10.0.0.12",))
        r = lab.run("lb", PYFWD + ["ctl", "--socket", str(sock), "reload"],
                    capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        j, _ = manager.wait("RELOADING", after=k + 1)
        k, ready = manager.wait("READY", after=j + 1)
        assert "1 real server(s)" in ready["STATUS"], ready

        # WATCHDOG=1 every 0.5 s, all along
        t0 = manager.got[0][0]
        time.sleep(1.5)
        beats = [t for t, m in manager.got if "WATCHDOG" in m]
        span = time.monotonic() - t0
        assert len(beats) >= span / 0.5 - 3, (len(beats), span)
        assert max(b - a for a, b in zip(beats, beats[1:])) < 1.0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        manager.close()
        journal.close()
    out = (tmp_path / "journal").read_text()
    assert proc.returncode == EXIT_STOPPED, out
    assert any("STOPPING" in m for _, m in manager.got)
    # syslog priorities, no time stamps
    lines = out.splitlines()
    assert f"<6>SIGHUP: reloading {cfg}" in lines, out
    assert any(line.startswith("<3>reload failed, the running config "
                               "stays: ") for line in lines), out
    assert any(line.startswith("<6>eth0: XDP program ") for line in lines)


def unit_caps():
    with open(UNIT, encoding="utf-8") as f:
        for line in f:
            if line.startswith("CapabilityBoundingSet="):
                return [c.lower().replace("cap_", "")
                        for c in line.split("=", 1)[1].split()]
    raise AssertionError("the unit has no CapabilityBoundingSet")


def start_capped(lab, tmp_path, caps, l7=True):
    """pyfwd start under setpriv with only these capabilities: (the
    process, whether the DR VIP answered, whether the L7 VIP did)."""
    sock = tmp_path / "capped.sock"
    cfg = config(tmp_path / "capped.toml", sock, l7=l7)
    bounding = "-all," + ",".join("+" + c for c in caps)
    proc = lab.popen("lb", ["setpriv", "--bounding-set", bounding,
                            "--inh-caps", "-all"] + PYFWD +
                     ["start", "--config", str(cfg), "--busy-poll", "0"],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                     text=True)
    dr = web = False
    end = time.monotonic() + 20
    while time.monotonic() < end and proc.poll() is None and \
            not (dr and (web or not l7)):
        dr = dr or curl(lab, VIP, 1) is not None
        web = web or (l7 and curl(lab, VIP7, 1) is not None)
        time.sleep(0.2)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    return proc.returncode, out, dr, web


def test_the_units_capabilities_are_enough_and_each_is_needed(lab, tmp_path):
    caps = unit_caps()
    rc, out, dr, web = start_capped(lab, tmp_path, caps)
    assert (rc, dr, web) == (0, True, True), out
    without = [c for c in caps if c != "bpf"]
    rc, out, dr, _ = start_capped(lab, tmp_path, without, l7=False)
    assert rc == EXIT_DATAPLANE and not dr, out
    assert "Error: [Errno 1] loading " in out and "steer.bpf.o" in out
    without = [c for c in caps if c != "net_bind_service"]
    rc, out, dr, web = start_capped(lab, tmp_path, without)
    assert rc == 1 and not web, out
    assert "cannot bind socket (Permission denied) for [10.0.0.101:80]" \
        in out
    # HAProxy's workers switch to user haproxy (control.l7.render)
    without = [c for c in caps if c != "setuid"]
    rc, out, dr, web = start_capped(lab, tmp_path, without)
    assert rc == 1 and not web, out
    assert "Cannot set uid" in out, out


def test_a_configuration_error_exits_2(lab, tmp_path):
    cfg = config(tmp_path / "bad.toml", tmp_path / "bad.sock")
    r = lab.run("lb", PYFWD + ["start", "--config", str(cfg), "--iface",
                               "nosuch0"], capture_output=True, text=True)
    assert r.returncode == EXIT_USAGE, r.stderr
    assert "nosuch0" in r.stderr and "Traceback" not in r.stderr


# --- liveness ---------------------------------------------------------------

def ctl_status(lab, sock):
    r = lab.run("lb", PYFWD + ["ctl", "--socket", str(sock), "status"],
                capture_output=True, text=True, timeout=20)
    return r.returncode, r.stdout + r.stderr


def wait_status(lab, sock, fails, timeout=8):
    """ctl status until it fails (fails=True) or passes; its last answer."""
    end = time.monotonic() + timeout
    while True:
        rc, said = ctl_status(lab, sock)
        if (rc != 0) == fails or time.monotonic() > end:
            return rc, said
        time.sleep(0.2)


@pytest.mark.parametrize("backend", ["xdp", "afpacket"])
def test_ctl_status_fails_when_a_loop_or_the_control_thread_stalls(
        lab, tmp_path, backend):
    eng = Engine("eth0", [Service(Vip.parse(f"{VIP}:80/tcp"),
                                  [Real.parse("10.0.0.11")], name="dr")],
                 busy_poll=0, flows=1 << 12, backend=backend)
    eng.liveness = EngineLiveness(eng, Liveness(control_stall=1.0))
    sock = tmp_path / "live.sock"
    lab.call("lb", eng.start)
    server = ControlServer(eng, str(sock)).start()
    try:
        assert eng.info.backend == backend
        assert ctl_status(lab, sock)[0] == 0
        assert curl(lab)
        # a loop paused: stalled, named; the traffic stops with it
        eng.xsk.pause(0)
        t0 = time.monotonic()
        rc, said = wait_status(lab, sock, fails=True)
        took = time.monotonic() - t0
        assert rc == 1 and "engine not alive: data-plane loop " \
            "pyfwd-xsk-q0: stalled, no heartbeat for" in said, said
        assert 2.0 <= took < 4.0, took
        assert curl(lab, timeout=1) is None
        eng.xsk.pause(0, "run")
        assert wait_status(lab, sock, fails=False)[0] == 0
        assert curl(lab)

        # the control thread stuck on the engine's lock (a ping to the VIP
        # is punted; answering it takes the lock)
        with eng._lock:
            lab.run("client", ["ping", "-c", "1", "-W", "1", VIP],
                    capture_output=True)
            rc, said = wait_status(lab, sock, fails=True)
        assert rc == 1 and "control thread pyfwd-control: stalled" in said, \
            said
        assert wait_status(lab, sock, fails=False)[0] == 0

        # a loop that ended
        eng.xsk.pause(0, "exit")
        rc, said = wait_status(lab, sock, fails=True)
        assert "data-plane loop pyfwd-xsk-q0: has ended (Operation " \
            "canceled)" in said, said
    finally:
        server.stop()
        eng.stop()
