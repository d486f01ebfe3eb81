"""control.services: the services as the tables, the steering, the health
monitor and a reload see them (pure functions)."""

import ipaddress

import pytest

from pyfwd.control import services as svcs
from pyfwd.dataplane.io import Endpoint
from pyfwd.errors import ConfigError
from pyfwd.model import Real, Service, Vip

WEB = Vip.parse("10.0.0.100:80/tcp")
NAT = Vip.parse("10.0.0.100:104/tcp")
V6 = Vip.parse("[fd00::100]:80/tcp")
L7 = Vip.parse("10.0.0.101:80/tcp")
R1, R2, R3 = (Real.parse(t) for t in ("10.0.0.11", "10.0.0.12@5",
                                      "10.0.0.13:8080"))
FB = Real.parse("10.0.0.50")


def services():
    # web translates R3's port 8080: SNAT (DR cannot translate ports)
    return [Service(WEB, [R1, R2, R3], "maglev", "snat", name="web",
                    fallback=FB),
            Service(NAT, [R3], "rr", "nat", fallback=FB),
            Service(V6, [Real.parse("[fd00::11]")]),
            Service(L7, [R1], "rr", "l7")]


def test_effective_leaves_out_halted_and_unhealthy_drains_to_zero():
    state = {(WEB, R1.key): "halt", (WEB, R2.key): "drain"}
    health = {(WEB, R3.key): (False, "refused")}
    given = services()
    given[0].on_down = "reset"      # quiesce (the default): test_quiesce.py
    out, fallback = svcs.effective(given, state, health)
    assert [s.vip for s in out] == [WEB, NAT, V6]       # L4 only
    web = out[0]
    assert [(r.key, r.weight) for r in web.reals] == \
        [(R2.key, 0), (FB.key, 1)]          # no weight left: the fallback
    assert fallback == {WEB}
    assert services()[0].reals == [R1, R2, R3]          # untouched
    out, fallback = svcs.effective(services(), {}, {})
    assert fallback == set() and out[0].reals == [R1, R2, R3]


def test_steering_and_addresses():
    vips, replies = svcs.steering(services())
    assert vips == [WEB, NAT, V6]
    assert replies == {Endpoint(R3.address, 8080, "tcp"),
                       Endpoint(FB.address, 104, "tcp")}
    assert svcs.vip_addresses(services()) == ([WEB.address, NAT.address],
                                              [V6.address])
    assert svcs.real_addresses(services()) == [
        ipaddress.ip_address(a) for a in
        ("10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.50", "fd00::11")]


def test_find_by_name_text_or_vip():
    s = services()
    assert svcs.find_service(s, "web") is s[0]
    assert svcs.find_service(s, "10.0.0.100:104/tcp") is s[1]
    assert svcs.find_service(s, "[fd00:0::100]:80/tcp") is s[2]
    assert svcs.find_service(s, L7) is s[3]
    with pytest.raises(ConfigError, match="vip nope: not configured"):
        svcs.find_service(s, "nope")
    assert svcs.find_real(s, "web", "10.0.0.13") == (s[0], R3)
    with pytest.raises(ConfigError, match="vip web: no real server 10.0.0.9"):
        svcs.find_real(s, "web", "10.0.0.9")


def test_health_targets_take_the_checks_port():
    spec = type("Spec", (), {"port": None})()
    s = [Service(WEB, [R1, R3], mode="snat", health=spec),
         Service(NAT, [R1])]
    assert svcs.health_targets(s) == {
        (WEB, R1.key): (spec, R1.address, 80, str(WEB)),
        (WEB, R3.key): (spec, R3.address, 8080, str(WEB))}


def test_reload_summary_names_every_change():
    old = services()
    new = services()
    new[0] = Service(WEB, [R1, Real.parse("10.0.0.12@7"),
                           Real.parse("10.0.0.14")], name="web",
                     scheduler="rr", mode="snat", fallback=FB)
    del new[1]
    new.append(Service(Vip.parse("10.0.0.102:80/tcp"), [], name="new"))
    summary = svcs.reload_summary(old, new)
    assert summary["added_vips"] == ["new"]
    assert summary["removed_vips"] == ["10.0.0.100:104/tcp"]
    assert sorted(summary["changed"]) == sorted([
        "web: added 10.0.0.14", "web: removed 10.0.0.13:8080",
        "web: 10.0.0.12 weight 5 -> 7", "web: scheduler maglev -> rr"])


def test_admin_changes_and_their_refusals():
    s = services()
    assert svcs.add_real(s, "web", Real.parse("10.0.0.14")) is s[0]
    with pytest.raises(ConfigError, match="real 10.0.0.14 is there already"):
        svcs.add_real(s, "web", Real.parse("10.0.0.14@9"))
    web, old = svcs.set_weight(s, "web", "10.0.0.12", 0)
    assert old == R2 and web.real(R2.key).weight == 0
    state = {}
    svcs.set_state(s, state, "web", "10.0.0.11", "halt")
    svcs.set_state(s, state, "web", "10.0.0.13:8080", "drain")
    assert state == {(WEB, R1.key): "halt", (WEB, R3.key): "drain"}
    svcs.set_state(s, state, "web", "10.0.0.11", "online")
    assert state == {(WEB, R3.key): "drain"}
    assert svcs.del_real(s, "web", "10.0.0.13:8080") == (web, R3)
    svcs.prune(state, svcs.real_keys(s))
    assert state == {}
