"""Health checks: the config table, the DICOM PDUs, the rise/fall state
machine, and the tcp, http(s) and command probes against local peers.

No root needed; peers are on 127.0.0.1 and ::1 with ports the kernel picks.
"""

import http.server
import ipaddress
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

from pyfwd.control.health import dicom, probes
from pyfwd.control.health.connection import ProbeError
from pyfwd.control.health.monitor import HealthMonitor
from pyfwd.control.health.spec import HealthSpec
from pyfwd.errors import ConfigError, PyfwdError

pytestmark = pytest.mark.timeout(30)

WHERE = "vip 'pacs'.health"


# -- HealthSpec ---------------------------------------------------------------


def test_defaults():
    s = HealthSpec.from_dict({"type": "tcp"}, WHERE)
    assert (s.type, s.interval, s.timeout, s.rise, s.fall, s.port) == \
        ("tcp", 2.0, 1.0, 2, 2, None)
    h = HealthSpec.from_dict({"type": "http"})
    assert (h.path, h.expect, h.body, h.host) == ("/", 200, None, None)
    d = HealthSpec.from_dict({"type": "dicom"})
    assert (d.called_ae, d.calling_ae) == ("ANY-SCP", "PYFWD")


def test_full_tables():
    s = HealthSpec.from_dict({"type": "https", "interval": 5, "timeout": 2.5,
                              "rise": 3, "fall": 1, "port": 8443,
                              "path": "/health?x=1", "expect": 204,
                              "body": "ok", "host": "pacs.example.org"})
    assert (s.interval, s.timeout, s.rise, s.fall, s.port, s.path, s.expect,
            s.body, s.host) == (5.0, 2.5, 3, 1, 8443, "/health?x=1", 204,
                                "ok", "pacs.example.org")
    assert isinstance(s.interval, float)
    d = HealthSpec.from_dict({"type": "dicom", "called_ae": " PACS ",
                              "calling_ae": "LB-1"})
    assert (d.called_ae, d.calling_ae) == ("PACS", "LB-1")
    assert d == HealthSpec.from_dict({"type": "dicom", "called_ae": "PACS",
                                      "calling_ae": "LB-1"})
    hash(d)                                       # frozen: usable as a key


def test_command_list_or_string():
    a = HealthSpec.from_dict({"type": "command",
                              "command": ["/bin/check", "--vip", "a b"]})
    b = HealthSpec.from_dict({"type": "command",
                              "command": "/bin/check --vip 'a b'"})
    assert a.command == b.command == ("/bin/check", "--vip", "a b")


@pytest.mark.parametrize("table,words", [
    ({}, ["health.type", "missing", "tcp, http, https, dicom, command"]),
    ({"type": "icmp"}, ["health.type = 'icmp'", "one of tcp"]),
    ({"type": "TCP"}, ["health.type = 'TCP'"]),
    ({"type": "tcp", "inteval": 2}, ["health.inteval", "unknown key"]),
    ({"type": "tcp", "path": "/"}, ["health.path", "not a key of a tcp",
                                    "http, https"]),
    ({"type": "http", "called_ae": "X"}, ["health.called_ae", "dicom"]),
    ({"type": "tcp", "interval": 0}, ["health.interval = 0", "> 0"]),
    ({"type": "tcp", "interval": -1.5}, ["health.interval = -1.5"]),
    ({"type": "tcp", "interval": "2s"}, ["health.interval = '2s'",
                                         "number of seconds"]),
    ({"type": "tcp", "interval": True}, ["health.interval = True"]),
    ({"type": "tcp", "interval": float("inf")}, ["health.interval = inf"]),
    ({"type": "tcp", "timeout": 0}, ["health.timeout = 0", "> 0"]),
    ({"type": "tcp", "timeout": 3}, ["health.timeout = 3",
                                     "at most interval (2 s)"]),
    ({"type": "tcp", "interval": 0.5}, ["health.interval = 0.5",
                                        "at least timeout (1 s"]),
    ({"type": "tcp", "rise": 0}, ["health.rise = 0", "integer >= 1"]),
    ({"type": "tcp", "rise": 1.5}, ["health.rise = 1.5"]),
    ({"type": "tcp", "fall": -1}, ["health.fall = -1", "integer >= 1"]),
    ({"type": "tcp", "fall": "2"}, ["health.fall = '2'"]),
    ({"type": "tcp", "port": 0}, ["health.port = 0", "1 to 65535"]),
    ({"type": "tcp", "port": 70000}, ["health.port = 70000"]),
    ({"type": "tcp", "port": "104"}, ["health.port = '104'"]),
    ({"type": "http", "path": "health"}, ["health.path = 'health'",
                                          "starting with '/'"]),
    ({"type": "http", "path": "/a b"}, ["health.path = '/a b'"]),
    ({"type": "http", "path": "/\r\nX: y"}, ["health.path = "]),
    ({"type": "http", "expect": 99}, ["health.expect = 99", "100 to 599"]),
    ({"type": "http", "expect": "200"}, ["health.expect = '200'"]),
    ({"type": "http", "body": ""}, ["health.body = ''", "non-empty"]),
    ({"type": "http", "body": 5}, ["health.body = 5"]),
    ({"type": "https", "host": "a b"}, ["health.host = 'a b'"]),
    ({"type": "https", "host": ""}, ["health.host = ''"]),
    ({"type": "dicom", "called_ae": ""}, ["health.called_ae = ''",
                                          "AE title"]),
    ({"type": "dicom", "called_ae": "   "}, ["health.called_ae = '   '"]),
    ({"type": "dicom", "called_ae": "A" * 17}, ["health.called_ae = 'AAAA",
                                                "1 to 16"]),
    ({"type": "dicom", "calling_ae": "A\\B"}, ["health.calling_ae = 'A\\\\B'",
                                              "no backslash"]),
    ({"type": "dicom", "calling_ae": "ÄRZT"}, ["health.calling_ae = 'ÄRZT'"]),
    ({"type": "dicom", "calling_ae": 7}, ["health.calling_ae = 7"]),
    ({"type": "command"}, ["health.command", "missing"]),
    ({"type": "command", "command": []}, ["health.command = []",
                                          "non-empty array"]),
    ({"type": "command", "command": ""}, ["health.command = ''"]),
    ({"type": "command", "command": ["x", 1]}, ["health.command = ['x', 1]"]),
    ({"type": "command", "command": "check 'unclosed"},
     ["health.command = \"check 'unclosed\"", "shlex"]),
    ({"type": "command", "command": 5}, ["health.command = 5"]),
])
def test_bad_values_name_themselves(table, words):
    with pytest.raises(ConfigError) as exc:
        HealthSpec.from_dict(table, WHERE)
    msg = str(exc.value)
    assert msg.startswith(WHERE)
    for w in words:
        assert w in msg, (w, msg)
    assert isinstance(exc.value, ValueError)
    assert isinstance(exc.value, PyfwdError)


def test_not_a_table():
    with pytest.raises(ConfigError, match=r"health = 'tcp': expected a "
                                          r"table"):
        HealthSpec.from_dict("tcp")


# -- DICOM PDUs ---------------------------------------------------------------


def _walk_items(data):
    """[(type, value)] of a run of PS3.8 items (test-side parser)."""
    out, off = [], 0
    while off < len(data):
        t, reserved, n = struct.unpack_from(">BBH", data, off)
        assert reserved == 0
        out.append((t, data[off + 4:off + 4 + n]))
        off += 4 + n
    assert off == len(data)
    return out


def test_associate_rq_layout():
    pdu = dicom.build_associate_rq("PACS", "PYFWD")
    assert pdu[0] == 0x01 and pdu[1] == 0
    assert struct.unpack_from(">I", pdu, 2)[0] == len(pdu) - 6
    assert struct.unpack_from(">H", pdu, 6)[0] == 1       # protocol version
    assert pdu[8:10] == b"\0\0"
    assert pdu[10:26] == b"PACS" + b" " * 12              # called AE
    assert pdu[26:42] == b"PYFWD" + b" " * 11             # calling AE
    assert pdu[42:74] == bytes(32)
    items = _walk_items(pdu[74:])
    assert [t for t, _ in items] == [0x10, 0x20, 0x50]
    assert items[0][1] == b"1.2.840.10008.3.1.1.1"        # not padded
    pc = items[1][1]
    assert pc[0] == 1 and pc[1:4] == b"\0\0\0"            # context id 1
    sub = _walk_items(pc[4:])
    assert sub == [(0x30, b"1.2.840.10008.1.1"), (0x40, b"1.2.840.10008.1.2")]
    user = dict(_walk_items(items[2][1]))
    assert struct.unpack(">I", user[0x51]) == (16384,)
    assert user[0x52].startswith(b"2.25.") and len(user[0x52]) <= 64
    assert user[0x52][5:].isdigit()
    assert 1 <= len(user[0x55]) <= 16


def test_associate_rq_ae_titles_fill_16_bytes():
    pdu = dicom.build_associate_rq("A" * 16, "B")
    assert pdu[10:26] == b"A" * 16 and pdu[26:42] == b"B" + b" " * 15


def test_echo_rq_layout():
    pdu = dicom.build_echo_rq(message_id=7)
    assert pdu[0] == 0x04
    assert struct.unpack_from(">I", pdu, 2)[0] == len(pdu) - 6
    (pdv_len,) = struct.unpack_from(">I", pdu, 6)
    assert pdv_len == len(pdu) - 10
    assert pdu[10] == 1 and pdu[11] == 0x03      # context 1, command + last
    cmd = pdu[12:]
    # (0000,0000) UL group length, implicit VR little endian
    assert cmd[:8] == struct.pack("<HHI", 0, 0, 4)
    assert struct.unpack_from("<I", cmd, 8)[0] == len(cmd) - 12
    els = dicom.parse_command_set(cmd)
    assert list(els) == [(0, 0x0000), (0, 0x0002), (0, 0x0100), (0, 0x0110),
                         (0, 0x0800)]
    assert els[(0, 0x0002)] == b"1.2.840.10008.1.1\0"    # even, NUL padded
    assert els[(0, 0x0100)] == struct.pack("<H", 0x0030)
    assert els[(0, 0x0110)] == struct.pack("<H", 7)
    assert els[(0, 0x0800)] == struct.pack("<H", 0x0101)


def test_release_and_abort():
    assert dicom.build_release_rq() == b"\x05\x00\x00\x00\x00\x04" + bytes(4)
    assert dicom.build_abort() == b"\x07\x00\x00\x00\x00\x04" + bytes(4)


def _ac_body(result=0, context_id=1, ts="1.2.840.10008.1.2", max_pdu=32768):
    def item(t, v):
        return struct.pack(">BBH", t, 0, len(v)) + v
    pc = bytes([context_id, 0, result, 0]) + item(0x40, ts.encode())
    return (struct.pack(">HH", 1, 0) + b"ANY-SCP".ljust(16) +
            b"PYFWD".ljust(16) + bytes(32) +
            item(0x10, b"1.2.840.10008.3.1.1.1") + item(0x21, pc) +
            item(0x50, item(0x51, struct.pack(">I", max_pdu))))


def test_parse_associate_ac():
    assert dicom.parse_associate_response(0x02, _ac_body()) == 32768


@pytest.mark.parametrize("pdu_type,body,words", [
    (0x03, bytes([0, 1, 1, 7]), "called AE title not recognized (permanent"),
    (0x03, bytes([0, 2, 3, 1]), "temporary congestion (transient"),
    (0x03, bytes([0, 1, 1, 3]), "calling AE title not recognized"),
    (0x07, bytes([0, 0, 2, 1]), "A-ABORT by provider: unrecognized PDU"),
    (0x07, bytes([0, 0, 0, 0]), "A-ABORT by peer"),
    (0x06, bytes(4), "expected A-ASSOCIATE-AC, got PDU type 0x06"),
    (0x02, _ac_body(result=3), "abstract syntax not supported"),
    (0x02, _ac_body(result=4), "transfer syntaxes not supported"),
    (0x02, _ac_body(context_id=3), "without our presentation context"),
    (0x02, _ac_body(ts="1.2.840.10008.1.2.1"), "transfer syntax"),
    (0x02, b"\x00\x01", "too short"),
    (0x02, _ac_body()[:-3], "truncated item"),
])
def test_parse_associate_rejects(pdu_type, body, words):
    with pytest.raises(ProbeError) as exc:
        dicom.parse_associate_response(pdu_type, body)
    assert words in str(exc.value)


@pytest.mark.parametrize("header,words", [
    (b"HTTP/1", "not DICOM: PDU type 0x48"),
    (b"SSH-2.", "not DICOM: PDU type 0x53"),
    (b"\x00\x00\x00\x00\x00\x04", "not DICOM: PDU type 0x00"),
    (b"\x02\x00\xff\xff\xff\xff", "not DICOM: PDU length"),
    (b"\x02\x00", "short PDU header"),
])
def test_pdu_header_rejects_garbage(header, words):
    with pytest.raises(ProbeError) as exc:
        dicom.parse_pdu_header(header)
    assert words in str(exc.value)


def test_parse_p_data_and_echo_rsp():
    cmd = dicom.build_command_set({
        0x0002: b"1.2.840.10008.1.1\0", 0x0100: struct.pack("<H", 0x8030),
        0x0120: struct.pack("<H", 1), 0x0800: struct.pack("<H", 0x0101),
        0x0900: struct.pack("<H", 0)})
    body = struct.pack(">IBB", 2 + len(cmd), 1, 0x03) + cmd
    assert dicom.parse_p_data(body) == [(1, 0x03, cmd)]
    assert dicom.parse_echo_rsp(cmd, message_id=1) is None


@pytest.mark.parametrize("elements,words", [
    ({0x0100: 0x8001, 0x0900: 0}, "expected C-ECHO-RSP, got command field "
                                  "0x8001"),
    ({0x0900: 0}, "got command field none"),
    ({0x0100: 0x8030}, "without Status"),
    ({0x0100: 0x8030, 0x0900: 0x0110}, "status 0x0110"),
    ({0x0100: 0x8030, 0x0120: 9, 0x0900: 0}, "answers message 9"),
])
def test_echo_rsp_failures(elements, words):
    cmd = dicom.build_command_set({e: struct.pack("<H", v)
                                    for e, v in elements.items()})
    with pytest.raises(ProbeError) as exc:
        dicom.parse_echo_rsp(cmd)
    assert words in str(exc.value)


@pytest.mark.parametrize("body", [b"\x00\x00\x00\x10\x01\x03abc",
                                  b"\x00\x00\x00\x01\x01", b"\x00\x00"])
def test_parse_p_data_rejects_garbage(body):
    with pytest.raises(ProbeError):
        dicom.parse_p_data(body)


def test_parse_command_set_rejects_garbage():
    with pytest.raises(ProbeError, match="overruns"):
        dicom.parse_command_set(struct.pack("<HHI", 0, 0x100, 50) + b"xx")
    with pytest.raises(ProbeError, match="truncated"):
        dicom.parse_command_set(b"\x00\x00\x00")


# -- the rise/fall state machine ----------------------------------------------


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class Script:
    """A check function returning scripted results per address."""

    def __init__(self):
        self.results = {}
        self.calls = []

    def __call__(self, spec, address, port, vip):
        self.calls.append((str(address), port, vip))
        ok = self.results.get(str(address), True)
        return ok, f"fake {'ok' if ok else 'fail'}"


@pytest.fixture
def machine():
    clock, script, changes = FakeClock(), Script(), []
    mon = HealthMonitor(lambda k, up, d: changes.append((k, up, d)),
                        clock=clock, check=script)
    return mon, clock, script, changes


SPEC = HealthSpec(type="tcp", interval=2.0, timeout=1.0, rise=2, fall=3)


def _step(mon, clock, dt=2.0):
    clock.t += dt
    return mon.run_pending()


def test_down_after_exactly_fall_then_up_after_exactly_rise(machine):
    mon, clock, script, changes = machine
    mon.set_targets({"a": (SPEC, "10.0.0.1", 104, "pacs")})
    assert mon.state("a")["up"] and mon.state("a")["last_ok"] is None
    script.results["10.0.0.1"] = False
    assert mon.run_pending() == 1                 # first check right away
    assert mon.run_pending() == 0                 # not due again yet
    assert mon.state("a")["failures"] == 1
    _step(mon, clock)
    assert changes == [] and mon.state("a")["up"]
    _step(mon, clock)                             # third failure: down
    assert changes == [("a", False, "fake fail")]
    st = mon.state("a")
    assert (st["up"], st["failures"], st["since"], st["checks"]) == \
        (False, 3, clock.t, 3)
    for _ in range(3):
        _step(mon, clock)
    assert len(changes) == 1                      # no repeat while down
    script.results["10.0.0.1"] = True
    _step(mon, clock)
    assert mon.state("a")["successes"] == 1 and not mon.state("a")["up"]
    script.results["10.0.0.1"] = False            # a failure resets rise
    _step(mon, clock)
    script.results["10.0.0.1"] = True
    _step(mon, clock)
    assert not mon.state("a")["up"]
    _step(mon, clock)                             # second success in a row
    assert changes[1:] == [("a", True, "fake ok")]
    assert mon.state("a")["up"] and mon.state("a")["last_ok"] is True
    assert script.calls[0] == ("10.0.0.1", 104, "pacs")


def test_interrupted_failures_do_not_flip(machine):
    mon, clock, script, changes = machine
    mon.set_targets({"a": (SPEC, "10.0.0.1", 104, None)})
    for ok in [False, False, True, False, False, True] * 3:
        script.results["10.0.0.1"] = ok
        _step(mon, clock)
    assert changes == []


def test_initial_down_goes_up_after_rise():
    clock, script, changes = FakeClock(), Script(), []
    mon = HealthMonitor(lambda *a: changes.append(a), clock=clock,
                        check=script, initial_up=False)
    mon.set_targets({"a": (SPEC, "10.0.0.1", 104, None)})
    mon.run_pending()
    assert not mon.state("a")["up"] and changes == []
    _step(mon, clock)
    assert changes == [("a", True, "fake ok")]


def test_rise_fall_one_flips_every_time(machine):
    mon, clock, script, changes = machine
    spec = HealthSpec(type="tcp", rise=1, fall=1)
    mon.set_targets({"a": (spec, "10.0.0.1", 104, None)})
    for ok in [False, True, False, True]:
        script.results["10.0.0.1"] = ok
        _step(mon, clock)
    assert [up for _, up, _ in changes] == [False, True, False, True]


def test_interval_per_target(machine):
    mon, clock, script, changes = machine
    fast = HealthSpec(type="tcp", interval=1.0, timeout=0.5)
    slow = HealthSpec(type="tcp", interval=5.0)
    mon.set_targets({"f": (fast, "10.0.0.1", 80, None),
                     "s": (slow, "10.0.0.2", 80, None)})
    for _ in range(10):
        mon.run_pending()
        clock.t += 1.0
    assert mon.state("f")["checks"] == 10 and mon.state("s")["checks"] == 2


def test_set_targets_live(machine):
    mon, clock, script, changes = machine
    script.results["10.0.0.1"] = False
    mon.set_targets({"a": (SPEC, "10.0.0.1", 104, None),
                     "b": (SPEC, "10.0.0.2", 104, None)})
    for _ in range(3):
        _step(mon, clock)
    assert not mon.state("a")["up"]
    # unchanged: keeps state and schedule (not due right away)
    mon.set_targets({"a": (SPEC, ipaddress.ip_address("10.0.0.1"), 104,
                           None),
                     "b": (SPEC, "10.0.0.2", 104, None)})
    assert not mon.state("a")["up"] and mon.state("a")["failures"] == 3
    assert mon.run_pending() == 0
    # spec changed, same server: keeps down, counters restart, due now
    other = HealthSpec(type="tcp", interval=3.0, rise=1, fall=3)
    mon.set_targets({"a": (other, "10.0.0.1", 104, None),
                     "c": (SPEC, "fd00::3", 104, None)})
    st = mon.state("a")
    assert (st["up"], st["failures"], st["successes"]) == (False, 0, 0)
    with pytest.raises(KeyError):
        mon.state("b")                            # removed
    assert mon.state("c")["up"]                   # new: initial state
    assert set(mon.states()) == {"a", "c"}
    script.results["10.0.0.1"] = True
    assert mon.run_pending() == 2
    assert changes[-1] == ("a", True, "fake ok")  # rise is now 1
    # another server under the same key: fresh state
    mon.set_targets({"a": (other, "10.0.0.9", 104, None)})
    assert mon.state("a")["checks"] == 0


def test_set_targets_rejects_bad_input(machine):
    mon, clock, script, changes = machine
    mon.set_targets({"a": (SPEC, "10.0.0.1", 104, None)})
    with pytest.raises(ConfigError, match="'not an ip'"):
        mon.set_targets({"b": (SPEC, "not an ip", 104, None)})
    with pytest.raises(ConfigError, match="HealthSpec"):
        mon.set_targets({"b": ({"type": "tcp"}, "10.0.0.1", 104, None)})
    with pytest.raises(ConfigError, match="port None"):
        mon.set_targets({"b": (SPEC, "10.0.0.1", None, None)})
    assert set(mon.states()) == {"a"}             # nothing changed


def test_raising_check_and_callback_count_as_failure(machine):
    def boom(*a):
        raise RuntimeError("bug")
    changes = []

    def cb(*a):
        changes.append(a)
        raise RuntimeError("callback bug")
    clock = FakeClock()
    mon = HealthMonitor(cb, clock=clock, check=boom)
    mon.set_targets({"a": (HealthSpec(type="tcp", fall=1), "10.0.0.1", 1,
                           None)})
    mon.run_pending()
    assert changes == [("a", False, "check raised RuntimeError: bug")]
    assert mon.state("a")["last_ok"] is False


# -- the monitor's threads ----------------------------------------------------


def test_slow_target_does_not_delay_others():
    counts = {"fast": 0, "slow": 0}
    lock = threading.Lock()

    def chk(spec, address, port, vip):
        with lock:
            counts[vip] += 1
        if vip == "slow":
            time.sleep(spec.timeout)
            return False, "slow"
        return True, "fast"
    changes = []
    mon = HealthMonitor(lambda *a: changes.append(a), check=chk)
    mon.set_targets({
        "fast": (HealthSpec(type="tcp", interval=0.05, timeout=0.05),
                 "127.0.0.1", 1, "fast"),
        "slow": (HealthSpec(type="tcp", interval=2.0, timeout=1.0, fall=1),
                 "127.0.0.2", 1, "slow")})
    mon.start()
    try:
        with pytest.raises(PyfwdError):
            mon.start()
        time.sleep(0.7)
    finally:
        t0 = time.monotonic()
        mon.stop()
        stop_took = time.monotonic() - t0
    n_fast, n_slow = counts["fast"], counts["slow"]
    assert n_fast >= 6, counts
    assert n_slow == 1, counts
    assert stop_took < 2.5
    # the slow check ended inside stop() (which waits for it): its flip
    # (fall=1) was not reported, and nothing runs after stop()
    assert mon.state("slow")["last_ok"] is False
    time.sleep(0.2)
    assert changes == [] and counts["fast"] == n_fast
    mon.stop()                                    # idempotent


def test_monitor_detects_a_closed_port():
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    changes = []
    flipped = threading.Event()

    def cb(*a):
        changes.append(a)
        flipped.set()
    mon = HealthMonitor(cb)
    spec = HealthSpec(type="tcp", interval=0.1, timeout=0.1, rise=1, fall=2)
    mon.set_targets({("pacs", 1): (spec, "127.0.0.1", port, "pacs")})
    mon.start()
    try:
        time.sleep(0.25)
        assert mon.state(("pacs", 1))["last_ok"] is True
        srv.close()
        assert flipped.wait(3)
    finally:
        mon.stop()
    assert changes[0][:2] == (("pacs", 1), False)
    assert "refused" in changes[0][2]


# -- tcp ----------------------------------------------------------------------


def _closed_port(family=socket.AF_INET, host="127.0.0.1"):
    s = socket.socket(family)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"),
                                         (socket.AF_INET6, "::1")])
def test_tcp(family, host):
    spec = HealthSpec(type="tcp", timeout=1.0)
    srv = socket.create_server((host, 0), family=family)
    try:
        port = srv.getsockname()[1]
        ok, detail = probes.check(spec, host, port)
        assert ok and "connected" in detail
        ok, detail = probes.check(spec, ipaddress.ip_address(host), port)
        assert ok
        # spec.port replaces the real's port
        ok, _ = probes.check(HealthSpec(type="tcp", port=port), host, None)
        assert ok
    finally:
        srv.close()
    ok, detail = probes.check(spec, host, _closed_port(family, host))
    assert not ok and detail == "connect: Connection refused"


def test_tcp_timeout_is_bounded():
    # 192.0.2.0/24 (TEST-NET-1) is not routed here; either it times out or
    # the kernel says unreachable, within the timeout.
    spec = HealthSpec(type="tcp", timeout=0.3)
    t0 = time.monotonic()
    ok, detail = probes.check(spec, "192.0.2.1", 104)
    assert not ok and time.monotonic() - t0 < 0.6
    assert detail.startswith("connect: ")


def test_check_rejects_bad_input():
    spec = HealthSpec(type="tcp")
    with pytest.raises(ConfigError, match="'pacs.local'"):
        probes.check(spec, "pacs.local", 104)
    with pytest.raises(ConfigError, match="port 0"):
        probes.check(spec, "127.0.0.1", 0)


# -- http / https -------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    routes = {
        "/ok": (200, b"<html>PACS viewer ready</html>"),
        "/down": (503, b"maintenance"),
        "/big": (200, b"x" * 200_000 + b"NEEDLE"),
    }

    def do_GET(self):
        if self.path == "/echo-host":
            status, body = 200, self.headers["Host"].encode()
        else:
            status, body = self.routes.get(self.path, (404, b"no"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class Server6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


@pytest.fixture(params=["127.0.0.1", "::1"])
def web(request):
    cls = Server6 if ":" in request.param else http.server.ThreadingHTTPServer
    srv = cls((request.param, 0), Handler)
    t = threading.Thread(target=srv.serve_forever,
                         kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield request.param, srv.server_address[1], srv
    srv.shutdown()
    srv.server_close()


def _http(**kw):
    return HealthSpec.from_dict({"type": "http", "timeout": 1, **kw})


def test_http_status_and_body(web):
    host, port, _ = web
    assert probes.check(_http(path="/ok"), host, port) == (True, "HTTP 200")
    assert probes.check(_http(path="/down"), host, port) == \
        (False, "HTTP 503, expected 200")
    assert probes.check(_http(path="/down", expect=503), host, port)[0]
    ok, detail = probes.check(_http(path="/ok", body="viewer ready"), host,
                              port)
    assert ok and "viewer ready" in detail
    ok, detail = probes.check(_http(path="/ok", body="DOWN"), host, port)
    assert not ok and detail.startswith("HTTP 200, body lacks 'DOWN'")
    ok, detail = probes.check(_http(path="/big", body="NEEDLE"), host, port)
    assert not ok and "65536 bytes read" in detail    # beyond the read limit


def test_http_host_header(web):
    host, port, srv = web
    # the body is the Host header the server saw
    ok, _ = probes.check(_http(path="/echo-host", body=f":{port}"), host,
                         port)
    assert ok
    bracket = f"[{host}]" if ":" in host else host
    ok, _ = probes.check(_http(path="/echo-host",
                               body=f"{bracket}:{port}"), host, port)
    assert ok
    ok, _ = probes.check(_http(path="/echo-host", host="pacs.example.org",
                               body="pacs.example.org"), host, port)
    assert ok


def test_http_against_non_http():
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve():
        c, _ = srv.accept()
        c.recv(1000)
        c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        c.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        ok, detail = probes.check(_http(), "127.0.0.1", port)
    finally:
        t.join(2)
        srv.close()
    assert not ok and detail.startswith("not an HTTP response: b'SSH-2.0")


def test_http_silent_server_times_out():
    srv = socket.create_server(("127.0.0.1", 0))
    try:
        t0 = time.monotonic()
        ok, detail = probes.check(_http(timeout=0.3), "127.0.0.1",
                                  srv.getsockname()[1])
        assert time.monotonic() - t0 < 0.6
    finally:
        srv.close()
    assert not ok and detail == "request: timed out after 0.3 s"


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-days", "1", "-subj", "/CN=pacs.example.org",
                    "-keyout", d / "key.pem", "-out", d / "cert.pem"],
                   check=True, capture_output=True, timeout=20)
    return d / "cert.pem", d / "key.pem"


def test_https_does_not_verify_certificates(cert):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)                    # self-signed
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever,
                         kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    port = srv.server_address[1]
    try:
        spec = HealthSpec.from_dict({"type": "https", "path": "/ok",
                                     "body": "ready", "timeout": 2,
                                     "interval": 2})
        ok, detail = probes.check(spec, "127.0.0.1", port)
        assert ok, detail
        # plain http against a TLS port fails with a reason
        ok, detail = probes.check(_http(path="/ok"), "127.0.0.1", port)
        assert not ok
    finally:
        srv.shutdown()
        srv.server_close()
    # https against a plain http server: a TLS error, not an exception
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=plain.serve_forever,
                         kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        ok, detail = probes.check(spec, "127.0.0.1", plain.server_address[1])
    finally:
        plain.shutdown()
        plain.server_close()
    assert not ok and detail.startswith("TLS handshake: ")


def test_sni():
    assert probes._sni(None) is None
    assert probes._sni("pacs.example.org:8443") == "pacs.example.org"
    assert probes._sni("10.0.0.1") is None
    assert probes._sni("[fd00::1]:443") is None


# -- command ------------------------------------------------------------------


def _cmd(command, timeout=1.0):
    return HealthSpec.from_dict({"type": "command", "command": command,
                                 "timeout": timeout, "interval": 5})


def test_command_true_false():
    assert probes.check(_cmd(["/bin/true"]), "10.0.0.1", 104) == \
        (True, "exit 0")
    assert probes.check(_cmd("/bin/false"), "10.0.0.1", 104) == \
        (False, "exit 1")
    ok, detail = probes.check(_cmd(["/bin/sh", "-c",
                                    "echo 'PACS says no' >&2; exit 3"]),
                              "10.0.0.1", 104)
    assert (ok, detail) == (False, "exit 3: PACS says no")


def test_command_environment():
    script = ('test "$PYFWD_REAL_ADDRESS" = fd00::11 && '
              'test "$PYFWD_REAL_PORT" = 11112 && '
              'test "$PYFWD_CHECK_PORT" = 11112 && '
              'test "$PYFWD_VIP" = pacs-dicom')
    ok, detail = probes.check(_cmd(["/bin/sh", "-c", script]),
                              ipaddress.ip_address("fd00::11"), 11112,
                              vip="pacs-dicom")
    assert ok, detail
    spec = HealthSpec.from_dict({"type": "command", "port": 8042,
                                 "command": ["/bin/sh", "-c",
                                             'echo "$PYFWD_REAL_PORT/'
                                             '$PYFWD_CHECK_PORT/$PYFWD_VIP";'
                                             ' exit 1']})
    assert probes.check(spec, "10.0.0.1", None) == (False, "exit 1: /8042/")


def test_command_killed_at_timeout():
    t0 = time.monotonic()
    ok, detail = probes.check(_cmd(["sleep", "5"], timeout=0.3),
                              "10.0.0.1", 104)
    assert time.monotonic() - t0 < 1.5
    assert (ok, detail) == (False, "timed out after 0.3 s (killed)")
    # a shell whose child holds the output pipe: the whole group dies
    t0 = time.monotonic()
    ok, detail = probes.check(_cmd(["/bin/sh", "-c", "sleep 5; true"],
                                   timeout=0.3), "10.0.0.1", 104)
    assert not ok and time.monotonic() - t0 < 1.5


def test_command_not_found():
    ok, detail = probes.check(_cmd(["/nonexistent/check"]), "10.0.0.1", 104)
    assert not ok
    assert detail == "cannot run /nonexistent/check: No such file or directory"
