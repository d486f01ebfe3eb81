"""What `pyfwd ctl stats` prints: the data plane's counters, per group,
reason, queue, VIP and real server, and the kernel's socket counters.

    format_stats(request(path, "stats"))
"""

from .bgp.text import status_rows as bgp_status_rows
from .text import (duration, exact, is_number, scalar, size, table,
                   vip_label)


def punt_line(p):
    """`ctl stats`' punt row: frames, rate-limited (source/total), evicted."""
    lim = {k: p.get(k) or {} for k in ("arp", "ndp")}
    evicted = [p.get("arp_conflicts_evicted"), p.get("ndp_conflicts_evicted"),
               *(v.get("sources_evicted") for v in lim.values())]
    return "  ".join([f"frames {exact(p.get('frames'))}"] + [
        f"{k} limited {exact(v.get('limited_source'))}/"
        f"{exact(v.get('limited_total'))} (source/total)"
        for k, v in lim.items() if v] + [
        f"evicted {sum(n for n in evicted if is_number(n))}"])


def fastpath_text(state, why=""):
    """The XDP fast path's state as `ctl status` and `ctl stats` say it:
    "on", "off", or "REFUSED (off): why" (XskInfo.fastpath, _why)."""
    if state == "refused":
        return f"REFUSED (off): {why}"
    return state or "off"


# The groups of struct pyfwd_stats's counters in `ctl stats` (each counter
# in one; tests/unit/test_counters.py pins them to the header).
FLOW_COUNTERS = ("flows_new", "flow_hits", "flows_rescheduled",
                 "flows_evicted", "flows_expired", "snat_ports_used",
                 "flows_half_open", "flows_bypassed", "snat_ports_pool")
CSUM_COUNTERS = ("csum_completed", "csum_bad")
FAST_COUNTERS = ("fast_frames", "fast_bytes", "fast_stale", "fast_installed",
                 "fast_removed", "fast_install_failed")
IO_COUNTERS = ("rx", "tx", "tx_ring_full", "punt_overflow", "wakeups",
               "polls", "handoff_out", "handoff_in", "tun_gso_cut")
TABLE_COUNTERS = ("vip_count", "vip_generation")
_SHOWN_CORE = {"frames", "bytes", "verdict", "reason", *FLOW_COUNTERS,
               *CSUM_COUNTERS, *FAST_COUNTERS, *IO_COUNTERS,
               *TABLE_COUNTERS}


def format_stats(result):
    """The stats command: totals, verdicts, the non-zero reasons, flows,
    I/O, queues, ARP and per VIP and real server traffic; exact numbers."""
    r = result or {}
    core = r.get("core") or {}
    out = []
    rows = []
    if "pid" in r or "iface" in r:
        rows.append(("engine", f"pid {r.get('pid', '-')}, interface "
                     f"{r.get('iface', '-')}, up {duration(r.get('uptime'))}"))
    rows.append(("frames", f"{exact(core.get('frames'))} "
                 f"({size(core.get('bytes'))})"))
    verdict = core.get("verdict") or {}
    if verdict:
        rows.append(("verdicts", "  ".join(f"{k} {exact(n)}"
                                            for k, n in verdict.items())))
    flows = [(k, core[k]) for k in FLOW_COUNTERS if k in core]
    if flows:
        rows.append(("flows", "  ".join(
            f"{k.replace('flows_', '').replace('flow_', '')} {exact(n)}"
            for k, n in flows)))
    sums = [(k, core[k]) for k in CSUM_COUNTERS if k in core]
    if sums:
        rows.append(("checksums", "  ".join(
            f"{k.replace('csum_', '')} {exact(n)}" for k, n in sums)))
    fast = [(k, core[k]) for k in FAST_COUNTERS if k in core]
    if fast and any(fast_n for _, fast_n in fast):
        rows.append(("fast path", "  ".join(
            f"{k.replace('fast_', '')} {exact(n)}" for k, n in fast)))
    xsk = r.get("xsk")
    if isinstance(xsk, dict) and xsk.get("fastpath") == "refused":
        rows.append(("fast path", fastpath_text("refused",
                                                xsk.get("fastpath_why"))))
    io = [(k, core[k]) for k in IO_COUNTERS if k in core]
    if io:
        rows.append(("io", "  ".join(f"{k} {exact(n)}" for k, n in io)))
    tables = [(k, core[k]) for k in TABLE_COUNTERS if k in core]
    if tables:
        rows.append(("tables", "  ".join(
            f"{'vips' if k == 'vip_count' else 'generation'} {exact(n)}"
            for k, n in tables)))
    other = [(k, v) for k, v in core.items() if k not in _SHOWN_CORE]
    if other:
        rows.append(("other", "  ".join(f"{k} {scalar(v)}"
                                         for k, v in other)))
    arp = r.get("arp") or {}
    if arp:
        rows.append(("arp", "  ".join(f"{k} {exact(n)}"
                                       for k, n in arp.items())))
    h = r.get("ha")
    if isinstance(h, dict):
        rows.append(("ha", "  ".join(
            [f"role {h.get('role', '-')}"] +
            [f"{k} {exact(h.get(k))}" for k in ("transitions",
                                                  "garp_bursts",
                                                  "arp_withheld")])))
    rows.extend(bgp_status_rows(r.get("bgp")))
    if isinstance(r.get("punt"), dict) and r["punt"]:
        rows.append(("punt", punt_line(r["punt"])))
    conflicts = r.get("arp_conflicts") or {}
    for vip, macs in conflicts.items():
        rows.append(("arp conflict", f"{vip} also answered by "
                     + ", ".join(map(str, macs))))
    out.extend(table(None, rows))

    reasons = [(k, n) for k, n in (core.get("reason") or {}).items()
               if is_number(n) and n]
    out.append("")
    if reasons:
        reasons.sort(key=lambda kn: (not kn[0].startswith("drop"), -kn[1]))
        out.append("reasons (non-zero)")
        out.extend(table(None, [(k, exact(n)) for k, n in reasons],
                         right={1}, indent="  "))
    else:
        out.append("reasons: none counted")

    queues = r.get("queues") or ()
    if queues:
        keys = []
        for q in queues:
            keys.extend(k for k in q if k not in keys)
        out.append("")
        out.extend(table(["QUEUE"] + [k.upper() for k in keys],
                         [[str(i)] + [exact(q.get(k)) for k in keys]
                          for i, q in enumerate(queues)],
                         right=set(range(len(keys) + 1))))
    out.extend(format_sockets(r.get("sockets")))

    vips = r.get("vips") or ()
    if vips:
        rows = []
        for v in vips:
            reals = v.get("reals") or ()
            rows.append([vip_label(v), "", _sum(reals, "frames"),
                         _sum(reals, "bytes"), _sum(reals, "flows_new"),
                         _sum(reals, "active"), _sum(reals, "inactive")])
            for real in reals:
                rows.append(["  " + str(real.get("real", "?")),
                             real.get("state") or "",
                             exact(real.get("frames")),
                             exact(real.get("bytes")),
                             exact(real.get("flows_new")),
                             exact(real.get("active")),
                             exact(real.get("inactive"))])
        out.append("")
        out.extend(table(("VIP / REAL", "STATE", "PACKETS", "BYTES",
                          "NEW FLOWS", "ACTIVE", "INACT"), rows,
                         right={2, 3, 4, 5, 6}))
    return "\n".join(out)


# What the kernel counted at the data plane's sockets (Report.sockets():
# struct pyfwd_sock_stats), by backend: counter -> its column in `ctl
# stats` (tests/unit/test_sockdrops.py pins them to the header).
SOCK_COLUMNS = {
    "xdp": {"rx_dropped": "RX DROPPED", "rx_invalid_descs": "RX INVALID",
            "tx_invalid_descs": "TX INVALID", "rx_ring_full": "RX RING FULL",
            "rx_fill_ring_empty_descs": "FILL EMPTY",
            "tx_ring_empty_descs": "TX EMPTY"},
    "afpacket": {"packets": "PACKETS", "drops": "DROPS",
                 "freeze_q_cnt": "RING FROZEN"},
}
_SOCK_TITLES = {"xdp": "AF_XDP sockets (XDP_STATISTICS)",
                "afpacket": "raw sockets (PACKET_STATISTICS)"}


def format_sockets(sockets):
    """The lines of `ctl stats` for {backend: [{"queue", "iface",
    counter...}]}: a table per backend, one row per socket, the kernel's
    counters of frames it dropped before the loops saw them (a counter of
    another pyfwd: a column of its own name)."""
    out = []
    for backend, rows in (sockets or {}).items():
        if not rows:
            continue
        columns = dict(SOCK_COLUMNS.get(backend, {}))
        for row in rows:
            columns.update({k: k.upper() for k in row
                            if k not in columns and k not in ("queue",
                                                              "iface")})
        out.append("")
        out.append(_SOCK_TITLES.get(backend, f"{backend} sockets"))
        out.extend(table(["QUEUE", "IFACE", *columns.values()],
                         [[str(row.get("queue", "-")),
                           str(row.get("iface", "-")),
                           *(exact(row.get(k)) for k in columns)]
                          for row in rows],
                         right={0} | set(range(2, len(columns) + 2))))
    return out


def _sum(reals, key):
    values = [r.get(key) for r in reals]
    values = [x for x in values if is_number(x)]
    return str(sum(values)) if values or not reals else "-"


# --- reload and the rest ----------------------------------------------------


__all__ = ["format_stats", "format_sockets", "punt_line", "FLOW_COUNTERS",
           "CSUM_COUNTERS", "FAST_COUNTERS", "IO_COUNTERS", "TABLE_COUNTERS", "SOCK_COLUMNS"]
