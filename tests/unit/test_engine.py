"""The Engine without root: its admin API on an engine not started (it
keeps the services and admin state; start() publishes them), its refusals,
and the start-up decisions that need no interface (queues, SNAT)."""

import ipaddress

import pytest

from pyfwd.control.engine import Engine
from pyfwd.control.startup import (FLOWS_DR, FLOWS_TRACKED,
                                   flows_per_queue, queue_count,
                                   snat_setting)
from pyfwd.errors import ConfigError
from pyfwd.model import Real, Service, Vip

WEB = Vip.parse("10.0.0.100:80/tcp")


def engine():
    return Engine("eth0", [Service(WEB, [Real.parse("10.0.0.11")],
                                   name="web")])


def test_admin_api_before_start():
    eng = engine()
    eng.add_real("web", "10.0.0.12@3")
    with pytest.raises(ConfigError, match="real 10.0.0.12 is there already"):
        eng.add_real("web", "10.0.0.12")
    eng.set_weight("web", "10.0.0.12", 7)
    eng.drain("web", "10.0.0.11")
    eng.halt("web", "10.0.0.12")
    assert eng.state == {(WEB, "10.0.0.11"): "drain",
                         (WEB, "10.0.0.12"): "halt"}
    eng.online("web", "10.0.0.12")
    eng.remove_real("web", "10.0.0.12")
    assert [str(r) for r in eng.service("web").reals] == ["10.0.0.11@1"]
    eng.del_real("web", "10.0.0.11")
    assert eng.state == {}                  # forgotten with the real
    label = eng.add_vip({"name": "dicom", "address": "10.0.0.100",
                         "port": 104, "real": [{"address": "10.0.0.13"}]})
    assert label == "dicom" and eng.service("10.0.0.100:104/tcp")
    with pytest.raises(ConfigError, match="configured already"):
        eng.add_vip({"address": "10.0.0.100", "port": 104})
    eng.del_vip("dicom")
    with pytest.raises(ConfigError, match="vip dicom: not configured"):
        eng.service("dicom")
    with pytest.raises(ConfigError, match="not started with --config"):
        eng.reload()
    assert eng.status()["vips"] == 1 and eng.ha.status()["role"] == "active"
    assert eng.haproxy is None


def test_refusals_at_construction():
    with pytest.raises(ConfigError, match="backend 'dpdk'"):
        Engine("eth0", [], backend="dpdk")
    with pytest.raises(ConfigError, match="the same as iface"):
        Engine("eth0", [], inside_iface="eth0")
    with pytest.raises(ConfigError, match="configured twice"):
        Engine("eth0", [Service(WEB, []), Service(WEB, [])])
    with pytest.raises(ConfigError, match="role = 'master'"):
        Engine("eth0", [], role="master")


def test_queue_count():
    assert queue_count(None, "eth0", 4) == 4       # NAT/SNAT as DR: all
    assert queue_count(2, "eth0", 4) == 2
    assert queue_count(None, "eth0", 1) == 1
    with pytest.raises(ConfigError, match="queues 5: eth0 has 4 RX"):
        queue_count(5, "eth0", 4)


def test_flows_per_queue():
    assert flows_per_queue(1, False) == flows_per_queue(8, False) == FLOWS_DR
    assert flows_per_queue(1, True) == FLOWS_TRACKED    # 4M in all
    assert flows_per_queue(2, True) == FLOWS_TRACKED // 2
    assert flows_per_queue(16, True) == 1 << 20         # at least 1M


def test_snat_setting():
    snat = [Service(WEB, [], mode="snat")]
    assert snat_setting([Service(WEB, [])], "eth0", None, (1, 2)) is None
    assert snat_setting(snat, "eth0", "10.0.0.2", (61000, 61999)) == \
        (ipaddress.IPv4Address("10.0.0.2"), 61000, 61999)
    with pytest.raises(ConfigError, match="snat address 'fd00::2'"):
        snat_setting(snat, "eth0", "fd00::2", (61000, 61999))
