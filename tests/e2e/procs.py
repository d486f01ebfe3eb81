"""Helpers for the programs the end-to-end tests start."""

import time


def wait_line(proc, needle, timeout=15):
    """Read proc's stdout until a line has needle; the lines read.
    AssertionError with what it said if the line does not come."""
    lines, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"no {needle!r} from the process:\n" +
                         "".join(lines))


def alive(pid) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
