"""The counters that the metrics and `pyfwd ctl` name by hand are the C
header's: a counter added to struct pyfwd_stats or struct pyfwd_real_stats
(csrc/pyfwd.h) without a metric and a place in `ctl stats` and `ctl show`
fails here, and so does one removed from C but still named in Python."""

import re

from prometheus_client.parser import text_string_to_metric_families

from pyfwd.control import ctl, ctlstats, metrics
from pyfwd.dataplane.native import REASONS, VERDICTS, ffi

# Counters of struct pyfwd_stats that are rendered from their own keys and
# arrays (frames, bytes; verdict[] by VERDICTS, reason[] by REASONS), not
# from the tables below.
OWN_KEYS = ("frames", "bytes", "verdict", "reason")


def fields(struct):
    """The field names of a C struct, in the header's order; the counters
    of a group (a struct field: pyfwd_stats' tables, flows, io) in its
    place, as Core.stats() flattens them."""
    out = []
    for name, field in ffi.typeof(f"struct {struct}").fields:
        if field.type.kind == "struct":
            out += fields(field.type.cname.split()[-1])
        else:
            out.append(name)
    return out


def array_length(struct, name):
    """The number of elements of an array field of a C struct."""
    return dict(ffi.typeof(f"struct {struct}").fields)[name].type.length


def io_fields():
    """The I/O loop's counters: struct pyfwd_io_stats (pyfwd_stats.io)."""
    return fields("pyfwd_io_stats")


def test_every_engine_counter_has_one_metric():
    assert sorted([*OWN_KEYS, *metrics.CORE_METRICS]) == \
        sorted(fields("pyfwd_stats"))
    names = [name for name, _, _ in metrics.CORE_METRICS.values()]
    assert len(set(names)) == len(names)


def test_ctl_stats_groups_are_the_headers():
    # each ctl group is one struct of the header, in its order
    assert list(ctlstats.CSUM_COUNTERS) == fields("pyfwd_csum_stats")
    assert list(ctlstats.FLOW_COUNTERS) == fields("pyfwd_flow_stats")
    assert list(ctlstats.FAST_COUNTERS) == fields("pyfwd_fast_stats")


def test_every_io_counter_has_a_per_queue_metric():
    # punt_overflow: the engine reports it for the whole engine only (its
    # per-queue rows carry the others)
    # and snat_ports_pool: each worker's share of the SNAT ports
    assert set(metrics.QUEUE_METRICS) == \
        set(io_fields()) - {"punt_overflow"} | {"snat_ports_pool"}


def test_every_real_counter_has_a_metric():
    assert sorted(metrics.REAL_METRICS) == sorted(fields("pyfwd_real_stats"))


def test_ctl_stats_groups_every_engine_counter_once():
    groups = [*ctlstats.FLOW_COUNTERS, *ctlstats.CSUM_COUNTERS,
              *ctlstats.FAST_COUNTERS, *ctlstats.IO_COUNTERS,
              *ctlstats.TABLE_COUNTERS]
    assert sorted([*OWN_KEYS, *groups]) == sorted(fields("pyfwd_stats"))
    assert list(ctlstats.IO_COUNTERS) == io_fields()


def test_ctl_stats_prints_no_engine_counter_as_other():
    core = {name: 1000 + i for i, name in enumerate(fields("pyfwd_stats"))}
    core["verdict"] = dict.fromkeys(VERDICTS, 1)
    core["reason"] = dict.fromkeys(REASONS, 1)
    text = ctl.format_stats({"core": core})
    assert not re.search(r"^other ", text, re.M), text
    for name in fields("pyfwd_stats"):
        if name not in ("verdict", "reason", "bytes"):    # bytes: as a size
            assert re.search(rf"\b{core[name]}\b", text), name


def test_ctl_shows_every_real_counter():
    real = {name: 1000 + i
            for i, name in enumerate(fields("pyfwd_real_stats"))}
    vips = [{"name": "web", "vip": "10.0.0.100:80/tcp",
             "reals": [{"real": "10.0.0.11:80", "state": "online", **real}]}]
    shown = ctl.format_stats({"vips": vips})
    for name, n in real.items():
        assert re.search(rf"\b{n}\b", shown), name
    shown = ctl.format_show(vips)
    for name, n in real.items():
        if name != "bytes":                         # show prints a size
            assert re.search(rf"\b{n}\b", shown), name


def test_verdicts_and_reasons_are_the_headers():
    # the verdict metric's help names every verdict; every reason starts
    # with its verdict (drop_*: `ctl stats` lists those first, the reason
    # metric's help says what drop_* means)
    text = metrics.render({"core": {"verdict": dict.fromkeys(VERDICTS, 1),
                                    "reason": dict.fromkeys(REASONS, 1)}})
    families = {f.name: f for f in text_string_to_metric_families(text)}
    help_ = families["pyfwd_frames_by_verdict"].documentation
    for verdict in VERDICTS:
        assert re.search(rf"\b{verdict}\b", help_), verdict
    assert array_length("pyfwd_stats", "verdict") == len(VERDICTS)
    assert array_length("pyfwd_stats", "reason") == len(REASONS)
    for reason in REASONS:
        assert reason.split("_")[0] in VERDICTS, reason
