"""How long does building a scheduler table take?

Times maglev_table and wrr_table on the sizes the control plane builds, best
of R runs, and prints the Maglev disruption figures (share of the surviving
reals' entries that move when one real is removed).

    .venv/bin/python bench/scheduler_tables.py [--repeat R]
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pyfwd.dataplane.scheduler import (NO_REAL, TABLE_SIZE_MAX,  # noqa: E402
                             maglev_table, wrr_table)


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def reals(n):
    return [f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}:80" for i in range(n)]


def by_key(keys, table):
    names = np.array(list(keys) + [None], dtype=object)
    t = table.astype(np.int64)
    t[t == NO_REAL] = len(keys)
    return names[t]


def disruption(n):
    """Worst share of surviving entries that move when one real goes."""
    keys = reals(n)
    before = by_key(keys, maglev_table(keys, [1] * n))
    worst = 0.0
    for gone in range(min(n, 10)):
        rest = keys[:gone] + keys[gone + 1:]
        after = by_key(rest, maglev_table(rest, [1] * (n - 1)))
        survivors = before != keys[gone]
        worst = max(worst, (before[survivors] != after[survivors]).mean())
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    cases = [
        ("maglev 65537, 10 reals", lambda: maglev_table(reals(10), [1] * 10)),
        ("maglev 65537, 100 reals",
         lambda: maglev_table(reals(100), [1] * 100)),
        ("maglev 65537, 100 reals, weights 1..100",
         lambda: maglev_table(reals(100), list(range(1, 101)))),
        ("maglev 65537, 65535 reals",
         lambda: maglev_table(reals(65535), [1] * 65535)),
        (f"maglev {TABLE_SIZE_MAX}, 1000 reals",
         lambda: maglev_table(reals(1000), [1] * 1000, TABLE_SIZE_MAX)),
        ("wrr 65535 entries, 3 reals",
         lambda: wrr_table([21845, 21846, 21844])),
        ("wrr 65703 entries, 362 distinct weights",
         lambda: wrr_table(list(range(1, 363)), TABLE_SIZE_MAX)),
    ]
    for name, fn in cases:
        print(f"{name:45s} {best(fn, args.repeat) * 1e3:8.1f} ms")
    for n in (10, 100):
        print(f"maglev remove 1 of {n:3d}: {disruption(n) * 100:.2f} % of the "
              "surviving reals' entries move")


if __name__ == "__main__":
    main()
