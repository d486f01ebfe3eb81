"""ICMP errors follow their flow (DR, NAT IPv6) and NAT routes (TTL):
icmp_defs' cases through the C core, packet in / packet out (no root)."""

import random

import pytest

from pyfwd.dataplane.native import REASONS

from . import icmp_defs as idefs
from .harness import check_case

SEQUENCES = idefs.sequences()


@pytest.mark.parametrize("name,make_core,steps", SEQUENCES,
                         ids=[n for n, _, _ in SEQUENCES])
def test_sequence(name, make_core, steps):
    core = make_core()
    for case in steps:
        [out], [result] = core.process([case.frame], in_if=case.in_if)
        check_case(case, out, result)


def test_counters_name_what_became_of_the_errors():
    core = idefs.dr_core()
    steps = idefs.dr_flows() + idefs.malformed()
    core.process([c.frame for c in steps])
    reason = core.stats()["reason"]
    for name in ("forward_icmp", "drop_icmp_no_flow", "drop_icmp_quote"):
        assert reason[name] == sum(c.reason == name for c in steps) > 0


def test_mangled_quotes_are_counted_never_read_past():
    # Random bytes of the quote changed, and frames cut anywhere: every
    # frame gets a reason (ASan: tests/cases/test_sanitizer_replay.py runs
    # the core on these cases' kind too) and only a forward changes it.
    rng = random.Random(17)
    core = idefs.dr_core()
    seeds = [c.frame for c in idefs.dr_flows() + idefs.dr6()]
    core.process(seeds)
    frames = []
    for _ in range(3000):
        f = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            f[rng.randrange(34, len(f))] = rng.randrange(256)
        frames.append(bytes(f[:rng.randint(14, len(f))]))
    outs, results = core.process(frames)
    assert sum(core.stats()["reason"].values()) == len(seeds) + len(frames)
    for f, out, r in zip(frames, outs, results):
        assert r.reason in REASONS
        assert r.verdict == "forward" or out == f


def test_the_persistence_case_is_not_the_hash():
    # dr-persist means something only if the hash alone says real2.
    s = idefs.syn(42002, 8080)
    [out], _ = idefs.dr_core().process([s])
    assert out == idefs.to(s, idefs.REAL2_MAC)
