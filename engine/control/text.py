"""Numbers and tables as `pyfwd ctl` prints them (control.ctl and
control.ctlstats): aligned columns, abbreviated or exact counts, sizes,
durations.  Pure functions, values in, text out."""

import json

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
    if not is_number(n):
        return "-"
    if n < 100_000:
        return str(n)
    for unit, div in (("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)):
        if n / div < 999.95 or unit == "T":
            return f"{n / div:.1f}{unit}"
    return str(n)       # not reached


def size(n):
    """Bytes with IEC units: 999 B, 1.5 KiB, 12.3 MiB."""
    if not is_number(n):
        return "-"
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1023.95 or unit == "PiB":
            return f"{value:.1f} {unit}"
    return f"{n} B"     # not reached


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def exact(n):
    return str(n) if is_number(n) else "-"


def vip_label(v):
    """A VIP row's (show(), rate()) label: "name (ADDR:PORT/PROTO)", or
    the one of them it has."""
    name = v.get("name") or v.get("vip", "?")
    if v.get("vip") and v["vip"] != name:
        name = f"{name} ({v['vip']})"
    return name


def plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def scalar(value):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


# --- status -----------------------------------------------------------------


__all__ = ["table", "duration", "count", "size", "is_number", "exact",
           "plural", "scalar", "vip_label"]
