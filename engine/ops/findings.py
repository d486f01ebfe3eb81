"""What `pyfwd doctor` found: one Finding per check, with a severity, what
was seen and what it breaks, and the fix; printed as text or JSON.

Severities, from harmless to fatal: ``ok`` (nothing to do), ``note`` (it
works, at a cost worth knowing), ``degrades`` (it works worse or less than
it could), ``blocks`` (forwarding, or part of it, does not work).
"""

import json
import textwrap
from dataclasses import asdict, dataclass

SEVERITIES = ("ok", "note", "degrades", "blocks")
WIDTH = 100     # of the text output
# How the text output marks each severity (aligned, the worst in capitals).
MARKS = {"ok": "ok", "note": "note", "degrades": "warn", "blocks": "FAIL"}


@dataclass(frozen=True)
class Finding:
    """One check's result.  subject: what was looked at (an interface's
    name, "host"); what: what was seen and, unless ok, what breaks; fix:
    what to do about it ("" when ok)."""

    check: str
    subject: str
    severity: str
    what: str
    fix: str = ""

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r}: expected one of "
                             f"{', '.join(SEVERITIES)}")


def ok(check, subject, what):
    return Finding(check, subject, "ok", what)


def blocking(findings):
    """The findings that block forwarding."""
    return [f for f in findings if f.severity == "blocks"]


def problems(findings):
    """Every finding that is not ok, the worst first (stable otherwise)."""
    return sorted((f for f in findings if f.severity != "ok"),
                  key=lambda f: -SEVERITIES.index(f.severity))


def _fill(line):
    return textwrap.fill(line, WIDTH, subsequent_indent=" " * 5,
                         break_long_words=False, break_on_hyphens=False)


def text(finding):
    """One finding as the lines `pyfwd doctor` prints (wrapped)."""
    mark = MARKS[finding.severity]
    head = _fill(f"{mark:<4} {finding.subject} {finding.check}: "
                 f"{finding.what}")
    if not finding.fix:
        return head
    return head + "\n" + _fill(f"     fix: {finding.fix}")


def log_line(finding):
    """One finding as one line of the engine's log."""
    line = (f"doctor: {finding.subject} {finding.check} "
            f"({finding.severity}): {finding.what}")
    return f"{line}; fix: {finding.fix}" if finding.fix else line


def to_json(findings):
    """The findings as one JSON document: {"ok": no finding blocks,
    "blocks"/"degrades"/"notes": counts, "findings": [...]}."""
    return json.dumps({
        "ok": not blocking(findings),
        "blocks": sum(f.severity == "blocks" for f in findings),
        "degrades": sum(f.severity == "degrades" for f in findings),
        "notes": sum(f.severity == "note" for f in findings),
        "findings": [asdict(f) for f in findings],
    }, indent=2)
