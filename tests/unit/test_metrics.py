"""Prometheus metrics: the engine's families (control.metrics) over
made-up snapshots, checked with prometheus_client's parsers (the text
format and OpenMetrics).  The listener: test_metrics_http.py."""

import copy
import platform

from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import (
    generate_latest as openmetrics_latest)
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families)
from prometheus_client.parser import text_string_to_metric_families

from pyfwd.control import metrics

XSK = {"xdp_mode": "native", "copy_mode": "zerocopy", "busy_poll": True,
       "queues": 4, "prog_id": 42, "fastpath": "on"}
STATS = {
    "iface": "eth0", "pid": 99, "uptime": 12.5, "xsk": XSK,
    "started_at": 1764800000.25,
    "config_reload": {"last": 1764800100.5, "ok": False,
                      "last_ok": 1764800000.0},
    "room": {"flow_slots": 4096, "flow_slots_used": 9, "punt_slots": 512,
             "punt_queued": 3},
    "core": {"frames": 1000, "bytes": 64000,
             "verdict": {"pass": 10, "punt": 2, "forward": 980, "drop": 8},
             "reason": {"forward": 980, "pass_not_vip": 10, "punt_arp": 2,
                        "drop_runt": 5, "drop_no_real": 3,
                        "drop_fragment": 0},
             "flows_new": 50, "flow_hits": 930, "flows_rescheduled": 1,
             "flows_evicted": 0, "flows_expired": 7, "snat_ports_used": 12,
             "rx": 1000, "tx": 980, "tx_ring_full": 0, "punt_overflow": 0,
             "wakeups": 3, "polls": 9, "vip_generation": 4,
             "snat_ports_pool": 4000},
    "queues": [{"rx": 600, "tx": 590, "tx_ring_full": 0, "polls": 5},
               {"rx": 400, "tx": 390, "tx_ring_full": 2}],
    "arp": {"requests_answered": 4, "conflicts": 0, "ignored": 1},
    "vips": [
        {"name": "pacs-web", "vip": "10.0.0.100:80/tcp", "mode": "dr",
         "scheduler": "wlc", "persistence": 0, "fallback": "10.0.0.50:80",
         "fallback_active": False,
         # the ledger's, its departed reals' included (control.ledger)
         "totals": {"frames": 2 ** 53 + 20, "bytes": 98765433200,
                    "flows_new": 8},
         "reals": [
             {"real": "10.0.0.11:80", "weight": 100, "state": "online",
              "last_change": 1764800050.5,
              "health": "up", "health_detail": "ok", "scheduled": True,
              "why": None, "mac": "02:00:00:00:00:11", "active": 3,
              "inactive": 6, "frames": 10, "bytes": 1000, "flows_new": 5},
             {"real": "10.0.0.12:80", "weight": 0, "state": "drain",
              "health": "down", "health_detail": "refused",
              "scheduled": False, "why": "draining (weight 0)",
              "mac": None, "active": 1, "inactive": 2,
              "frames": 2 ** 53 + 1,
              "bytes": 98765432100, "flows_new": 1},
             {"real": "[fd00::13]:80", "weight": 1, "state": "halt",
              "health": None, "health_detail": "", "scheduled": False,
              "why": "halted", "mac": None, "active": 0, "frames": 0,
              "bytes": 0, "flows_new": 0}]},
        {"name": "dicom", "vip": "10.0.0.100:104/tcp", "mode": "nat",
         "scheduler": "maglev", "persistence": 0, "fallback": None,
         "fallback_active": True, "reals": [],
         # what its departed reals counted (control.ledger)
         "totals": {"frames": 70, "bytes": 7000, "flows_new": 7}},
    ],
}


def parse(text):
    """{name: family} and {(sample name, frozen labels): value}."""
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {}
    for f in families.values():
        for s in f.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
    return families, samples


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


WEB = {"vip": "pacs-web", "vip_address": "10.0.0.100:80/tcp"}


def test_render_parses_and_equals_the_input():
    text = metrics.render(STATS)
    assert text.endswith("\n") and not text.endswith("\n\n")
    families, samples = parse(text)
    assert all(name.startswith("pyfwd_") for name in families)

    assert families["pyfwd_frames"].type == "counter"
    assert value(samples, "pyfwd_frames_total") == 1000
    assert value(samples, "pyfwd_bytes_total") == 64000
    assert value(samples, "pyfwd_frames_by_verdict_total",
                 verdict="drop") == 8
    assert value(samples, "pyfwd_frames_by_reason_total",
                 reason="drop_runt") == 5
    assert value(samples, "pyfwd_frames_by_reason_total",
                 reason="drop_fragment") == 0
    assert value(samples, "pyfwd_flows_new_total") == 50
    assert value(samples, "pyfwd_queue_tx_ring_full_total", queue="1") == 2
    assert value(samples, "pyfwd_arp_events_total", event="ignored") == 1
    assert value(samples, "pyfwd_table_generation") == 4
    assert value(samples, "pyfwd_queue_polls_total", queue="0") == 5

    # per real server and VIP
    real = {**WEB, "real": "10.0.0.11:80"}
    assert families["pyfwd_real_bytes"].type == "counter"
    assert value(samples, "pyfwd_real_bytes_total", **real) == 1000
    assert value(samples, "pyfwd_real_frames_total", **real) == 10
    assert value(samples, "pyfwd_real_flows_new_total", **real) == 5
    assert families["pyfwd_real_flows_active"].type == "gauge"
    assert value(samples, "pyfwd_real_flows_active", **real) == 3
    # closing flows apart (ipvsadm's InActConn)
    assert families["pyfwd_real_flows_inactive"].type == "gauge"
    assert value(samples, "pyfwd_real_flows_inactive", **real) == 6
    assert value(samples, "pyfwd_real_weight", **real) == 100
    # counters: the ledger's totals; live flows: the sum of the reals'
    assert value(samples, "pyfwd_vip_bytes_total", **WEB) == 98765433200
    assert value(samples, "pyfwd_vip_flows_active", **WEB) == 4
    assert value(samples, "pyfwd_vip_flows_inactive", **WEB) == 8
    assert value(samples, "pyfwd_vip_flows_new_total", **WEB) == 8
    dicom = {"vip": "dicom", "vip_address": "10.0.0.100:104/tcp"}
    # the ledger's totals: a VIP whose reals all left keeps their counts
    assert value(samples, "pyfwd_vip_frames_total", **dicom) == 70
    assert value(samples, "pyfwd_vip_bytes_total", **dicom) == 7000
    assert value(samples, "pyfwd_vip_flows_active", **dicom) == 0
    assert value(samples, "pyfwd_vip_fallback_active", **dicom) == 1
    assert value(samples, "pyfwd_vip_info", **dicom, mode="nat",
                 scheduler="maglev") == 1
    # reals new flows may go to: one of three, none
    assert value(samples, "pyfwd_vip_reals_scheduled", **WEB) == 1
    assert value(samples, "pyfwd_vip_reals_scheduled", **dicom) == 0

    # health: 1 up, 0 down, absent without a health check
    assert value(samples, "pyfwd_real_health_up", **real) == 1
    assert value(samples, "pyfwd_real_health_up", **WEB,
                 real="10.0.0.12:80") == 0
    assert not any(n == "pyfwd_real_health_up" and ("real", "[fd00::13]:80")
                   in labels for n, labels in samples)

    # state: one series per state, 1 for the current one
    for real_, current in (("10.0.0.11:80", "online"),
                           ("10.0.0.12:80", "drain"),
                           ("[fd00::13]:80", "halt")):
        for state in ("online", "drain", "halt"):
            assert value(samples, "pyfwd_real_state", **WEB, real=real_,
                         state=state) == (state == current)

    # the data plane's set-up
    info = [s for s in families["pyfwd_dataplane_info"].samples]
    assert len(info) == 1 and info[0].value == 1
    assert info[0].labels == {"xdp_mode": "native", "copy_mode": "zerocopy",
                              "busy_poll": "true", "queues": "4",
                              "fastpath": "on"}


def test_times_are_timestamps_not_ages():
    families, samples = parse(metrics.render(STATS))
    assert value(samples, "pyfwd_start_time_seconds") == 1764800000.25
    assert value(samples, "pyfwd_real_last_change_timestamp_seconds",
                 **WEB, real="10.0.0.11:80") == 1764800050.5
    # a real without one (never published) has no sample
    assert not any(n == "pyfwd_real_last_change_timestamp_seconds" and
                   ("real", "10.0.0.12:80") in labels
                   for n, labels in samples)
    # the config file's last reload was refused; the start's load worked
    assert value(samples, "pyfwd_config_last_reload_successful") == 0
    assert value(samples, "pyfwd_config_last_reload_timestamp_seconds") == \
        1764800100.5
    assert value(samples,
                 "pyfwd_config_last_reload_success_timestamp_seconds") == \
        1764800000.0
    # ages are gone
    assert not any(n.endswith(("_uptime_seconds", "_since_seconds",
                               "_age_seconds")) for n in families)
    # without a config file: no reload series
    stats = dict(STATS, config_reload={"last": None, "ok": True,
                                       "last_ok": None})
    families, _ = parse(metrics.render(stats))
    assert not any(n.startswith("pyfwd_config_") for n in families)


def test_capacity_gauges_come_as_used_and_capacity():
    families, samples = parse(metrics.render(STATS))
    # the core's count of held slots, not the VIPs' live flows (4 here)
    assert value(samples, "pyfwd_flow_slots_used") == 9
    assert value(samples, "pyfwd_flow_slots_capacity") == 4096
    # exact, and its HELP says what a slot holds
    help_ = families["pyfwd_flow_slots_used"].documentation
    assert "exact" in help_ and "estimate" not in help_
    assert "persistence entry" in help_ and "removed real servers" in help_
    assert value(samples, "pyfwd_snat_ports_used") == 12
    assert value(samples, "pyfwd_snat_ports_capacity") == 4000
    assert value(samples, "pyfwd_punt_ring_used") == 3
    assert value(samples, "pyfwd_punt_ring_capacity") == 512
    assert "pyfwd_fast_flows_used" not in families      # fast path: off
    stats = copy.deepcopy(STATS)
    stats["vips"][1]["reals"] = [{"real": "10.0.0.21:104", "active": 5}]
    stats["room"].update(fast_flows=7, fast_slots=65536)
    _, samples = parse(metrics.render(stats))
    assert value(samples, "pyfwd_flow_slots_used") == 9     # no estimate
    assert value(samples, "pyfwd_fast_flows_used") == 7
    assert value(samples, "pyfwd_fast_flows_capacity") == 65536
    # every capacity gauge has its pair
    names = set(families)
    for name in names:
        if name.endswith("_capacity"):
            assert name[:-len("capacity")] + "used" in names, name
    assert {families[n].type for n in names
            if n.endswith(("_used", "_capacity"))} == {"gauge"}


def test_build_info_from_the_collector():
    collector = metrics.EngineCollector(lambda: STATS)
    registry = CollectorRegistry()
    registry.register(collector)
    [info] = [f for f in collector.collect() if f.name == "pyfwd_build"]
    assert info.type == "info"
    [sample] = info.samples
    assert sample.name == "pyfwd_build_info" and sample.value == 1
    assert sample.labels["python"] == platform.python_version()
    assert sample.labels["version"] == metrics.build_info()["version"]
    assert sample.labels["version"][0].isdigit()
    assert (sample.labels["backend"], sample.labels["fastpath"]) == \
        ("", "on")
    assert registry.get_sample_value(
        "pyfwd_build_info", sample.labels) == 1
    assert registry.get_sample_value("pyfwd_frames_total") == 1000
    # render() leaves it out unless asked
    assert "pyfwd_build_info" not in metrics.render(STATS)
    assert "pyfwd_build_info{" in metrics.render(STATS, metrics.build_info())


def test_openmetrics_parses_and_types_hold():
    registry = CollectorRegistry()
    registry.register(metrics.EngineCollector(lambda: STATS))
    text = openmetrics_latest(registry).decode()
    assert text.endswith("# EOF\n")
    fams = {f.name: f for f in openmetrics_families(text)}
    assert fams["pyfwd_frames"].type == "counter"
    assert fams["pyfwd_build"].type == "info"
    assert fams["pyfwd_vip"].type == "info"
    assert fams["pyfwd_start_time_seconds"].type == "gauge"
    [s] = [s for s in fams["pyfwd_vip_bytes"].samples
           if s.labels["vip"] == "dicom"]
    assert (s.name, s.value) == ("pyfwd_vip_bytes_total", 7000)


def test_large_counters_are_float64_as_prometheus_keeps_them():
    _, samples = parse(metrics.render(STATS))
    assert value(samples, "pyfwd_real_frames_total", **WEB,
                 real="10.0.0.12:80") == float(2 ** 53 + 1)


def test_help_and_type_come_once_before_the_samples():
    lines = metrics.render(STATS).splitlines()
    seen = {}
    for i, line in enumerate(lines):
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert name not in seen
            assert lines[i - 1].startswith(f"# HELP {name} ")
            seen[name] = i
    # format 0.0.4: TYPE and HELP name the counter with its _total
    assert seen["pyfwd_real_bytes_total"] < next(
        i for i, line in enumerate(lines)
        if line.startswith("pyfwd_real_bytes_total{"))


def test_label_values_are_escaped():
    stats = copy.deepcopy(STATS)
    odd = 'we"ird\\name\nline2'
    stats["vips"][0]["name"] = odd
    text = metrics.render(stats)
    assert 'vip="we\\"ird\\\\name\\nline2"' in text
    _, samples = parse(text)
    assert value(samples, "pyfwd_real_bytes_total", vip=odd,
                 vip_address="10.0.0.100:80/tcp", real="10.0.0.11:80") == 1000


def test_missing_and_odd_values_are_left_out():
    text = metrics.render({"core": {"frames": 5, "bytes": None,
                                    "reason": {"drop_runt": "x"}},
                           "vips": [{"vip": "10.0.0.1:80/tcp",
                                     "totals": "odd",
                                     "reals": [{"real": "10.0.0.2:80",
                                                "active": 7, "flows": 8}]}]})
    families, samples = parse(text)
    assert value(samples, "pyfwd_frames_total") == 5
    assert "pyfwd_bytes" not in families
    assert "pyfwd_frames_by_reason" not in families
    assert "pyfwd_dataplane_info" not in families
    assert "pyfwd_flow_slots_used" not in families      # no room: no core
    # a VIP without a name is labelled with its address; "flows" (older
    # engines' name of "active") is not read
    assert value(samples, "pyfwd_real_flows_active",
                 vip="10.0.0.1:80/tcp", vip_address="10.0.0.1:80/tcp",
                 real="10.0.0.2:80") == 7
    text = metrics.render({"vips": [{"vip": "10.0.0.1:80/tcp", "reals": [
        {"real": "10.0.0.2:80", "flows": 8}]}]})
    assert "pyfwd_real_flows_active{" not in text
    assert metrics.render({}) == ""


def test_a_failing_snapshot_fails_the_collect():
    def broken():
        raise RuntimeError("engine went away")
    collector = metrics.EngineCollector(broken)
    try:
        list(collector.collect())
    except RuntimeError as exc:
        assert "went away" in str(exc)
    else:
        raise AssertionError("collect() hid the failure")
    assert collector.describe() == []


def test_ha_role_and_responder_counters():
    stats = dict(STATS, icmp={"answered": 3, "rate_limited": 1},
                 ha={"role": "standby", "since": 1764350000.5,
                     "transitions": 2, "arp_withheld": 7, "garp_bursts": 1,
                     "ndp_withheld": 4, "split_brain": 1,
                     "peers": {}})
    families, samples = parse(metrics.render(stats))
    assert value(samples, "pyfwd_ha_role", role="standby") == 1
    assert value(samples, "pyfwd_ha_role", role="active") == 0
    assert families["pyfwd_ha_role"].type == "gauge"
    assert value(samples,
                 "pyfwd_ha_role_last_change_timestamp_seconds") == \
        1764350000.5
    assert value(samples, "pyfwd_ha_transitions_total") == 2
    assert value(samples, "pyfwd_ha_arp_withheld_total") == 7
    assert value(samples, "pyfwd_ha_garp_bursts_total") == 1
    assert value(samples, "pyfwd_ha_ndp_withheld_total") == 4
    assert value(samples, "pyfwd_ha_split_brain_total") == 1
    assert value(samples, "pyfwd_icmp_events_total", event="answered") == 3
    assert value(samples, "pyfwd_icmp_events_total",
                 event="rate_limited") == 1
    # an engine without these keys (older stats) renders without them
    _, plain = parse(metrics.render(STATS))
    assert not any(n.startswith(("pyfwd_ha_", "pyfwd_icmp_"))
                   for n, _ in plain)
