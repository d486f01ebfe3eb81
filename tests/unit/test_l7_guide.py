"""Issue 20: the guide's rules for L7 VIPs, without HAProxy running.

The shared-RIP:PORT rule (an L7 VIP and an L4 SNAT VIP), per-VIP
timeouts, source persistence, rewrites and redirects, l7_source."""

import pytest

from pyfwd.control import config
from pyfwd.control.engine import Engine
from pyfwd.control.l7.conflicts import check_shared_reals
from pyfwd.control.startup import check_options
from pyfwd.errors import ConfigError

L7_WEB = """
[[vip]]
name = "web"
address = "10.0.0.100"
port = 80
mode = "l7"
[[vip.real]]
address = "10.0.0.11"
port = 8080
"""
SNAT = """
[[vip]]
name = "pacs"
address = "10.0.0.101"
port = 8080
mode = "snat"
scheduler = "rr"
[[vip.real]]
address = "10.0.0.{last}"
"""


def test_check_config_refuses_l7_and_snat_sharing_a_real():
    with pytest.raises(ConfigError) as e:
        config.parse(L7_WEB + SNAT.format(last=11))
    msg = str(e.value)
    assert "vip web (L7)" in msg and "vip pacs (L4 snat)" in msg
    assert "10.0.0.11:8080" in msg


def test_other_port_or_other_mode_is_fine():
    config.parse(L7_WEB + SNAT.format(last=12))
    cfg = config.parse(L7_WEB + SNAT.format(last=11).replace(
        '"snat"', '"nat"'))
    check_shared_reals(cfg.services)        # NAT: not the guide's rule


def test_start_refuses_it():
    cfg = config.parse(L7_WEB + SNAT.format(last=12))
    web, pacs = cfg.services
    pacs.reals[0] = web.reals[0].__class__.parse("10.0.0.11:8080")
    with pytest.raises(ConfigError, match="share the real server"):
        check_options("eth0", None, "xdp", [web, pacs])


def test_add_real_refuses_it_and_changes_nothing():
    cfg = config.parse(L7_WEB + SNAT.format(last=12))
    eng = Engine("eth0", cfg.services)
    with pytest.raises(ConfigError, match="vip web .L7. and vip pacs"):
        eng.add_real("pacs", "10.0.0.11:8080")
    assert [r.key for r in eng.services[1].reals] == ["10.0.0.12"]
