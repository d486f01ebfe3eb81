"""The figures of one `pyfwd bench` run and the three files made of them:
results.json (one object per row and metric), results.md (tables with the
ratios to the references, the DR : NAT headline and the targets, met or
missed) and results.png (matplotlib).

Pure: values in, text and files out; nothing here touches the machine.
"""

import json
import math
import statistics
from dataclasses import dataclass, field

from .rows import HTTP_MODES, HTTP_SIZES, PPS_REFS  # noqa: F401 (re-exported)
from .breakdown import http_lines, perf_lines, pps_lines
from .rows import HTTP_ROWS, http_row
from .text import num, ratio, spread, table

HTTP_METRICS = ("rps", "p50_ms", "p99_ms", "cpu_s_per_1k",
                "lb_pkts_per_req")

UNITS = {
    "pps": "packets/s",
    "rps": "requests/s",
    "p50_ms": "ms",
    "p99_ms": "ms",
    "cpu_s_per_1k": "CPU s / 1000 requests",
    "lb_pkts_per_req": "packets / request",
    "ns_per_pkt": "ns",
    "ns_per_pkt_finished": "ns",
    "ns_per_pkt_checked": "ns",
    "ns_per_pkt_completed": "ns",
    "build_ms": "ms",
    "bytes_per_flow": "bytes",
    "mib_per_1m_flows": "MiB",
}

MICRO_LABELS = {
    "ns_per_pkt": "ns per packet (batch of 64)",
    # csum-SIZE: DR frames of SIZE bytes, their TCP checksum ...
    "ns_per_pkt_finished": "ns per packet, a NIC's (never read)",
    "ns_per_pkt_checked": "ns per packet, a veth's finished (verified)",
    "ns_per_pkt_completed": "ns per packet, a veth's unfinished "
                            "(completed)",
    "build_ms": "ms to build (M=65537)",
    "bytes_per_flow": "bytes per flow",
    "mib_per_1m_flows": "MiB for 1M flows",
}

# Run-to-run noise on this machine kind (shared/FACTS.md): "within noise"
NOISE = 0.25


@dataclass
class Row:
    """One row and metric: every run's value (failed runs are not kept)."""
    name: str
    metric: str
    runs: list = field(default_factory=list)

    @property
    def unit(self) -> str:
        return UNITS.get(self.metric, "")

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def to_json(self) -> dict:
        return {"name": self.name, "metric": self.metric, "unit": self.unit,
                "median": self.median, "min": min(self.runs),
                "max": max(self.runs), "runs": list(self.runs)}


class Results:
    """What a run measured, keyed by (row name, metric), in the order
    first measured; plus the run's facts (``info``: command, machine,
    setup of each part) and the rows that failed, with why."""

    def __init__(self, info: dict = None):
        self.info = dict(info or {})
        self._rows = {}
        self.failures = []          # (row name, message)
        self.files = []             # the paths write() made, last time

    def add(self, name: str, metrics: dict) -> None:
        """Record one run of ``name``: ``{metric: value}``."""
        for metric, value in metrics.items():
            if value is None or not math.isfinite(value):
                continue
            row = self._rows.setdefault((name, metric), Row(name, metric))
            row.runs.append(float(value))

    def fail(self, name: str, message: str) -> None:
        self.failures.append((name, message))

    def rows(self) -> list:
        return list(self._rows.values())

    def get(self, name: str, metric: str):
        """The median of ``name``/``metric``, or None if not measured."""
        row = self._rows.get((name, metric))
        return row.median if row else None

    def best(self, name: str, metric: str):
        """The lowest run of ``name``/``metric``, or None."""
        row = self._rows.get((name, metric))
        return min(row.runs) if row else None

    def runs(self, name: str, metric: str) -> int:
        row = self._rows.get((name, metric))
        return len(row.runs) if row else 0

    def runs_of(self, name: str, metric: str) -> list:
        """Every run's value of ``name``/``metric`` ([] if not measured)."""
        row = self._rows.get((name, metric))
        return list(row.runs) if row else []

    def to_json(self) -> dict:
        return {"info": self.info,
                "results": [r.to_json() for r in self.rows()],
                "failures": [{"name": n, "error": m}
                             for n, m in self.failures]}

    @classmethod
    def from_json(cls, data: dict) -> "Results":
        res = cls(data.get("info"))
        for r in data.get("results", []):
            row = res._rows.setdefault((r["name"], r["metric"]),
                                       Row(r["name"], r["metric"]))
            row.runs.extend(r["runs"])
        res.failures = [(f["name"], f["error"])
                        for f in data.get("failures", [])]
        return res


def _spread(res: "Results", name: str, metric: str) -> str:
    return spread(res.runs_of(name, metric))


# --- what the run was for


@dataclass(frozen=True)
class Target:
    what: str
    measured: str
    met: object         # True, False, or None (not measured, or the
                        # load side kept it from being judged)


# (what, row, reference, at least this times the reference's packets/s)
PPS_TARGETS = (
    ("pyfwd DR (AF_XDP) >= 0.95x the minimal C AF_XDP forwarder",
     "dr-xdp", "xsk-minimal", 0.95),
    ("pyfwd NAT (AF_XDP) >= 0.85x the kernel's nftables NAT",
     "nat-xdp", "kernel-nat", 0.85),
    ("pyfwd DR fast path >= 0.8x the in-kernel XDP MAC swap",
     "dr-fastpath", "xdp-kernel", 0.8),
    ("pyfwd NAT fast path >= 1.5x the kernel's nftables NAT",
     "nat-fastpath", "kernel-nat", 1.5),
)
# (row, metric, what, unit): judged on the best run, <= 50
BEST_TARGETS = (
    ("core-dr", "ns_per_pkt", "core <= 50 ns per packet for a DR rewrite",
     "ns"),
    ("core-nat-hit", "ns_per_pkt",
     "core <= 50 ns per packet for a NAT hit", "ns"),
    ("maglev-1000", "build_ms", "Maglev table for 1000 real servers "
     "(M=65537) <= 50 ms", "ms"),
)
# (row template, reference template, words): balancer CPU per request at
# most the reference's (within NOISE), for each size
HTTP_TARGETS = (
    ("http-nat-fastpath-{}", "http-kernel-nat-{}",
     ", with the fast path, keep-alive"),
    ("http-nat-fastpath-close-{}", "http-kernel-nat-close-{}",
     ", with the fast path, one connection per request"),
    ("http-nat-fastpath-{}", "http-kernel-nat-wire-{}",
     ", with the fast path, keep-alive, the kernel on NIC-like veths"),
    ("http-nat-fastpath-close-{}", "http-kernel-nat-wire-close-{}",
     ", with the fast path, one connection per request, the kernel on "
     "NIC-like veths"),
    ("http-nat-{}", "http-kernel-nat-{}", ", AF_XDP only, keep-alive"),
    ("http-nat-close-{}", "http-kernel-nat-close-{}",
     ", AF_XDP only, one connection per request"),
)


def targets(res: Results) -> list:
    """The issue's targets against this run's medians."""
    out = []
    for what, name, ref, factor in PPS_TARGETS:
        a, b = res.get(name, "pps"), res.get(ref, "pps")
        if a is None or b is None:
            out.append(Target(what, "not measured", None))
            continue
        out.append(_pps_target(what, name, ref, factor, a, b,
                               res.get(name, "saturated") == 0,
                               res.get(ref, "saturated") == 0))
    # In-process figures are judged on the best run: a shared VM's noise
    # only ever adds time (this machine's own speed moves by 1.5x within
    # a minute), so the best is the closest to what the code costs.
    for name, metric, what, unit in BEST_TARGETS:
        v = res.best(name, metric)
        runs = res.runs(name, metric)
        out.append(Target(what, "not measured" if v is None else
                          f"{num(v)} {unit}" + (f" (best of {runs})"
                                                if runs > 1 else ""),
                          None if v is None else v <= 50))
    for row, ref, words in HTTP_TARGETS:
        for size in HTTP_SIZES:
            a = res.get(row.format(size), "cpu_s_per_1k")
            b = res.get(ref.format(size), "cpu_s_per_1k")
            if row != HTTP_TARGETS[0][0] and a is None and b is None:
                continue        # optional rows not run: no line
            what = (f"pyfwd NAT balancer CPU per request <= the kernel's "
                    f"nftables NAT (within {NOISE:.0%} noise), {size}"
                    + words)
            if a is None or b is None:
                out.append(Target(what, "not measured", None))
            else:
                out.append(Target(what, f"{a / b:.2f}x ({num(a)} / "
                                  f"{num(b)} CPU s per 1000 requests)",
                                  a <= (1 + NOISE) * b))
    return out


def _pps_target(what, name, ref, factor, a, b, row_kept, ref_kept):
    """A packet-rate target, judged only as far as the load side lets:
    a row that kept up with the generator could have done more (its
    ratio is a floor: met if that is enough, else undetermined); a
    reference that kept up makes the ratio a ceiling (missed if that
    falls short, else undetermined); both kept up: undetermined."""
    measured = f"{a / b:.2f}x ({num(a)} / {num(b)} pps)"
    meets = a >= factor * b
    if row_kept and ref_kept:
        return Target(what, measured + f"; {name} and {ref} both kept up "
                      "with the generator: the load side (CPU 0) was the "
                      "limit, the ratio says nothing of the target", None)
    if row_kept:
        return Target(what, measured + f"; {name} kept up with the "
                      "generator: the ratio is a floor",
                      True if meets else None)
    if ref_kept:
        return Target(what, measured + f"; {ref} kept up with the "
                      "generator, its figure is a floor: the ratio is a "
                      "ceiling", None if meets else False)
    return Target(what, measured, meets)


def headline(res: Results) -> list:
    """DR : NAT per response size: (size, rps ratio, NAT:DR balancer CPU
    per request, NAT:DR packets through the balancer per request)."""
    out = []
    for size in HTTP_SIZES:
        dr, nat = f"http-dr-{size}", f"http-nat-{size}"
        out.append((size, ratio(res.get(dr, "rps"), res.get(nat, "rps")),
                    ratio(res.get(nat, "cpu_s_per_1k"),
                           res.get(dr, "cpu_s_per_1k")),
                    ratio(res.get(nat, "lb_pkts_per_req"),
                           res.get(dr, "lb_pkts_per_req"))))
    return out


def _count(value) -> str:
    return "—" if value is None else f"{value:g}"


def _http_ref(name: str, size: str) -> str:
    """The row an HTTP row's CPU per request is compared with."""
    if name in HTTP_ROWS:
        return http_row(name).ref
    return f"http-kernel-nat-{size}"


def markdown(res: Results) -> str:
    info = res.info
    lines = ["# pyfwd bench", ""]
    if info.get("command"):
        lines += [f"`{info['command']}` — {info.get('date', '')}", ""]
    if info.get("machine"):
        lines += [f"Machine: {info['machine']}", ""]
    if info.get("interrupted"):
        lines += ["**Interrupted: partial results.**", ""]
    lines += [f"Medians of {info.get('repeats', '?')} run(s); "
              "min–max in brackets where more than one (the in-process "
              "targets are judged on the best run). Compare within a "
              "run: absolute figures on a shared 2-core machine move by up "
              f"to {NOISE:.0%} between runs.", ""]

    head = headline(res)
    if any(h[1] != "—" for h in head):
        lines += ["## DR : NAT (HTTP through the VIP)", "",
                  *table(["response", "requests/s DR : NAT",
                           "balancer CPU per request NAT : DR",
                           "packets through the balancer NAT : DR"], head),
                  "",
                  "DR sends only the client's packets through the balancer "
                  "(the real servers answer the client directly); NAT "
                  "carries both directions.", ""]

    tg = targets(res)
    lines += ["## Targets", "",
              *table(["target", "measured", "result"],
                      [(t.what, t.measured,
                        ("not measured" if t.measured == "not measured"
                         else "undetermined") if t.met is None
                        else "met" if t.met else "**MISSED**")
                       for t in tg]), ""]
    missed = [t for t in tg if t.met is False]
    if missed:
        lines += [f"{len(missed)} target(s) missed on this run; see the "
                  "docs/bench.md for why.", ""]

    pps_rows = [r for r in res.rows() if r.metric == "pps"]
    if pps_rows:
        refs = [ref for ref in PPS_REFS if res.get(ref, "pps")]
        kept = [r.name for r in pps_rows
                if res.get(r.name, "saturated") == 0]
        lines += ["## Packet rate (64-byte UDP, delivered)", "",
                  *table(["row", "packets/s (best)"]
                         + [f"x {r}" for r in refs]
                         + ["packets/s at full speed", "sent at best",
                            "loads tried"],
                         [(r.name + (" (kept up)" if r.name in kept
                                     else ""),
                           _spread(res, r.name, "pps"),
                           *(ratio(r.median, res.get(ref, "pps"))
                             for ref in refs),
                           _spread(res, r.name, "full_pps"),
                           num(res.get(r.name, "offered_pps")),
                           _count(res.get(r.name, "rungs")))
                          for r in pps_rows]), "",
                  "Best: the highest delivered rate over the ladder of "
                  "offered loads every row climbs down (full speed, then "
                  "fixed fractions of the generator's ceiling, to the "
                  "first it keeps up with); full speed: the first window. "
                  "A forwarder overloaded at full speed livelocks and "
                  "delivers far less than just below its limit."
                  + (" \"Kept up\": the row delivered all the generator "
                     "sent at full speed (in most runs), so the load side "
                     "(CPU 0: the generator and the sink) was its limit, "
                     "not the forwarder, and its figure is a floor."
                     if kept else ""), "",
                  *pps_lines(res, [r.name for r in pps_rows])]

    names = []
    for r in res.rows():
        if r.name.startswith("http-") and r.name not in names:
            names.append(r.name)
    if names:
        lines += ["## HTTP (wrk through the VIP to nginx)", "",
                  "wrk's connections stay open (keep-alive) except in the "
                  "-close- rows (Connection: close: one connection, one "
                  "flow, per request).", ""]
        modes = [m for m in HTTP_MODES
                 if any(f"http-{m}-{s}" in names for s in HTTP_SIZES)]
        lines += [*table(["mode"] + [f"req/s {s}" for s in HTTP_SIZES]
                          + [f"CPU s/1k req {s}" for s in HTTP_SIZES],
                          [(m, *(num(res.get(f"http-{m}-{s}", "rps"))
                                 for s in HTTP_SIZES),
                            *(num(res.get(f"http-{m}-{s}", "cpu_s_per_1k"))
                              for s in HTTP_SIZES)) for m in modes]), ""]
        for size in HTTP_SIZES:
            sized = [n for n in names if n.endswith(f"-{size}")]
            if not sized:
                continue
            lines += [f"### {size} responses", "",
                      *table(["row", "requests/s", "p50 ms", "p99 ms",
                               "balancer CPU s / 1000 req",
                               "x kernel-nat CPU", "balancer packets / req"],
                              [(n, _spread(res, n, "rps"),
                                num(res.get(n, "p50_ms")),
                                num(res.get(n, "p99_ms")),
                                _spread(res, n, "cpu_s_per_1k"),
                                ratio(res.get(n, "cpu_s_per_1k"),
                                      res.get(_http_ref(n, size),
                                              "cpu_s_per_1k")),
                                num(res.get(n, "lb_pkts_per_req")))
                               for n in sized]), ""]
        lines += http_lines(res, names)
    lines += perf_lines(res)

    micro = [r for r in res.rows() if r.metric in MICRO_LABELS]
    if micro:
        lines += ["## Microbenchmarks (in process)", "",
                  *table(["row", "metric", "value"],
                          [(r.name, MICRO_LABELS.get(r.metric, r.metric),
                            _spread(res, r.name, r.metric))
                           for r in micro]), ""]

    if res.failures:
        lines += ["## Rows that failed", "",
                  *[f"- {n}: {m}" for n, m in res.failures], ""]

    notes = list(info.get("notes") or []) + _pps_notes(
        info.get("pps_setup") or {})
    if notes:
        lines += ["## How it was measured", "", *[f"- {n}" for n in notes],
                  ""]
    return "\n".join(lines)


def _words(d) -> str:
    return ", ".join(f"{k} {v}" for k, v in (d or {}).items())


def _pps_notes(setup: dict) -> list:
    """The packet-rate part's set-up in words: the generator, the modes,
    the rings and busy polling (results.json has all of it)."""
    gen = setup.get("generator")
    if not gen:
        return []
    out = [f"Generator: {gen.get('kind')} with "
           f"{gen.get('send')}, burst {gen.get('burst')}"
           f"{', PACKET_QDISC_BYPASS' if gen.get('qdisc_bypass') else ''}, "
           f"{gen.get('flows')} flows, on CPU {gen.get('cpu')}; "
           f"{gen.get('why', '')}".rstrip("; ")]
    rows = setup.get("rows", {})
    for name in ("xsk-minimal", "dr-xdp"):
        row = rows.get(name)
        if not row:
            continue
        bp = row.get("busy_poll", {})
        out.append(f"{name}: XDP {row.get('xdp')}, AF_XDP "
                   f"{row.get('af_xdp')}, {_words(row.get('rings'))}, "
                   f"busy polling {bp.get('so_busy_poll_us')} µs budget "
                   f"{bp.get('so_busy_poll_budget')}, "
                   f"{_words(setup.get('busy_poll_iface'))}; "
                   f"{row.get('steering')}")
    if setup.get("sink"):
        out.append(f"Sink: {setup['sink']}")
    return out


def plot(res: Results, path: str) -> None:
    """results.png: packet rates, HTTP requests/s and balancer CPU per
    request by mode and size.  Raises ImportError without matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pps = [r for r in res.rows() if r.metric == "pps"]
    http = [m for m in HTTP_MODES
            if any(res.get(f"http-{m}-{s}", "rps") for s in HTTP_SIZES)]
    panels = (1 if pps else 0) + (2 if http else 0)
    fig, axes = plt.subplots(1, max(panels, 1),
                             figsize=(5.5 * max(panels, 1), 4.2),
                             squeeze=False)
    axes = list(axes[0])
    if pps:
        ax = axes.pop(0)
        ax.barh([r.name for r in pps][::-1],
                [r.median / 1e6 for r in pps][::-1],
                xerr=[[(r.median - min(r.runs)) / 1e6 for r in pps][::-1],
                      [(max(r.runs) - r.median) / 1e6 for r in pps][::-1]],
                color=["#888" if r.name in PPS_REFS + ("generator",)
                       else "#2a6" for r in pps][::-1])
        ax.set_xlabel("Mpps delivered (64 B UDP)")
        ax.set_title("Packet rate (grey: references)")
    for metric, label, log in (("rps", "requests/s", True),
                               ("cpu_s_per_1k",
                                "balancer CPU s / 1000 requests", True)):
        if not http:
            break
        ax = axes.pop(0)
        width = 0.8 / len(HTTP_SIZES)
        for i, size in enumerate(HTTP_SIZES):
            vals = [res.get(f"http-{m}-{size}", metric) or 0 for m in http]
            ax.bar([x + i * width for x in range(len(http))], vals, width,
                   label=size)
        ax.set_xticks([x + width for x in range(len(http))], http,
                      rotation=30, ha="right")
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.set_title(f"HTTP: {label}")
        if not axes:            # the last panel: the legend beside it
            ax.legend(title="response", loc="upper left",
                      bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(res.info.get("title", "pyfwd bench"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Without matplotlib the figures are all in results.json and results.md
NO_PNG = ("results.png skipped: matplotlib is not installed; pip install "
          "matplotlib (or 'pyfwd[bench]'), then draw it from results.json "
          "with: pyfwd bench --replot --out {out}")


def write(res: Results, out_dir: str) -> list:
    """results.json, results.md and, when matplotlib is installed,
    results.png in ``out_dir``; the paths written (also kept in
    ``res.files``)."""
    import os
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"results.{ext}")
             for ext in ("json", "md", "png")]
    with open(paths[0], "w") as f:
        json.dump(res.to_json(), f, indent=1)
        f.write("\n")
    with open(paths[1], "w") as f:
        f.write(markdown(res))
    try:
        plot(res, paths[2])
    except ImportError:
        paths.pop()
    res.files = paths
    return paths


def replot(out_dir: str) -> str:
    """Draw ``out_dir``/results.png again from its results.json; the
    path.  Raises OSError or ValueError for a missing or unreadable file,
    ImportError without matplotlib."""
    import os
    with open(os.path.join(out_dir, "results.json")) as f:
        res = Results.from_json(json.load(f))
    path = os.path.join(out_dir, "results.png")
    plot(res, path)
    return path
