"""The soak run's report: ``build()`` gathers the figures and verdicts into
one JSON-ready dict, ``write()`` writes report.json, report.md and
plot.svg (requests/s, errors, flows, RSS and fds over time, the faults
marked) into a directory.  The plot is a plain SVG drawn here: no plotting
library.  Times in the report are seconds from the start of the load.
"""

import collections
import json
import os
from html import escape

__all__ = ["build", "series", "markdown", "svg", "write"]


def _rel(t, t0):
    return round(t - t0, 2)


def series(t0, results, failures, procs, shows):
    """Per second from the load's start: {"t", "ok", "errors",
    "unexcused", "flows", "rss_mib", "fds"} (None where not sampled)."""
    ok = collections.Counter()
    for sec, _stream, _node, n in results["ok"]:
        ok[int(sec - t0)] += n
    err, bad = collections.Counter(), collections.Counter()
    for f in failures:
        err[int(f["t"] - t0)] += 1
        if f["excused"] is None:
            bad[int(f["t"] - t0)] += 1
    flows = {int(s["t"] - t0): sum(s["flows"].values()) for s in shows}
    mem = {int(p["t"] - t0): p for p in procs}
    keys = set(ok) | set(err) | set(flows) | set(mem)
    out = []
    for t in range(min(keys, default=0), max(keys, default=-1) + 1):
        p = mem.get(t)
        out.append({"t": t, "ok": ok.get(t, 0), "errors": err.get(t, 0),
                    "unexcused": bad.get(t, 0), "flows": flows.get(t),
                    "rss_mib": round(p["rss_kb"] / 1024, 1) if p else None,
                    "fds": p["fds"] if p else None})
    return out


def build(opts, t0, load_end, results, failures, counts, windows, faults,
          procs, shows, flat, flows):
    """The report (see the module); "ok" is the run's verdict."""
    total_ok = sum(n for *_, n in results["ok"])
    per_stream = collections.Counter()
    for _sec, stream, _node, n in results["ok"]:
        per_stream[stream] += n
    failed = collections.Counter(f["stream"] for f in failures)
    restart = next((f for f in faults if f["action"] == "restart"), {})
    haproxy = next((f for f in faults if f["action"] == "haproxy"), {})
    verdicts = {"no_unexcused_failure": counts["unexcused"] == 0,
                "flat": flat["ok"], "flows_back": flows["ok"],
                "faults_applied": all(f["ok"] for f in faults)}
    rel = dict(t0=t0)
    return {
        "ok": all(verdicts.values()),
        "verdicts": verdicts,
        "seconds": opts.seconds, "rate": opts.rate,
        "load_s": round(load_end - t0, 1),
        "requests": {"ok": total_ok, "failed": len(failures),
                     "per_stream": {s: {"ok": per_stream[s],
                                        "failed": failed[s]}
                                    for s in sorted(set(per_stream)
                                                    | set(failed))}},
        "failures": counts,
        "unexcused": [dict(f, t=_rel(f["t"], t0),
                           t_end=_rel(f["t_end"], t0))
                      for f in failures if f["excused"] is None][:50],
        "restart_window_s": restart.get("restart_s"),
        "haproxy_back_s": haproxy.get("recover_s"),
        "flat": flat, "flows": flows,
        "faults": [dict(f, t=_rel(f["t"], t0), t_done=_rel(f["t_done"], t0),
                        **{k: _rel(f[k], t0) for k in ("ready", "recovered")
                           if f.get(k)})
                   for f in faults],
        "windows": [dict(w.to_dict(), start=_rel(w.start, **rel),
                         end=_rel(w.end, **rel)) for w in windows],
        "series": series(t0, results, failures, procs, shows),
    }


def _rss_span(flat):
    out = []
    for p in flat["processes"]:
        if p["judged"]:
            out.append(f"pid {p['pid']}: RSS {p['rss_first_kb'] / 1024:.1f}"
                       f" -> {p['rss_last_kb'] / 1024:.1f} MiB (bound "
                       f"{p['rss_bound_kb'] / 1024:.1f}), fds "
                       f"{p['fds_first']:g} -> {p['fds_last']:g} (bound "
                       f"{p['fds_bound']:g}): {p['note']}")
        else:
            out.append(f"pid {p['pid']}: {p['note']}")
    return out


def markdown(r):
    """The report as Markdown: verdicts, figures, the unexcused failures."""
    yes = {True: "pass", False: "FAIL"}
    lines = [f"# pyfwd soak: {'PASS' if r['ok'] else 'FAIL'}", "",
             f"{r['load_s']:g} s of load at about {r['rate']} requests/s; "
             f"{len(r['faults'])} faults.", "",
             "| verdict | result |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {yes[v]} |"
              for k, v in r["verdicts"].items()]
    c = r["failures"]
    lines += ["", "## Requests", "",
              f"{r['requests']['ok']} answered, {c['failures']} failed: "
              f"{c['excused']} excused, {c['unexcused']} unexcused.", "",
              "| stream | ok | failed |", "|---|---|---|"]
    lines += [f"| {s} | {v['ok']} | {v['failed']} |"
              for s, v in r["requests"]["per_stream"].items()]
    lines += ["", "Failures by reason:", ""]
    lines += [f"- {why}: {n}" for why, n in sorted(c["by_reason"].items())]
    lines += ["", f"Engine restart (SIGKILL to ready): "
              f"{r['restart_window_s']} s; HAProxy back after SIGKILL: "
              f"{r['haproxy_back_s']} s.", "", "## Engine memory and "
              "descriptors", "", f"Rule: {r['flat']['rule']}.", ""]
    lines += [f"- {ln}" for ln in _rss_span(r["flat"])]
    fl = r["flows"]
    lines += ["", "## Flows", "",
              f"Baseline {fl['baseline']}, allowance {fl['allowance']}; "
              f"back after {fl['back_after_s']} s; last {fl['last']}."]
    if r["unexcused"]:
        lines += ["", "## Unexcused failures", ""]
        lines += [f"- t={f['t']} s {f['stream']} ({f['vip']}) real "
                  f"{f['real']}: {f['error']}" for f in r["unexcused"]]
    lines += ["", "![requests, errors, flows, RSS](plot.svg)", ""]
    return "\n".join(lines)


_W, _H, _PAD = 900, 150, 50


def _panel(y0, rows, keys, colors, title, faults):
    pts = [(row["t"], row[k]) for row in rows for k in keys
           if row[k] is not None]
    t_max = max([t for t, _ in pts] + [1])
    v_max = max([v for _, v in pts] + [1])

    def xy(t, v):
        return (_PAD + (_W - 2 * _PAD) * t / t_max,
                y0 + _H - _H * v / v_max)
    out = [f'<text x="{_PAD}" y="{y0 - 6}" font-size="12">'
           f'{escape(title)} (max {v_max:g})</text>',
           f'<rect x="{_PAD}" y="{y0}" width="{_W - 2 * _PAD}" '
           f'height="{_H}" fill="none" stroke="#999"/>']
    for f in faults:
        if f["action"] != "reload":
            x, _ = xy(min(f["t"], t_max), 0)
            out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" '
                       f'y2="{y0 + _H}" stroke="#ccc"/>')
    for k, color in zip(keys, colors):
        line = " ".join("%.1f,%.1f" % xy(row["t"], row[k]) for row in rows
                        if row[k] is not None)
        out.append(f'<polyline fill="none" stroke="{color}" '
                   f'stroke-width="1.2" points="{line}"/>')
    return out


def svg(r):
    """Four panels over time: answered requests/s, errors/s (all and
    unexcused), live flows, engine RSS (MiB) and fds; a grey line at each
    fault (reloads aside)."""
    rows, faults = r["series"], r["faults"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" '
             f'height="{4 * (_H + 40) + 30}" font-family="sans-serif">',
             f'<rect width="100%" height="100%" fill="white"/>']
    panels = [(["ok"], ["#1f77b4"], "requests/s answered"),
              (["errors", "unexcused"], ["#ff7f0e", "#d62728"],
               "errors/s (orange: all, red: unexcused)"),
              (["flows"], ["#2ca02c"], "live flows (ctl show)"),
              (["rss_mib", "fds"], ["#9467bd", "#8c564b"],
               "engine RSS MiB (purple), open fds (brown)")]
    for i, (keys, colors, title) in enumerate(panels):
        parts += _panel(30 + i * (_H + 40), rows, keys, colors, title,
                        faults)
    parts.append(f'<text x="{_PAD}" y="{4 * (_H + 40) + 20}" '
                 f'font-size="11">seconds from the start of the load; grey '
                 f'lines: faults</text></svg>')
    return "\n".join(parts)


def write(report, directory):
    """report.json, report.md and plot.svg in directory."""
    with open(os.path.join(directory, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(directory, "report.md"), "w") as f:
        f.write(markdown(report))
    with open(os.path.join(directory, "plot.svg"), "w") as f:
        f.write(svg(report))
