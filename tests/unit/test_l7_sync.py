"""control.l7.sync without HAProxy: a fake HAProxy and fake interface
addresses show what L7Sync asks of them (configuration, reloads only on a
change, per-server state and weight, the watchdog, the rows for show)."""

import pytest

from pyfwd.control.l7.options import L7Options
from pyfwd.control.l7.render import l7_name, l7_server
from pyfwd.control.l7.sync import L7Sync, server_state
from pyfwd.errors import PyfwdError
from pyfwd.model import Real, Service, Vip

VIP = Vip.parse("10.0.0.101:80/tcp")
R1, R2, R3 = (Real.parse(t) for t in ("10.0.0.11:8080@1000",
                                      "10.0.0.12:8080@500",
                                      "10.0.0.13:8080@0"))


class FakeProxy:
    runtime_socket = "/run/fake.sock"

    def __init__(self):
        self.calls = []
        self.restarts = 0
        self.proc = None
        self.dies = False
        self.answers = True

    def check_binary(self):
        self.calls.append(("check_binary",))

    def start(self, text):
        self.calls.append(("start", text))

    def reload(self, text):
        self.calls.append(("reload", text))

    def set_state(self, backend, server, state):
        self.calls.append(("state", server, state))

    def set_weight(self, backend, server, weight):
        self.calls.append(("weight", server, weight))

    def ensure_running(self):
        if self.dies:
            self.restarts += 1

    def servers_state(self):
        if not self.answers:
            raise PyfwdError("HAProxy socket: refused")
        return [{"backend": "web", "server": l7_server(R1),
                 "admin_state": "drain", "oper_state": "running"}]

    def stats(self):
        return [{"pxname": "web", "svname": l7_server(R1), "scur": 3,
                 "stot": 7, "bin": 10, "bout": None},
                {"pxname": "web", "svname": "BACKEND", "scur": 3}]

    def stop(self):
        self.calls.append(("stop",))


class FakeAddresses:
    def __init__(self):
        self.added, self.opened, self.closed = [], False, False

    def open(self):
        self.opened = True

    def add(self, addresses):
        self.added += [str(a) for a in addresses if str(a) not in self.added]

    def close(self):
        self.closed = True


def services(reals=(R1, R2, R3)):
    return [Service(VIP, list(reals), "rr", "l7", name="web",
                    l7=L7Options())]


@pytest.fixture
def synced():
    proxy, addresses = FakeProxy(), FakeAddresses()
    l7 = L7Sync("eth0", new_proxy=lambda iface: proxy, addresses=addresses)
    l7.start(services(), {(VIP, R2.key): "drain"}, {})
    return l7, proxy, addresses


def test_start_adds_the_address_and_starts_haproxy(synced):
    l7, proxy, addresses = synced
    assert addresses.opened and addresses.added == ["10.0.0.101"]
    assert proxy.calls[0] == ("check_binary",)
    kind, text = proxy.calls[1]
    assert kind == "start" and "listen web" in text
    assert f"server {l7_server(R1)} 10.0.0.11:8080 weight 256" in text
    assert ("state", l7_server(R1), "ready") in proxy.calls
    assert ("state", l7_server(R2), "drain") in proxy.calls     # drained
    assert ("state", l7_server(R3), "drain") in proxy.calls     # weight 0
    weights = [c for c in proxy.calls if c[0] == "weight"]
    assert weights == [("weight", l7_server(R1), 256),
                       ("weight", l7_server(R2), 128)]     # 0..256, scaled
    assert l7.haproxy is proxy


def test_sync_reloads_only_when_the_text_changes(synced):
    l7, proxy, _ = synced
    proxy.calls.clear()
    l7.sync(services(), {}, {(VIP, R1.key): (False, "refused")})
    assert not [c for c in proxy.calls if c[0] == "reload"]
    assert ("state", l7_server(R1), "maint") in proxy.calls     # unhealthy
    proxy.calls.clear()
    l7.sync(services([R1, R2]), {}, {})
    [(kind, text)] = [c for c in proxy.calls if c[0] == "reload"]
    assert l7_server(R3) not in text


def test_watchdog_and_rows(synced):
    l7, proxy, addresses = synced
    assert l7.watchdog() is False
    proxy.dies = True
    assert l7.watchdog() is True            # the engine syncs again
    assert l7.rows() == {("web", l7_server(R1)): {
        "haproxy_state": "drain", "haproxy_status": "running", "active": 3,
        "flows_new": 7, "bytes": 10}}
    proxy.answers = False
    assert l7.rows() == {}                  # logged, not raised
    assert l7.status() == {"pid": None, "restarts": 1}
    l7.stop()
    assert proxy.calls[-1] == ("stop",) and addresses.closed
    assert l7.haproxy is None and l7.rows() == {} and l7.status() is None
    assert l7.watchdog() is False
    l7.sync(services(), {}, {})             # nothing to sync: no error


def test_names_and_states():
    svc = services()[0]
    assert l7_name(svc) == "web"
    assert l7_name(Service(VIP, [], mode="l7")) == "vip_10_0_0_101_80"
    assert l7_server(Real.parse("[fd00::11]:8080")) == "r__fd00__11__8080"
    assert server_state("halt", True, 5) == "maint"
    assert server_state(None, False, 5) == "maint"
    assert server_state("drain", True, 5) == "drain"
    assert server_state(None, True, 0) == "drain"
    assert server_state(None, True, 5) == "ready"
