"""What `pyfwd ctl rate`, `ctl flows` and `ctl zero` print (after ipvsadm's
`-L --rate`, `-L -c` and `-Z`).  Pure functions, values in, text out:

    format_rate(request(path, "rate"))
    format_flows(request(path, "flows", vip=None, limit=100))
    format_zero(request(path, "zero", vip=None))
"""

from .text import is_number, table, vip_label

_RATE_HEADER = ("VIP / REAL", "CPS", "INPPS", "INBPS")


def _rate(n):
    """A rate with one decimal below 100, else whole; `-` if not a number."""
    if not is_number(n):
        return "-"
    return f"{n:.1f}" if n < 100 else f"{n:.0f}"


def format_rate(result):
    """The rate command: per VIP a row (the sum of its real servers') and
    one per real server: new flows (CPS), packets (INPPS) and bytes (INBPS)
    per second toward them; then how they are averaged."""
    r = result or {}
    vips = r.get("vips") or ()
    if not vips:
        return "no VIPs"
    rows = []
    for v in vips:
        rows.append([vip_label(v), _rate(v.get("cps")),
                     _rate(v.get("in_pps")), _rate(v.get("in_bps"))])
        rows.extend(["  " + str(x.get("real", "?")), _rate(x.get("cps")),
                     _rate(x.get("in_pps")), _rate(x.get("in_bps"))]
                    for x in v.get("reals") or ())
    lines = table(_RATE_HEADER, rows, right={1, 2, 3})
    weight = r.get("weight")
    lines.append("")
    lines.append(f"per second toward the real servers (INBPS: bytes), "
                 f"sampled every {r.get('interval', '?')}s")
    lines.append("and averaged as IPVS does (each sample weighs "
                 f"{weight if weight is not None else '?'})")
    return "\n".join(lines)


_FLOW_HEADER = ("PRO", "STATE", "EXPIRES", "CLIENT", "VIP", "REAL",
                "SNAT PORT", "MODE")


def format_flows(result):
    """The flows command: one row per flow (protocol, state, seconds to
    its expiry, client, VIP, real server, SNAT port), then how many more
    match than were listed."""
    r = result or {}
    flows = r.get("flows") or ()
    total = r.get("total", len(flows))
    if not flows:
        return "no flows" if not total else \
            f"{total} flows, none listed (--limit)"
    rows = [[f.get("proto", "?").upper(), f.get("state", "?"),
             f"{f['expires']:.0f}s" if is_number(f.get("expires")) else "-",
             f.get("client", "?"), f.get("vip", "?"), f.get("real", "?"),
             str(f["snat_port"]) if f.get("snat_port") else "-",
             f.get("mode", "?") + (" fast" if f.get("fast") else "")]
            for f in flows]
    lines = table(_FLOW_HEADER, rows, right={2, 6})
    more = total - len(flows) if is_number(total) else 0
    if more > 0:
        lines.append(f"... {more} more not shown (--limit N, 0: all)")
    return "\n".join(lines)


def format_zero(result):
    """The zero command: what was zeroed."""
    r = result or {}
    what = r.get("zeroed", "?")
    return (f"zeroed the counters ctl shows for "
            f"{'every VIP and the core' if what == 'all' else what} "
            f"({r.get('reals', 0)} real servers); the metrics keep theirs")


__all__ = ["format_rate", "format_flows", "format_zero"]
