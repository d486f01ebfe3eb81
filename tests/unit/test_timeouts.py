"""The flow timeouts: [engine.timeouts] read and checked, passed to the
core at create, refused on reload, shown by `ctl status` (and its JSON),
and the half-open gauge in `ctl stats` and the metrics."""

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyfwd.control import config as config_mod
from pyfwd.control import ctl, metrics
from pyfwd.control.engine import Engine
from pyfwd.control.report import Report
from pyfwd.dataplane.core import TIMEOUT_MAX, Core
from pyfwd.errors import ConfigError

from .test_changes import LB_MAC, MAC, FakeXsk
from .test_report import fake_engine

VIP = """
[[vip]]
address = "10.0.0.100"
port = 80
[[vip.real]]
address = "10.0.0.11"
"""


def parse(timeouts):
    return config_mod.parse(f"[engine]\niface = \"eth0\"\n"
                            f"[engine.timeouts]\n{timeouts}\n{VIP}")


def test_timeouts_are_read_from_the_file():
    cfg = parse("tcp_syn = 45\ntcp_established = 3600\ntcp_fin = 5\n"
                "udp = 60")
    assert cfg.timeouts == {"tcp_syn": 45, "tcp_established": 3600,
                            "tcp_fin": 5, "udp": 60}
    assert parse("tcp_syn = 20").timeouts == {"tcp_syn": 20}
    assert config_mod.parse(VIP).timeouts == {}


@pytest.mark.parametrize("text,says", [
    ("tcp_syn = 0", "engine.timeouts.tcp_syn = 0: expected whole seconds"),
    ("tcp_syn = -1", "engine.timeouts.tcp_syn = -1: expected whole"),
    ("udp = 2.5", "engine.timeouts.udp = 2.5: expected whole seconds"),
    ("tcp_fin = true", "engine.timeouts.tcp_fin = True: expected whole"),
    ("tcp_fin = \"10\"", "engine.timeouts.tcp_fin = '10': expected whole"),
    (f"tcp_established = {TIMEOUT_MAX + 1}",
     f"expected whole seconds, 1 to {TIMEOUT_MAX}"),
    ("tcp = 900", "engine.timeouts.tcp: unknown key (expected one of "
                  "tcp_syn, tcp_established, tcp_fin, udp)"),
])
def test_bad_timeouts_are_named(text, says):
    with pytest.raises(ConfigError) as exc:
        parse(text)
    assert says in str(exc.value)


def test_timeouts_not_a_table():
    with pytest.raises(ConfigError, match=r"engine\.timeouts = 30: expected "
                                          "a table"):
        config_mod.parse(f"[engine]\ntimeouts = 30\n{VIP}")


def test_core_takes_the_timeouts_and_the_defaults_for_the_rest():
    core = Core(flows=64, timeouts={"tcp_syn": 45, "udp": 60})
    got = core.timeouts()
    assert (got["tcp_syn"], got["udp"]) == (45, 60)
    assert got["tcp_established"] == Core(flows=64).timeouts()[
        "tcp_established"]
    with pytest.raises(ConfigError, match="timeout 'syn': expected one of"):
        Core(flows=64, timeouts={"syn": 1})
    with pytest.raises(ConfigError, match="tcp_syn_timeout -1"):
        Core(flows=64, timeouts={"tcp_syn": -1})


def engine_from(tmp_path, text):
    path = tmp_path / "pyfwd.toml"
    path.write_text(text)
    cfg = config_mod.load(str(path))
    eng = Engine("eth0", cfg.services, config_path=str(path),
                 timeouts=cfg.timeouts)
    return eng, path


def test_engine_passes_the_timeouts_and_reload_refuses_a_change(tmp_path):
    text = f"[engine.timeouts]\ntcp_syn = 40\n{VIP}"
    eng, path = engine_from(tmp_path, text)
    # start()'s Core, without the interfaces (test_changes' way)
    eng.core = Core(mac=LB_MAC, flows=1024,
                    timeouts=eng.options["timeouts"])
    eng.xsk = FakeXsk()
    eng.hops.apply({s.reals[0].address: (MAC, 0, None)
                    for s in eng.services})
    eng._publish()
    assert eng.core.timeouts()["tcp_syn"] == 40
    eng.reload()                            # the same timeouts: fine
    path.write_text(text.replace("tcp_syn = 40", "tcp_syn = 20"))
    with pytest.raises(ConfigError, match=r"engine\.timeouts \{'tcp_syn': "
                       r"20\} differ from the running \{'tcp_syn': 40\}.*"
                       "restart"):
        eng.reload()


def test_status_shows_the_timeouts():
    core = Core(flows=64, timeouts={"tcp_syn": 45})
    status = Report(fake_engine(core=core)).status()
    assert status["timeouts"] == core.timeouts()
    text = ctl.format_status(status)
    assert "flow timeouts" in text
    assert "tcp_syn 45s" in text and "tcp_established 900s" in text
    assert status["new_flows_per_second"] == 0
    assert re.search(r"^new flows per second +0$", text, re.M), text
    assert Report(fake_engine(core=None)).status()["timeouts"] is None


def test_half_open_gauge_in_ctl_stats_and_metrics():
    text = ctl.format_stats({"core": {"flows_new": 7, "flows_half_open": 3}})
    assert "half_open 3" in text
    families = {f.name: f for f in text_string_to_metric_families(
        metrics.render({"core": {"flows_half_open": 3}}))}
    fam = families["pyfwd_flows_half_open"]
    assert fam.type == "gauge" and fam.samples[0].value == 3


def test_new_flows_per_second_is_read_and_checked():
    cfg = config_mod.parse(f"[engine]\nnew_flows_per_second = 50000\n{VIP}")
    assert cfg.new_flows_per_second == 50000
    assert config_mod.parse(VIP).new_flows_per_second == 0
    for bad, says in (("-1", "= -1: expected 0 (no cap) to"),
                      ("1.5", "= 1.5: expected an integer"),
                      ("true", "= True: expected an integer")):
        with pytest.raises(ConfigError) as exc:
            config_mod.parse(f"[engine]\nnew_flows_per_second = {bad}\n"
                             f"{VIP}")
        assert f"engine.new_flows_per_second {says}" in str(exc.value)


def test_engine_passes_the_cap_and_reload_refuses_a_change(tmp_path):
    text = f"[engine]\nnew_flows_per_second = 100\n{VIP}"
    path = tmp_path / "pyfwd.toml"
    path.write_text(text)
    cfg = config_mod.load(str(path))
    eng = Engine("eth0", cfg.services, config_path=str(path),
                 new_flows_per_second=cfg.new_flows_per_second)
    assert eng.options["new_flows_per_second"] == 100
    eng.core = Core(mac=LB_MAC, flows=1024, new_flows_per_second=100)
    eng.xsk = FakeXsk()
    eng.hops.apply({s.reals[0].address: (MAC, 0, None)
                    for s in eng.services})
    eng._publish()
    eng.reload()
    path.write_text(text.replace("100", "200"))
    with pytest.raises(ConfigError, match="new_flows_per_second 200 differs "
                       "from the running 100; restart"):
        eng.reload()
