"""What `pyfwd ctl` prints: the control socket's results as tables.

Pure functions, values in, text out (no trailing newline):

    format_status(request(path, "status"))
    format_show(request(path, "show"))
    format_stats(request(path, "stats"))
    format_reload(request(path, "reload"))
    format_changes(request(path, "changes"))
    format_ha(request(path, "ha", role="active"))
    format_renew(request(path, "ha-renew"))
    format_result(cmd, result)          # any command: picks one of the above

Tables are aligned, numbers right-aligned, and fit 100 columns with
ordinary names (the last column, `why`, runs on).  `show` abbreviates large
counts (12.3M, 4.5 GiB); `stats` prints them exactly.  `--json` output is
the result itself and is not made here.
"""

import json
import time

__all__ = ["format_status", "format_show", "format_stats", "format_sockets",
           "format_reload", "format_changes", "format_ha", "format_renew",
           "ha_line",
           "format_result", "table"]


# --- helpers ----------------------------------------------------------------

def table(header, rows, right=(), indent=""):
    """Aligned lines: `header` and `rows` are sequences of cells (str);
    columns whose index is in `right` are right-aligned.  The last column
    is not padded; there are no trailing spaces."""
    rows = [[str(c) for c in r] for r in rows]
    all_rows = [list(header)] + rows if header else rows
    if not all_rows:
        return []
    ncol = max(len(r) for r in all_rows)
    for r in all_rows:
        r.extend([""] * (ncol - len(r)))
    widths = [max(len(r[i]) for r in all_rows) for i in range(ncol)]
    lines = []
    for r in all_rows:
        cells = []
        for i, c in enumerate(r):
            if i in right:
                cells.append(c.rjust(widths[i]))
            elif i == ncol - 1:
                cells.append(c)
            else:
                cells.append(c.ljust(widths[i]))
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def duration(seconds):
    """12.5s, 3m07s, 1h02m03s, 4d03h."""
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h:02d}h"
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s"


def count(n):
    """A count in at most 6 characters: exact below 100000, else 123.4k,
    12.3M, 1.2G."""
    if not _is_number(n):
        return "-"
    if n < 100_000:
        return str(n)
    for unit, div in (("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)):
        if n / div < 999.95 or unit == "T":
            return f"{n / div:.1f}{unit}"
    return str(n)       # not reached


def size(n):
    """Bytes with IEC units: 999 B, 1.5 KiB, 12.3 MiB."""
    if not _is_number(n):
        return "-"
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1023.95 or unit == "PiB":
            return f"{value:.1f} {unit}"
    return f"{n} B"     # not reached


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _exact(n):
    return str(n) if _is_number(n) else "-"


def _plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def _scalar(value):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


# --- status -----------------------------------------------------------------

def format_status(result):
    """The status command: engine, config, services, data plane."""
    r = dict(result or {})
    rows = []
    engine = []
    if "pid" in r:
        engine.append(f"pid {r.pop('pid')}")
    if "iface" in r:
        engine.append(f"interface {r.pop('iface')}")
    inside = r.pop("inside_iface", None)
    if inside:
        engine.append(f"inside interface {inside}")
    if "uptime" in r:
        engine.append(f"up {duration(r.pop('uptime'))}")
    if engine:
        rows.append(("engine", ", ".join(engine)))
    if "config" in r:
        config = r.pop("config")
        rows.append(("config", config if config else "none (--vip/--real "
                     "on the command line)"))
    if "vips" in r or "reals" in r:
        vips, reals = r.pop("vips", None), r.pop("reals", None)
        parts = []
        if _is_number(vips):
            parts.append(_plural(vips, "VIP"))
        if _is_number(reals):
            parts.append(_plural(reals, "real server"))
        rows.append(("services", ", ".join(parts) or "-"))
    if "ha" in r:
        rows.append(("role", ha_line(r.pop("ha"))))
    if "xsk" in r:
        rows.append(("data plane", _xsk_line(r.pop("xsk"))))
    snat = r.pop("snat", None)
    if isinstance(snat, (list, tuple)) and len(snat) == 3:
        rows.append(("snat", f"{snat[0]} ports {snat[1]}-{snat[2]}"))
    elif snat:
        rows.append(("snat", _scalar(snat)))
    for key, value in r.items():        # whatever else the engine reports
        if value is not None:
            rows.append((key.replace("_", " "), _scalar(value)))
    return "\n".join(table(None, rows))


def punt_line(p):
    """`ctl stats`' punt row: frames, rate-limited (source/total), evicted."""
    lim = {k: p.get(k) or {} for k in ("arp", "ndp")}
    evicted = [p.get("arp_conflicts_evicted"), p.get("ndp_conflicts_evicted"),
               *(v.get("sources_evicted") for v in lim.values())]
    return "  ".join([f"frames {_exact(p.get('frames'))}"] + [
        f"{k} limited {_exact(v.get('limited_source'))}/"
        f"{_exact(v.get('limited_total'))} (source/total)"
        for k, v in lim.items() if v] + [
        f"evicted {sum(n for n in evicted if _is_number(n))}"])


def ha_line(h):
    """The `role` row of `ctl status`:

        active since 2025-11-28 14:02:07 (3m07s), 2 transitions

    (the local time of the last change, how long ago); standby adds how
    many ARP requests it left to the active node and the MACs seen holding
    the VIPs:

        standby since 2025-11-28 14:02:07 (3m07s), 2 transitions, 5 ARP
        requests left to the active node, VIPs held by 02:00:00:00:01:02

    then the lease (`lease 2.1s left`, when keepalived renews it), its
    expiries, and the real servers' gateway (`gateway 192.168.50.1/24
    held`) when there is one.
    """
    if not isinstance(h, dict):
        return _scalar(h)
    parts = [str(h.get("role", "?"))]
    since = h.get("since")
    if _is_number(since):
        parts[0] += " since " + time.strftime("%Y-%m-%d %H:%M:%S",
                                              time.localtime(since))
        if _is_number(h.get("for")):
            parts[0] += f" ({duration(h['for'])})"
    n = h.get("transitions")
    if _is_number(n):
        parts.append(_plural(n, "transition"))
    if h.get("role") == "standby":
        if _is_number(h.get("arp_withheld")):
            parts.append(f"{h['arp_withheld']} ARP requests left to the "
                         "active node")
        peers = h.get("peers") or {}
        if peers:
            parts.append("VIPs held by " + ", ".join(sorted(peers)))
    lease = h.get("lease")
    if isinstance(lease, dict) and _is_number(lease.get("left")):
        parts.append(f"lease {lease['left']:.1f}s left")
    n = h.get("lease_expired")
    if _is_number(n) and n:
        parts.append(f"{n} lease expir{'y' if n == 1 else 'ies'}")
    gw = h.get("gateway")
    if isinstance(gw, dict):
        parts.append("gateway " + " ".join(gw.get("addresses") or ()) +
                     (" held" if gw.get("held") else " not held"))
    return ", ".join(parts)


def _xsk_line(xsk):
    if not isinstance(xsk, dict):
        return "not running" if xsk is None else _scalar(xsk)
    x = dict(xsk)
    parts = []
    if "xdp_mode" in x:
        parts.append(f"XDP {x.pop('xdp_mode')}")
    if "copy_mode" in x:
        parts.append(f"AF_XDP {x.pop('copy_mode')} mode")
    if "busy_poll" in x:
        parts.append("busy poll " + ("on" if x.pop("busy_poll") else "off"))
    if "queues" in x:
        q = x.pop("queues")
        parts.append(_plural(q, "queue") if _is_number(q) else f"queues {q}")
    if "prog_id" in x:
        parts.append(f"program id {x.pop('prog_id')}")
    parts.extend(f"{k.replace('_', ' ')} {_scalar(v)}" for k, v in x.items())
    return ", ".join(parts)


# --- show -------------------------------------------------------------------

_SHOW_HEADER = ("REAL", "WEIGHT", "STATE", "HEALTH", "ACTIVE", "NEW",
                "PACKETS", "BYTES", "WHY")
_SHOW_RIGHT = {1, 4, 5, 6, 7}


def format_show(result):
    """The show command: per VIP a header line and a table of its real
    servers (weight, state, health, active and new flows, packets, bytes,
    why it gets no new flows); a `*` after the state marks a real changed
    through ctl, said under the table (what, since when)."""
    vips = list(result or ())
    if not vips:
        return "no VIPs"
    blocks = []
    for v in vips:
        lines = [vip_header(v)]
        reals = v.get("reals") or ()
        if reals:
            lines.extend(table(_SHOW_HEADER, [_show_row(r) for r in reals],
                               right=_SHOW_RIGHT, indent="  "))
        else:
            lines.append("  no real servers")
        for who, marks in [(None, v.get("changed"))] + [
                (r.get("real", "?"), r.get("changed")) for r in reals]:
            lines.extend(f"  * {who + ': ' if who else ''}{changed_line(m)}"
                         for m in marks or ())
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def vip_header(v):
    """`pacs-web  10.0.0.100:80/tcp  dr  wlc  persistence 300s  fallback
    10.0.0.50:80`: one line naming a VIP and its settings."""
    parts = []
    name, address = v.get("name"), v.get("vip")
    if name and name != address:
        parts.append(str(name))
    if address:
        parts.append(str(address))
    for key in ("mode", "scheduler"):
        if v.get(key):
            parts.append(str(v[key]))
    persistence = v.get("persistence")
    if persistence:
        parts.append(f"persistence {persistence}s")
    fallback = v.get("fallback")
    if fallback:
        parts.append(f"fallback {fallback}"
                     + (" ACTIVE (no real server up)"
                        if v.get("fallback_active") else ""))
    return "  ".join(parts)


def _show_row(r):
    health = r.get("health")
    why = r.get("why")
    if not why and health == "down" and r.get("health_detail"):
        why = r["health_detail"]
    active = r.get("active")
    state = (r.get("state") or "-") + ("*" if r.get("changed") else "")
    return (r.get("real", "?"), _exact(r.get("weight")),
            state, health or "-", count(active),
            count(r.get("flows_new")), count(r.get("frames")),
            size(r.get("bytes")), why or "")


# --- stats ------------------------------------------------------------------

# The groups of struct pyfwd_stats's counters in `ctl stats` (each counter
# in one; tests/unit/test_counters.py pins them to the header).
FLOW_COUNTERS = ("flows_new", "flow_hits", "flows_rescheduled",
                 "flows_evicted", "flows_expired", "snat_ports_used")
CSUM_COUNTERS = ("csum_completed", "csum_bad")
IO_COUNTERS = ("rx", "tx", "tx_ring_full", "punt_overflow", "wakeups",
               "polls")
TABLE_COUNTERS = ("vip_count", "vip_generation")
_SHOWN_CORE = {"frames", "bytes", "verdict", "reason", *FLOW_COUNTERS,
               *CSUM_COUNTERS, *IO_COUNTERS, *TABLE_COUNTERS}


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
    rows.append(("frames", f"{_exact(core.get('frames'))} "
                 f"({size(core.get('bytes'))})"))
    verdict = core.get("verdict") or {}
    if verdict:
        rows.append(("verdicts", "  ".join(f"{k} {_exact(n)}"
                                            for k, n in verdict.items())))
    flows = [(k, core[k]) for k in FLOW_COUNTERS if k in core]
    if flows:
        rows.append(("flows", "  ".join(
            f"{k.replace('flows_', '').replace('flow_', '')} {_exact(n)}"
            for k, n in flows)))
    sums = [(k, core[k]) for k in CSUM_COUNTERS if k in core]
    if sums:
        rows.append(("checksums", "  ".join(
            f"{k.replace('csum_', '')} {_exact(n)}" for k, n in sums)))
    io = [(k, core[k]) for k in IO_COUNTERS if k in core]
    if io:
        rows.append(("io", "  ".join(f"{k} {_exact(n)}" for k, n in io)))
    tables = [(k, core[k]) for k in TABLE_COUNTERS if k in core]
    if tables:
        rows.append(("tables", "  ".join(
            f"{'vips' if k == 'vip_count' else 'generation'} {_exact(n)}"
            for k, n in tables)))
    other = [(k, v) for k, v in core.items() if k not in _SHOWN_CORE]
    if other:
        rows.append(("other", "  ".join(f"{k} {_scalar(v)}"
                                         for k, v in other)))
    arp = r.get("arp") or {}
    if arp:
        rows.append(("arp", "  ".join(f"{k} {_exact(n)}"
                                       for k, n in arp.items())))
    h = r.get("ha")
    if isinstance(h, dict):
        rows.append(("ha", "  ".join(
            [f"role {h.get('role', '-')}"] +
            [f"{k} {_exact(h.get(k))}" for k in ("transitions",
                                                  "garp_bursts",
                                                  "arp_withheld")])))
    if isinstance(r.get("punt"), dict) and r["punt"]:
        rows.append(("punt", punt_line(r["punt"])))
    conflicts = r.get("arp_conflicts") or {}
    for vip, macs in conflicts.items():
        rows.append(("arp conflict", f"{vip} also answered by "
                     + ", ".join(map(str, macs))))
    out.extend(table(None, rows))

    reasons = [(k, n) for k, n in (core.get("reason") or {}).items()
               if _is_number(n) and n]
    out.append("")
    if reasons:
        reasons.sort(key=lambda kn: (not kn[0].startswith("drop"), -kn[1]))
        out.append("reasons (non-zero)")
        out.extend(table(None, [(k, _exact(n)) for k, n in reasons],
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
                         [[str(i)] + [_exact(q.get(k)) for k in keys]
                          for i, q in enumerate(queues)],
                         right=set(range(len(keys) + 1))))
    out.extend(format_sockets(r.get("sockets")))

    vips = r.get("vips") or ()
    if vips:
        rows = []
        for v in vips:
            reals = v.get("reals") or ()
            name = v.get("name") or v.get("vip", "?")
            if v.get("vip") and v["vip"] != name:
                name = f"{name} ({v['vip']})"
            rows.append([name, "", _sum(reals, "frames"), _sum(reals, "bytes"),
                         _sum(reals, "flows_new"), _sum(reals, "active")])
            for real in reals:
                rows.append(["  " + str(real.get("real", "?")),
                             real.get("state") or "",
                             _exact(real.get("frames")),
                             _exact(real.get("bytes")),
                             _exact(real.get("flows_new")),
                             _exact(real.get("active"))])
        out.append("")
        out.extend(table(("VIP / REAL", "STATE", "PACKETS", "BYTES",
                          "NEW FLOWS", "ACTIVE"), rows, right={2, 3, 4, 5}))
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
                           *(_exact(row.get(k)) for k in columns)]
                          for row in rows],
                         right={0} | set(range(2, len(columns) + 2))))
    return out


def _sum(reals, key):
    values = [r.get(key) for r in reals]
    values = [x for x in values if _is_number(x)]
    return str(sum(values)) if values or not reals else "-"


# --- reload and the rest ----------------------------------------------------

def format_reload(result):
    """The reload command: one line per kind of change ("added vips:
    pacs-web, ...") or "no changes"."""
    if not result:
        return "no changes"
    if not isinstance(result, dict):
        return _scalar(result)
    lines = []
    for key, value in result.items():
        if value in (None, [], {}, "", 0, False):
            continue
        label = key.replace("_", " ")
        if isinstance(value, (list, tuple)):
            items = ", ".join(_item(x) for x in value)
            lines.append(f"{label}: {items}")
        else:
            lines.append(f"{label}: {_scalar(value)}")
    return "\n".join(lines) or "no changes"


def _item(x):
    if isinstance(x, dict):
        name = x.get("name") or x.get("vip")
        rest = {k: v for k, v in x.items() if k not in ("name", "vip")}
        if name and rest:
            return f"{name} (" + ", ".join(f"{k}={_scalar(v)}" for k, v
                                           in rest.items()) + ")"
        return str(name) if name else _scalar(x)
    return _scalar(x)


def changed_line(m):
    """`drain by ctl since 2026-12-03 17:20:03 UTC` (and its conflict with
    the config file, if any): one operator change (control.state)."""
    what = str(m.get("what", "?"))
    if m.get("value") is not None and not isinstance(m["value"], dict):
        what += f" {m['value']}"
    since = m.get("since")
    when = (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
            if _is_number(since) else "?")
    line = f"{what} by {m.get('by', '?')} since {when}"
    if m.get("conflict"):
        line += f" NOT APPLIED: {m['conflict']}"
    return line


def format_changes(result):
    """The changes command: one line per change made through ctl and kept
    over the config file, or "no changes made by ctl"."""
    rows = list(result or ())
    if not rows:
        return "no changes made by ctl (the config file says everything)"
    return "\n".join(f"{r.get('vip', '?')}"
                     f"{' ' + r['real'] if r.get('real') else ''}: "
                     f"{changed_line(r)}" for r in rows)


def format_forget(result):
    """The forget command: `forgot: CHANGE; ...`."""
    return "forgot: " + "; ".join(result or ())


def format_ha(result):
    """The ha command: `active (was standby): gratuitous ARP for
    10.0.0.100` or `standby (already)`."""
    if not isinstance(result, dict):
        return _scalar(result)
    role = result.get("role", "?")
    line = role + (f" (was {result.get('previous')})"
                   if result.get("changed") else " (already)")
    if role == "active":
        vips = result.get("announce") or []
        line += (": gratuitous ARP for " + ", ".join(vips) if vips
                 else ": no IPv4 VIP to announce")
    else:
        line += ": not answering ARP for the VIPs"
    return line


def format_renew(result):
    """The ha-renew command: `lease renewed for 2.5s (role active)`, or
    `no lease ([ha] lease = 0), role active`."""
    if not isinstance(result, dict):
        return _scalar(result)
    role = result.get("role", "?")
    lease = result.get("lease") or {}
    if not lease.get("seconds"):
        return f"no lease ([ha] lease = 0), role {role}"
    return f"lease renewed for {lease['seconds']:g}s (role {role})"


def format_help(result):
    """The help command: one line per command, its fields and what it
    does."""
    rows = []
    for c in result or ():
        args = " ".join(c.get("args") or ())
        rows.append((c.get("cmd", "?"), args, c.get("help", "")))
    return "\n".join(table(None, rows))


_FORMATTERS = {"status": format_status, "show": format_show,
               "stats": format_stats, "reload": format_reload,
               "changes": format_changes,
               "forget": format_forget,
               "help": format_help, "ha": format_ha,
               "ha-renew": format_renew}


def format_result(cmd, result):
    """Any command's result as text: the tables above for status, show,
    stats, reload and help; "ok" (or the result, if any) for the
    changes."""
    fmt = _FORMATTERS.get(cmd)
    if fmt is not None:
        return fmt(result)
    if result is None or result is True:
        return "ok"
    if isinstance(result, str):
        return result
    return _scalar(result)
