"""HAProxy under pyfwd, end to end (issue 16, point 7): a one-arm lab, two
real servers running whoami on 8080, L7 VIPs on 10.0.0.100.

- `pyfwd start` killed with SIGKILL leaves no HAProxy process (by the PIDs
  it had) within a second or two; a new `pyfwd start` on the same config
  clears what the dead one left (its address, sockets, pid file, config)
  and serves, with one HAProxy and one address, nothing doubled;
- HAProxy's workers run as the unprivileged user; `timeout
  http-request` ends a client that never finishes its headers;
- xff_drop_client: a forged X-Forwarded-For never reaches the real server;
- halt ends a long download through HAProxy at once (shutdown sessions);
- HAProxy started from a thread that ends (a control request's) outlives
  that thread: the parent-death signal is tied to the spawner's thread.

Root; the lab and every process are removed whatever happens (processes
by their PID)."""

import json
import os
import pwd
import re
import secrets
import signal
import socket
import subprocess
import textwrap
import threading
import time

import pytest

from pyfwd.control.config import parse_vip
from pyfwd.control.engine import Engine
from pyfwd.lab.modes import whoami_servers
from pyfwd.lab.programs import PYFWD
from pyfwd.lab.topology import Lab

from .procs import alive
from .test_l7_addresses import curl, lb_addresses

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

VIP4 = "10.0.0.100"
SIZE = 200_000_000      # bytes of the download that halt ends
KILL_BOUND = 2.0        # s: HAProxy gone after its pyfwd was SIGKILLed


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    with Lab("pfo" + secrets.token_hex(3), topology="one-arm",
             reals=2) as lab:
        with whoami_servers(lab, 8080):
            yield lab


def l7(lab, name, port, reals=None, **extra):
    """A [[vip]] table of an L7 HTTP VIP on VIP4:port."""
    reals = reals or lab.reals
    body = "".join(f'\n[[vip.real]]\naddress = "{lab.ip(r)}"\nport = 8080\n'
                   for r in reals)
    more = "".join(f"{k} = {json.dumps(v)}\n" for k, v in extra.items())
    return (f'[[vip]]\nname = "{name}"\naddress = "{VIP4}"\nport = {port}\n'
            f'mode = "l7"\nscheduler = "rr"\n{more}{body}\n')


def vip_lines(lab):
    return [ln for a, ln in lb_addresses(lab).items() if a == VIP4]


def children(pid):
    """The pids whose parent is pid."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def haproxys(config):
    """The live haproxy processes started with `config`."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and alive(int(d)):
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if "haproxy" in os.path.basename(argv[0]) and config in argv:
                out.append(int(d))
    return out


class Started:
    """One `pyfwd start` in the lab's lb, its log in a file."""

    def __init__(self, lab, cfg, sock, log):
        self.lab, self.sock, self.log = lab, str(sock), log
        with open(log, "w") as out:
            self.proc = lab.popen("lb", PYFWD + ["start", "--config",
                                                 str(cfg), "--busy-poll",
                                                 "0"],
                                  stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)

    def ctl(self, *args):
        return self.lab.run("lb", PYFWD + ["ctl", "-s", self.sock, *args],
                            capture_output=True, text=True, timeout=30)

    def status(self, timeout=20):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            r = self.ctl("--json", "status")
            if r.returncode == 0:
                st = json.loads(r.stdout)
                if st.get("haproxy") and st["haproxy"]["pid"]:
                    return st
            assert self.proc.poll() is None, self.text()
            time.sleep(0.2)
        raise AssertionError("no status:\n" + self.text())

    def text(self):
        return self.log.read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def test_sigkill_leaves_no_haproxy_and_a_restart_clears_it(lab, tmp_path):
    sock = tmp_path / "pyfwd.sock"
    cfg = tmp_path / "pyfwd.toml"
    cfg.write_text(textwrap.dedent(f"""
        [engine]
        iface = "eth0"
        control_socket = "{sock}"
        """) + l7(lab, "web", 80))
    first = Started(lab, cfg, sock, tmp_path / "first.log")
    second = None
    try:
        hp = first.status()["haproxy"]
        master = hp["pid"]
        pids = [master] + children(master)
        assert len(pids) >= 2, pids                 # a master and a worker
        files = [hp["config"], hp["runtime_socket"], hp["master_socket"],
                 re.sub(r"\.cfg$", ".pid", hp["config"])]
        assert all(os.path.exists(f) for f in files), files
        assert hp["runtime_socket"].startswith("/run/pyfwd/haproxy-eth0")
        assert "node=real" in curl(lab, f"http://{VIP4}/")

        first.proc.kill()                           # SIGKILL
        t0 = time.monotonic()
        first.proc.wait(timeout=5)
        while any(alive(p) for p in pids) and \
                time.monotonic() - t0 < KILL_BOUND:
            time.sleep(0.02)
        gone = time.monotonic() - t0
        print(f"\nHAProxy gone {gone:.2f} s after its pyfwd was SIGKILLed")
        assert not any(alive(p) for p in pids), (pids, gone)
        # what the dead one left: its address (the kernel's), the files
        assert len(vip_lines(lab)) == 1
        assert os.path.exists(hp["config"])

        second = Started(lab, cfg, sock, tmp_path / "second.log")
        hp2 = second.status()["haproxy"]
        assert hp2["runtime_socket"] == hp["runtime_socket"]     # stable
        assert "node=real" in curl(lab, f"http://{VIP4}/")
        assert len(vip_lines(lab)) == 1, vip_lines(lab)         # not doubled
        running = haproxys(hp["config"])
        assert sorted(running) == sorted([hp2["pid"]] +
                                         children(hp2["pid"])), running
        assert len(running) == 2, running           # one master, one worker
        # the workers run unprivileged
        worker = children(hp2["pid"])[0]
        with open(f"/proc/{worker}/status") as f:
            uid = int(re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1))
        assert uid == pwd.getpwnam("haproxy").pw_uid
        second.stop()
        assert second.proc.returncode == 0, second.text()
        assert not any(os.path.exists(f) for f in files), files
        assert vip_lines(lab) == []
        for log in (first, second):
            assert "Traceback" not in log.text(), log.text()
    finally:
        first.stop()
        if second:
            second.stop()


@pytest.fixture
def engine(lab):
    made = []

    def make(*specs):
        eng = Engine("eth0", [parse_vip(s, "test") for s in specs],
                     busy_poll=0, flows=1 << 12)
        lab.call("lb", eng.start)       # a thread that ends at once
        made.append(eng)
        return eng

    yield make
    for eng in made:
        lab.call("lb", eng.stop)
    assert vip_lines(lab) == []


def spec(lab, name, port, reals=None, **extra):
    reals = lab.reals if reals is None else reals
    return {"name": name, "address": VIP4, "port": port, "mode": "l7",
            "scheduler": "rr", **extra,
            "real": [{"address": lab.ip(r), "port": 8080} for r in reals]}


def test_xff_drop_client_and_http_request_timeout(lab, engine):
    eng = engine(spec(lab, "clean", 80, xff_drop_client=True,
                      timeout_http_request="1s", maxconn=50),
                 spec(lab, "plain", 81))
    forged = ("-H", "X-Forwarded-For: 6.6.6.6")
    out = curl(lab, f"http://{VIP4}/", *forged)
    assert "xff=10.0.0.1\n" in out or out.endswith("xff=10.0.0.1"), out
    assert "6.6.6.6" not in out, out
    # without the option the forged header reaches the real server first
    out = curl(lab, f"http://{VIP4}:81/", *forged)
    assert "xff=6.6.6.6" in out, out
    with open(eng.haproxy.config_path) as f:
        text = f.read()
    assert "maxconn 50" in text and "timeout http-request 1s" in text
    # a client that never ends its headers is cut after 1 s (408)

    def slow():
        s = socket.create_connection((VIP4, 80), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")     # no blank line
        t0 = time.monotonic()
        data = s.recv(4096)
        s.close()
        return data, time.monotonic() - t0
    data, took = lab.call("client", slow)
    assert b" 408 " in data.split(b"\r\n")[0], data
    assert 0.5 < took < 3, took


def test_halt_ends_a_download_through_haproxy(lab, engine):
    """A 10 s download (200 MB at 20 MB/s) halted after 1.5 s ends within
    a few seconds (not at its end)."""
    real = lab.reals[0]
    eng = engine(spec(lab, "web", 80, reals=[real]))
    master = eng.haproxy.proc.pid
    result = {}

    def download():
        result["r"] = lab.run("client", [
            "curl", "-sS", "-o", "/dev/null", "--limit-rate", "20M",
            "-w", "%{size_download}", "--max-time", "60",
            f"http://{VIP4}/bytes/{SIZE}"],
            capture_output=True, text=True, timeout=70)

    t = threading.Thread(target=download)
    t.start()
    time.sleep(1.5)
    assert t.is_alive()
    t0 = time.monotonic()
    eng.halt("web", f"{lab.ip(real)}:8080")
    t.join(10)
    took = time.monotonic() - t0
    assert not t.is_alive(), "halt did not end the download"
    r = result["r"]
    # what the sockets' buffers held still arrives (~0.5 s of it)
    assert r.returncode != 0 and int(r.stdout or 0) < SIZE // 2, r
    assert took < 3, took
    print(f"\nhalt ended the download {took:.2f} s later "
          f"({int(r.stdout)} bytes)")
    # HAProxy started from lab.call's thread, which ended: still alive
    assert alive(master) and eng.haproxy.proc.pid == master


def test_haproxy_outlives_the_thread_that_started_it(lab, engine):
    eng = engine(spec(lab, "web", 80))
    pid = eng.haproxy.proc.pid
    box = {}
    # a reload (add-vip) from a thread that ends, as a control request's
    t = threading.Thread(target=lambda: box.setdefault(
        "label", lab.call("lb", lambda: eng.add_vip(spec(lab, "more", 82)))))
    t.start()
    t.join(30)
    assert box.get("label") == "more"
    time.sleep(0.5)
    assert alive(pid) and eng.haproxy.proc.pid == pid
    assert "node=real" in curl(lab, f"http://{VIP4}:82/")
    assert "node=real" in curl(lab, f"http://{VIP4}/")


def test_haproxy_accepts_the_operating_options(tmp_path):
    """`haproxy -c` on what render() writes with the new keys, the user
    lines and transparent binds (no lab: nothing runs)."""
    from pyfwd.control.l7.haproxy import HAProxy
    from pyfwd.control.l7.render import l7_vips, render
    svc = parse_vip(spec(None, "web", 80, reals=[], xff_drop_client=True,
                         maxconn=100, timeout_http_request="2s"), "test")
    proxy = HAProxy(tmp_path / "h.cfg", tmp_path / "h.sock")
    text = render(l7_vips([svc]), proxy.runtime_socket)
    assert "user " in text and "transparent" in text
    proxy.validate(text)
