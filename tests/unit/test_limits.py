"""What the core's tables hold (dataplane.tables.Limits): checked with the
config (`pyfwd check-config` refuses what `start` would), and by the running
engine before a change (add-vip, add-real, set-weight, reload), which is
refused with a ConfigError and leaves the engine publishing as before."""

import textwrap

import pytest

from pyfwd.control import config
from pyfwd.control.engine import Engine
from pyfwd.dataplane import tables
from pyfwd.dataplane.core import Core
from pyfwd.dataplane.native import lib
from pyfwd.errors import ConfigError
from pyfwd.model import MAGLEV_SIZE_DEFAULT, Real, Service, Vip

MAC = b"\x02\x00\x00\x00\x01\x11"
RING = lib.PYFWD_RING_MAX_DEFAULT
MAGLEV_FIT = RING // MAGLEV_SIZE_DEFAULT        # 16


def vip(port):
    return Vip.parse(f"10.0.0.100:{port}/tcp")


def reals(*texts):
    return [Real.parse(t) for t in texts]


def test_the_engines_core_has_the_limits_the_config_is_checked_against():
    # the Engine makes its Core without limits: the header's defaults
    assert Core().limits == tables.Limits() == tables.Limits(
        lib.PYFWD_VIPS_MAX_DEFAULT, lib.PYFWD_REALS_MAX_DEFAULT, RING)
    assert Core(max_ring=100, max_reals=7).limits == tables.Limits(
        lib.PYFWD_VIPS_MAX_DEFAULT, 7, 100)
    assert MAGLEV_FIT == 16


@pytest.mark.parametrize("scheduler,weights,fallback", [
    ("maglev", [1, 2], False), ("sh", [5], False), ("maglev", [0, 0], True),
    ("wrr", [2, 4, 6], False), ("wrr", [1, 65535], False),
    ("wrr", [65535, 65534, 3], False), ("wrr", [0], True),
    ("rr", [1, 0, 3], False), ("lc", [1, 1], True), ("wlc", [0, 7], False),
    ("rr", [0], True), ("maglev", [0], False),
])
def test_ring_need_is_the_most_build_gives(scheduler, weights, fallback):
    rs = [Real(f"10.0.0.{11 + i}", weight=w) for i, w in enumerate(weights)]
    fb = Real.parse("10.0.0.50") if fallback else None
    s = Service(vip(80), rs, scheduler, fallback=fb)
    need = tables.ring_need(s)
    macs = {r.address: MAC for r in rs + ([fb] if fb else [])}

    def ring(service, state=None):
        from pyfwd.control import services as svcs
        eff, _ = svcs.effective([service], state or {}, {})
        return len(tables.build(eff, tables.RealIds(100), macs).ring)

    scaled = scheduler == "wrr" and sum(weights) > MAGLEV_SIZE_DEFAULT
    if scaled:                          # weights scaled down to fit: less
        assert 0 < ring(s) <= need == MAGLEV_SIZE_DEFAULT
    else:                               # all at their configured weights
        assert ring(s) == need
    for r in rs:                        # each drained or halted: no more
        assert ring(s, {(s.vip, r.key): "drain"}) <= need
        assert ring(s, {(s.vip, r.key): "halt"}) <= need
    everyone = {(s.vip, r.key): "halt" for r in rs}   # the fallback's
    assert ring(s, everyone) <= need
    assert (ring(s, everyone) > 0) == fallback


def test_vips_reals_and_ring_each_refused_naming_the_limit():
    small = tables.Limits(max_vips=2, max_reals=3, max_ring=10)
    one = [Service(vip(1), reals("10.0.0.11"), "rr")]
    tables.check_limits(one * 2, small)
    with pytest.raises(ConfigError, match="3 L4 VIPs: over the data plane's "
                       "max_vips of 2"):
        tables.check_limits(one * 3, small)
    # L7 VIPs are HAProxy's: not in the core's tables
    l7 = Service(vip(2), reals("10.0.0.11"), "rr", "l7")
    tables.check_limits(one * 2 + [l7] * 5, small)
    two = [Service(vip(1), reals("10.0.0.11", "10.0.0.12"), "rr",
                   name="a"),
           Service(vip(2), reals("10.0.0.11"), "rr", name="b",
                   fallback=Real.parse("10.0.0.50"))]
    with pytest.raises(ConfigError) as exc:
        tables.check_limits(two, small)
    assert "vip b:" in str(exc.value) and "pairs to 4" in str(exc.value)
    assert "max_reals of 3" in str(exc.value)
    wrr = [Service(vip(1), reals("10.0.0.11@3", "10.0.0.12@6"), "wrr",
                   name="w3"),               # 3 entries (9 over a gcd of 3)
           Service(vip(2), reals("10.0.0.13@7", "10.0.0.14@1"), "wrr",
                   name="w8")]
    with pytest.raises(ConfigError) as exc:
        tables.check_limits(wrr, tables.Limits(max_ring=10))
    assert "vip w8: its wrr table of 8 entries would bring the VIPs' " \
        "tables to 11, over the data plane's max_ring of 10" in \
        str(exc.value)


def maglev_config(n, scheduler="maglev"):
    return "".join(textwrap.dedent(f"""
        [[vip]]
        name = "v{i}"
        address = "10.0.0.100"
        port = {1000 + i}
        scheduler = "{scheduler}"
        real = [{{ address = "10.0.0.11" }}, {{ address = "10.0.0.12" }}]
        """) for i in range(n))


def test_check_config_refuses_the_17th_maglev_vip():
    assert len(config.parse(maglev_config(MAGLEV_FIT)).services) == 16
    with pytest.raises(ConfigError) as exc:
        config.parse(maglev_config(MAGLEV_FIT + 1))
    assert "vip v16: its maglev table of 65537 entries" in str(exc.value)
    assert f"max_ring of {RING}" in str(exc.value)
    assert "16 maglev or sh VIPs" in str(exc.value)
    # rr tables are one entry per real: many VIPs fit
    assert len(config.parse(maglev_config(40, "rr")).services) == 40


def test_check_config_refuses_more_real_servers_than_ids():
    limit = lib.PYFWD_REALS_MAX_DEFAULT
    body = "\n".join(f'[[vip.real]]\naddress = "10.{i >> 8}.{i & 255}.1"'
                     for i in range(limit + 1))
    text = f'[[vip]]\nname = "big"\naddress = "10.255.0.100"\nport = 80\n' \
        f'scheduler = "rr"\n{body}\n'
    with pytest.raises(ConfigError, match=f"vip big: .* pairs to {limit + 1}"
                       f", over the data plane's max_reals of {limit}"):
        config.parse(text)


def started(services):
    """An Engine as start() leaves it for publishing: its Core in-process
    (no interface, no root) and every real server's MAC known."""
    eng = Engine("eth0", services)
    eng.core = Core()
    eng.hops.apply({Real.parse(f"10.0.0.{n}").address: (MAC, 0, None)
                    for n in range(11, 20)})
    eng._publish()
    return eng


def maglev_services(n):
    return [Service(vip(1000 + i), reals("10.0.0.11", "10.0.0.12"),
                    name=f"v{i}") for i in range(n)]


def test_engine_refuses_add_vip_past_the_ring_and_publishes_on():
    eng = started(maglev_services(MAGLEV_FIT))
    assert len(eng.tables.ring) == RING                 # full
    with pytest.raises(ConfigError, match="vip v16: .*max_ring"):
        eng.add_vip({"name": "v16", "address": "10.0.0.100", "port": 2000,
                     "real": [{"address": "10.0.0.13"}]})
    assert len(eng.services) == MAGLEV_FIT
    # nothing frozen: a change that fits is published
    eng.del_vip("v0")
    eng.add_vip({"name": "v16", "address": "10.0.0.100", "port": 2000,
                 "real": [{"address": "10.0.0.13"}]})
    assert vip(2000) in [v.vip for v in eng.tables.vips]
    assert len(eng.tables.ring) == RING


def test_engine_refuses_add_real_and_set_weight_past_the_ring():
    services = maglev_services(MAGLEV_FIT - 1)
    services.append(Service(vip(2000), reals("10.0.0.13@0"), name="idle"))
    services.append(Service(vip(3000), reals("10.0.0.14"), "rr", name="rr"))
    eng = started(services)
    assert len(eng.tables.ring) == RING - MAGLEV_SIZE_DEFAULT + 1
    # named: the VIP changed, not the last one in the tables
    with pytest.raises(ConfigError, match="vip idle: its maglev table of "
                       "65537 entries .*max_ring"):
        eng.set_weight("idle", "10.0.0.13", 1)       # 0 -> a whole table
    assert eng.service("idle").reals == reals("10.0.0.13@0")
    with pytest.raises(ConfigError, match="vip idle: .*max_ring"):
        eng.add_real("idle", "10.0.0.15")
    assert eng.service("idle").reals == reals("10.0.0.13@0")
    eng.add_real("rr", "10.0.0.15")                   # fits: published
    assert len(eng.tables.ring) == RING - MAGLEV_SIZE_DEFAULT + 2


def test_engine_refuses_add_real_past_the_real_ids():
    limit = lib.PYFWD_REALS_MAX_DEFAULT
    many = [Real(f"10.{i >> 8}.{i & 255}.1") for i in range(limit)]
    eng = Engine("eth0", [Service(vip(80), many, "rr", name="big")])
    eng.core = Core()
    eng._publish()
    with pytest.raises(ConfigError, match=f"max_reals of {limit}"):
        eng.add_real("big", "10.255.0.1")
    assert len(eng.service("big").reals) == limit
    eng.del_real("big", "10.0.0.1")
    eng.add_real("big", "10.255.0.1")
    assert len(eng.tables.reals) == limit


def test_engine_refuses_a_reload_past_a_limit(tmp_path):
    path = tmp_path / "pyfwd.toml"
    path.write_text(maglev_config(2))
    eng = Engine("eth0", config.load(str(path)).services,
                 config_path=str(path))
    eng.core = Core()
    eng._publish()
    path.write_text(maglev_config(MAGLEV_FIT + 1))
    with pytest.raises(ConfigError, match="vip v16: .*max_ring"):
        eng.reload()
    assert [s.name for s in eng.services] == ["v0", "v1"]
    path.write_text(maglev_config(3))
    assert eng.reload()["added_vips"] == ["v2"]
    assert len(eng.tables.vips) == 3


def test_engine_refuses_services_past_a_limit_at_construction():
    with pytest.raises(ConfigError, match="max_ring"):
        Engine("eth0", maglev_services(MAGLEV_FIT + 1))
