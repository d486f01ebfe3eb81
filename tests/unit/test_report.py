"""control.report without root: show(), status() and stats() built from
fake parts (core, next hops, HA state, L7 sync, health monitor), and the
stats file."""

import ipaddress
import json
from types import SimpleNamespace

from pyfwd.control.ha import HaState
from pyfwd.control.l7.options import L7Options
from pyfwd.control.l7.render import l7_name, l7_server
from pyfwd.control.nexthops import NextHops
from pyfwd.control.report import Report, write_stats
from pyfwd.model import Real, Service, Vip

from .test_engine_ndp import make_punts

WEB = Vip.parse("10.0.0.100:80/tcp")
L7 = Vip.parse("10.0.0.101:80/tcp")
R1, R2, R3 = (Real.parse(t) for t in ("10.0.0.11", "10.0.0.12:8080@5",
                                      "10.0.0.13"))
FB = Real.parse("10.0.0.50")
MAC = b"\x02\x00\x00\x00\x01\x11"


class FakeCore:
    workers = 2

    def __init__(self):
        self.ids = SimpleNamespace(lookup=lambda vip, key: {
            (WEB, R1.key): 0, (WEB, FB.key): 3}.get((vip, key)))

    def real_stats(self):
        return {0: {"active": 2, "frames": 10, "bytes": 600, "flows_new": 4},
                3: {"active": 1, "frames": 1, "bytes": 60, "flows_new": 1}}

    def timeouts(self):
        return {"tcp_syn": 30, "tcp_established": 900, "tcp_fin": 10,
                "udp": 300}

    def new_flows_per_second(self):
        return 0

    def stats(self, worker=None):
        return {"rx": worker, "tx": 0, "tx_ring_full": 0, "wakeups": 0,
                "polls": 0, "handoff_out": 0, "handoff_in": 0,
                "tun_gso_cut": 0, "snat_ports_pool": 0, "other": 1}


class FakeL7:
    def __init__(self, rows):
        self._rows = rows

    def rows(self):
        return self._rows

    def status(self):
        return {"pid": 42, "restarts": 0} if self._rows else None


class FakeMonitor:
    def state(self, key):
        if key == (WEB, R3.key):
            return {"up": False, "last_detail": "tcp connect: refused"}
        raise KeyError(key)


def fake_engine(**kw):
    hops = NextHops(["eth0", "eth1"])
    hops.apply({R1.address: (MAC, 1, None),
                R3.address: (None, 0, "no ARP answer"),
                FB.address: (MAC, 0, None)})
    health = SimpleNamespace(port=None)
    # NAT: R2 is on port 8080 (DR cannot translate ports)
    web = Service(WEB, [R1, R2, R3], "maglev", "nat", fallback=FB,
                  health=health)
    l7 = Service(L7, [R1], "rr", "l7", name="web7", l7=L7Options())
    eng = SimpleNamespace(
        iface="eth0", inside_iface="eth1", config_path=None, started=None,
        info=None, snat=(ipaddress.ip_address("10.0.0.2"), 61000, 65535),
        services=[web, l7], state={(WEB, R2.key): "halt"}, health={},
        monitor=FakeMonitor(), fallback_active={WEB},
        tables=SimpleNamespace(unscheduled={(WEB, R3.key): "no MAC"}),
        core=FakeCore(), hops=hops, punts=None, ha=HaState("standby"),
        liveness=list,
        l7=FakeL7({(l7_name(l7), l7_server(R1)): {
            "active": 5, "flows_new": 9, "bytes": 100,
            "haproxy_state": "ready", "haproxy_status": "running"}}))
    eng.__dict__.update(kw)
    return eng


def test_show_says_why_each_real_is_not_scheduled():
    web, l7 = Report(fake_engine()).show()
    rows = {r["real"]: r for r in web["reals"]}
    assert web["fallback_active"] and web["fallback"] == FB.key
    r1 = rows[R1.key]
    assert (r1["scheduled"], r1["mac"], r1["via"], r1["active"],
            r1["health"]) == (True, "02:00:00:00:01:11", "eth1", 2, "up")
    assert (rows[R2.key]["state"], rows[R2.key]["why"]) == ("halt", "halted")
    assert rows[R2.key]["frames"] == 0          # no id: no counters
    r3 = rows[R3.key]
    assert (r3["health"], r3["why"], r3["mac"]) == \
        ("down", "health: tcp connect: refused", None)
    fb = rows[FB.key]
    assert (fb["state"], fb["health"], fb["active"]) == ("fallback", None, 1)
    [r] = l7["reals"]
    assert (r["active"], r["flows_new"], r["haproxy_state"],
            r["haproxy_status"]) == (5, 9, "ready", "running")
    assert "haproxy_state" not in r1


def test_status_and_stats_from_the_parts(tmp_path):
    eng = fake_engine(started=90.0)
    report = Report(eng, pid=lambda: 7, clock=lambda: 100.5)
    st = report.status()
    assert (st["pid"], st["uptime"], st["vips"], st["reals"]) == \
        (7, 10.5, 2, 4)
    assert st["snat"] == ["10.0.0.2", 61000, 65535]
    assert st["haproxy"] == {"pid": 42, "restarts": 0}
    assert st["ha"]["role"] == "standby"
    stats = report.stats({"rx": 1})
    assert stats["core"] == {"rx": 1}
    rest = {"tx": 0, "tx_ring_full": 0, "wakeups": 0, "polls": 0,
            "handoff_out": 0, "handoff_in": 0, "tun_gso_cut": 0,
            "snat_ports_pool": 0}
    assert stats["queues"] == [{"rx": 0, **rest}, {"rx": 1, **rest}]
    assert stats["arp"] == stats["ndp_conflicts"] == {}   # not started
    eng.punts = make_punts()
    stats = report.stats({})
    assert stats["ndp"]["answered"] == 0 and stats["icmp"]["answered"] == 0
    path = tmp_path / "stats.json"
    write_stats(str(path), stats)
    assert json.loads(path.read_text())["vips"][0]["name"] == str(WEB)
    assert not (tmp_path / "stats.json.tmp").exists()
