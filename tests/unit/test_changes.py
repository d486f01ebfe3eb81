"""control.changes without root: every control command is a transaction.
An Engine with a real C core (small limits) and fakes for the steering,
HAProxy, the L7 VIP addresses and the health monitor; a failure is
injected at each step (tables published, steering, HAProxy's reload and
check, an address added, the health targets, the state file) and the
engine must be exactly as before (show, the core's tables, the steering,
HAProxy's configuration, the addresses, the admin state, the operator's
changes) and take the next command."""

import errno
import json
from types import SimpleNamespace

import pytest

from pyfwd.control.changes import ChangeError, state_path
from pyfwd.control.engine import Engine
from pyfwd.control.l7.options import L7Options
from pyfwd.control.l7.sync import L7Sync
from pyfwd.dataplane.core import Core
from pyfwd.errors import ConfigError, DataplaneError, PyfwdError
from pyfwd.model import Real, Service, Vip

from .test_l7_sync import FakeAddresses, FakeProxy

LB_MAC = "02:00:00:00:01:02"
MAC = b"\x02\x00\x00\x00\x01\x11"
WEB = Vip.parse("10.0.0.100:80/tcp")
L7VIP = Vip.parse("10.0.0.101:80/tcp")


class Failing:
    """fail(n): the next n calls of the step raise."""

    def __init__(self):
        self.left = 0

    def fail(self, n=1):
        self.left = n

    def check(self, exc):
        if self.left:
            self.left -= 1
            raise exc


class FakeXsk(Failing):
    def __init__(self):
        super().__init__()
        self.errors = []
        self.steered = None

    def steer(self, vips, replies, snat):
        self.check(DataplaneError(errno.ENOSPC, "steering map full"))
        self.steered = (sorted(map(str, vips)), sorted(map(str, replies)))


class Proxy(FakeProxy):
    def __init__(self):
        super().__init__()
        self.text = None
        self.reloads, self.refuses = Failing(), Failing()

    def start(self, text):
        super().start(text)
        self.text = text

    def reload(self, text):
        # as HAProxy.reload: the file is written, then the worker fails
        self.text = text
        self.reloads.check(PyfwdError("HAProxy: no new worker answers"))
        super().reload(text)

    def validate(self, text):
        self.refuses.check(ConfigError("HAProxy rejects the configuration"))


class Addresses(FakeAddresses, Failing):
    def __init__(self):
        FakeAddresses.__init__(self)
        Failing.__init__(self)

    def add(self, addresses):
        if any(str(a) not in self.added for a in addresses):
            self.check(PyfwdError("eth0: adding an address: EPERM"))
        super().add(addresses)


class Monitor(Failing):
    def __init__(self):
        super().__init__()
        self.targets = {}

    def set_targets(self, targets):
        self.check(PyfwdError("health: cannot start a probe"))
        self.targets = dict(targets)

    def state(self, key):
        raise KeyError(key)


CONFIG = """[engine]
iface = "eth0"

[[vip]]
name = "web"
address = "10.0.0.100"
port = 80
health = { type = "tcp" }

[[vip.real]]
address = "10.0.0.11"

[[vip.real]]
address = "10.0.0.12"
weight = 2

[[vip]]
name = "web7"
address = "10.0.0.101"
port = 80
mode = "l7"
scheduler = "rr"

[[vip.real]]
address = "10.0.0.21"
port = 8080
"""


def started(tmp_path, config=CONFIG, **core):
    """An Engine as start() leaves it, with fakes for the kernel's parts:
    (engine, xsk, proxy, addresses, monitor)."""
    from pyfwd.control import config as config_mod
    path = tmp_path / "pyfwd.toml"
    path.write_text(config)
    cfg = config_mod.load(str(path))
    eng = Engine("eth0", cfg.services, config_path=str(path))
    eng.core = Core(mac=LB_MAC, flows=1024, **core)
    eng.xsk, eng.info = FakeXsk(), SimpleNamespace(backend="xdp")
    eng.hops.apply({Real.parse(f"10.0.0.{i}").address: (MAC, 0, None)
                    for i in range(1, 40)})
    proxy, addresses = Proxy(), Addresses()
    eng.l7 = L7Sync("eth0", new_proxy=lambda iface: proxy,
                    addresses=addresses)
    eng.monitor = Monitor()
    eng._publish()
    eng._health_targets()
    if eng.l7_services:
        eng.l7.start(eng.l7_services, eng.state, eng.health)
    return eng, eng.xsk, proxy, addresses, eng.monitor


def everything(eng, proxy, addresses, monitor):
    """All an operator or a client could tell apart."""
    t = eng.core.tables
    return {"show": json.dumps(eng.show(), sort_keys=True, default=str),
            "tables": (repr(t.vips), repr(t.reals), t.ring.tobytes()),
            "ids": dict(eng.core.ids._ids),
            "steered": eng.xsk.steered, "haproxy": proxy.text,
            "addresses": sorted(addresses.added),
            "health": sorted(map(str, monitor.targets)),
            "state": dict(eng.state),
            "changes": eng.operator_changes(),
            "file": _read(state_path(eng.config_path))}


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


NEW_L7 = {"name": "web8", "address": "10.0.0.102", "port": 80,
          "mode": "l7", "scheduler": "rr",
          "real": [{"address": "10.0.0.22", "port": 8080}]}
NEW_L4 = {"name": "dicom", "address": "10.0.0.100", "port": 104,
          "real": [{"address": "10.0.0.13"}]}


def _fail_save(eng):
    """The next save of the state file fails (a full disk)."""
    ops = eng.changes.operator

    def save(sha):
        del ops.save            # the class's again
        raise OSError(errno.ENOSPC, "No space left on device")
    ops.save = save


# (what fails, how to make it fail, the command); None: the core's limit
# on real ids (web's 2 reals fill them)
CASES = [
    ("real ids", None, lambda e: e.add_real("web", "10.0.0.13")),
    ("steering", lambda e, x, p, a, m: x.fail(),
     lambda e: e.add_vip(NEW_L4)),
    ("steering", lambda e, x, p, a, m: x.fail(),
     lambda e: e.del_real("web", "10.0.0.12")),
    ("HAProxy reload", lambda e, x, p, a, m: p.reloads.fail(),
     lambda e: e.add_real("web7", "10.0.0.23:8080")),
    ("HAProxy reload", lambda e, x, p, a, m: p.reloads.fail(),
     lambda e: e.del_vip("web7")),
    ("L7 address", lambda e, x, p, a, m: a.fail(),
     lambda e: e.add_vip(NEW_L7)),
    ("health targets", lambda e, x, p, a, m: m.fail(),
     lambda e: e.add_real("web", "10.0.0.14")),
    ("state file", lambda e, x, p, a, m: _fail_save(e),
     lambda e: e.drain("web", "10.0.0.11")),
    ("state file", lambda e, x, p, a, m: _fail_save(e),
     lambda e: e.set_weight("web", "10.0.0.11", 9)),
    ("state file", lambda e, x, p, a, m: _fail_save(e),
     lambda e: e.halt("web7", "10.0.0.21:8080")),
]


@pytest.mark.parametrize("step,inject,command", CASES,
                         ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_a_failed_step_leaves_the_engine_as_it_was(tmp_path, step, inject,
                                                   command):
    eng, xsk, proxy, addresses, monitor = started(
        tmp_path, **({} if inject else {"max_reals": 2}))
    eng.drain("web", "10.0.0.12")           # some admin state to keep
    before = everything(eng, proxy, addresses, monitor)
    if inject:
        inject(eng, xsk, proxy, addresses, monitor)
    with pytest.raises(ChangeError, match="the engine is as it was") as ei:
        command(eng)
    assert ei.value.restored
    assert everything(eng, proxy, addresses, monitor) == before
    # the next command works (and changes what it says)
    eng.online("web", "10.0.0.12")
    assert eng.state == {}
    assert everything(eng, proxy, addresses, monitor)["show"] != \
        before["show"]


def test_a_refused_request_touches_nothing(tmp_path):
    eng, xsk, proxy, addresses, monitor = started(tmp_path)
    before = everything(eng, proxy, addresses, monitor)
    proxy.refuses.fail()
    with pytest.raises(ConfigError, match="HAProxy rejects"):
        eng.add_vip(NEW_L7)                 # haproxy -c says no
    with pytest.raises(ConfigError, match="no real server 10.0.0.99"):
        eng.drain("web", "10.0.0.99")
    with pytest.raises(ConfigError, match="there already"):
        eng.add_real("web", "10.0.0.11")
    assert everything(eng, proxy, addresses, monitor) == before
    eng.add_vip(NEW_L7)                     # and then it is taken
    assert "10.0.0.102" in addresses.added and "web8" in proxy.text


def test_a_failed_reload_keeps_the_running_config(tmp_path):
    # the file grows a second L4 VIP; the core holds one: E2BIG at publish
    eng, xsk, proxy, addresses, monitor = started(tmp_path, max_vips=1)
    eng.drain("web", "10.0.0.11")
    before = everything(eng, proxy, addresses, monitor)
    path, sha = eng.config_path, eng.changes.base_sha
    with open(path, "a") as f:
        f.write('\n[[vip]]\nname = "dicom"\naddress = "10.0.0.100"\n'
                'port = 104\n\n[[vip.real]]\naddress = "10.0.0.13"\n')
    with pytest.raises(ChangeError, match="reload: not applied.*over this "
                       "core's limits"):
        eng.reload()
    assert everything(eng, proxy, addresses, monitor) == before
    assert eng.changes.base_sha == sha      # the file it runs is the old
    # a reload of a file that fits works, and the drain is still there
    with open(path, "w") as f:
        f.write(CONFIG.replace('weight = 2', 'weight = 3'))
    summary = eng.reload()
    assert summary["changed"] == ["web: 10.0.0.12 weight 2 -> 3"]
    assert eng.state == {(WEB, "10.0.0.11"): "drain"}


def test_a_failed_rollback_says_so_and_the_next_change_repairs(tmp_path):
    eng, xsk, proxy, addresses, monitor = started(tmp_path)
    xsk.fail(2)             # the change and its rollback
    with pytest.raises(ChangeError, match="restoring the previous state "
                       "failed too") as ei:
        eng.add_vip(NEW_L4)
    assert not ei.value.restored
    assert [s.label for s in eng.services] == ["web", "web7"]
    eng.drain("web", "10.0.0.11")           # steering works again
    assert xsk.steered[0] == ["10.0.0.100:80/tcp"]


def test_the_first_l7_vip_whose_haproxy_fails_to_start_is_undone(tmp_path):
    config = CONFIG[:CONFIG.index("[[vip]]\nname = \"web7\"")]
    eng, xsk, proxy, addresses, monitor = started(tmp_path, config)
    assert eng.l7.haproxy is None
    eng._thread = object()          # running: a change starts HAProxy
    eng._refresh = SimpleNamespace(wait=lambda timeout: True)

    def refuse(text):
        raise PyfwdError("HAProxy exited with 1")
    proxy.start = refuse
    with pytest.raises(ChangeError, match="HAProxy exited"):
        eng.add_vip(NEW_L7)
    assert eng.l7.haproxy is None and addresses.added == []
    assert addresses.closed
    assert [s.label for s in eng.services] == ["web"]


def test_state_path():
    assert state_path(None) is None
    assert state_path("/etc/pyfwd.toml") == "/etc/pyfwd.toml.state"
    assert state_path("/etc/pyfwd.toml", "s.json") == "/etc/s.json"
    assert state_path(None, "/var/lib/p.state") == "/var/lib/p.state"
