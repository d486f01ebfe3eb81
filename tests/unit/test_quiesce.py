"""A failed health check quiesces (issue 16): the real that fails its check
stays in the tables at weight 0, so its established flows go on and no new
flow comes to it, for every scheduler, persistence or not, the fallback
still taking over; on_down = "reset" cuts its flows as before.  Through the
C core (Core.process, no root), the config file, the CLI and show."""

import collections
import ipaddress
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from pyfwd.cli.main import cli
from pyfwd.control import config, services as svcs
from pyfwd.control.nexthops import NextHops
from pyfwd.control.report import QUIESCED, Report
from pyfwd.dataplane.core import Core
from pyfwd.errors import ConfigError
from pyfwd.model import ON_DOWN, SCHEDULERS, Real, Service

from ..cases import defs
from .test_dr_core import MACS, VIP, reals, seg, where

NAME = {f"real{i}": f"10.0.0.{10 + i}" for i in range(1, 6)}
FB = Real("10.0.0.15")                # real5's MAC: the fallback


def publish(core, svc, health, state=None):
    """Publish what effective() makes of svc under health; the fallback
    VIPs."""
    eff, fallback = svcs.effective([svc], state or {}, health)
    core.publish_services(eff, MACS)
    return fallback


def down(name, detail="tcp connect: refused"):
    return {(VIP, NAME[name]): (False, detail)}


def flows_then_down(ports, scheduler, **kw):
    """Three reals; a flow from each port; then the real most of them went
    to (sh and persistence: all) fails its check.  (core, svc, where each
    flow went, that real)."""
    svc = Service(VIP, reals("1@1", "2@1", "3@1"), scheduler, **kw)
    core = Core(mac=defs.LB_MAC, flows=1 << 14)
    publish(core, svc, {})
    first = where(core, [seg(p, "S") for p in ports])
    victim = collections.Counter(first).most_common(1)[0][0]
    publish(core, svc, down(victim))
    return core, svc, first, victim


@pytest.mark.parametrize("persistence", [0, 300])
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_a_quiesced_real_keeps_its_flows_and_takes_no_new_one(scheduler,
                                                             persistence):
    ports = range(21000, 21300)
    core, svc, first, victim = flows_then_down(ports, scheduler,
                                               persistence=persistence)
    assert where(core, [seg(p) for p in ports]) == first
    fresh = where(core, [seg(p, "S") for p in range(31000, 31300)])
    assert victim not in fresh and None not in fresh, (victim, fresh)
    assert core.stats()["flows_rescheduled"] == 0
    # it comes back: new flows reach it again (not with sh or persistence
    # from one client, which have moved on; fresh clients would)
    publish(core, svc, {})
    if scheduler != "sh" and not persistence:
        again = where(core, [seg(p, "S") for p in range(41000, 41300)])
        assert victim in again


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_reset_cuts_the_flows_of_a_real_that_fails(scheduler):
    ports = range(22000, 22300)
    core, _, first, victim = flows_then_down(ports, scheduler,
                                             on_down="reset")
    after = where(core, [seg(p) for p in ports])
    moved = [a for f, a in zip(first, after) if f == victim]
    assert moved and victim not in after and None not in after
    assert core.stats()["flows_rescheduled"] == len(moved)


def test_the_fallback_takes_new_flows_when_every_real_is_quiesced():
    svc = Service(VIP, reals("1@1", "2@1"), "wrr", fallback=FB)
    core = Core(mac=defs.LB_MAC, flows=1 << 14)
    assert publish(core, svc, {}) == set()
    ports = range(23000, 23100)
    first = where(core, [seg(p, "S") for p in ports])
    assert set(first) == {"real1", "real2"}
    assert publish(core, svc, {**down("real1"), **down("real2")}) == {VIP}
    assert where(core, [seg(p) for p in ports]) == first     # kept
    fresh = where(core, [seg(p, "S") for p in range(33000, 33100)])
    assert set(fresh) == {"real5"}                          # the fallback
    # one back up: the fallback goes, new flows go to it
    assert publish(core, svc, down("real2")) == set()
    fresh = where(core, [seg(p, "S") for p in range(34000, 34100)])
    assert set(fresh) == {"real1"}


def test_effective_quiesces_at_weight_zero_and_resets_by_leaving_out():
    r1, r2, r3 = reals("1@1", "2@5", "3@2")
    health = {(VIP, r2.key): (False, "refused")}
    state = {(VIP, r3.key): "halt"}
    [q], _ = svcs.effective([Service(VIP, [r1, r2, r3])], state, health)
    assert [(r.key, r.weight) for r in q.reals] == [(r1.key, 1),
                                                    (r2.key, 0)]
    [c], _ = svcs.effective([Service(VIP, [r1, r2, r3], on_down="reset")],
                            state, health)
    assert [(r.key, r.weight) for r in c.reals] == [(r1.key, 1)]


def test_a_fallback_that_is_a_quiesced_real_takes_its_place():
    r1, r2 = reals("1@1", "2@1")
    fb = Real(r2.address)
    svc = Service(VIP, [r1, r2], fallback=fb)
    health = {(VIP, r1.key): (False, "x"), (VIP, r2.key): (False, "x")}
    [s], active = svcs.effective([svc], {}, health)
    assert [(r.key, r.weight) for r in s.reals] == [(r1.key, 0),
                                                    (r2.key, 1)]
    assert active == {VIP}
    # a drained real that is the fallback stays drained, as before
    [s], active = svcs.effective([svc], {(VIP, r1.key): "drain",
                                         (VIP, r2.key): "drain"}, {})
    assert [r.weight for r in s.reals] == [0, 0] and active == set()


# --- the config file, the model, check-config, reload ----------------------

CONFIG = """
[[vip]]
name = "web"
address = "10.0.0.100"
port = 80
{extra}
real = [{{ address = "10.0.0.11" }}]
"""


def test_on_down_in_the_config_file():
    assert ON_DOWN == ("quiesce", "reset")
    [s] = config.parse(CONFIG.format(extra="")).services
    assert s.on_down == "quiesce"                   # the default
    [s] = config.parse(CONFIG.format(extra='on_down = "reset"')).services
    assert s.on_down == "reset"
    [s] = config.parse(CONFIG.format(
        extra='mode = "l7"\non_down = "reset"')).services
    assert (s.mode, s.on_down) == ("l7", "reset")   # L7 has it too
    with pytest.raises(ConfigError) as e:
        config.parse(CONFIG.format(extra='on_down = "cut"'))
    assert str(e.value) == ("vip 'web'.on_down = 'cut': expected one of "
                            "quiesce, reset")
    with pytest.raises(ConfigError, match=r"on_down = 1: expected a string"):
        config.parse(CONFIG.format(extra="on_down = 1"))
    with pytest.raises(ConfigError, match="on_down 'drop': expected one of "
                       "quiesce, reset"):
        Service(VIP, on_down="drop")


def test_check_config_refuses_a_bad_on_down(tmp_path):
    path = tmp_path / "pyfwd.toml"
    path.write_text(CONFIG.format(extra='on_down = "reset"'))
    r = CliRunner().invoke(cli, ["check-config", str(path)])
    assert r.exit_code == 0 and "ok: 1 VIP(s)" in r.output
    path.write_text(CONFIG.format(extra='on_down = "kill"'))
    r = CliRunner().invoke(cli, ["check-config", str(path)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "vip 'web'.on_down = 'kill': expected one of quiesce, reset" \
        in r.output


def test_reload_summary_names_an_on_down_change():
    old = config.parse(CONFIG.format(extra="")).services
    new = config.parse(CONFIG.format(extra='on_down = "reset"')).services
    assert svcs.reload_summary(old, new)["changed"] == [
        "web: on_down quiesce -> reset"]
    assert svcs.reload_summary(new, new)["changed"] == []


# --- show -------------------------------------------------------------------

MAC = b"\x02\x00\x00\x00\x01\x11"


def fake_engine(on_down, mac=MAC):
    r1, r2 = Real("10.0.0.11"), Real("10.0.0.12")
    hops = NextHops(["eth0"])
    hops.apply({r1.address: (mac, 0, None), r2.address: (MAC, 0, None)})
    svc = Service(VIP, [r1, r2], health=SimpleNamespace(port=None),
                  on_down=on_down)
    k1 = (VIP, r1.key)
    tables = SimpleNamespace(unscheduled={k1: "draining (weight 0)"}
                             if on_down == "quiesce" and mac else {})
    core = SimpleNamespace(real_stats=lambda: {},
                           ids=SimpleNamespace(lookup=lambda *k: None))
    return SimpleNamespace(
        services=[svc], state={}, health={k1: (False, "tcp connect: "
                                               "refused")},
        monitor=None, fallback_active=set(), tables=tables, core=core,
        hops=hops, l7=SimpleNamespace(rows=lambda: {}))


@pytest.mark.parametrize("on_down,mac,why", [
    ("quiesce", MAC, "health: tcp connect: refused" + QUIESCED),
    ("reset", MAC, "health: tcp connect: refused"),
    ("quiesce", None, "health: tcp connect: refused"),   # not in the tables
])
def test_show_says_a_quiesced_real_keeps_its_flows(on_down, mac, why):
    [v] = Report(fake_engine(on_down, mac)).show()
    r1, r2 = v["reals"]
    assert v["on_down"] == on_down
    assert (r1["health"], r1["scheduled"], r1["why"]) == ("down", False, why)
    assert "established ones go on" in QUIESCED
    assert (r2["scheduled"], r2["why"]) == (True, None)


def test_show_says_a_mac_is_kept():
    eng = fake_engine("quiesce")
    now = [100.0]
    eng.hops = NextHops(["eth0"], stale=60, clock=lambda: now[0])
    a = ipaddress.ip_address("10.0.0.12")
    eng.hops.apply({a: (MAC, 0, None)})
    now[0] = 105.0
    eng.hops.apply({a: (None, 0, "MAC unknown: no ARP answer on eth0")})
    now[0] = 117.4
    [v] = Report(eng).show()
    r2 = v["reals"][1]
    assert (r2["scheduled"], r2["why"], r2["mac"]) == \
        (True, "MAC kept (unanswered for 12 s)", "02:00:00:00:01:11")


@pytest.mark.parametrize("on_down, says", [
    ("quiesce", "quiesced, no new flows, established ones go on"),
    ("reset", "out of the tables, its flows leave it")])
def test_the_log_says_what_a_failed_check_does(on_down, says, caplog):
    from pyfwd.control.engine import Engine
    svc = Service(VIP, [Real.parse("10.0.0.11")], on_down=on_down)
    eng = Engine("eth9", [svc])         # not started: nothing to publish
    with caplog.at_level("WARNING", logger="pyfwd"):
        eng._on_health((VIP, "10.0.0.11"), False, "tcp connect: refused")
        eng._on_health((VIP, "10.0.0.11"), True, "tcp connect")
    down, up = [r.getMessage() for r in caplog.records]
    assert down.endswith(f"is DOWN (tcp connect: refused): {says}"), down
    assert up.endswith("is up (tcp connect)"), up
