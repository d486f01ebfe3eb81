"""ctl rate, zero and flows (control.ctlviews) and what ctl prints of them
(control.ctlrate): the estimator on a real core's counters, the zero
baselines (ctl's output only: Engine.stats() and so the metrics keep
counting), the listing's limit and filter."""

from types import SimpleNamespace

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pyfwd.control.ctlrate import format_flows, format_rate, format_zero
from pyfwd.control.ctlviews import (GAUGES, RATE_INTERVAL, RATE_WEIGHT,
                                    CtlViews, l4_counters)
from pyfwd.control.ledger import RealLedger
from pyfwd.control.services import find_service
from pyfwd.dataplane.core import Core
from pyfwd.errors import ConfigError, PyfwdError
from pyfwd.model import Real, Service, Vip

LB_MAC, CLIENT_MAC = "02:00:00:00:00:02", "02:00:00:00:00:01"
WEB = Vip.parse("10.0.0.100:80/tcp")
DICOM = Vip.parse("10.0.0.100:104/tcp")
SERVICES = [Service(WEB, [Real.parse("10.0.0.11")], name="web"),
            Service(DICOM, [Real.parse("10.0.0.12")], name="dicom")]
MACS = {Real.parse("10.0.0.11").address: b"\x02\0\0\0\x01\x11",
        Real.parse("10.0.0.12").address: b"\x02\0\0\0\x01\x12",
        Real.parse("10.0.0.13").address: b"\x02\0\0\0\x01\x13"}


class Eng:
    """An engine's parts that CtlViews reads, over a real Core and a
    ledger (as Engine._publish and Report.show())."""

    def __init__(self, services=SERVICES):
        self.core = Core(mac=LB_MAC, flows=4096)
        self.report = SimpleNamespace(ledger=RealLedger())
        self.xsk = None
        self.views = None
        self.publish(services, services)

    def publish(self, services, effective=None):
        """services configured; effective: those in the tables (halted
        reals left out)."""
        self.services = services
        self.core.publish_services(effective or services, MACS)
        configured = [(s.vip, r.key) for s in services for r in s.reals]
        self.report.ledger.published(configured, self.core.ids.mapping(),
                                     self.core.real_stats(),
                                     vips=[s.vip for s in services])
        if self.views:
            self.views.retain(configured)

    def service(self, vip):
        return find_service(self.services, vip)

    def show(self):
        per, led = self.core.real_stats(), self.report.ledger
        out = []
        for s in self.services:
            reals = [{"real": r.key, **led.counters((s.vip, r.key), per)}
                     for r in s.reals]
            totals = led.vip_totals(s.vip, per)
            out.append({"name": s.label, "vip": str(s.vip),
                        "totals": totals, "reals": reals})
        return out

    def stats(self):
        return {"core": self.core.stats(), "vips": self.show(),
                "queues": [self.core.stats(worker=0)]}


def send(eng, sport, dport=80, flags="S", n=1):
    frame = bytes(Ether(dst=LB_MAC, src=CLIENT_MAC)
                  / IP(src="10.0.0.1", dst="10.0.0.100")
                  / TCP(sport=sport, dport=dport, flags=flags))
    eng.core.process([frame] * n)
    return len(frame)


def test_rates_are_an_ewma_of_two_second_samples_per_real_and_vip():
    eng = Eng()
    views = CtlViews(eng)
    views.tick(100.0)                           # the first sample: no rate
    assert views.rate()["vips"][0]["cps"] == 0
    size = send(eng, 40000, n=1)
    for port in range(40001, 40010):
        send(eng, port)                         # 10 flows, 10 frames
    views.tick(100.5)                           # too soon: no sample
    views.tick(100.0 + RATE_INTERVAL)
    r = views.rate()
    web = r["vips"][0]
    rate = 10 / RATE_INTERVAL
    assert web["cps"] == pytest.approx(rate * RATE_WEIGHT, abs=0.06)
    assert web["in_pps"] == pytest.approx(rate * RATE_WEIGHT, abs=0.06)
    assert web["in_bps"] == pytest.approx(rate * size * RATE_WEIGHT,
                                          abs=0.5)
    assert web["reals"][0]["cps"] == web["cps"]
    assert r["vips"][1]["cps"] == 0             # dicom: nothing
    views.tick(100.0 + 2 * RATE_INTERVAL)       # nothing more: decays
    assert views.rate()["vips"][0]["cps"] == pytest.approx(
        rate * RATE_WEIGHT * (1 - RATE_WEIGHT), abs=0.06)
    assert (r["interval"], r["weight"]) == (RATE_INTERVAL, RATE_WEIGHT)


def test_a_counter_that_went_back_gives_no_negative_rate():
    views = CtlViews(Eng())
    views.sample(0.0, {("v", "r"): {"frames": 100, "bytes": 1000,
                                    "flows_new": 5}})
    views.sample(2.0, {("v", "r"): {"frames": 3, "bytes": 30,
                                    "flows_new": 1}})
    assert all(x >= 0 for x in views._avg[("v", "r")].values())


def test_l4_counters_name_vip_and_real():
    eng = Eng()
    send(eng, 40000)
    c = l4_counters(eng.core, eng.report.ledger)
    assert c[("10.0.0.100:80/tcp", "10.0.0.11")]["flows_new"] == 1
    assert l4_counters(None, eng.report.ledger) == {}


def test_a_real_given_another_reals_id_shows_no_rate_spike():
    """B deleted, then A halted: A online again gets B's old id, with
    B's counts; the rate samples the ledger's counters, not the id's."""
    a, b = Real.parse("10.0.0.11"), Real.parse("10.0.0.13")
    both = [Service(WEB, [a, b], name="web")]
    eng = Eng(both)
    eng.views = views = CtlViews(eng)
    ids = eng.core.ids
    a_id, b_id = ids.lookup(WEB, a.key), ids.lookup(WEB, b.key)
    for port in range(40000, 40100):
        before = eng.core.real_stats()[b_id]["frames"]
        send(eng, port)
        if eng.core.real_stats()[b_id]["frames"] > before:
            send(eng, port, flags="A", n=500)   # B counts far more than A
    per = eng.core.real_stats()
    assert per[b_id]["frames"] > per[a_id]["frames"] + 500
    views.tick(0.0)
    only_a = [Service(WEB, [a], name="web")]
    eng.publish(only_a)                                 # del real B
    eng.publish(only_a, [Service(WEB, [], name="web")])  # halt A
    eng.publish(only_a)                                 # A online again
    assert ids.lookup(WEB, a.key) == b_id               # B's id, B's counts
    views.tick(RATE_INTERVAL)                           # no traffic since
    assert views.rate()["vips"][0]["reals"][0] == {
        "real": a.key, "cps": 0.0, "in_pps": 0.0, "in_bps": 0.0}


def test_zero_all_subtracts_in_ctl_output_only():
    eng = Eng()
    views = CtlViews(eng)
    send(eng, 40000, n=3)
    send(eng, 41000, dport=104)
    out = views.zero()
    assert out == {"zeroed": "all", "reals": 2}
    assert views.show()[0]["reals"][0]["frames"] == 0
    send(eng, 40001)
    shown = views.show()
    assert (shown[0]["reals"][0]["frames"],
            shown[0]["reals"][0]["flows_new"]) == (1, 1)
    assert shown[0]["reals"][0]["active"] == 2      # a gauge: not zeroed
    s = views.stats()
    assert s["core"]["frames"] == 1 and s["core"]["flows_new"] == 1
    assert s["core"]["reason"]["forward"] == 1
    assert s["queues"][0]["rx"] == eng.core.stats(worker=0)["rx"] - \
        views._queues[0]["rx"]
    assert s["zeroed"]["vip"] is None
    raw = eng.stats()                               # what metrics render
    assert raw["core"]["frames"] == 5 and raw["core"]["flows_new"] == 3
    assert raw["vips"][0]["reals"][0]["frames"] == 4


def test_zero_one_vip_leaves_the_others_and_the_core():
    eng = Eng()
    views = CtlViews(eng)
    send(eng, 40000)
    send(eng, 41000, dport=104)
    assert views.zero("dicom") == {"zeroed": "10.0.0.100:104/tcp",
                                   "reals": 1}
    shown = views.show()
    assert shown[0]["reals"][0]["frames"] == 1      # web: as it was
    assert shown[1]["reals"][0]["frames"] == 0
    assert views.stats()["core"]["frames"] == 2     # the core: not zeroed
    with pytest.raises(ConfigError):
        views.zero("nope")


def test_zero_baselines_of_a_real_that_left_are_dropped_at_publish():
    """A real deleted and added again counts from 0 (the ledger): its
    baseline goes when it leaves, though it counts past it later."""
    eng = Eng()
    eng.views = views = CtlViews(eng)
    send(eng, 40000, n=100)
    views.zero()
    eng.publish([Service(WEB, [], name="web"), SERVICES[1]])   # del real
    eng.publish(SERVICES)                                      # add real
    send(eng, 40001, n=150)
    shown = views.show()[0]
    assert shown["reals"][0]["frames"] == 150
    assert shown["totals"]["frames"] == 250     # the VIP stayed: 100 + 150
    eng.publish(SERVICES[1:])                   # del vip web: its totals go
    eng.publish(SERVICES)                       # add vip web: from 0
    send(eng, 40002, n=120)
    assert views.show()[0]["totals"]["frames"] == 120


def test_zero_reduces_a_vips_totals_as_its_reals():
    eng = Eng()
    views = CtlViews(eng)
    send(eng, 40000, n=3)
    send(eng, 41000, dport=104, n=2)
    views.zero("web")
    send(eng, 40001)
    web, dicom = views.show()
    assert web["totals"] == {"frames": 1, "bytes": web["reals"][0]["bytes"],
                             "flows_new": 1}
    assert dicom["totals"]["frames"] == 2       # not zeroed
    assert views.stats()["vips"][0]["totals"]["frames"] == 1
    assert eng.show()[0]["totals"]["frames"] == 4


def test_gauges_are_the_metrics_gauges():
    assert {"snat_ports_used", "flows_half_open", "snat_ports_pool",
            "vip_count", "vip_generation"} == GAUGES


def test_a_real_counting_from_zero_again_drops_its_baseline():
    views = CtlViews(Eng())
    views._reals[("10.0.0.100:80/tcp", "10.0.0.11")] = {
        "frames": 50, "bytes": 5000, "flows_new": 5}
    shown = views.show()
    assert shown[0]["reals"][0]["frames"] == 0      # below: as it is
    assert not views._reals


def test_flows_filter_limit_and_errors():
    eng = Eng()
    views = CtlViews(eng)
    for port in range(40000, 40005):
        send(eng, port)
    send(eng, 41000, dport=104)
    out = views.flows()
    assert (len(out["flows"]), out["total"], out["limit"]) == (6, 6, 100)
    out = views.flows("web", limit=2)
    assert (len(out["flows"]), out["total"]) == (2, 5)
    assert {f["real"] for f in out["flows"]} == {"10.0.0.11:80"}
    assert len(views.flows(limit=0)["flows"]) == 6
    with pytest.raises(ConfigError):
        views.flows(limit=-1)
    with pytest.raises(ConfigError):
        views.flows("nope")


def test_views_of_an_engine_not_started_say_so():
    eng = Eng()
    eng.core = None
    views = CtlViews(eng)
    for call in (views.rate, views.show, views.stats, views.flows,
                 views.zero):
        with pytest.raises(PyfwdError, match="not started"):
            call()


# --- what ctl prints -------------------------------------------------------

def test_format_rate():
    text = format_rate({"interval": 2.0, "weight": 0.25, "vips": [
        {"name": "web", "vip": "10.0.0.100:80/tcp", "cps": 2.5,
         "in_pps": 1234.4, "in_bps": 98765.0,
         "reals": [{"real": "10.0.0.11", "cps": 2.5, "in_pps": 1234.4,
                    "in_bps": 98765.0}]}]})
    lines = text.splitlines()
    assert lines[0].split() == ["VIP", "/", "REAL", "CPS", "INPPS", "INBPS"]
    assert lines[1].split() == ["web", "(10.0.0.100:80/tcp)", "2.5",
                                "1234", "98765"]
    assert lines[2].split() == ["10.0.0.11", "2.5", "1234", "98765"]
    assert "every 2.0s" in text and "0.25" in text
    assert format_rate({"vips": []}) == "no VIPs"


def test_format_flows_says_how_many_more():
    flow = {"proto": "tcp", "state": "established", "expires": 899.6,
            "client": "10.0.0.1:40000", "vip": "10.0.0.100:80",
            "real": "10.0.0.11:8080", "snat_port": 61000, "mode": "snat",
            "fast": True}
    text = format_flows({"flows": [flow], "total": 3, "limit": 1})
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["PRO", "STATE", "EXPIRES"]
    assert lines[1].split() == ["TCP", "established", "900s",
                                "10.0.0.1:40000", "10.0.0.100:80",
                                "10.0.0.11:8080", "61000", "snat", "fast"]
    assert lines[-1] == "... 2 more not shown (--limit N, 0: all)"
    assert format_flows({"flows": [], "total": 0}) == "no flows"
    assert "none listed" in format_flows({"flows": [], "total": 4})


def test_format_zero():
    assert "every VIP" in format_zero({"zeroed": "all", "reals": 2})
    assert "10.0.0.100:80/tcp" in format_zero(
        {"zeroed": "10.0.0.100:80/tcp", "reals": 1})


def test_rate_samples_the_ledger_under_the_publishes_lock():
    """The ledger changes in Engine._publish, under the engine's lock:
    a sample read half-way through a publish could show a spike."""
    eng = Eng()
    held = []

    class Lock:
        def __enter__(self):
            held.append(True)

        def __exit__(self, *exc):
            held.append(False)

    ledger = eng.report.ledger
    seen = []
    eng.report = SimpleNamespace(ledger=SimpleNamespace(
        l4_pairs=lambda: seen.append(held[-1:]) or ledger.l4_pairs(),
        counters=ledger.counters))
    CtlViews(eng, Lock()).tick(0.0)
    assert seen == [[True]] and held == [True, False]
