"""tools/monitoring/: the Prometheus alert rules pass `promtool check
rules`, and `promtool test rules` makes each alert fire from series
(pyfwd-alerts-test.yml); the Grafana dashboard is valid JSON whose every
expression names only metrics pyfwd exports, as a real render of a
snapshot shows (the engine's collector, the process's and the
platform's), and the alert rules too."""

import copy
import functools
import json
import pathlib
import re
import shutil
import subprocess

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pyfwd.control.metrics_http import metrics_registry

from .test_metrics import STATS

MONITORING = pathlib.Path(__file__).resolve().parents[2] / "tools" / \
    "monitoring"
RULES = MONITORING / "pyfwd-alerts.yml"
RULES_TEST = MONITORING / "pyfwd-alerts-test.yml"
DASHBOARD = MONITORING / "grafana-pyfwd.json"

# Prometheus's own series, besides what the targets export
PROMETHEUS_SERIES = {"up"}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without",
                "on", "ignoring", "group_left", "group_right", "inf", "nan"}


def promtool():
    path = shutil.which("promtool")
    assert path, ("promtool not found: Debian's prometheus package brings "
                  "it (tools/run setup installs it)")
    return path


@functools.cache
def exported_names():
    """Every sample name a balancer's /metrics has for a snapshot that
    has every part: VIPs and reals, HA, the punt thread, the XDP fast
    path, a config file, BGP."""
    stats = copy.deepcopy(STATS)
    stats["room"].update(fast_flows=10, fast_slots=65536)
    stats["ha"] = {"role": "active", "since": 1764800000.0, "transitions": 1,
                   "arp_withheld": 0, "ndp_withheld": 0, "split_brain": 0,
                   "garp_bursts": 1, "lease_expired": 0, "peers_evicted": 0}
    stats["punt"] = {"frames": 5, "batches": 2,
                     "arp": {"limited_source": 0, "limited_total": 0,
                             "sources_evicted": 0},
                     "arp_conflicts_evicted": 0}
    stats["bgp"] = {"restarts": 0, "announced": ["10.0.0.100/32"],
                    "sessions": [{"peer": "10.9.0.1", "as": 65000,
                                  "state": "Established", "exported": []}]}
    text = generate_latest(metrics_registry(lambda: stats)).decode()
    return {s.name for f in text_string_to_metric_families(text)
            for s in f.samples}


def metric_names(expr):
    """The metric names a PromQL expression reads (Grafana's $variables
    and [$__rate_interval] allowed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", expr)
    e = re.sub(r"\{[^}]*\}", "", e)                 # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*"
               r"\([^)]*\)", "", e)
    e = re.sub(r"\$\{?\w+\}?", "", e)               # Grafana's variables
    e = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?\b", "", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("("):
            continue                                # a function
        if m.group().lower() not in PROMQL_WORDS:
            names.add(m.group())
    return names


def rules():
    """[(alert, expr)] of the rules file (its exprs as promtool reads
    them: promtool parses YAML; here a small reader of our own layout)."""
    out, alert, lines = [], None, RULES.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s*- alert: (\S+)", line)
        if m:
            alert = m.group(1)
        m = re.match(r"(\s*)expr: (.*)", line)
        if m:
            expr = m.group(2)
            if expr.startswith(">-"):               # a folded block
                indent, body = len(m.group(1)), []
                for nxt in lines[i + 1:]:
                    if len(nxt) - len(nxt.lstrip()) <= indent:
                        break
                    body.append(nxt.strip())
                expr = " ".join(body)
            out.append((alert, expr))
    return out


def test_metric_names_reads_promql():
    assert metric_names('sum by (vip) (rate(pyfwd_vip_frames_total'
                        '{instance=~"$instance"}[$__rate_interval]))') == \
        {"pyfwd_vip_frames_total"}
    assert metric_names("a / b > 0.9 and on (x) c > 1e3 unless d") == \
        {"a", "b", "c", "d"}
    assert metric_names('max_over_time(x{r="a b(c)"}[5m]) == 0') == {"x"}


def test_promtool_checks_the_rules():
    r = subprocess.run([promtool(), "check", "rules", str(RULES)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules())} rules found" in r.stdout


def test_promtool_makes_every_alert_fire():
    r = subprocess.run([promtool(), "test", "rules", str(RULES_TEST)],
                       capture_output=True, text=True, timeout=60,
                       cwd=MONITORING)
    assert r.returncode == 0, r.stdout + r.stderr
    # every alert has a case where it fires (exp_alerts not empty)
    text = RULES_TEST.read_text()
    firing = set(re.findall(r"alertname: (\S+)\n\s+exp_alerts:\n", text))
    assert firing == {alert for alert, _ in rules()}


def test_rules_cover_what_an_operator_must_hear_of():
    alerts = {alert for alert, _ in rules()}
    assert {"PyfwdDown", "PyfwdRealServerDown", "PyfwdVipHasNoRealServer",
            "PyfwdFlowTableNearlyFull", "PyfwdFlowTableFull",
            "PyfwdSnatPortsNearlyExhausted",
            "PyfwdDropsRising", "PyfwdHaNoActiveNode",
            "PyfwdHaSeveralActiveNodes",
            "PyfwdConfigReloadFailed"} <= alerts


def test_rules_name_only_exported_metrics():
    exported = exported_names() | PROMETHEUS_SERIES
    for alert, expr in rules():
        assert metric_names(expr), alert
        assert metric_names(expr) <= exported, (alert, metric_names(expr)
                                                - exported)


def dashboard_exprs():
    dash = json.loads(DASHBOARD.read_text())

    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels") or ())
    panels = list(walk(dash["panels"]))
    return dash, panels, [(p["title"], t["expr"]) for p in panels
                          for t in p.get("targets") or ()]


def test_dashboard_is_json_with_unique_panels():
    dash, panels, exprs = dashboard_exprs()
    assert dash["uid"] == "pyfwd" and dash["title"] == "pyfwd"
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == \
                "${datasource}", p["title"]
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "job", "instance", "vip"} <= variables
    # every asset local: no link out of the hospital's network
    assert "http://" not in DASHBOARD.read_text()
    assert "https://" not in DASHBOARD.read_text()


def test_dashboard_names_only_exported_metrics():
    exported = exported_names() | PROMETHEUS_SERIES
    _, _, exprs = dashboard_exprs()
    names = set()
    for title, expr in exprs:
        got = metric_names(expr)
        assert got, title
        assert got <= exported, (title, got - exported)
        names |= got
    # the panels the operators asked for
    assert {"pyfwd_frames_by_verdict_total", "pyfwd_frames_by_reason_total",
            "pyfwd_vip_frames_total", "pyfwd_real_frames_total",
            "pyfwd_real_health_up", "pyfwd_real_state",
            "pyfwd_flow_slots_used", "pyfwd_flow_slots_capacity",
            "pyfwd_snat_ports_used", "pyfwd_snat_ports_capacity",
            "pyfwd_ha_role", "pyfwd_punt_ring_used",
            "pyfwd_punt_ring_capacity",
            "pyfwd_config_last_reload_successful"} <= names


@pytest.mark.parametrize("name", ["pyfwd_vip_frames_total",
                                  "pyfwd_nosuch_total"])
def test_an_unknown_name_would_be_caught(name):
    assert (name in exported_names()) == (name != "pyfwd_nosuch_total")
