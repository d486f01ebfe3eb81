"""The control socket (a fake engine behind a real unix socket) and what
`pyfwd ctl` prints."""

import errno
import json
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time

import pytest

from pyfwd.control import server as control
from pyfwd.control import ctl
from pyfwd.control.engine import Engine
from pyfwd.control.protocol import COMMANDS, parse_request
from pyfwd.control.server import ControlServer, request
from pyfwd.control.text import vip_label
from pyfwd.errors import ConfigError, PyfwdError

VIPS = [
    {"name": "pacs-web", "vip": "10.0.0.100:80/tcp", "mode": "dr",
     "scheduler": "wlc", "persistence": 300, "fallback": "10.0.0.50:80",
     "fallback_active": False, "reals": [
         {"real": "10.0.0.11:80", "weight": 100, "state": "online",
          "health": "up", "health_detail": "tcp connect ok",
          "scheduled": True, "why": None, "mac": "02:00:00:00:00:11",
          "active": 3, "inactive": 2, "frames": 10, "bytes": 1000,
          "flows_new": 5},
         {"real": "10.0.0.12:80", "weight": 0, "state": "drain",
          "health": "up", "health_detail": "", "scheduled": False,
          "why": "draining (weight 0)", "mac": "02:00:00:00:00:12",
          "active": 12345, "inactive": 7, "frames": 123456789,
          "bytes": 98765432100,
          "flows_new": 1234567},
         {"real": "10.0.0.13:80", "weight": 100, "state": "online",
          "health": "down", "health_detail": "tcp connect: refused",
          "scheduled": False, "why": None, "mac": None, "active": 0,
          "inactive": 0, "frames": 0, "bytes": 0, "flows_new": 0}]},
    {"name": "dicom", "vip": "10.0.0.100:104/tcp", "mode": "nat",
     "scheduler": "maglev", "persistence": 0, "fallback": None,
     "fallback_active": False, "reals": []},
]
XSK = {"xdp_mode": "native", "copy_mode": "copy", "busy_poll": False,
       "queues": 1, "prog_id": 42}
STATUS = {"iface": "eth0", "pid": 123, "uptime": 3725.2, "vips": 2,
          "reals": 3, "xsk": XSK, "config": "/etc/pyfwd.toml"}
STATS = {"core": {"frames": 1000, "bytes": 64000,
                  "verdict": {"pass": 10, "punt": 2, "forward": 980,
                              "drop": 8},
                  "reason": {"forward": 980, "pass_not_vip": 10,
                             "punt_arp": 2, "drop_runt": 5,
                             "drop_no_real": 3, "drop_fragment": 0},
                  "flows_new": 50, "rx": 1000, "tx": 980},
         "queues": [{"rx": 600, "tx": 590}, {"rx": 400, "tx": 390}],
         "arp": {"requests_answered": 4}, "vips": VIPS, "xsk": XSK}
RATE = {"interval": 2.0, "weight": 0.25, "vips": [
    {"name": "pacs-web", "vip": "10.0.0.100:80/tcp", "cps": 3.0,
     "in_pps": 120.0, "in_bps": 96000.0,
     "reals": [{"real": "10.0.0.11", "cps": 3.0, "in_pps": 120.0,
                "in_bps": 96000.0}]}]}
RELOAD = {"added_vips": ["web2"], "removed_vips": [], "changed": ["dicom"]}


class FakeEngine:
    """The engine interface: records calls; unknown VIP -> ConfigError;
    the VIP "boom" raises a bug (RuntimeError)."""

    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()
        self.views = self       # the engine's part for show and stats

    def _call(self, name, *args):
        with self.lock:
            self.calls.append((name, args))
        if args and args[0] == "boom":
            raise RuntimeError("kaboom")
        if args and isinstance(args[0], str) and args[0] not in (
                "pacs-web", "10.0.0.100:80/tcp", "dicom"):
            raise ConfigError(f"vip {args[0]!r}: no such VIP")

    def status(self):
        self._call("status")
        return STATUS

    def show(self):
        self._call("show")
        return VIPS

    def stats(self):
        self._call("stats")
        return STATS

    def rate(self):
        self._call("rate")
        return RATE

    def zero(self, vip):
        self._call("zero", vip)
        return {"zeroed": vip or "all", "reals": 2}

    def flows(self, vip, limit):
        self._call("flows", vip, limit)
        return {"flows": [], "total": 0, "limit": limit}

    def add_vip(self, spec):
        self._call("add_vip", spec)
        if spec.get("vip") == "boom":
            raise RuntimeError("kaboom")

    def del_vip(self, vip):
        self._call("del_vip", vip)

    def add_real(self, vip, text):
        self._call("add_real", vip, text)

    def del_real(self, vip, key):
        self._call("del_real", vip, key)

    def set_weight(self, vip, key, weight):
        self._call("set_weight", vip, key, weight)
        if weight < 0:
            raise ConfigError(f"weight {weight}: expected 0 to 65535")

    def drain(self, vip, key):
        self._call("drain", vip, key)

    def halt(self, vip, key):
        self._call("halt", vip, key)

    def online(self, vip, key):
        self._call("online", vip, key)

    def reload(self):
        self._call("reload")
        return RELOAD

    def operator_changes(self):
        self._call("operator_changes")
        return []

    def forget(self, vip, real):
        self._call("forget", vip, real)
        return [f"{vip} {real}: drain"]

    def set_role(self, role):
        with self.lock:
            self.calls.append(("set_role", (role,)))
        return {"role": role, "previous": "standby",
                "changed": role != "standby", "announce": []}

    def renew_lease(self):
        with self.lock:
            self.calls.append(("renew_lease", ()))
        return {"role": "active", "lease": {"seconds": 2.5, "armed": True,
                                            "left": 2.5, "renewals": 1}}


@pytest.fixture
def sockdir():
    # short: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path
    # can be longer
    d = tempfile.mkdtemp(prefix="pyfwd-ctl-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def engine():
    return FakeEngine()


@pytest.fixture
def server(engine, sockdir):
    srv = ControlServer(engine, os.path.join(sockdir, "run", "pyfwd.sock"))
    srv.start()
    yield srv
    srv.stop()


class Conn:
    """A raw client: send lines, read reply lines."""

    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else
                          data.encode())

    def reply(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def ask(self, obj):
        """Send `obj` (bytes as they are, else as a JSON line); its reply."""
        self.send(obj if isinstance(obj, bytes) else json.dumps(obj) + "\n")
        return self.reply()

    def closed(self):
        """True when the server closed the connection (after any replies)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


# --- round trips ------------------------------------------------------------

@pytest.mark.parametrize("cmd,args,call,result", [
    ("status", {}, ("status", ()), STATUS),
    ("show", {}, ("show", ()), VIPS),
    ("stats", {}, ("stats", ()), STATS),
    ("rate", {}, ("rate", ()), RATE),
    ("zero", {}, ("zero", (None,)), {"zeroed": "all", "reals": 2}),
    ("zero", {"vip": "dicom"}, ("zero", ("dicom",)),
     {"zeroed": "dicom", "reals": 2}),
    ("flows", {}, ("flows", (None, 100)),
     {"flows": [], "total": 0, "limit": 100}),
    ("flows", {"vip": "dicom", "limit": 0}, ("flows", ("dicom", 0)),
     {"flows": [], "total": 0, "limit": 0}),
    ("add-vip", {"vip": {"name": "web2", "vip": "10.0.0.101:80/tcp",
                         "real": ["10.0.0.21"]}},
     ("add_vip", ({"name": "web2", "vip": "10.0.0.101:80/tcp",
                   "real": ["10.0.0.21"]},)), None),
    ("del-vip", {"vip": "dicom"}, ("del_vip", ("dicom",)), None),
    ("add-real", {"vip": "pacs-web", "real": "10.0.0.14:80@50"},
     ("add_real", ("pacs-web", "10.0.0.14:80@50")), None),
    ("del-real", {"vip": "10.0.0.100:80/tcp", "real": "10.0.0.11"},
     ("del_real", ("10.0.0.100:80/tcp", "10.0.0.11")), None),
    ("weight", {"vip": "pacs-web", "real": "10.0.0.11:80", "weight": 0},
     ("set_weight", ("pacs-web", "10.0.0.11:80", 0)), None),
    ("drain", {"vip": "pacs-web", "real": "10.0.0.11"},
     ("drain", ("pacs-web", "10.0.0.11")), None),
    ("halt", {"vip": "pacs-web", "real": "10.0.0.11"},
     ("halt", ("pacs-web", "10.0.0.11")), None),
    ("online", {"vip": "pacs-web", "real": "10.0.0.11"},
     ("online", ("pacs-web", "10.0.0.11")), None),
    ("reload", {}, ("reload", ()), RELOAD),
    ("changes", {}, ("operator_changes", ()), []),
    ("forget", {"vip": "pacs-web", "real": "10.0.0.11"},
     ("forget", ("pacs-web", "10.0.0.11")), ["pacs-web 10.0.0.11: drain"]),
    ("ha", {"role": "active"}, ("set_role", ("active",)),
     {"role": "active", "previous": "standby", "changed": True,
      "announce": []}),
])
def test_each_command_round_trips(server, engine, cmd, args, call, result):
    assert request(server.path, cmd, **args) == result
    assert engine.calls == [call]


def _resolve(obj, dotted):
    for attr in dotted.split("."):
        obj = getattr(obj, attr)
    return obj


def test_commands_name_engine_methods():
    real = Engine("eth0", [])
    for name, c in COMMANDS.items():
        assert c.method is None or callable(_resolve(FakeEngine(), c.method))
        assert c.method is None or callable(_resolve(real, c.method)), name
        assert c.help and all(a.type in (str, int, dict) for a in c.args)


def test_help_lists_commands_and_their_args(server):
    result = request(server.path, "help")
    by_cmd = {c["cmd"]: c for c in result}
    assert list(by_cmd) == list(COMMANDS)
    assert by_cmd["weight"]["args"] == {"vip": "string", "real": "string",
                                        "weight": "integer"}
    assert by_cmd["add-vip"]["args"] == {"vip": "object"}
    assert "drain" in ctl.format_help(result)


def test_socket_is_0600_in_a_0700_directory(server):
    assert stat.S_ISSOCK(os.stat(server.path).st_mode)
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    parent = os.path.dirname(server.path)
    assert stat.S_IMODE(os.stat(parent).st_mode) == 0o700


def test_existing_directory_keeps_its_mode(engine, sockdir):
    os.chmod(sockdir, 0o755)
    with ControlServer(engine, os.path.join(sockdir, "s.sock")) as srv:
        assert request(srv.path, "status") == STATUS
    assert stat.S_IMODE(os.stat(sockdir).st_mode) == 0o755


def test_many_requests_on_one_connection_pipelined(server, engine):
    c = Conn(server.path)
    c.send('{"cmd":"status"}\n\n{"cmd":"show"}\n{"cmd":"reload"}\n')
    assert c.reply() == {"ok": True, "result": STATUS}
    assert c.reply() == {"ok": True, "result": VIPS}
    assert c.reply() == {"ok": True, "result": RELOAD}
    # a request split over several writes
    c.send('{"cmd": "dra')
    time.sleep(0.05)
    c.send('in", "vip": "pacs-web", "real": "10.0.0.11"}\n')
    assert c.reply() == {"ok": True, "result": None}
    assert [name for name, _ in engine.calls] == ["status", "show",
                                                  "reload", "drain"]
    c.close()


def test_client_class_keeps_its_connection(server):
    with control.Client(server.path) as client:
        assert client.call("status") == STATUS
        with pytest.raises(PyfwdError, match="no such VIP"):
            client.call("drain", vip="nope", real="10.0.0.11")
        assert client.call("show") == VIPS


# --- bad input --------------------------------------------------------------

BAD = [
    (b"hello", ["not JSON"]),
    (b"{\"cmd\": \"show\"", ["not JSON"]),
    (b"\xff\xfe{}", ["not UTF-8"]),
    (b"[\"show\"]", ["JSON object", "an array"]),
    (b"42", ["JSON object", "a number"]),
    (b"null", ["JSON object", "null"]),
    (b"{}", ["no \"cmd\"", "status", "reload"]),
    (b"{\"cmd\": 7}", ["'cmd'", "string"]),
    (b"{\"cmd\": \"frobnicate\"}", ["unknown command 'frobnicate'",
                                    "status, show, stats", "add-vip",
                                    "weight", "reload"]),
    (b"{\"cmd\": \"drain\", \"vip\": \"pacs-web\"}",
     ["drain", "missing field 'real'", "vip, real"]),
    (b"{\"cmd\": \"show\", \"verbose\": true}",
     ["show", "unknown field 'verbose'"]),
    (b"{\"cmd\": \"drain\", \"vip\": \"pacs-web\", \"real\": \"10.0.0.11\","
     b" \"weight\": 3}", ["unknown field 'weight'", "vip, real"]),
    (b"{\"cmd\": \"weight\", \"vip\": \"pacs-web\", \"real\": \"10.0.0.11\","
     b" \"weight\": \"50\"}", ["'weight'", "an integer", "a string"]),
    (b"{\"cmd\": \"weight\", \"vip\": \"pacs-web\", \"real\": \"10.0.0.11\","
     b" \"weight\": true}", ["'weight'", "an integer", "a boolean"]),
    (b"{\"cmd\": \"weight\", \"vip\": \"pacs-web\", \"real\": \"10.0.0.11\","
     b" \"weight\": 1.5}", ["'weight'", "an integer", "a number"]),
    (b"{\"cmd\": \"drain\", \"vip\": [\"pacs-web\"], \"real\": \"x\"}",
     ["'vip'", "a string", "an array"]),
    (b"{\"cmd\": \"add-vip\", \"vip\": \"10.0.0.1:80/tcp\"}",
     ["'vip'", "an object", "a string"]),
    (b"[" * 30000 + b"]" * 30000, ["not JSON", "deep"]),     # RecursionError
    # the engine refuses: its ConfigError's message
    (b"{\"cmd\": \"drain\", \"vip\": \"nope\", \"real\": \"10.0.0.11\"}",
     ["vip 'nope': no such VIP"]),
    (b"{\"cmd\": \"weight\", \"vip\": \"pacs-web\", \"real\": \"10.0.0.11\","
     b" \"weight\": -1}", ["weight -1: expected 0 to 65535"]),
]


@pytest.mark.parametrize("line,words", BAD,
                         ids=[str(i) for i in range(len(BAD))])
def test_bad_request_gets_an_error_and_the_server_carries_on(server, line,
                                                             words):
    c = Conn(server.path)
    reply = c.ask(line + b"\n")
    assert reply["ok"] is False and set(reply) == {"ok", "error"}
    assert "\n" not in reply["error"]
    for w in words:
        assert w in reply["error"]
    # same connection, then a new one
    assert c.ask({"cmd": "status"}) == {"ok": True, "result": STATUS}
    c.close()
    assert request(server.path, "status") == STATUS


def test_request_raises_the_engines_message(server):
    with pytest.raises(PyfwdError, match=r"^vip 'nope': no such VIP$"):
        request(server.path, "del-real", vip="nope", real="10.0.0.11")
    with pytest.raises(PyfwdError, match="unknown command 'nope'"):
        request(server.path, "nope")


def test_engine_bug_is_answered_logged_and_survived(server, caplog):
    c = Conn(server.path)
    with caplog.at_level(logging.ERROR, logger="pyfwd.control.server"):
        reply = c.ask({"cmd": "del-vip", "vip": "boom"})
    assert reply == {"ok": False,
                     "error": "internal error: RuntimeError: kaboom"}
    assert any(r.exc_info and "kaboom" in str(r.exc_info[1])
               for r in caplog.records)
    assert c.ask({"cmd": "show"}) == {"ok": True, "result": VIPS}
    with pytest.raises(PyfwdError, match="internal error"):
        request(server.path, "add-vip", vip={"vip": "boom"})
    assert request(server.path, "status") == STATUS


def test_result_that_is_not_json_is_an_internal_error(sockdir, caplog):
    class Odd(FakeEngine):
        def status(self):
            return {"when": object()}
    with ControlServer(Odd(), os.path.join(sockdir, "s.sock")) as srv:
        with pytest.raises(PyfwdError, match="internal error.*not JSON"):
            request(srv.path, "status")
        assert request(srv.path, "show") == VIPS


def test_line_over_64k_is_refused_and_closed(server):
    c = Conn(server.path)
    c.send(b"{\"cmd\": \"show\", \"x\": \"" + b"a" * (70 * 1024))
    reply = c.reply()
    assert reply["ok"] is False and "65536 bytes" in reply["error"]
    assert c.closed()
    # a whole line over the limit arriving at once
    c = Conn(server.path)
    c.send(b"{\"cmd\": \"show\"}\n" + b" " * (64 * 1024) + b"{}\n")
    assert c.reply()["ok"] is True
    assert "65536 bytes" in c.reply()["error"]
    assert c.closed()
    assert request(server.path, "status") == STATUS


def test_line_of_exactly_64k_is_read(server):
    line = json.dumps({"cmd": "status"}).encode()
    line = line + b" " * (control.MAX_LINE - len(line))
    c = Conn(server.path)
    assert c.ask(line + b"\n") == {"ok": True, "result": STATUS}


def test_client_leaving_mid_line_is_fine(server):
    for _ in range(5):
        c = Conn(server.path)
        c.send(b"{\"cmd\": \"sh")
        c.close()
    c = Conn(server.path)
    c.send(b"{\"cmd\": \"show\"}\n")      # and leave before the reply
    c.close()
    assert request(server.path, "status") == STATUS


def test_idle_connection_is_closed(engine, sockdir):
    srv = ControlServer(engine, os.path.join(sockdir, "s.sock"),
                        idle_timeout=0.2).start()
    try:
        c = Conn(srv.path)
        assert c.ask({"cmd": "status"})["ok"]
        time.sleep(0.5)
        assert c.closed()
        assert request(srv.path, "status") == STATUS
    finally:
        srv.stop()


def test_too_many_clients_are_told_so(engine, sockdir):
    srv = ControlServer(engine, os.path.join(sockdir, "s.sock"),
                        max_clients=2).start()
    try:
        held = [Conn(srv.path), Conn(srv.path)]
        for c in held:
            assert c.ask({"cmd": "status"})["ok"]
        with pytest.raises(PyfwdError, match="too many connections"):
            request(srv.path, "status")
        held[0].close()
        deadline = time.monotonic() + 5
        while True:     # the server notices the close asynchronously
            try:
                assert request(srv.path, "status") == STATUS
                break
            except PyfwdError:
                assert time.monotonic() < deadline
                time.sleep(0.02)
    finally:
        srv.stop()


def test_many_concurrent_clients(server, engine):
    errors = []

    def client(i):
        try:
            with control.Client(server.path) as c:
                for j in range(20):
                    assert c.call("weight", vip="pacs-web",
                                  real=f"10.0.{i}.{j}", weight=j) is None
                    assert c.call("status") == STATUS
        except Exception as exc:    # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    weights = [a for name, a in engine.calls if name == "set_weight"]
    assert len(weights) == 40 * 20 and len(set(weights)) == 40 * 20


def test_ha_and_status_do_not_wait_behind_a_reload(engine, sockdir):
    """A reload may hold the engine calls for seconds (it waits for ARP):
    `ha` (a failover), `status` and `ha-renew` (keepalived's engine
    check) answer at once meanwhile; the other commands still wait their
    turn."""
    assert [n for n, c in COMMANDS.items() if not c.serialized] == \
        ["status", "ha", "ha-renew"]
    assert COMMANDS["ha"].args[0].choices == ("active", "standby")
    in_reload, release = threading.Event(), threading.Event()
    plain_reload = engine.reload

    def slow_reload():
        in_reload.set()
        assert release.wait(10)
        return plain_reload()

    engine.reload = slow_reload
    with ControlServer(engine, os.path.join(sockdir, "s.sock")) as srv:
        done = []
        t = threading.Thread(target=lambda: done.append(
            request(srv.path, "reload")))
        t.start()
        try:
            assert in_reload.wait(5)
            t0 = time.monotonic()
            assert request(srv.path, "ha", role="active", timeout=2)[
                "role"] == "active"
            assert request(srv.path, "status", timeout=2) == STATUS
            assert request(srv.path, "ha-renew", timeout=2)["lease"][
                "armed"]
            assert time.monotonic() - t0 < 1.0
            with pytest.raises(PyfwdError, match="no reply within"):
                request(srv.path, "show", timeout=0.3)     # serialized
        finally:
            release.set()
            t.join(10)
        assert done == [RELOAD]


# --- the socket file --------------------------------------------------------

def test_stale_socket_is_replaced(engine, sockdir):
    path = os.path.join(sockdir, "s.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)            # bound, never listening: a dead engine's
    stale.close()
    assert os.path.exists(path)
    with ControlServer(engine, path) as srv:
        assert request(srv.path, "status") == STATUS
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_live_socket_is_not_taken_over(server, engine):
    other = ControlServer(FakeEngine(), server.path)
    with pytest.raises(PyfwdError, match="another pyfwd engine listens"):
        other.start()
    assert request(server.path, "status") == STATUS
    assert engine.calls == [("status", ())]


def test_path_that_is_not_a_socket_is_refused(engine, sockdir):
    path = os.path.join(sockdir, "file")
    with open(path, "w") as f:
        f.write("keep me")
    with pytest.raises(PyfwdError, match="not a socket"):
        ControlServer(engine, path).start()
    with open(path) as f:
        assert f.read() == "keep me"


def test_stop_removes_the_socket_and_is_idempotent(engine, sockdir):
    srv = ControlServer(engine, os.path.join(sockdir, "s.sock")).start()
    held = Conn(srv.path)
    assert held.ask({"cmd": "status"})["ok"]
    srv.stop()
    assert not os.path.exists(srv.path)
    assert held.closed()
    srv.stop()
    with pytest.raises(PyfwdError, match="no pyfwd engine"):
        request(srv.path, "status")


def test_stop_leaves_a_successors_socket(engine, sockdir):
    path = os.path.join(sockdir, "s.sock")
    first = ControlServer(engine, path).start()
    os.unlink(path)                     # e.g. removed by hand ...
    second = ControlServer(engine, path).start()    # ... and a new engine
    first.stop()
    assert request(path, "status") == STATUS
    second.stop()


def test_too_long_path_is_a_clean_error(engine, sockdir):
    path = os.path.join(sockdir, "x" * 120)
    with pytest.raises(PyfwdError, match="control socket"):
        ControlServer(engine, path).start()


# --- the client -----------------------------------------------------------

def test_request_without_an_engine(sockdir):
    path = os.path.join(sockdir, "missing.sock")
    with pytest.raises(PyfwdError) as exc:
        request(path, "status")
    assert str(exc.value) == (f"no pyfwd engine at {path} (is it running? "
                              "--socket?)")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    with pytest.raises(PyfwdError, match="no pyfwd engine at"):
        request(path, "status")


def test_request_timeout(sockdir):
    path = os.path.join(sockdir, "mute.sock")
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(path)
    mute.listen(1)
    try:
        with pytest.raises(PyfwdError, match="no reply within 0.2s"):
            request(path, "status", timeout=0.2)
    finally:
        mute.close()


def test_permission_errors_say_so():
    msg = control._connect_error("/run/pyfwd/pyfwd.sock",
                                 PermissionError(errno.EACCES, "denied"))
    assert "permission denied" in msg and "/run/pyfwd/pyfwd.sock" in msg


def _connect_as_nobody(path):
    """In a forked child running as uid/gid 65534: connect to `path`;
    "denied", "ok" or the errno's name."""
    pid = os.fork()
    if pid == 0:                                    # child: no pytest here
        code = 2
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            code = 0
        except PermissionError:
            code = 13
        except BaseException:               # noqa: BLE001 (child exits)
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return {0: "ok", 13: "denied"}.get(os.waitstatus_to_exitcode(status),
                                       "failed")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch user")
def test_other_users_cannot_connect(server):
    run = os.path.dirname(server.path)
    os.chmod(os.path.dirname(run), 0o755)           # the test's temp dir
    # the directory (0700) and the socket (0600) both keep "nobody" out
    assert _connect_as_nobody(server.path) == "denied"
    os.chmod(run, 0o755)                            # only the socket's mode
    assert _connect_as_nobody(server.path) == "denied"
    os.chmod(server.path, 0o666)                    # the test tests itself
    assert _connect_as_nobody(server.path) == "ok"


def test_parse_request():
    assert parse_request(b'{"cmd": "weight", "real": "10.0.0.11", '
                         b'"weight": 5, "vip": "w"}') == (
        "weight", ["w", "10.0.0.11", 5])
    assert parse_request(b'{"cmd": "status"}') == ("status", [])
    with pytest.raises(control.BadRequest, match="status: unknown field"):
        parse_request(b'{"cmd": "status", "vip": "w"}')


# --- what pyfwd ctl prints --------------------------------------------------

def _columns(line, n):
    """The `n` cells of a table line (cells are 2+ spaces apart, the last
    may be empty)."""
    cells = re.split(r"\s{2,}", line.strip())
    return cells + [""] * (n - len(cells))


def test_format_status():
    text = ctl.format_status(STATUS)
    assert text.splitlines() == [
        "engine      pid 123, interface eth0, up 1h02m05s",
        "config      /etc/pyfwd.toml",
        "services    2 VIPs, 3 real servers",
        "data plane  XDP native, AF_XDP copy mode, busy poll off, 1 queue, "
        "program id 42",
    ]
    text = ctl.format_status({**STATUS, "config": None, "xsk": None,
                              "extra_thing": 5})
    rows = [line.split(None, 1) for line in text.splitlines()]
    assert ["config", "none (--vip/--real on the command line)"] in rows
    assert ["data", "plane   not running"] in rows
    assert text.splitlines()[-1].split() == ["extra", "thing", "5"]
    text = ctl.format_status({**STATUS, "inside_iface": "eth1",
                              "snat": ["10.0.0.1", 61000, 65535],
                              "unknown": None})
    assert "interface eth0, inside interface eth1, up" in text
    assert "snat        10.0.0.1 ports 61000-65535" in text
    assert "unknown" not in text


def test_status_and_stats_say_why_the_fast_path_was_refused():
    why = ("eth0: its veth peer eth1 (netns id 0) runs no XDP program; a "
           "veth drops what XDP sends to a peer without one in driver mode")
    xsk = {**XSK, "fastpath": "refused", "fastpath_why": why}
    status = ctl.format_status({**STATUS, "xsk": xsk})
    assert "program id 42, fast path REFUSED (off): " + why in status
    assert "fast path on" in ctl.format_status(
        {**STATUS, "xsk": {**XSK, "fastpath": "on"}})
    stats = ctl.format_stats({**STATS, "xsk": xsk}).splitlines()
    assert "fast path  REFUSED (off): " + why in stats
    assert not any("REFUSED" in line for line in ctl.format_stats(
        {**STATS, "xsk": {**XSK, "fastpath": "on"}}).splitlines())


@pytest.mark.parametrize("state, words", [
    ("not engaged", "busy poll on but not engaged (NAPI id 0): sleeps in "
     "poll() when idle, 1 queue"),
    ("engaged", "busy poll on (engaged), 1 queue"),
    ("waiting", "busy poll on (waiting), 1 queue"),
    (None, "busy poll on, 1 queue"),
])
def test_format_status_says_whether_busy_polling_engages(state, words):
    xsk = {**STATUS["xsk"], "busy_poll": True}
    if state:
        xsk["busy_polling"] = state
    line = ctl.format_status({**STATUS, "xsk": xsk}).splitlines()[-1]
    assert words in line
    assert "busy polling" not in line       # said once, not as a key


def test_format_show():
    text = ctl.format_show(VIPS)
    lines = text.splitlines()
    assert lines[0] == ("pacs-web  10.0.0.100:80/tcp  dr  wlc  persistence "
                        "300s  fallback 10.0.0.50:80")
    header = lines[1]
    names = ["REAL", "WEIGHT", "STATE", "HEALTH", "ACTIVE", "INACT", "NEW",
             "PACKETS", "BYTES", "WHY"]
    assert header.split() == names
    # right-aligned numbers end where their header ends
    for line in lines[2:5]:
        for n in ("WEIGHT", "ACTIVE", "INACT", "PACKETS", "BYTES"):
            end = header.index(n) + len(n)
            assert line[end - 1] != " " and line[end:end + 1] in ("", " ")
    # ACTIVE established or half-open, INACT closing (ipvsadm's two)
    assert _columns(lines[2], 10) == [
        "10.0.0.11:80", "100", "online", "up", "3", "2", "5", "10",
        "1000 B", ""]
    assert _columns(lines[3], 10) == [
        "10.0.0.12:80", "0", "drain", "up", "12345", "7", "1.2M",
        "123.5M", "92.0 GiB", "draining (weight 0)"]
    assert _columns(lines[4], 10)[3:] == [
        "down", "0", "0", "0", "0", "0 B", "tcp connect: refused"]
    assert lines[5] == ""
    assert lines[6] == "dicom  10.0.0.100:104/tcp  nat  maglev"
    assert lines[7] == "  no real servers"
    assert all(len(line) <= 100 and line == line.rstrip() for line in lines)
    assert ctl.format_show([]) == "no VIPs"
    active = dict(VIPS[0], fallback_active=True)
    assert "fallback 10.0.0.50:80 ACTIVE" in ctl.format_show([active])


def test_format_stats():
    text = ctl.format_stats(STATS)
    lines = text.splitlines()
    assert lines[0] == "frames    1000 (62.5 KiB)"
    assert "verdicts  pass 10  punt 2  forward 980  drop 8" in lines
    i = lines.index("reasons (non-zero)")
    reasons = [line.split() for line in lines[i + 1:i + 6]]
    assert reasons == [["drop_runt", "5"], ["drop_no_real", "3"],
                       ["forward", "980"], ["pass_not_vip", "10"],
                       ["punt_arp", "2"]]
    assert "drop_fragment" not in text
    text = ctl.format_stats({**STATUS, **STATS, "core": {
        **STATS["core"], "vip_count": 2, "vip_generation": 7}})
    assert "engine    pid 123, interface eth0, up 1h02m05s" in text
    assert "tables    vips 2  generation 7" in text
    assert any(line.split() == ["1", "400", "390"] for line in lines)
    row = next(line for line in lines if line.strip().startswith(
        "10.0.0.12:80"))
    assert row.split() == ["10.0.0.12:80", "drain", "123456789",
                           "98765432100", "1234567", "12345", "7"]
    row = next(line for line in lines if line.startswith("pacs-web"))
    assert row.split()[-5:] == ["123456799", "98765433100", "1234572",
                                "12348", "9"]
    assert all(len(line) <= 100 for line in lines)


def test_format_reload_and_results():
    assert ctl.format_reload(RELOAD) == "added vips: web2\nchanged: dicom"
    assert ctl.format_reload({"added_vips": [], "removed_vips": []}) == \
        "no changes"
    assert ctl.format_reload(None) == "no changes"
    assert ctl.format_result("drain", None) == "ok"
    assert ctl.format_result("show", VIPS) == ctl.format_show(VIPS)
    assert ctl.format_result("reload", RELOAD) == ctl.format_reload(RELOAD)


@pytest.mark.parametrize("fn,value,text", [
    (ctl.count, 99999, "99999"), (ctl.count, 123456, "123.5k"),
    (ctl.count, 999_960, "1.0M"), (ctl.count, None, "-"),
    (ctl.size, 1023, "1023 B"), (ctl.size, 1536, "1.5 KiB"),
    (ctl.size, 5 << 30, "5.0 GiB"),
    (ctl.duration, 12.54, "12.5s"), (ctl.duration, 187, "3m07s"),
    (ctl.duration, 3723, "1h02m03s"), (ctl.duration, 4 * 86400 + 3 * 3600,
                                       "4d03h"),
])
def test_number_formats(fn, value, text):
    assert fn(value) == text


@pytest.mark.parametrize("row,label", [
    ({"name": "web", "vip": "10.0.0.100:80/tcp"}, "web (10.0.0.100:80/tcp)"),
    ({"name": "10.0.0.100:80/tcp", "vip": "10.0.0.100:80/tcp"},
     "10.0.0.100:80/tcp"),
    ({"vip": "10.0.0.100:80/tcp"}, "10.0.0.100:80/tcp"),
    ({"name": "web"}, "web"), ({}, "?"),
])
def test_vip_label(row, label):
    """One label for `ctl rate` and `ctl stats`."""
    assert vip_label(row) == label


# --- pyfwd ctl: options before or after the command -------------------------

@pytest.mark.parametrize("argv,result", [
    (["status"], STATUS),
    (["show"], VIPS),
    (["stats"], STATS),
    (["reload"], RELOAD),
    (["ha", "active"], {"role": "active", "previous": "standby",
                        "changed": True, "announce": []}),
    (["weight", "pacs-web", "10.0.0.11:80", "0"], None),
    (["add-vip", '{"vip": "10.0.0.101:80/tcp"}'], None),
])
def test_ctl_json_before_or_after_the_command(server, engine, argv, result):
    from click.testing import CliRunner
    from pyfwd.cli.main import cli
    outputs = []
    for args in (["ctl", "--json", "-s", server.path] + argv,   # before
                 ["ctl"] + argv + ["--json", "-s", server.path],  # after
                 ["ctl", "-s", server.path] + argv + ["--json"],
                 ["ctl", "--json"] + argv + ["--socket", server.path]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0, (args, r.output)
        assert json.loads(r.output) == result, args
        outputs.append(r.output)
    assert len(set(outputs)) == 1
    assert len(engine.calls) == 4
    r = CliRunner().invoke(cli, ["ctl", "-s", server.path] + argv)
    assert r.exit_code == 0 and r.output == ctl.format_result(
        argv[0], result) + "\n"


def test_ctl_socket_after_the_command_wins(server, sockdir):
    from click.testing import CliRunner
    from pyfwd.cli.main import cli
    missing = os.path.join(sockdir, "none.sock")
    r = CliRunner().invoke(cli, ["ctl", "-s", missing, "status", "-s",
                                 server.path])
    assert r.exit_code == 0 and json.dumps(STATUS["iface"])[1:-1] in r.output
    r = CliRunner().invoke(cli, ["ctl", "status", "--json", "-s", missing])
    assert r.exit_code == 1 and missing in r.output, r.output
    assert "Traceback" not in r.output
