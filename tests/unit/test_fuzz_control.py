"""The control protocol fuzzed with hypothesis: any request line gets one
reply line, a JSON object with "ok" (an error that names the problem for
a bad request), never an exception and never an "internal error" (a bug);
with a fake engine, and with an Engine not started (its admin API on
arbitrary values: ConfigError, never anything else)."""

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyfwd.control.config import REAL_KEYS, VIP_KEYS
from pyfwd.control.engine import Engine
from pyfwd.control.protocol import COMMANDS, BadRequest, parse_request
from pyfwd.control.server import ControlServer
from pyfwd.model import Real, Service, Vip

from .fuzzing import bounded, mutations

SEEDS = [json.dumps({"cmd": c, **{a.name: ("web" if a.type is str else
                                            1 if a.type is int else {})
                                  for a in cmd.args}}).encode()
         for c, cmd in COMMANDS.items()]


class FakeEngine:
    """Every engine method (and its parts', `views.show`): returns its
    name and arguments."""

    def __init__(self, prefix=""):
        self._prefix = prefix

    def __getattr__(self, name):
        return FakeMethod(self._prefix + name)


class FakeMethod(FakeEngine):
    def __call__(self, *args):
        return {"method": self._prefix, "args": list(args)}

    def __getattr__(self, name):
        return FakeMethod(f"{self._prefix}.{name}")


def check_reply(line):
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    reply = json.loads(line)
    assert isinstance(reply, dict) and isinstance(reply["ok"], bool)
    if not reply["ok"]:
        assert reply["error"] and "internal error" not in reply["error"], \
            reply["error"]
    return reply


@bounded(500)
@given(mutations(SEEDS, max_tail=16))
def test_parse_request(line):
    try:
        cmd, args = parse_request(line)
    except BadRequest as exc:
        assert str(exc)
        return
    assert cmd in COMMANDS and len(args) == len(COMMANDS[cmd].args)


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctl")
    return ControlServer(FakeEngine(), os.path.join(d, "s.sock"))


@bounded(500)
@given(mutations(SEEDS, max_tail=16))
def test_handle_line_fake_engine(fake_server, line):
    reply = check_reply(fake_server.handle_line(line))
    if reply["ok"] and isinstance(reply["result"], dict) and \
            "method" in reply["result"]:
        cmd, args = parse_request(line)
        assert reply["result"] == {"method": COMMANDS[cmd].method,
                                   "args": args}


# Values an operator might type, right or wrong.
TEXTS = st.one_of(st.sampled_from([
    "web", "10.0.0.100:80/tcp", "[fd00::100]:80/tcp", "10.0.0.11",
    "10.0.0.11:8080", "10.0.0.12@3", "10.0.0.12:0@-1", "fd00::11",
    "[fd00::11]:80", "all", "", " ", "10.0.0.300", "10.0.0.11@", "@",
    ":80", "10.0.0.11:99999", "active", "standby", "x" * 300]),
    st.text(max_size=40))
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
              st.floats(allow_nan=False), TEXTS),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(TEXTS, inner, max_size=3)),
    max_leaves=8)


def _vip_tables():
    value = st.one_of(JSON_VALUES, st.integers(0, 70000),
                      st.sampled_from(["tcp", "udp", "dr", "nat", "snat",
                                       "l7", "maglev", "wlc", "10.0.0.100"]))
    real = st.dictionaries(st.sampled_from(sorted(REAL_KEYS) + ["x"]),
                           value, max_size=4)
    return st.dictionaries(st.sampled_from(sorted(VIP_KEYS) + ["x"]),
                           st.one_of(value, st.lists(real, max_size=3)),
                           max_size=8)


# Reports of the data plane's tables and counters: the control socket
# opens after Engine.start() (cli/balancer.py), these need what it made.
NEED_STARTED = {"show", "stats"}


@st.composite
def requests(draw):
    cmd = draw(st.sampled_from(sorted(set(COMMANDS) - NEED_STARTED)))
    req = {"cmd": cmd}
    for a in COMMANDS[cmd].args:
        if draw(st.integers(0, 9)) == 0:
            continue                                # missing
        if a.type is dict:
            req[a.name] = draw(st.one_of(_vip_tables(), JSON_VALUES))
        elif a.type is int:
            req[a.name] = draw(st.one_of(st.integers(-5, 2**40),
                                         JSON_VALUES))
        else:
            req[a.name] = draw(st.one_of(TEXTS, JSON_VALUES))
    if draw(st.integers(0, 9)) == 0:
        req[draw(TEXTS)] = draw(JSON_VALUES)        # unknown field
    return json.dumps(req).encode()


def engine():
    web = Vip.parse("10.0.0.100:80/tcp")
    return Engine("eth0", [Service(web, [Real.parse("10.0.0.11"),
                                         Real.parse("10.0.0.12")],
                                   name="web")])


@bounded(400)
@given(st.lists(requests(), min_size=1, max_size=6))
def test_handle_line_engine_not_started(tmp_path_factory, lines):
    srv = ControlServer(engine(), os.path.join(
        tmp_path_factory.getbasetemp(), "e.sock"))
    for line in lines:
        check_reply(srv.handle_line(line))
