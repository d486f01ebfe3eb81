"""sd_notify (control.notify) against a datagram socket the test owns, and
pyfwd start's service side without root: the main loop's SIGHUP reload and
watchdog (cli.balancer.serve) with fakes, the journal's log prefixes."""

import json
import logging
import os
import secrets
import signal
import socket
import time

import pytest

from pyfwd.cli import balancer
from pyfwd.control.notify import Notifier, monotonic_usec
from pyfwd.errors import ConfigError, PyfwdError


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def received(sock):
    return dict(line.split("=", 1) for line in
                sock.recv(4096).decode().split("\n"))


def test_ready_reloading_stopping_to_a_path(listener):
    path, sock = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000", "HOME": "/"}
    n = Notifier(env)
    assert env == {"HOME": "/"}         # not handed down to HAProxy
    assert n.enabled and n.watchdog_interval() == 1.5
    assert n.ready("forwarding: 1 VIP(s)")
    assert received(sock) == {"READY": "1", "STATUS": "forwarding: 1 VIP(s)"}
    before = monotonic_usec()
    n.reloading()
    got = received(sock)
    assert got["RELOADING"] == "1" and got["STATUS"]
    assert before <= int(got["MONOTONIC_USEC"]) <= monotonic_usec()
    n.alive()
    assert received(sock) == {"WATCHDOG": "1"}
    n.stopping()
    assert received(sock)["STOPPING"] == "1"
    n.status("a\nb")                    # one line per assignment
    assert received(sock) == {"STATUS": "a b"}
    n.close()


def test_an_abstract_socket():
    name = "pfsv-notify-" + secrets.token_hex(4)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert received(sock)["READY"] == "1"
    finally:
        sock.close()


def test_no_service_manager_no_noise(caplog, tmp_path):
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval() is None
    assert not n.ready("x") and not n.alive()
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with caplog.at_level(logging.WARNING, logger="pyfwd"):
        assert not gone.ready("x") and not gone.alive()
    assert caplog.text.count("sd_notify to") == 1      # said once
    assert Notifier({"NOTIFY_SOCKET": "relative"}).address is None


def test_the_watchdog_is_ours_only():
    pid = os.getpid()
    assert Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(pid)}
                    ).watchdog_interval() == 1.0
    assert Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"},
                    pid=pid).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval() is None


# --- the main loop ------------------------------------------------------

class FakeNotifier:
    def __init__(self, interval=None):
        self.sent, self.interval = [], interval

    def watchdog_interval(self):
        return self.interval

    def __getattr__(self, name):        # ready, reloading, alive, status
        return lambda *a: self.sent.append((name,) + a)


class FakeEngine:
    iface, role, config_path = "eth0", "active", "/etc/pyfwd/pyfwd.toml"
    info = type("Info", (), {"backend": "xdp", "xdp_mode": "native",
                             "copy_mode": "copy"})()

    def __init__(self, problems=()):
        self.problems = list(problems)
        self.looks = 0
        self.signals = None

    def status(self):
        return {"vips": 2, "reals": 3}

    def liveness(self):
        self.looks += 1
        if self.looks == len(self.problems) and self.signals is not None:
            self.signals.append(signal.SIGTERM)
        return self.problems[self.looks - 1] if self.looks <= \
            len(self.problems) else []


class FakeControl:
    """The control server's handle(): the engine's method, its reply."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def handle(self, cmd, args):
        self.calls.append(cmd)
        try:
            reply = {"ok": True, "result": getattr(self.engine, cmd)()}
        except PyfwdError as exc:
            reply = {"ok": False, "error": str(exc)}
        return json.dumps(reply).encode() + b"\n"


def reloading_engine(error=None):
    eng = FakeEngine()

    def reload():
        if error:
            raise ConfigError(error)
        return "1 VIP changed"
    eng.reload = reload
    return eng


def test_sighup_reloads_through_the_control_server():
    n, eng = FakeNotifier(), reloading_engine()
    balancer.notify_reloads(eng, n)
    control = FakeControl(eng)
    signals = [signal.SIGHUP, signal.SIGTERM]
    assert balancer.serve(eng, control, n, signals, tick=0) == \
        signal.SIGTERM
    assert control.calls == ["reload"]
    assert [s[0] for s in n.sent] == ["reloading", "ready"]
    assert n.sent[1][1] == ("forwarding: 2 VIP(s), 3 real server(s) on "
                            "eth0 (XDP native, AF_XDP copy), active")
    # `pyfwd ctl reload` (the control socket) is told to systemd the same
    assert eng.reload() == "1 VIP changed"
    assert [s[0] for s in n.sent[2:]] == ["reloading", "ready"]


def test_a_failed_reload_keeps_the_config_and_says_so(caplog):
    n = FakeNotifier()
    eng = reloading_engine(error="config x: line 3: expected '='")
    balancer.notify_reloads(eng, n)
    with caplog.at_level(logging.ERROR, logger="pyfwd"):
        balancer.serve(eng, FakeControl(eng), n,
                       [signal.SIGHUP, signal.SIGINT], tick=0)
    assert n.sent == [("reloading",), ("ready", "reload failed, running "
                                       "config kept: config x: line 3: "
                                       "expected '='")]
    assert "reload failed, the running config stays" in caplog.text


def test_watchdog_only_while_alive():
    n = FakeNotifier(interval=0.001)
    eng = FakeEngine([[], ["data-plane loop q0: stalled"],
                      ["data-plane loop q0: stalled"], []])
    eng.signals = []
    t0 = time.monotonic()
    balancer.serve(eng, FakeControl(eng), n, eng.signals, tick=0.001)
    assert time.monotonic() - t0 < 5
    assert [s[0] for s in n.sent] == ["alive", "status", "status", "alive",
                                      "status"]
    assert n.sent[1] == ("status", "not alive: data-plane loop q0: stalled")


# --- logs -------------------------------------------------------------------

def test_journal_prefixes(tmp_path):
    f = tmp_path / "stderr"
    with open(f, "w") as out:
        st = os.fstat(out.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert balancer.stderr_is_journal(env, out.fileno())
        assert not balancer.stderr_is_journal({}, out.fileno())
        assert not balancer.stderr_is_journal(
            {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"},
            out.fileno())
        assert not balancer.stderr_is_journal({"JOURNAL_STREAM": "x"},
                                              out.fileno())
    fmt = balancer.JournalFormatter()

    def line(level, msg):
        return fmt.format(logging.LogRecord("pyfwd", level, __file__, 1,
                                            msg, (), None))
    assert line(logging.ERROR, "loop died") == "<3>loop died"
    assert line(logging.WARNING, "w") == "<4>w"
    assert line(logging.INFO, "a\nb") == "<6>a\n<6>b"
    assert line(logging.DEBUG, "d") == "<7>d"


# --- exit statuses ------------------------------------------------------------

def test_exit_statuses_not_root_and_usage(monkeypatch):
    from click.testing import CliRunner

    from pyfwd.cli.main import cli
    args = ["start", "--iface", "eth0", "--vip", "10.0.0.100:80/tcp",
            "--real", "10.0.0.11"]
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == balancer.EXIT_NOT_ROOT == 4, r.output
    assert r.output == ("Error: pyfwd start needs root (BPF, AF_XDP and the "
                        "interfaces); run it with sudo or as a service\n")
    # a configuration error comes first, root or not: 2
    r = CliRunner().invoke(cli, args[:-1] + ["10.0.0.11:8080"])
    assert r.exit_code == balancer.EXIT_USAGE == 2, r.output
    assert (balancer.EXIT_STOPPED, balancer.EXIT_FAILED,
            balancer.EXIT_DATAPLANE) == (0, 1, 3)
    # --help says them all
    r = CliRunner().invoke(cli, ["start", "--help"])
    for code in range(5):
        assert f"\n    {code}  " in r.output, r.output
