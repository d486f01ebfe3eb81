"""The sequence diagram of a traced connection (pyfwd.lab.segments'
journeys), as text for the terminal and as an SVG document: one lane per
host, one arrow per hop a segment takes, the fields the balancer rewrote
marked on the arrows it sends.  ``rows`` lays the diagram out once; the two
renderers draw the same rows.
"""

from dataclasses import dataclass
from typing import Iterator
from xml.sax.saxutils import escape

from .segments import LB, Seg, collapse
from .words import plural

__all__ = ["Row", "rows", "render_text", "render_svg"]


@dataclass(frozen=True)
class Row:
    """One step of the sequence diagram, the same for every renderer.

    ``kind`` "arrow": one hop of segment ``number``, from the lane of role
    ``sender`` to that of ``receiver``; ``head`` is "#3 PSH+ACK 18 B" (with
    "(bypasses lb)" when the arrow skips a lane), ``label`` its two lines
    of (text, field) parts, the field set (else None) where the balancer
    rewrote it on this hop.  "skip": ``number`` segments left out (see
    collapse).  "end": the last arrow of a segment has been drawn.
    """

    kind: str
    number: int = 0
    direction: str = ""
    sender: str = ""
    receiver: str = ""
    bypass: bool = False
    head: str = ""
    label: tuple = ()


def _label(seg: Seg, changed: set) -> tuple:
    """The two label lines of an arrow as ((text, field or None), ...)."""
    def part(f):
        return (seg.value(f), f if f in changed else None)

    return ((part("ip.src"), (":", None), part("tcp.sport"), (" > ", None),
             part("ip.dst"), (":", None), part("tcp.dport"))
            + (((" ttl ", None), part("ip.ttl")) if "ip.ttl" in changed
               else ()),
            (part("eth.src"), (" > ", None), part("eth.dst")))


def rows(js, lanes, limit: int = 14) -> Iterator[Row]:
    """The diagram of journeys ``js`` (collapsed to about ``limit``) over
    ``lanes`` ([(role, caption)], left to right) as Rows, top to bottom.
    The fields the balancer rewrote are marked on the arrows it sends."""
    lane = {role: i for i, (role, _) in enumerate(lanes)}
    number = 0
    for item in collapse(js, limit):
        if isinstance(item, int):
            number += item
            yield Row("skip", item)
            continue
        number += 1
        changed = set(item.changes())
        for sent, recv in item.arrows():
            a, b = sent.frame.role, recv.frame.role
            bypass = abs(lane[a] - lane[b]) > 1
            yield Row("arrow", number, item.direction, a, b, bypass,
                      f"#{number} {sent.flag_text} {sent.length} B"
                      + (f" (bypasses {LB})" if bypass else ""),
                      _label(sent, changed if a == LB else set()))
        yield Row("end")


def _more(n: int) -> str:
    return f"... {plural(n, 'more segment')} like these ..."


_BOLD_RED = "\x1b[1;31m"
_RESET = "\x1b[0m"


def render_text(js, lanes, color: bool = False, limit: int = 14) -> list:
    """The sequence diagram as text lines (about 90 columns).

    ``lanes``: [(role, caption)] left to right.  Rewritten values are bold
    red with ``color``, else followed by ``*``.
    """
    gap = 42
    xs = {role: 4 + gap * i for i, (role, _) in enumerate(lanes)}
    width = 4 + gap * (len(lanes) - 1) + 1

    def blank():
        row = [" "] * width
        for x in xs.values():
            row[x] = "|"
        return row

    def line(row):
        return "".join(row).rstrip()

    def place(row, start, parts):
        # parts: [(text, field)]; returns the line, coloured
        plain = "".join(t + ("*" if f and not color else "") for t, f in parts)
        row[start:start + len(plain)] = plain
        out = line(row)
        if not color:
            return out
        coloured = "".join(f"{_BOLD_RED}{t}{_RESET}" if f else t
                           for t, f in parts)
        return out[:start] + coloured + out[start + len(plain):]

    head = [" "] * width
    for role, caption in lanes:
        text = f"{role} {caption}".strip()
        start = 0 if role == lanes[0][0] else \
            max(0, min(xs[role] - len(text) // 2, width - len(text)))
        head[start:start + len(text)] = text
    lines = [line(head), line(blank())]
    for r in rows(js, lanes, limit):
        if r.kind == "skip":
            lines += [place(blank(), xs[lanes[0][0]] + 2,
                            [(f" {_more(r.number)} ", None)]), line(blank())]
        elif r.kind == "end":
            lines.append(line(blank()))
        else:
            a, b = xs[r.sender], xs[r.receiver]
            lo, hi = min(a, b), max(a, b)
            row = blank()
            for x in range(lo + 1, hi):
                if row[x] != "|":
                    row[x] = "-"
            row[hi - 1 if b > a else lo + 1] = ">" if b > a else "<"
            # the label sits between the sender and the next lane
            seg_lo = min(a, a + (gap if b > a else -gap))
            text = f" {r.head} "
            mid = seg_lo + (gap - len(text)) // 2 + 1
            row[mid:mid + len(text)] = text
            lines.append(line(row))
            lines += [place(blank(), seg_lo + 3, parts) for parts in r.label]
    return lines


_SVG_STYLE = (
    "text{font-family:monospace;font-size:11px;fill:#222}"
    ".role{font-size:15px;font-weight:bold}"
    ".caption{fill:#555}.flags{font-weight:bold}.note{fill:#555}"
    ".rewritten{fill:#d00000;font-weight:bold}"
    ".lifeline{stroke:#888;stroke-dasharray:4 3}"
    ".arrow{stroke-width:1.6}.c2s{stroke:#1f4e9c}.s2c{stroke:#2e7d32}"
    ".bypass{stroke-dasharray:7 3}"
    ".title{font-size:14px;font-weight:bold}")


def _svg_text(x, y, parts, anchor="start", cls="label", d="") -> str:
    spans = "".join(
        f'<tspan class="rewritten" data-field="{f}" data-dir="{d}">'
        f"{escape(t)}</tspan>" if f else escape(t) for t, f in parts)
    return (f'<text x="{x}" y="{y}" class="{cls}" '
            f'text-anchor="{anchor}">{spans}</text>')


def render_svg(js, lanes, title: str, limit: int = 60) -> str:
    """The sequence diagram as an SVG document (a string).

    Rewritten values are ``<tspan class="rewritten" data-field=F
    data-dir=D>`` in red; the lanes are ``<g class="lane" data-role=R>``.
    """
    gap, top, left = 330, 80, 90
    xs = {role: left + gap * i for i, (role, _) in enumerate(lanes)}
    width = left * 2 + gap * (len(lanes) - 1)
    body, y = [], top + 20
    for r in rows(js, lanes, limit):
        if r.kind == "skip":
            body.append(_svg_text(width // 2, y + 10, [(_more(r.number),
                                                         None)],
                                  "middle", "note"))
            y += 30
        elif r.kind == "end":
            y += 8
        else:
            a, b = xs[r.sender], xs[r.receiver]
            cls = f"arrow {r.direction}" + (" bypass" if r.bypass else "")
            body.append(f'<line x1="{a}" y1="{y + 16}" x2="{b}" '
                        f'y2="{y + 16}" class="{cls}" '
                        f'marker-end="url(#head)"/>')
            step = gap if b > a else -gap
            if r.bypass:    # beside the sender, clear of the lane it skips
                body.append(_svg_text(a + 12 if b > a else a - 12, y + 10,
                                      [(r.head, None)],
                                      "start" if b > a else "end", "flags"))
            else:
                body.append(_svg_text(a + step // 2, y + 10,
                                      [(r.head, None)], "middle", "flags"))
            body += [_svg_text(min(a, a + step) + 12, y + 32 + 13 * k, parts,
                               d=r.direction)
                     for k, parts in enumerate(r.label)]
            y += 62
    height = y + 20
    lanes_svg = [
        f'<g class="lane" data-role="{escape(role)}">'
        f'<text x="{xs[role]}" y="{top - 22}" text-anchor="middle" '
        f'class="role">{escape(role)}</text>'
        f'<text x="{xs[role]}" y="{top - 8}" text-anchor="middle" '
        f'class="caption">{escape(caption)}</text>'
        f'<line x1="{xs[role]}" y1="{top}" x2="{xs[role]}" '
        f'y2="{height - 10}" class="lifeline"/></g>'
        for role, caption in lanes]
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f"<style>{_SVG_STYLE}</style>",
        '<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" class="title">{escape(title)}</text>',
        '<text x="10" y="36" class="caption">red: fields the balancer '
        'rewrote; blue: client to server; green: server to client</text>',
        *lanes_svg, *body, "</svg>", ""])


