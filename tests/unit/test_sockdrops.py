"""Socket-level drops without root: the kernel's counters of the backends'
sockets (struct pyfwd_sock_stats: AF_XDP's XDP_STATISTICS, AF_PACKET's
PACKET_STATISTICS) as the data plane names them, as Report.stats() gives
them, as `ctl stats` prints them and as the metrics render them.  The
tables of ctl and metrics are pinned to the header, as
tests/unit/test_counters.py pins the engine's counters."""

import errno
import logging
import re
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyfwd.control import ctl, ctlstats, metrics
from pyfwd.control.report import Report
from pyfwd.dataplane.core import Core
from pyfwd.dataplane.io import Afp, Xsk, XskInfo
from pyfwd.dataplane.native import (AFP_SOCK_COUNTERS, SOCK_COUNTERS,
                                    SOCK_GROUPS, XSK_SOCK_COUNTERS, ffi,
                                    lib)
from pyfwd.errors import DataplaneError

from .test_report import fake_engine

# backend (XskInfo.backend) -> the header's struct of its group, and the
# group's name in struct pyfwd_sock_stats
STRUCTS = {"xdp": ("pyfwd_xsk_sock_stats", "xsk"),
           "afpacket": ("pyfwd_afp_sock_stats", "afp")}


def fields(struct):
    return [name for name, _ in ffi.typeof(f"struct {struct}").fields]


def rows(backend, base=1000):
    """One socket per interface of a two-arm engine, every counter a
    different value."""
    return [{"queue": 0, "iface": iface,
             **{k: base + 100 * slot + i
                for i, k in enumerate(SOCK_COUNTERS[backend])}}
            for slot, iface in enumerate(("eth0", "eth1"))]


# --- the header ---------------------------------------------------------

def test_the_names_are_the_headers():
    assert list(XSK_SOCK_COUNTERS) == fields("pyfwd_xsk_sock_stats")
    assert list(AFP_SOCK_COUNTERS) == fields("pyfwd_afp_sock_stats")
    assert SOCK_GROUPS == {b: g for b, (_, g) in STRUCTS.items()}
    # one group per backend, each a struct of uint64_t counters
    groups = dict(ffi.typeof("struct pyfwd_sock_stats").fields)
    assert sorted(groups) == sorted(g for _, g in STRUCTS.values())
    for backend, (struct, group) in STRUCTS.items():
        assert groups[group].type.cname == f"struct {struct}"
        for _, f in ffi.typeof(f"struct {struct}").fields:
            assert f.type.cname == "uint64_t", (struct, f)
    assert ffi.sizeof("struct pyfwd_sock_stats") == 8 * (
        len(XSK_SOCK_COUNTERS) + len(AFP_SOCK_COUNTERS))
    # the kernel's own names (linux/if_xdp.h, tp_* of linux/if_packet.h)
    assert "rx_ring_full" in XSK_SOCK_COUNTERS
    assert "drops" in AFP_SOCK_COUNTERS


def test_ctl_columns_are_the_headers():
    assert sorted(ctlstats.SOCK_COLUMNS) == sorted(SOCK_COUNTERS)
    for backend, (struct, _) in STRUCTS.items():
        assert list(ctlstats.SOCK_COLUMNS[backend]) == fields(struct)
        columns = list(ctlstats.SOCK_COLUMNS[backend].values())
        assert len(set(columns)) == len(columns)


def test_every_socket_counter_has_one_metric():
    assert sorted(metrics.SOCK_METRICS) == sorted(SOCK_COUNTERS)
    names = []
    for backend, (struct, group) in STRUCTS.items():
        table = metrics.SOCK_METRICS[backend]
        assert list(table) == fields(struct)
        for key, (name, help_) in table.items():
            # pyfwd_xsk_rx_ring_full_total, pyfwd_afp_drops_total
            assert name == f"pyfwd_{group}_{key}_total"
            assert help_.endswith("."), name
            names.append(name)
    assert len(set(names)) == len(names)


# --- the data plane -----------------------------------------------------

@pytest.mark.parametrize("backend", [Xsk, Afp])
def test_no_backend_open_no_sockets(backend):
    core = Core(flows=1024)
    assert backend(core).sock_stats() == []
    out = ffi.new("struct pyfwd_sock_stats *")
    out.xsk.rx_dropped = 7                          # cleared
    assert lib.pyfwd_io_sock_stats_read(core.ctx, 0, 0, out) == \
        -errno.ENOTCONN
    assert out.xsk.rx_dropped == 0


# --- Report.stats() -----------------------------------------------------

INFO = XskInfo("native", "copy", False, 1, 7, "xdp")

class FakeXsk:
    def __init__(self, result):
        self.result = result

    def sock_stats(self):
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def test_stats_give_the_sockets_by_backend():
    eng = fake_engine(xsk=FakeXsk(rows("xdp")),
                      info=INFO)
    stats = Report(eng).stats({})
    assert stats["sockets"] == {"xdp": rows("xdp")}


def test_no_sockets_when_stopped_or_a_read_fails(caplog):
    assert Report(fake_engine()).stats({})["sockets"] == {}   # not started
    eng = fake_engine(xsk=None, info=INFO)
    assert Report(eng).sockets() == {}                        # stopped
    eng.xsk = SimpleNamespace()                 # a backend without them
    assert Report(eng).sockets() == {}
    eng.xsk = FakeXsk([])                       # closed meanwhile
    assert Report(eng).sockets() == {}
    eng.xsk = FakeXsk(DataplaneError(errno.EBADF, "reading the counters "
                                     "of eth0's socket on queue 0"))
    with caplog.at_level(logging.WARNING):
        assert Report(eng).stats({})["sockets"] == {}
    assert "eth0's socket on queue 0" in caplog.text


# --- ctl stats ----------------------------------------------------------

@pytest.mark.parametrize("backend", sorted(SOCK_COUNTERS))
def test_ctl_prints_every_socket_counter_exactly(backend):
    shown = rows(backend, base=123456789)
    lines = ctlstats.format_sockets({backend: shown})
    text = "\n".join(lines)
    title = {"xdp": "AF_XDP sockets (XDP_STATISTICS)",
             "afpacket": "raw sockets (PACKET_STATISTICS)"}[backend]
    assert lines[:2] == ["", title]
    header = lines[2]
    for column in ctlstats.SOCK_COLUMNS[backend].values():
        assert column in header, column
    for row, line in zip(shown, lines[3:]):
        cells = line.split()
        assert cells[:2] == ["0", row["iface"]]
        assert cells[2:] == [str(row[k]) for k in SOCK_COUNTERS[backend]]
    # in `ctl stats`, after the queues
    stats = ctl.format_stats({"core": {}, "queues": [{"rx": 1}],
                              "sockets": {backend: shown}})
    assert text in stats
    assert stats.index("QUEUE  RX") < stats.index(title)


def test_ctl_shows_what_it_does_not_know_by_name():
    lines = ctlstats.format_sockets({"xdp": [{"queue": 1, "iface": "eth0",
                                         "rx_dropped": 5,
                                         "rx_new_counter": 9}],
                                "afpacket": [], "other": [{"drops": 2}]})
    text = "\n".join(lines)
    assert re.search(r"RX DROPPED .*RX_NEW_COUNTER", text), text
    assert re.search(r"^\s*1\s+eth0\s+5\s+(-\s+){5}9$", text, re.M), text
    assert "other sockets" in text and "raw sockets" not in text
    assert ctlstats.format_sockets(None) == ctlstats.format_sockets({}) == []
    assert "sockets" not in ctl.format_stats({"core": {}})


# --- metrics ------------------------------------------------------------

def samples(text):
    return {(s.name, s.labels.get("queue"), s.labels.get("iface")): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples}


@pytest.mark.parametrize("backend", sorted(SOCK_COUNTERS))
def test_metrics_render_every_socket_counter(backend):
    shown = rows(backend, base=2 ** 40)
    text = metrics.render({"sockets": {backend: shown}})
    got = samples(text)
    for row in shown:
        for key, (name, _) in metrics.SOCK_METRICS[backend].items():
            assert got[(name, "0", row["iface"])] == row[key], name
    for name, _ in metrics.SOCK_METRICS[backend].values():
        assert f"# TYPE {name} counter" in text
        assert text.count(f"# HELP {name} ") == 1
    # a float64, as Prometheus keeps it: 2 ** 40 and its neighbours exact
    key = SOCK_COUNTERS[backend][0]
    name = metrics.SOCK_METRICS[backend][key][0]
    assert got[(name, "0", "eth0")] == 2 ** 40


def test_metrics_leave_odd_socket_values_out():
    text = metrics.render({"sockets": {
        "xdp": [{"queue": 0, "iface": "eth0", "rx_dropped": "many",
                 "rx_ring_full": 3}],
        "afpacket": "not a list", "other": [{"drops": 1}]}})
    got = samples(text)
    assert got == {("pyfwd_xsk_rx_ring_full_total", "0", "eth0"): 3}
    assert metrics.render({"sockets": ["odd"]}) == ""
