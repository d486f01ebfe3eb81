"""How much does crossing from Python cost, next to the core's own work?

Runs the same classifier frames through pyfwd_core_burst in batches of
1, 8, 64 and 256 frames, side by side in one run, and prints ns per frame
and each batch size's cost relative to the largest.  This is why the data
plane never calls into Python per packet: at batch 1 the call dominates.

    .venv/bin/python bench/core_batch.py [--frames N] [--repeat R]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pyfwd.dataplane.core import Core  # noqa: E402
from tests.cases import defs  # noqa: E402


def mix(n):
    """n frames: mostly VIP traffic, some pass and some malformed."""
    fwd = [c.frame for c in defs.wellformed() if c.reason == "forward"]
    rest = [c.frame for c in defs.wellformed() + defs.malformed()
            if c.reason != "forward" and len(c.frame) < 2048]
    pool = fwd * 4 + rest
    return [pool[i % len(pool)] for i in range(n)]


def ns_per_frame(core, frames, batch, repeat):
    batches = [core.prepare(frames[i:i + batch])
               for i in range(0, len(frames), batch)]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        for b in batches:
            core.run(b)
        best = min(best, time.perf_counter_ns() - t0)
    return best / len(frames)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=256 * 64)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    # A flow table that fits in cache: this measures the core and the
    # crossing, not DRAM (a 2M-slot table misses on every lookup).
    # No MAC of ours: a forwarded frame (now addressed to its real server)
    # is still ours on the next round, so every round forwards again.
    core = Core(flows=1 << 12)
    core.publish_services(defs.SERVICES, defs.MACS)
    frames = mix(args.frames)
    sizes = (1, 8, 64, 256)
    results = {b: ns_per_frame(core, frames, b, args.repeat) for b in sizes}
    base = results[sizes[-1]]
    print(f"core classify, {len(frames)} frames, best of {args.repeat}")
    print(f"{'batch':>6} {'ns/frame':>10} {'Mframes/s':>10} {'x batch 256':>12}")
    for b in sizes:
        print(f"{b:>6} {results[b]:>10.1f} {1e3 / results[b]:>10.2f} "
              f"{results[b] / base:>12.2f}")


if __name__ == "__main__":
    main()
