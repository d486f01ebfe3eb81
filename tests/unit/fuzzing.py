"""What the hypothesis tests (test_fuzz_*.py) share: bounded, repeatable
settings (the unit suite stays fast and gives the same answer each run;
HYPOTHESIS_EXAMPLES=N runs N examples each, unseeded, for a longer hunt),
and byte mutations of well-formed seeds."""

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_LONG = int(os.environ.get("HYPOTHESIS_EXAMPLES", "0"))


def bounded(examples):
    """@settings for a test: `examples` examples (or HYPOTHESIS_EXAMPLES),
    derandomized unless a long hunt was asked for, no example database."""
    return settings(max_examples=_LONG or examples, deadline=None,
                    derandomize=not _LONG, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


def _mutate(seed, flips, cut, tail):
    b = bytearray(seed)
    for pos, value in flips:
        if b:
            b[pos % len(b)] = value
    if cut is not None:
        del b[cut % (len(b) + 1):]
    return bytes(b) + tail


def mutations(seeds, max_tail=64):
    """Arbitrary bytes, or one of `seeds` with a few bytes changed, maybe
    cut short, maybe with bytes after it."""
    seeds = [bytes(s) for s in seeds]
    return st.one_of(
        st.binary(max_size=256),
        st.builds(_mutate, st.sampled_from(seeds),
                  st.lists(st.tuples(st.integers(0, 4096),
                                     st.integers(0, 255)), max_size=6),
                  st.one_of(st.none(), st.integers(0, 4096)),
                  st.binary(max_size=max_tail)))
