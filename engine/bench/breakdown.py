"""results.md's tables of where each row's time went: CPU per kind of
thread, the AF_XDP sockets' drops and ring events, busy polling, from the
metrics observe.summary() recorded (medians over the runs).  Pure: a
Results in, Markdown lines out.
"""

from .text import num, share, table

__all__ = ["pps_lines", "http_lines", "perf_lines", "THREAD_KINDS"]

# observe.KINDS in the column order, with their headers
THREAD_KINDS = (("napi", "NAPI"), ("loop", "loops"), ("python", "Python"),
                ("ref", "reference"), ("ksoftirqd", "ksoftirqd"))
_DROPS = ("rx_dropped", "rx_ring_full", "rx_invalid_descs")


def _get(res, name, metric, prefix=""):
    return res.get(name, prefix + metric)


def _xsk(res, name, prefix=""):
    """(frames dropped at the sockets per second, fill ring found empty
    per second, TX ring found empty per second), or dashes when the row
    has no AF_XDP socket."""
    drops = [_get(res, name, f"xsk_{f}_ps", prefix) for f in _DROPS]
    if all(d is None for d in drops):
        return ("—", "—", "—")
    return (num(sum(d or 0 for d in drops)),
            num(_get(res, name, "xsk_rx_fill_ring_empty_descs_ps", prefix)),
            num(_get(res, name, "xsk_tx_ring_empty_descs_ps", prefix)))


def _busy(res, name, prefix=""):
    on = _get(res, name, "busy_poll", prefix)
    if on is None or _get(res, name, "xsk_rx_dropped_ps", prefix) is None:
        return "—"
    part = _get(res, name, "busy_poll_share", prefix)
    return ("yes" if on >= 0.5 else "no") + (
        f" ({share(part)})" if part is not None else "")


def _threads(res, name, prefix=""):
    return tuple(share(_get(res, name, f"cpu_{k}", prefix))
                 for k, _ in THREAD_KINDS)


def _other(busy, res, name, prefix=""):
    """CPU 1's busy share that neither softirq nor a watched thread
    accounts for: other load on the balancer's core (ksoftirqd left out:
    its time is softirq already)."""
    if busy is None:
        return "—"
    soft = res.get(name, prefix + "cpu1_softirq") or 0
    mine = sum(res.get(name, f"{prefix}cpu_{k}") or 0
               for k, _ in THREAD_KINDS if k != "ksoftirqd")
    return share(max(0.0, busy - soft - mine))


def pps_lines(res, names: list) -> list:
    """The packet-rate rows' table: for each row its best window and, when
    full speed did not keep up, its full-speed window."""
    rows = []
    for n in names:
        windows = [("best", "", "pps", "offered_pps")]
        if res.get(n, "saturated"):
            windows.append(("full speed", "full_", "full_pps",
                            "full_sent_pps"))
        for label, pre, delivered, offered in windows:
            rows.append((n, label, num(res.get(n, offered)),
                         num(res.get(n, delivered)),
                         share(res.get(n, pre + "cpu1_busy")),
                         share(res.get(n, pre + "cpu1_softirq")),
                         *_threads(res, n, pre),
                         _other(res.get(n, pre + "cpu1_busy"), res, n, pre),
                         *_xsk(res, n, pre), _busy(res, n, pre)))
    if not rows:
        return []
    return ["### Where the forwarder's time went", "",
            *table(["row", "window", "sent pps", "delivered pps",
                    "CPU 1 busy", "softirq",
                    *(h for _, h in THREAD_KINDS), "other",
                    "XSK drops/s", "fill empty/s", "TX empty/s",
                    "busy poll"], rows), "",
            "Shares of the window (medians over the runs) of CPU 1's busy "
            "time, of its softirq time, and of each kind of thread: the "
            "NAPI kthreads of the forwarder's interfaces, the engine's C "
            "loop threads (pyfwd-xsk-qN) and its Python threads, a "
            "reference's own threads, CPU 1's ksoftirqd; other: CPU 1's "
            "busy time none of these account for (other load on the "
            "machine: the figures of that row are suspect). XSK: the "
            "kernel's "
            "XDP_STATISTICS of the forwarder's AF_XDP sockets (drops = "
            "rx_dropped + rx_ring_full + rx_invalid_descs). Busy poll: "
            "engaged or not (SO_BUSY_POLL set, a NAPI id, BusyPollRxPackets "
            "grew), and the part of the received frames it polled.", ""]


def http_lines(res, names: list) -> list:
    """The HTTP rows' table: the same, over the wrk run."""
    rows = []
    for n in names:
        if res.get(n, "rps") is None:
            continue
        busy = None
        if res.get(n, "cpu_s_per_1k") is not None:
            busy = res.get(n, "cpu_s_per_1k") * res.get(n, "rps") / 1000
        rows.append((n, num(res.get(n, "rps")), share(busy),
                     share(res.get(n, "cpu1_softirq")),
                     *_threads(res, n), _other(busy, res, n),
                     *_xsk(res, n), _busy(res, n)))
    if not rows:
        return []
    return ["### Where the balancer's time went", "",
            *table(["row", "requests/s", "CPU 1 busy", "softirq",
                    *(h for _, h in THREAD_KINDS), "other",
                    "XSK drops/s", "fill empty/s", "TX empty/s",
                    "busy poll"], rows), "",
            "As for the packet rates, over the wrk run. pyfwd's rows run "
            "in its wake-up mode (busy polling off) but for nat-busy, "
            "nat-adaptive and nat-fastpath (`--busy-poll 20` with "
            "`--poll busy`, `adaptive`, `adaptive`). \"other\": CPU 1's "
            "time that none of these took (other load on the machine).",
            ""]


def _perf_windows(res):
    """(row, perf detail) of the first window of each row that perf
    sampled: a packet-rate row's best window (else its full-speed one),
    an HTTP row's wrk run."""
    seen = {}
    for run in (res.info.get("pps_setup") or {}).get("runs", []):
        best = run.get("best")
        window = best if isinstance(best, dict) else run.get("full") or {}
        if "perf" in window:
            seen.setdefault(run["row"], window["perf"])
    for run in (res.info.get("http_setup") or {}).get("runs", []):
        perf = (run.get("observed") or {}).get("perf")
        if perf and run.get("row"):
            seen.setdefault(run["row"], perf)
    return list(seen.items())


def perf_lines(res, top: int = 6) -> list:
    """results.md's section on where the forwarding CPU's time went by
    function (`pyfwd bench --perf`), or nothing if perf did not run."""
    rows = []
    for row, perf in _perf_windows(res):
        if "error" in perf:
            rows.append((row, f"perf: {perf['error']}"))
            continue
        rows.append((row, "; ".join(
            f"{share(t['share'])} {t['sym']} ({t['comm']})"
            for t in perf["top"][:top])))
    if not rows:
        return []
    return ["### Where CPU 1's time went, by function (perf)", "",
            *table(["row", "the largest shares of CPU 1's samples "
                    "(function, thread)"], rows), "",
            "perf record -C 1 through the row's first window (a "
            "packet-rate row's best one); idle shows as the swapper "
            "thread's idle functions. `pyfwd bench --perf`.", ""]
