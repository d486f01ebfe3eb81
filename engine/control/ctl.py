"""What `pyfwd ctl` prints: the control socket's results as tables.

Pure functions, values in, text out (no trailing newline):

    format_status(request(path, "status"))
    format_show(request(path, "show"))
    format_stats(request(path, "stats"))
    format_reload(request(path, "reload"))
    format_changes(request(path, "changes"))
    format_ha(request(path, "ha", role="active"))
    format_renew(request(path, "ha-renew"))
    format_rate, format_flows, format_zero (control.ctlrate)
    format_result(cmd, result)          # any command: picks one of the above

Tables are aligned, numbers right-aligned, and fit 100 columns with
ordinary names (the last column, `why`, runs on).  `show` abbreviates large
counts (12.3M, 4.5 GiB); `stats` prints them exactly.  `--json` output is
the result itself and is not made here.
"""

import time

from .bgp.text import status_rows as bgp_status_rows
from .ctlrate import format_flows, format_rate, format_zero
from .ctlstats import fastpath_text, format_stats
from .text import count, duration, exact, is_number, plural, scalar, size, table

__all__ = ["format_status", "format_show", "format_stats",
           "format_reload", "format_changes", "format_ha", "format_renew",
           "ha_line",
           "format_result", "table"]


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
        if is_number(vips):
            parts.append(plural(vips, "VIP"))
        if is_number(reals):
            parts.append(plural(reals, "real server"))
        rows.append(("services", ", ".join(parts) or "-"))
    if "ha" in r:
        rows.append(("role", ha_line(r.pop("ha"))))
    if "xsk" in r:
        rows.append(("data plane", _xsk_line(r.pop("xsk"))))
    rows.extend(bgp_status_rows(r.pop("bgp", None)))
    timeouts = r.pop("timeouts", None)
    if isinstance(timeouts, dict):
        rows.append(("flow timeouts", ", ".join(
            f"{k} {exact(v)}s"
            for k, v in timeouts.items())))
    tun = r.pop("tun", None)
    if isinstance(tun, dict):
        rows.append(("tun", ", ".join(
            [f"from {tun[k]}" for k in ("source4", "source6") if tun.get(k)]
            + [f"mtu {tun.get('mtu')}"])))
    snat = r.pop("snat", None)
    if isinstance(snat, (list, tuple)) and len(snat) == 3:
        rows.append(("snat", f"{snat[0]} ports {snat[1]}-{snat[2]}"))
    elif snat:
        rows.append(("snat", scalar(snat)))
    for key, value in r.items():        # whatever else the engine reports
        if value is not None:
            rows.append((key.replace("_", " "), scalar(value)))
    return "\n".join(table(None, rows))


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
        return scalar(h)
    parts = [str(h.get("role", "?"))]
    since = h.get("since")
    if is_number(since):
        parts[0] += " since " + time.strftime("%Y-%m-%d %H:%M:%S",
                                              time.localtime(since))
        if is_number(h.get("for")):
            parts[0] += f" ({duration(h['for'])})"
    n = h.get("transitions")
    if is_number(n):
        parts.append(plural(n, "transition"))
    if h.get("role") == "standby":
        if is_number(h.get("arp_withheld")):
            parts.append(f"{h['arp_withheld']} ARP requests left to the "
                         "active node")
        peers = h.get("peers") or {}
        if peers:
            parts.append("VIPs held by " + ", ".join(sorted(peers)))
    lease = h.get("lease")
    if isinstance(lease, dict) and is_number(lease.get("left")):
        parts.append(f"lease {lease['left']:.1f}s left")
    n = h.get("lease_expired")
    if is_number(n) and n:
        parts.append(f"{n} lease expir{'y' if n == 1 else 'ies'}")
    gw = h.get("gateway")
    if isinstance(gw, dict):
        parts.append("gateway " + " ".join(gw.get("addresses") or ()) +
                     (" held" if gw.get("held") else " not held"))
    return ", ".join(parts)


def _xsk_line(xsk):
    if not isinstance(xsk, dict):
        return "not running" if xsk is None else scalar(xsk)
    x = dict(xsk)
    parts = []
    if "xdp_mode" in x:
        parts.append(f"XDP {x.pop('xdp_mode')}")
    if "copy_mode" in x:
        parts.append(f"AF_XDP {x.pop('copy_mode')} mode")
    if "busy_poll" in x:
        parts.append("busy poll " + ("on" if x.pop("busy_poll") else "off"))
        state = x.pop("busy_polling", None)
        if state == "not engaged":
            parts[-1] += (" but not engaged (NAPI id 0): sleeps in poll() "
                          "when idle")
        elif state:
            parts[-1] += f" ({state})"
    if "queues" in x:
        q = x.pop("queues")
        parts.append(plural(q, "queue") if is_number(q) else f"queues {q}")
    if "prog_id" in x:
        parts.append(f"program id {x.pop('prog_id')}")
    if "fastpath" in x:
        parts.append("fast path " + fastpath_text(x.pop("fastpath"),
                                                  x.pop("fastpath_why", "")))
    parts.extend(f"{k.replace('_', ' ')} {scalar(v)}" for k, v in x.items())
    return ", ".join(parts)


# --- show -------------------------------------------------------------------

_SHOW_HEADER = ("REAL", "WEIGHT", "STATE", "HEALTH", "ACTIVE", "INACT",
                "NEW", "PACKETS", "BYTES", "WHY")
_SHOW_RIGHT = {1, 4, 5, 6, 7, 8}


def format_show(result):
    """The show command: per VIP a header line and a table of its real
    servers (weight, state, health, active (established or half-open),
    inactive (closing) and new flows, packets, bytes,
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
    if v.get("bgp"):
        parts.append(f"bgp {v['bgp']}")
    if v.get("table"):
        parts.append(f"table {v['table']}")
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
    state = (r.get("state") or "-") + ("*" if r.get("changed") else "")
    return (r.get("real", "?"), exact(r.get("weight")),
            state, health or "-", count(r.get("active")),
            count(r.get("inactive")), count(r.get("flows_new")),
            count(r.get("frames")),
            size(r.get("bytes")), why or "")


def format_reload(result):
    """The reload command: one line per kind of change ("added vips:
    pacs-web, ...") or "no changes"."""
    if not result:
        return "no changes"
    if not isinstance(result, dict):
        return scalar(result)
    lines = []
    for key, value in result.items():
        if value in (None, [], {}, "", 0, False):
            continue
        label = key.replace("_", " ")
        if isinstance(value, (list, tuple)):
            items = ", ".join(_item(x) for x in value)
            lines.append(f"{label}: {items}")
        else:
            lines.append(f"{label}: {scalar(value)}")
    return "\n".join(lines) or "no changes"


def _item(x):
    if isinstance(x, dict):
        name = x.get("name") or x.get("vip")
        rest = {k: v for k, v in x.items() if k not in ("name", "vip")}
        if name and rest:
            return f"{name} (" + ", ".join(f"{k}={scalar(v)}" for k, v
                                           in rest.items()) + ")"
        return str(name) if name else scalar(x)
    return scalar(x)


def changed_line(m):
    """`drain by ctl since 2026-12-03 17:20:03 UTC` (and its conflict with
    the config file, if any): one operator change (control.state)."""
    what = str(m.get("what", "?"))
    if m.get("value") is not None and not isinstance(m["value"], dict):
        what += f" {m['value']}"
    since = m.get("since")
    when = (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
            if is_number(since) else "?")
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
        return scalar(result)
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
        return scalar(result)
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
               "ha-renew": format_renew, "rate": format_rate,
               "flows": format_flows, "zero": format_zero}


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
    return scalar(result)
