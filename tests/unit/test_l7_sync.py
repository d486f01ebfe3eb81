"""control.l7.sync without HAProxy: a fake HAProxy and fake interface
addresses show what L7Sync asks of them (configuration, reloads only on a
change, per-server state and weight, the watchdog, the rows for show); a
fake kernel under the real InterfaceAddresses shows which addresses go on
the interface and which leave it (shared, the operator's, ours)."""

import ipaddress
import logging

import pytest

from pyfwd.control import services as svcs
from pyfwd.control.l7.addresses import ADDR_PROTO, InterfaceAddresses
from pyfwd.control.l7.options import L7Options
from pyfwd.control.l7.render import l7_name, l7_server
from pyfwd.control.l7.sync import L7Sync, cuts_sessions, server_state
from pyfwd.errors import ConfigError, PyfwdError
from pyfwd.model import Real, Service, Vip

VIP = Vip.parse("10.0.0.101:80/tcp")
R1, R2, R3 = (Real.parse(t) for t in ("10.0.0.11:8080@1000",
                                      "10.0.0.12:8080@500",
                                      "10.0.0.13:8080@0"))


class FakeProxy:
    runtime_socket = "/run/fake.sock"
    master_socket = "/run/fake.sock.master"
    config_path = "/run/fake.cfg"

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

    def set_health(self, backend, server, up):
        self.calls.append(("health", server, up))

    def shutdown_sessions(self, backend, server):
        self.calls.append(("shutdown", server))

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

    def release(self, keep=()):
        self.added = [a for a in self.added if a in {str(k) for k in keep}]

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
    # unhealthy: DOWN in HAProxy, not MAINT; its sessions go on (quiesce)
    assert ("state", l7_server(R1), "ready") in proxy.calls
    assert ("health", l7_server(R1), False) in proxy.calls
    assert ("health", l7_server(R2), True) in proxy.calls
    assert not [c for c in proxy.calls if c[0] == "shutdown"]
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
    assert l7.status() == {"pid": None, "restarts": 1,
                           "runtime_socket": "/run/fake.sock",
                           "master_socket": "/run/fake.sock.master",
                           "config": "/run/fake.cfg"}
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
    assert server_state(None, False, 5) == "ready"     # DOWN: set_health
    assert server_state("drain", True, 5) == "drain"
    assert server_state(None, True, 0) == "drain"
    assert server_state(None, True, 5) == "ready"


# --- the addresses on the interface -------------------------------------

def ip(text):
    return ipaddress.ip_address(text)


class FakeKernel:
    """An interface's addresses as NetlinkAddresses sees them; `log`
    records the changes, beside the proxy's starts and reloads when the
    proxy shares it.  Adding an address that is there fails as the kernel
    does (EEXIST)."""

    def __init__(self, log, present=None):
        self.log = log
        self.present_ = dict(present or {})
        self.opened = 0
        self.fail_delete = False

    def open(self):
        self.opened += 1

    def present(self):
        return dict(self.present_)

    def add(self, address):
        if address in self.present_:
            raise PyfwdError(f"eth0: adding L7 VIP address {address}: "
                             "File exists")
        self.present_[address] = ADDR_PROTO
        self.log.append(("add", str(address)))

    def delete(self, address):
        if self.fail_delete or address not in self.present_:
            raise PyfwdError(f"eth0: removing L7 VIP address {address}: "
                             "Cannot assign requested address")
        del self.present_[address]
        self.log.append(("del", str(address)))

    def close(self):
        self.opened -= 1


class LoggingProxy(FakeProxy):
    def __init__(self, log):
        super().__init__()
        self.log = log
        self.refuse = None

    def start(self, text):
        self.log.append(("start", _binds(text)))

    def reload(self, text):
        if self.refuse and self.refuse in text:
            raise ConfigError("HAProxy rejects the configuration: no")
        self.log.append(("reload", _binds(text)))


def _binds(text):
    return sorted(ln.split()[1] for ln in text.splitlines()
                  if ln.strip().startswith("bind "))


def l7(text, name, real=R1):
    return Service(Vip.parse(text), [real], "rr", "l7", name=name,
                   l7=L7Options())


WEB = l7("10.0.0.100:80/tcp", "web")
TLS = l7("10.0.0.100:443/tcp", "tls")
OTHER = l7("10.0.0.101:80/tcp", "other")
V6 = l7("[fd00::100]:80/tcp", "v6", Real.parse("[fd00::11]:8080"))


@pytest.fixture
def make():
    def make(present=None):
        log = []
        kernel = FakeKernel(log, present)
        proxy = LoggingProxy(log)
        sync = L7Sync("eth0", new_proxy=lambda iface: proxy,
                      addresses=InterfaceAddresses("eth0", kernel))
        return sync, kernel, proxy, log
    return make


def test_two_vips_on_one_address_add_it_once(make):
    sync, kernel, _, log = make()
    sync.start([WEB, TLS], {}, {})          # the kernel said EEXIST before
    assert log == [("add", "10.0.0.100"),
                   ("start", ["10.0.0.100:443", "10.0.0.100:80"])]
    sync.sync([WEB, TLS, OTHER, V6], {}, {})
    assert log[2:] == [("add", "10.0.0.101"), ("add", "fd00::100"),
                       ("reload", ["10.0.0.100:443", "10.0.0.100:80",
                                   "10.0.0.101:80", "[fd00::100]:80"])]
    sync.stop()
    assert kernel.present_ == {} and kernel.opened == 0


def test_address_leaves_after_the_reload_with_the_last_vip(make):
    sync, kernel, _, log = make()
    sync.start([WEB, TLS, OTHER], {}, {})
    del log[:]
    sync.sync([TLS, OTHER], {}, {})         # 443 still needs 10.0.0.100
    assert log == [("reload", ["10.0.0.100:443", "10.0.0.101:80"])]
    sync.sync([OTHER], {}, {})              # HAProxy lets go first
    assert log[1:] == [("reload", ["10.0.0.101:80"]),
                       ("del", "10.0.0.100")]
    sync.sync([], {}, {})                   # the last L7 VIP: none left
    assert log[3:] == [("reload", []), ("del", "10.0.0.101")]
    assert kernel.present_ == {}
    sync.sync([WEB], {}, {})                # and back
    assert log[5:] == [("add", "10.0.0.100"), ("reload", ["10.0.0.100:80"])]


def test_operators_address_is_used_and_left(make):
    own = {ip("10.0.0.100"): None, ip("10.0.0.2"): None}
    sync, kernel, _, log = make(present=own)
    sync.start([WEB, OTHER], {}, {})
    assert log[0] == ("add", "10.0.0.101")          # 10.0.0.100 was there
    sync.sync([OTHER], {}, {})
    sync.sync([], {}, {})
    sync.stop()
    assert ("del", "10.0.0.100") not in log
    assert kernel.present_ == own


def test_a_dead_pyfwds_address_is_taken_back(make, caplog):
    left = {ip("10.0.0.100"): ADDR_PROTO, ip("10.0.0.9"): ADDR_PROTO,
            ip("10.0.0.2"): None}
    sync, kernel, _, log = make(present=left)
    with caplog.at_level(logging.INFO, logger="pyfwd"):
        sync.start([WEB], {}, {})
    assert "10.0.0.9 was left by an earlier pyfwd" in caplog.text
    assert log == [("start", ["10.0.0.100:80"]), ("del", "10.0.0.9")]
    sync.stop()
    assert kernel.present_ == {ip("10.0.0.2"): None}


def test_refused_reload_keeps_the_running_addresses(make):
    sync, kernel, proxy, log = make()
    sync.start([WEB], {}, {})
    proxy.refuse = "10.0.0.101"
    with pytest.raises(ConfigError, match="HAProxy rejects"):
        sync.sync([WEB, OTHER], {}, {})
    assert set(kernel.present_) == {ip("10.0.0.100")}
    proxy.refuse = None
    sync.sync([OTHER], {}, {})              # the next change applies
    assert set(kernel.present_) == {ip("10.0.0.101")}


def test_failed_start_and_failed_removal(make, caplog):
    sync, kernel, proxy, log = make()

    def refuse(text):
        raise ConfigError("HAProxy rejects the configuration: no")
    proxy.start = refuse
    with pytest.raises(ConfigError):
        sync.start([WEB], {}, {})
    assert kernel.present_ == {}            # what it added, removed
    sync.stop()
    sync, kernel, proxy, log = make()
    sync.start([WEB], {}, {})
    kernel.fail_delete = True
    sync.stop()                             # logged, not raised
    assert "removing L7 VIP address 10.0.0.100" in caplog.text
    assert sync.addresses.added == set()


def test_stop_then_start_configures_again(make):
    sync, kernel, _, log = make()
    sync.start([WEB], {}, {})
    sync.stop()
    sync.start([WEB], {}, {})
    assert [c[0] for c in log] == ["add", "start", "del", "add", "start"]
    assert kernel.opened == 1


def test_l4_and_l7_on_one_address_steer_only_the_l4_port():
    dicom = Service(Vip.parse("10.0.0.100:104/tcp"), [Real.parse("10.0.0.11")],
                    mode="dr")     # DR: the real gets the VIP's port
    vips, _ = svcs.steering([dicom, WEB])
    assert vips == [dicom.vip]              # :80 stays with the kernel
    assert svcs.vip_addresses([dicom, WEB]) == ([ip("10.0.0.100")], [])


class RefusingL7:
    """An engine's L7Sync whose HAProxy refuses the VIP `refused`."""

    haproxy = None

    def __init__(self, refused):
        self.refused = refused
        self.synced = []

    def checked(self, services):
        if any(s.vip == self.refused for s in services):
            raise ConfigError(f"vip {self.refused}: HAProxy rejects the "
                              "configuration: no")
        return services

    def sync(self, services, state, health):
        self.synced.append([s.name for s in services])


def test_engine_asks_haproxy_before_it_takes_a_change(tmp_path):
    from pyfwd.control.engine import Engine
    eng = Engine("eth0", [WEB])
    eng.l7 = RefusingL7(OTHER.vip)
    with pytest.raises(ConfigError, match="HAProxy rejects"):
        eng.add_vip({"name": "other", "address": "10.0.0.101", "port": 80,
                     "mode": "l7", "real": [{"address": "10.0.0.11",
                                             "port": 8080}]})
    assert eng.services == [WEB] and eng.l7.synced == []
    eng.drain("web", R1.key)                # later changes go on
    assert eng.l7.synced == [["web"]]
    conf = tmp_path / "pyfwd.toml"
    conf.write_text('[[vip]]\nname = "other"\naddress = "10.0.0.101"\n'
                    'port = 80\nmode = "l7"\n[[vip.real]]\n'
                    'address = "10.0.0.11"\nport = 8080\n')
    eng.config_path = str(conf)
    with pytest.raises(ConfigError, match="HAProxy rejects"):
        eng.reload()
    assert eng.services == [WEB] and eng.l7.synced == [["web"]]


def test_checked_asks_haproxy_only_for_a_new_configuration(make):
    sync, kernel, proxy, log = make()
    checked = []
    proxy.validate = checked.append
    dicom = Service(Vip.parse("10.0.0.100:104/tcp"), [Real.parse("10.0.0.11")],
                    mode="dr")     # DR: the real gets the VIP's port
    assert sync.checked([dicom]) == [dicom]     # no L7 VIP: nothing to ask
    sync.checked([WEB])                     # not running: a new one asks
    sync.start([WEB], {}, {})
    sync.checked([WEB, dicom])              # what runs: nothing to ask
    assert sync.checked([WEB, TLS]) == [WEB, TLS]
    assert len(checked) == 2 and "10.0.0.100:443" in checked[1]
    assert [c[0] for c in log] == ["add", "start"]     # nothing changed


# --- issue 16: DOWN not MAINT, halt and on_down = "reset" cut, the role --

def test_halt_and_reset_shut_the_sessions(synced):
    l7, proxy, _ = synced
    proxy.calls.clear()
    l7.sync(services(), {(VIP, R1.key): "halt"},
            {(VIP, R2.key): (False, "refused")})
    assert ("state", l7_server(R1), "maint") in proxy.calls
    assert ("shutdown", l7_server(R1)) in proxy.calls
    # R2 down, on_down "quiesce" (the default, no attribute yet): its
    # sessions go on
    assert ("health", l7_server(R2), False) in proxy.calls
    assert ("shutdown", l7_server(R2)) not in proxy.calls
    reset = services()
    reset[0].on_down = "reset"
    proxy.calls.clear()
    l7.sync(reset, {}, {(VIP, R2.key): (False, "refused")})
    assert [c for c in proxy.calls if c[0] == "shutdown"] == \
        [("shutdown", l7_server(R2))]
    assert cuts_sessions("halt", True, "quiesce")
    assert cuts_sessions(None, False, "reset")
    assert not cuts_sessions(None, False, "quiesce")
    assert not cuts_sessions("drain", True, "reset")


def test_standby_holds_no_address_and_takeover_adds_it(make):
    sync, kernel, proxy, log = make()
    sync.active = False
    sync.start([WEB, OTHER], {}, {})
    assert log == [("start", ["10.0.0.100:80", "10.0.0.101:80"])]
    assert sync.held() == ([], [])
    sync.sync([WEB, OTHER, V6], {}, {})        # add-vip while standby
    assert [e for e in log if e[0] in ("add", "del")] == []
    sync.set_active(True)
    assert sorted(e for e in log if e[0] == "add") == [
        ("add", "10.0.0.100"), ("add", "10.0.0.101"), ("add", "fd00::100")]
    assert sync.held() == ([ip("10.0.0.100"), ip("10.0.0.101")],
                           [ip("fd00::100")])
    log.clear()
    sync.set_active(False)
    assert sorted(log) == [("del", "10.0.0.100"), ("del", "10.0.0.101"),
                           ("del", "fd00::100")]
    assert sync.held() == ([], [])
    sync.set_active(False)                      # again: nothing, no error


def test_standby_drops_what_a_dead_pyfwd_left(make):
    sync, kernel, _, log = make({ip("10.0.0.100"): ADDR_PROTO})
    sync.active = False
    sync.start([WEB], {}, {})
    assert ("del", "10.0.0.100") in log and ip("10.0.0.100") not in \
        kernel.present_


def test_takeover_never_raises(make, caplog):
    sync, kernel, _, log = make()
    sync.active = False
    sync.start([WEB], {}, {})
    kernel.present_[ip("10.0.0.100")] = None    # raced: add fails EEXIST
    kernel.present = lambda: {}
    with caplog.at_level(logging.ERROR, logger="pyfwd"):
        sync.set_active(True)
    assert "taking over the L7 VIPs" in caplog.text and sync.active


def test_clean_clears_leftovers_without_l7_vips(tmp_path):
    log = []
    kernel = FakeKernel(log, {ip("10.0.0.100"): ADDR_PROTO,
                              ip("10.0.0.5"): None})

    class Proxy(FakeProxy):
        config_path = str(tmp_path / "haproxy-eth0.cfg")

        def clear_leftovers(self):
            log.append(("clear",))

    (tmp_path / "haproxy-eth0.cfg").write_text("old")
    sync = L7Sync("eth0", new_proxy=lambda iface: Proxy(),
                  addresses=InterfaceAddresses("eth0", kernel))
    sync.clean()
    assert log == [("clear",), ("del", "10.0.0.100")]
    assert not (tmp_path / "haproxy-eth0.cfg").exists()
    assert kernel.opened == 0


def test_paths_are_stable_per_interface_and_namespace():
    from pyfwd.control.l7.sync import paths
    assert paths("eth0") == paths("eth0")
    assert paths("eth0", "/x").startswith("/x/haproxy-eth0")
    assert paths("eth1") != paths("eth0")
