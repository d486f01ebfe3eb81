"""HA without split brain, the parts that need no root: the role's lease
(armed by renewals, a lapse stands an active node down once, the next
checks refused), the [ha] table, the NAT gateway that follows the role
(with a fake kernel and socket), the engine's hooks, what ctl prints, the
two-arm-ha lab plan."""

import ipaddress
import logging
import textwrap
import threading

import pytest
from scapy.layers.inet6 import ICMPv6ND_NA
from scapy.layers.l2 import ARP, Ether

from pyfwd.control import config, ctl, gateway, ha, lease
from pyfwd.control.engine import Engine
from pyfwd.control.protocol import COMMANDS
from pyfwd.errors import ConfigError, PyfwdError
from pyfwd.lab import plan

from .test_engine_ndp import FakeSock, services

GW = ipaddress.ip_interface("192.168.50.1/24")
GW6 = ipaddress.ip_interface("fd00:0:0:2::1/64")
INSIDE_MAC = "02:00:00:00:02:02"


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


# --- the lease ---------------------------------------------------------------

def test_a_lease_is_armed_by_a_renewal_and_lapses_once():
    clock = Clock()
    le = lease.Lease(2.5, clock=clock)
    assert not le.armed and le.left() is None and not le.lapsed()
    clock.now += 1000               # never renewed: never lapses
    assert not le.lapsed()
    assert le.renew() and le.armed and le.left() == 2.5
    clock.now += 2.4
    assert not le.lapsed()
    assert le.renew()               # renewed in time: 2.5 s from now
    clock.now += 2.4
    assert not le.lapsed()
    clock.now += 0.1
    assert le.lapsed() and not le.armed     # once
    assert not le.lapsed()
    assert le.status() == {"seconds": 2.5, "armed": False, "left": None,
                           "renewals": 2}


def test_a_lease_of_zero_is_never_armed():
    le = lease.Lease(0)
    assert not le.renew() and not le.armed and le.renewals == 1


@pytest.mark.parametrize("value", [-1, 1, 1.9, 61, "2", True, None])
def test_bad_lease_seconds_are_named(value):
    with pytest.raises(ConfigError, match=r"ha\.lease = .*expected 0 \(no "
                       r"lease\) or 2 to 60 seconds"):
        lease.check_seconds(value)


def state(role="active", **kw):
    clock = Clock()
    return ha.HaState(role, ha.HaOptions(**kw), clock=clock,
                      wall=lambda: 0.0), clock


def test_an_active_node_stands_down_when_its_lease_lapses():
    h, clock = state()
    assert h.lease_lapsed() is None             # not armed yet
    out = h.renew()
    assert out == {"role": "active", "lease": {
        "seconds": 2.5, "armed": True, "left": 2.5, "renewals": 1}}
    clock.now += 2.5
    calls = []
    h.tick(lambda role, why: calls.append((role, why)))
    assert calls == [("standby", "lease expired: keepalived's check "
                      "renewed nothing for 2.5 s (keepalived killed?)")]
    assert h.counters["lease_expired"] == 1
    h.tick(lambda role, why: calls.append((role, why)))
    assert len(calls) == 1                      # once


def test_after_a_lapse_the_next_checks_fail_so_keepalived_elects_again():
    """A keepalived that was only late stays master over a standby engine
    unless its check fails: TRACK_FALL renewals are refused, then they
    arm the lease again."""
    h, clock = state()
    h.renew()
    clock.now += 3
    assert h.lease_lapsed()
    h.set_role("standby", [], lambda: [])
    for n in range(ha.TRACK_FALL, 0, -1):
        with pytest.raises(PyfwdError, match=f"stood down when its lease "
                           f"ran out; failing keepalived's check {n} more"):
            h.renew()
        assert not h.lease.armed
    assert h.renew()["lease"]["armed"]


def test_a_lapse_while_standby_only_disarms():
    h, clock = state("standby")
    h.renew()
    clock.now += 3
    assert h.lease_lapsed() is None and not h.lease.armed
    assert h.counters["lease_expired"] == 0
    h.renew()                                   # not refused


def test_made_active_by_hand_after_keepalived_stopped_stays_active():
    """keepalived renewed, then stopped; its lease lapsed while standby;
    the operator makes the node active by hand: no lease is armed, so it
    stays active."""
    h, clock = state("standby")
    h.renew()
    clock.now += 10
    h.tick(lambda *a: pytest.fail("standby: nothing to stand down"))
    h.set_role("active", [], lambda: [])
    clock.now += 3600
    h.tick(lambda *a: pytest.fail("no lease is armed: stays active"))
    assert h.active


def test_no_lease_no_stand_down():
    h, clock = state(lease=0)
    h.renew()
    clock.now += 3600
    assert h.lease_lapsed() is None and h.active


def test_the_reason_is_logged(caplog):
    h, _ = state()
    with caplog.at_level(logging.WARNING, logger="pyfwd"):
        h.set_role("standby", [], lambda: [], "lease expired: x")
    assert "active -> standby (lease expired: x)" in caplog.text


def test_status_has_the_lease():
    h, _ = state()
    h.renew()
    s = h.status()
    assert s["lease"]["armed"] and s["lease_expired"] == 0
    assert "gateway" not in s                   # none configured


# --- the [ha] table ----------------------------------------------------------

NAT = textwrap.dedent("""
    [engine]
    iface = "eth0"
    inside_iface = "eth1"
    {ha}
    [[vip]]
    address = "10.0.0.100"
    port = 80
    mode = "nat"

    [[vip.real]]
    address = "192.168.50.11"
    port = 8080
    """)


def test_the_ha_table():
    cfg = config.parse(NAT.format(ha='[ha]\nlease = 3\ngateway = '
                                  '["192.168.50.1/24", "fd00:0:0:2::1/64"]'))
    assert cfg.ha == ha.HaOptions(3.0, (GW, GW6))
    cfg = config.parse(NAT.format(ha='[ha]\ngateway = "192.168.50.1"'))
    assert cfg.ha.gateway == (ipaddress.ip_interface("192.168.50.1/32"),)
    assert cfg.ha.lease == lease.LEASE
    assert config.parse(NAT.format(ha="")).ha == ha.HaOptions()


@pytest.mark.parametrize("table, words", [
    ('[ha]\nleese = 2', "ha.leese: unknown key (expected one of lease, "
     "gateway)"),
    ('[ha]\nlease = 1', "ha.lease = 1: expected 0 (no lease) or 2 to 60"),
    ('[ha]\ngateway = "gw"', "ha.gateway = 'gw': expected an address with "
     "its prefix"),
    ('[ha]\ngateway = 1', "ha.gateway = 1: expected \"ADDR/PREFIX\""),
    ('[ha]\ngateway = "192.168.50.0/24"', "expected a unicast host address"),
    ('[ha]\ngateway = "224.0.0.1"', "expected a unicast host address"),
    ('[ha]\ngateway = ["192.168.50.1/24", "192.168.50.1/25"]',
     "ha.gateway: 192.168.50.1 given twice"),
    ('[ha]\n[hb]', "hb: unknown section (expected [engine], [ha], [bgp] "
     "or [[vip]])"),
])
def test_bad_ha_tables_are_named(table, words):
    with pytest.raises(ConfigError) as exc:
        config.parse(NAT.format(ha=table))
    assert words in str(exc.value)


# --- the gateway -------------------------------------------------------------

class FakeKernel:
    """GatewayAddresses' methods over a dict {ip_interface: lifetime}."""

    def __init__(self, marked=(), theirs=()):
        self.addrs = {a: None for a in (*marked, *theirs)}
        self.theirs = set(theirs)
        self.calls = []
        self.opened = False

    def open(self):
        self.opened = True

    def close(self):
        self.opened = False

    def marked(self):
        return [a for a in self.addrs if a not in self.theirs]

    def present(self):
        return {a.ip: None for a in self.addrs}

    def hold(self, address, lifetime):
        self.calls.append(("hold", address, lifetime))
        self.addrs[address] = lifetime

    def drop(self, address):
        self.calls.append(("drop", address))
        if address not in self.addrs:
            raise PyfwdError(f"eth1: removing gateway address {address}: "
                             "Cannot assign requested address")
        del self.addrs[address]


def make_gateway(role="active", addresses=(GW,), marked=(), clock=None):
    h = ha.HaState(role, ha.HaOptions(gateway=tuple(addresses)))
    kernel, sock = FakeKernel(marked), FakeSock()
    gw = gateway.Gateway("eth1", h, threading.RLock(), kernel=kernel,
                         frames=lambda name: sock,
                         clock=clock or Clock())
    return h, gw, kernel, sock


def test_the_gateway_sets_itself_on_the_ha_state():
    h, gw, _, _ = make_gateway()
    assert h.gateway is gw
    h2, _, _, _ = make_gateway(addresses=())
    assert h2.gateway is None


def test_open_removes_what_a_dead_pyfwd_left():
    left = ipaddress.ip_interface("192.168.50.1/24")
    _, gw, kernel, _ = make_gateway("standby", marked=[left])
    gw.open(INSIDE_MAC)
    assert kernel.opened and kernel.addrs == {}
    assert kernel.calls == [("drop", left)]


def test_a_gateway_configured_on_the_interface_is_refused():
    h = ha.HaState("standby", ha.HaOptions(gateway=(GW,)))
    kernel = FakeKernel(theirs=[GW])
    gw = gateway.Gateway("eth1", h, threading.RLock(), kernel=kernel,
                         frames=lambda name: FakeSock())
    with pytest.raises(ConfigError, match=r"ha.gateway = '192.168.50.1/24':"
                       " 192.168.50.1 is an address of eth1 already, not "
                       "pyfwd's"):
        gw.open(INSIDE_MAC)
    assert not kernel.opened and GW in kernel.addrs     # left alone


def test_active_holds_and_announces_the_gateway_standby_drops_it():
    h, gw, kernel, sock = make_gateway("standby", addresses=(GW, GW6))
    gw.open(INSIDE_MAC)
    gw.announce()                       # standby: nothing
    assert sock.sent == [] and kernel.addrs == {}
    h.set_role("active", [], lambda: (gw.announce(), [])[1])
    assert kernel.addrs == {GW: gateway.LIFETIME, GW6: gateway.LIFETIME}
    garp = Ether(sock.sent[0])
    assert garp.src == INSIDE_MAC and garp[ARP].psrc == garp[ARP].pdst == \
        "192.168.50.1"
    na = Ether(sock.sent[1])
    assert na[ICMPv6ND_NA].tgt == "fd00:0:0:2::1" and na.src == INSIDE_MAC
    assert gw.status()["held"] and gw.status()["announcements"] == 2
    assert h.status()["gateway"]["addresses"] == [str(GW), str(GW6)]
    h.set_role("standby", [], lambda: [])
    assert kernel.addrs == {} and not gw.held


def test_the_lifetime_is_renewed_every_refresh():
    clock = Clock()
    _, gw, kernel, _ = make_gateway(clock=clock)
    gw.open(INSIDE_MAC)
    gw.tick()
    gw.tick()                           # not due yet
    clock.now += gateway.REFRESH
    gw.tick()
    assert kernel.calls == [("hold", GW, gateway.LIFETIME)] * 2


def test_close_drops_and_a_vanished_address_is_only_logged(caplog):
    _, gw, kernel, sock = make_gateway()
    gw.open(INSIDE_MAC)
    gw.sync()
    kernel.addrs.clear()                # its lifetime ran out meanwhile
    with caplog.at_level(logging.WARNING, logger="pyfwd"):
        gw.close()
    assert "removing gateway address 192.168.50.1/24" in caplog.text
    assert sock.closed and not kernel.opened and gw.counters["errors"] == 1
    gw.close()                          # idempotent


def test_no_gateway_does_nothing():
    _, gw, kernel, _ = make_gateway(addresses=())
    gw.open(INSIDE_MAC)
    gw.announce()
    gw.sync()
    gw.close()
    assert kernel.calls == [] and not kernel.opened


# --- the engine's hooks ------------------------------------------------------

def test_engine_renews_and_stands_down_with_the_reason(caplog):
    eng = Engine("eth0", services(), ha_options=ha.HaOptions(lease=2))
    assert eng.renew_lease()["lease"]["armed"]
    eng.ha.lease.expires = 0            # ran out
    with caplog.at_level(logging.WARNING, logger="pyfwd"):
        eng.ha.tick(eng.set_role)
    assert eng.role == "standby" and eng.ha.counters["lease_expired"] == 1
    assert "active -> standby (lease expired" in caplog.text


def test_engine_gateway_on_the_inside_interface():
    eng = Engine("eth0", services(), inside_iface="eth1",
                 ha_options=ha.HaOptions(gateway=(GW,)))
    assert (eng.gateway.iface, eng.ha.gateway) == ("eth1", eng.gateway)
    assert Engine("eth0", services(), ha_options=ha.HaOptions(
        gateway=(GW,))).gateway.iface == "eth0"        # one-arm NAT


# --- the control command and what ctl prints ---------------------------------

def test_ha_renew_is_a_command_that_does_not_wait():
    c = COMMANDS["ha-renew"]
    assert (c.args, c.method, c.serialized) == ((), "renew_lease", False)
    assert ha.keepalived_conf(ha.KeepalivedSpec(
        "eth0", 51, 150, "/run/pyfwd/pyfwd.sock", "/usr/bin/pyfwd")).count(
        'script "/usr/bin/pyfwd ctl -s /run/pyfwd/pyfwd.sock ha-renew"') == 1


def test_ctl_prints_the_renewal_and_the_lease():
    assert ctl.format_result("ha-renew", {"role": "active", "lease": {
        "seconds": 2.5, "armed": True, "left": 2.5, "renewals": 3}}) == \
        "lease renewed for 2.5s (role active)"
    assert ctl.format_result("ha-renew", {"role": "active", "lease": {
        "seconds": 0.0, "armed": False, "left": None, "renewals": 3}}) == \
        "no lease ([ha] lease = 0), role active"
    line = ctl.ha_line({"role": "standby", "transitions": 1,
                        "lease_expired": 1,
                        "lease": {"seconds": 2.5, "left": 1.25},
                        "gateway": {"addresses": [str(GW)], "held": False}})
    assert line == "standby, 1 transition, lease 1.2s left, 1 lease " \
        "expiry, gateway 192.168.50.1/24 not held"


# --- the lab -----------------------------------------------------------------

def test_two_arm_ha_plan_floats_the_reals_gateway():
    p = plan.make_plan("doc", "two-arm-ha", 2)
    lb, lb2 = p.node("lb"), p.node("lb2")
    assert [i.ipv4 for i in lb.interfaces] == ["10.0.0.2/24",
                                               "192.168.50.2/24"]
    assert [i.ipv4 for i in lb2.interfaces] == ["10.0.0.3/24",
                                                "192.168.50.3/24"]
    assert lb.forwarding and lb2.forwarding
    owned = {i.addr4 for n in p.hosts for i in n.interfaces}
    for r in p.real_roles:
        assert p.node(r).gateway4 == "192.168.50.1" not in owned
        assert p.node(r).gateway6 == "fd00:0:0:2::1"
    assert p.node("client").routes == ()
