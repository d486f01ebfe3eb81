"""The offered loads of the packet-rate rows: one ladder for every row of a
run (pure: the windows are the caller's).

A forwarder slower than the generator at full speed wastes its NAPI work
on frames its rings then drop, and delivers far less than just below its
limit (livelock).  So each row is offered the same loads, top down: full
speed, then fixed fractions of the generator's ceiling (measured once per
run), and stops at the first load it keeps up with (delivers at least
LOSSLESS of what was sent: lower loads can only deliver less).  A row
reports the full-speed figure and the best one apart; every row having
climbed down the same rungs, neither depends on a search that went
differently for different rows.
"""

__all__ = ["FRACTIONS", "LOSSLESS", "rungs", "climb"]

# fractions of the generator's ceiling offered after full speed
FRACTIONS = (0.85, 0.72, 0.6, 0.5, 0.42, 0.35, 0.28)
LOSSLESS = 0.97                 # delivered/sent at or above: kept up


def rungs(ceiling: float, fractions=FRACTIONS) -> list:
    """The offered loads in packets/s: 0 (full speed) first, then each
    fraction of ``ceiling``.  ValueError for a ceiling that is not a rate
    or fractions that do not fall from below 1."""
    if not ceiling or ceiling <= 0:
        raise ValueError(f"ladder ceiling {ceiling!r}: expected a positive "
                         "rate in packets/s")
    fr = list(fractions)
    if any(not 0 < f < 1 for f in fr) or fr != sorted(fr, reverse=True):
        raise ValueError(f"ladder fractions {fr}: expected falling values "
                         "between 0 and 1")
    return [0] + [int(ceiling * f) for f in fr]


def kept_up(window: dict) -> bool:
    return window["pps"] >= LOSSLESS * window["sent_pps"]


def climb(window, loads: list) -> tuple:
    """Run ``window(rate)`` (a dict with at least "pps" and "sent_pps")
    for each of ``loads`` in turn, until one keeps up.  Returns (full, best,
    tried): the first window (full speed), the one that delivered most,
    and every window's (offered, sent_pps, pps, kept up)."""
    full = best = None
    tried = []
    for i, rate in enumerate(loads):
        got = window(rate, i)
        tried.append({"offered_pps": rate, "sent_pps": got["sent_pps"],
                      "pps": got["pps"], "kept_up": kept_up(got)})
        if full is None:
            full = best = got
        elif got["pps"] > best["pps"]:
            best = got
        if kept_up(got):
            break
    return full, best, tried
