"""Prometheus metrics: render() checked with prometheus_client's parser,
MetricsServer over real HTTP."""

import copy
import math
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyfwd.control import metrics
from pyfwd.errors import ConfigError

XSK = {"xdp_mode": "native", "copy_mode": "zerocopy", "busy_poll": True,
       "queues": 4, "prog_id": 42, "fastpath": "on"}
STATS = {
    "iface": "eth0", "pid": 99, "uptime": 12.5, "xsk": XSK,
    "core": {"frames": 1000, "bytes": 64000,
             "verdict": {"pass": 10, "punt": 2, "forward": 980, "drop": 8},
             "reason": {"forward": 980, "pass_not_vip": 10, "punt_arp": 2,
                        "drop_runt": 5, "drop_no_real": 3,
                        "drop_fragment": 0},
             "flows_new": 50, "flow_hits": 930, "flows_rescheduled": 1,
             "flows_evicted": 0, "flows_expired": 7, "snat_ports_used": 12,
             "rx": 1000, "tx": 980, "tx_ring_full": 0, "punt_overflow": 0,
             "wakeups": 3, "polls": 9, "vip_generation": 4},
    "queues": [{"rx": 600, "tx": 590, "tx_ring_full": 0, "polls": 5},
               {"rx": 400, "tx": 390, "tx_ring_full": 2}],
    "arp": {"requests_answered": 4, "conflicts": 0, "ignored": 1},
    "vips": [
        {"name": "pacs-web", "vip": "10.0.0.100:80/tcp", "mode": "dr",
         "scheduler": "wlc", "persistence": 0, "fallback": "10.0.0.50:80",
         "fallback_active": False, "reals": [
             {"real": "10.0.0.11:80", "weight": 100, "state": "online",
              "health": "up", "health_detail": "ok", "scheduled": True,
              "why": None, "mac": "02:00:00:00:00:11", "active": 3,
              "frames": 10, "bytes": 1000, "flows_new": 5},
             {"real": "10.0.0.12:80", "weight": 0, "state": "drain",
              "health": "down", "health_detail": "refused",
              "scheduled": False, "why": "draining (weight 0)",
              "mac": None, "active": 1, "frames": 2 ** 53 + 1,
              "bytes": 98765432100, "flows_new": 1},
             {"real": "[fd00::13]:80", "weight": 1, "state": "halt",
              "health": None, "health_detail": "", "scheduled": False,
              "why": "halted", "mac": None, "active": 0, "frames": 0,
              "bytes": 0, "flows_new": 0}]},
        {"name": "dicom", "vip": "10.0.0.100:104/tcp", "mode": "nat",
         "scheduler": "maglev", "persistence": 0, "fallback": None,
         "fallback_active": True, "reals": []},
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
    assert families["pyfwd_snat_ports_used"].type == "gauge"
    assert value(samples, "pyfwd_queue_tx_ring_full_total", queue="1") == 2
    assert value(samples, "pyfwd_arp_events_total", event="ignored") == 1
    assert value(samples, "pyfwd_uptime_seconds") == 12.5
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
    assert value(samples, "pyfwd_real_weight", **real) == 100
    assert value(samples, "pyfwd_vip_bytes_total", **WEB) == 98765433100
    assert value(samples, "pyfwd_vip_flows_active", **WEB) == 4
    assert value(samples, "pyfwd_vip_flows_new_total", **WEB) == 6
    dicom = {"vip": "dicom", "vip_address": "10.0.0.100:104/tcp"}
    assert value(samples, "pyfwd_vip_frames_total", **dicom) == 0
    assert value(samples, "pyfwd_vip_fallback_active", **dicom) == 1
    assert value(samples, "pyfwd_vip_info", **dicom, mode="nat",
                 scheduler="maglev") == 1

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


def test_large_counters_are_exact_in_the_text():
    text = metrics.render(STATS)
    assert (f'pyfwd_real_frames_total{{vip="pacs-web",'
            f'vip_address="10.0.0.100:80/tcp",real="10.0.0.12:80"}} '
            f'{2 ** 53 + 1}\n') in text


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
    assert metrics.escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_missing_and_odd_values_are_left_out():
    text = metrics.render({"core": {"frames": 5, "bytes": None,
                                    "reason": {"drop_runt": "x"}},
                           "vips": [{"vip": "10.0.0.1:80/tcp",
                                     "reals": [{"real": "10.0.0.2:80",
                                                "active": 7, "flows": 8}]}]})
    families, samples = parse(text)
    assert value(samples, "pyfwd_frames_total") == 5
    assert "pyfwd_bytes" not in families
    assert "pyfwd_frames_by_reason" not in families
    assert "pyfwd_dataplane_info" not in families
    # a VIP without a name is labelled with its address; "flows" (older
    # engines' name of "active") is not read
    assert value(samples, "pyfwd_real_flows_active",
                 vip="10.0.0.1:80/tcp", vip_address="10.0.0.1:80/tcp",
                 real="10.0.0.2:80") == 7
    text = metrics.render({"vips": [{"vip": "10.0.0.1:80/tcp", "reals": [
        {"real": "10.0.0.2:80", "flows": 8}]}]})
    assert "pyfwd_real_flows_active{" not in text
    assert metrics.render({}) == ""


@pytest.mark.parametrize("v,text", [
    (1, "1"), (True, "1"), (False, "0"), (0.5, "0.5"), (2 ** 64, str(2 ** 64)),
    (math.nan, "NaN"), (math.inf, "+Inf"), (-math.inf, "-Inf"),
])
def test_format_value(v, text):
    assert metrics.format_value(v) == text


# --- parse_address ----------------------------------------------------------

@pytest.mark.parametrize("text,address", [
    ("127.0.0.1:9108", ("127.0.0.1", 9108)),
    ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ("[::1]:9108", ("::1", 9108)),
    ("[fd00::1]:0", ("fd00::1", 0)),
    (":9108", ("127.0.0.1", 9108)),
    ("9108", ("127.0.0.1", 9108)),
    (" localhost:9108 ", ("localhost", 9108)),
])
def test_parse_address(text, address):
    assert metrics.parse_address(text) == address


@pytest.mark.parametrize("text,words", [
    ("", "ADDR:PORT"),
    (None, "ADDR:PORT"),
    ("127.0.0.1", "ADDR:PORT"),
    ("127.0.0.1:http", "'http'"),
    ("127.0.0.1:65536", "0 to 65535"),
    ("127.0.0.1:-1", "0 to 65535"),
    ("::1:9108", "[::1]:9108"),
    ("[::1]9108", "ADDR:PORT"),
    ("[nope]:9108", "IPv6"),
    ("bad host:9108", "host name"),
])
def test_parse_address_errors(text, words):
    with pytest.raises(ConfigError) as exc:
        metrics.parse_address(text)
    assert words in str(exc.value)
    assert "metrics address" in str(exc.value)


# --- the HTTP server --------------------------------------------------------

def get(url):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read()


@pytest.fixture
def server():
    calls = []

    def get_stats():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("engine went away")
        return STATS
    srv = metrics.MetricsServer(get_stats, ("127.0.0.1", 0)).start()
    srv.calls = calls
    yield srv
    srv.stop()


def test_metrics_over_http(server):
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/metrics"
    status, ctype, body = get(server.url)
    assert status == 200
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    assert body.decode() == metrics.render(STATS)
    _, samples = parse(body.decode())
    assert value(samples, "pyfwd_frames_by_reason_total",
                 reason="drop_no_real") == 3
    status, _, _ = get(server.url + "?name[]=x")        # query ignored
    assert status == 200


def test_other_paths_are_404(server):
    for path in ("/", "/metricsx", "/metrics/x", "/favicon.ico"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            get(f"http://127.0.0.1:{server.port}{path}")
        assert exc.value.code == 404
    assert server.calls == []           # no stats read for a 404


def test_a_failing_scrape_is_500_and_the_server_carries_on(server):
    get(server.url)
    get(server.url)
    with pytest.raises(urllib.error.HTTPError) as exc:
        get(server.url)
    assert exc.value.code == 500
    assert get(server.url)[0] == 200


def test_ipv6_loopback():
    try:
        srv = metrics.MetricsServer(lambda: STATS, ("::1", 0)).start()
    except ConfigError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert srv.url == f"http://[::1]:{srv.port}/metrics"
        assert get(srv.url)[0] == 200
    finally:
        srv.stop()


def test_busy_port_is_a_config_error(server):
    other = metrics.MetricsServer(lambda: STATS, ("127.0.0.1", server.port))
    with pytest.raises(ConfigError, match=f"127.0.0.1:{server.port}"):
        other.start()


def test_stop_frees_the_port_and_is_idempotent():
    srv = metrics.MetricsServer(lambda: STATS, ("127.0.0.1", 0)).start()
    port = srv.port
    srv.stop()
    srv.stop()
    assert srv.port is None
    with pytest.raises(urllib.error.URLError):
        get(f"http://127.0.0.1:{port}/metrics")


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
    assert value(samples, "pyfwd_ha_role_since_seconds") == 1764350000.5
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
