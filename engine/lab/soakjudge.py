"""The soak run's verdicts, from values alone (no lab, no root): which
request failures are excused, whether the engine's memory and open files
stayed flat, whether the flows came back to their baseline.

**Failures.**  A failure is a request (``t`` to ``t_end``) on a connection
opened at ``conn_t`` to a ``real`` (the node that last answered on it; None
when none did, e.g. a refused connection or a DICOM association).  A
``Window`` is a time when failures are expected, and why: a real halted,
removed or down by its health check, the engine restarting, HAProxy
killed.  It applies to one VIP or all (``vip`` None), one real or all
(``real`` None).  A failure is excused by a window of its VIP when the
request overlaps the window, or, for a window that ``cuts`` connections
(a halt, a removal, the engine's restart in NAT/SNAT/L7), when its
connection was open during the window and it failed after the window
began.  A failure whose real is unknown is matched by a window on any real
of its VIP, and says so ("real unknown").  Every other failure is
unexcused: the run fails.

**Flat.**  The engine's RSS and open file descriptors, sampled every
second, per process (a restart makes a new one).  The process that lived
longest is judged (the others are reported): after a warm-up
(``WARMUP_S`` seconds, or the first ``WARMUP_SHARE`` of its samples if
that is longer), the samples are cut in thirds: flat means the last
third's mean exceeds the first third's by at most ``RSS_GROWTH`` of it or
``RSS_SLACK_KB``, whichever is larger, and for descriptors by at most
``FD_SLACK``.  It needs ``MIN_SAMPLES`` samples after its warm-up.
Measured, the engine's RSS climbs for its first two minutes or so under
load (the flow table's pages are touched as flows land on them) and is
flat after: a share of the life, not a fixed time, is the warm-up.

**Flows.**  The live flows per VIP (``ctl show``: the data plane's counts,
HAProxy's sessions for an L7 VIP) before the load are the baseline; after
the load they must come back to at most baseline plus an allowance (a UDP
VIP keeps one flow per client socket for the UDP timeout, 300 s) within
the settle time.
"""

from dataclasses import asdict, dataclass
from typing import Optional

__all__ = ["Window", "WARMUP_S", "WARMUP_SHARE", "RSS_GROWTH",
           "RSS_SLACK_KB", "FD_SLACK", "MIN_SAMPLES", "judge_failures",
           "judge_flat", "judge_flows"]

WARMUP_S = 10.0
WARMUP_SHARE = 1 / 3
RSS_GROWTH = 0.10
RSS_SLACK_KB = 8192
FD_SLACK = 4
MIN_SAMPLES = 9


@dataclass(frozen=True)
class Window:
    """A time when failures are expected (see the module)."""

    start: float
    end: float
    reason: str
    vip: Optional[str] = None       # None: every VIP
    real: Optional[str] = None      # None: every real of the VIP
    cuts: bool = False              # connections open during it may fail

    def to_dict(self):
        return asdict(self)


def _excuse(f, w):
    """The reason w excuses failure f, or None."""
    if w.vip is not None and w.vip != f["vip"]:
        return None
    unknown = f.get("real") is None
    if w.real is not None and not unknown and w.real != f["real"]:
        return None
    overlaps = f["t"] <= w.end and f["t_end"] >= w.start
    conn_t = f.get("conn_t")
    carried = (w.cuts and conn_t is not None and conn_t <= w.end
               and f["t_end"] >= w.start)
    if not (overlaps or carried):
        return None
    why = w.reason + ("" if overlaps else " (a connection opened before "
                      "it ended)")
    if unknown and w.real is not None:
        why = f"real unknown: {why}"
    return why


def judge_failures(failures, windows):
    """Each failure with ``excused``: the reason of the first window that
    excuses it (windows on every real first, then one real's), or None.
    Returns (attributed failures, {"failures", "excused", "unexcused",
    "by_reason": {reason: n}})."""
    ordered = sorted(windows, key=lambda w: w.real is not None)
    out, by_reason = [], {}
    for f in failures:
        why = next((r for r in (_excuse(f, w) for w in ordered) if r),
                   None)
        out.append(dict(f, excused=why))
        key = why or "unexcused"
        by_reason[key] = by_reason.get(key, 0) + 1
    unexcused = sum(1 for f in out if f["excused"] is None)
    return out, {"failures": len(out), "excused": len(out) - unexcused,
                 "unexcused": unexcused, "by_reason": by_reason}


def _mean(xs):
    return sum(xs) / len(xs)


def judge_flat(samples):
    """Samples [{"t", "pid", "rss_kb", "fds"}] -> {"ok", "processes":
    [{pid, samples, judged, rss_first_kb, rss_last_kb, rss_bound_kb,
    fds_first, fds_last, fds_bound, ok, note}]} (see the module)."""
    by_pid = {}
    for s in samples:
        by_pid.setdefault(s["pid"], []).append(s)
    procs = []
    life = {pid: max(s["t"] for s in ss) - min(s["t"] for s in ss)
            for pid, ss in by_pid.items()}
    longest = max(life, key=life.get, default=None)
    for pid, ss in by_pid.items():
        ss.sort(key=lambda s: s["t"])
        warm = max(WARMUP_S, life[pid] * WARMUP_SHARE)
        rest = [s for s in ss if s["t"] >= ss[0]["t"] + warm]
        p = {"pid": pid, "samples": len(ss), "after_warmup": len(rest),
             "life_s": round(life[pid], 1),
             "judged": pid == longest and len(rest) >= MIN_SAMPLES}
        if not p["judged"]:
            p.update(ok=True, note=(
                f"{len(rest)} samples after the {warm:.0f} s warm-up: "
                f"fewer than {MIN_SAMPLES}" if pid == longest else
                f"lived {life[pid]:.0f} s, not the longest") +
                ": not judged")
            procs.append(p)
            continue
        third = len(rest) // 3
        first, last = rest[:third], rest[-third:]
        rss0, rss1 = (_mean([s["rss_kb"] for s in x]) for x in (first, last))
        fd0, fd1 = (_mean([s["fds"] for s in x]) for x in (first, last))
        p.update(rss_first_kb=round(rss0), rss_last_kb=round(rss1),
                 rss_bound_kb=round(rss0 + max(rss0 * RSS_GROWTH,
                                               RSS_SLACK_KB)),
                 fds_first=round(fd0, 1), fds_last=round(fd1, 1),
                 fds_bound=round(fd0 + FD_SLACK, 1))
        p["ok"] = rss1 <= p["rss_bound_kb"] and fd1 <= p["fds_bound"]
        p["note"] = "flat" if p["ok"] else "grew"
        procs.append(p)
    judged = [p for p in procs if p["judged"]]
    return {"ok": bool(judged) and all(p["ok"] for p in judged),
            "processes": procs,
            "rule": f"the longest-lived process, after max({WARMUP_S:g} s, "
                    f"{WARMUP_SHARE:.0%} of its life) of warm-up: last "
                    f"third's mean <= first third's + max({RSS_GROWTH:.0%}"
                    f", {RSS_SLACK_KB} KiB) RSS, +{FD_SLACK} fds; at least "
                    f"{MIN_SAMPLES} samples"}


def judge_flows(samples, baseline, load_end, settle, allowance=None):
    """Flow samples [{"t", "flows": {vip: n}}] after ``load_end``: the
    first at which every VIP is at most baseline[vip] + allowance[vip],
    within ``settle`` seconds.  Returns {"ok", "baseline", "allowance",
    "back_after_s" (None: never), "last": the last sample's flows}."""
    allowance = allowance or {}
    after = sorted((s for s in samples if s["t"] >= load_end),
                   key=lambda s: s["t"])
    back = None
    for s in after:
        if s["t"] > load_end + settle:
            break
        if all(n <= baseline.get(v, 0) + allowance.get(v, 0)
               for v, n in s["flows"].items()):
            back = round(s["t"] - load_end, 1)
            break
    return {"ok": back is not None, "baseline": baseline,
            "allowance": allowance, "back_after_s": back,
            "last": after[-1]["flows"] if after else None}
