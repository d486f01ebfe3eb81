"""The packet cases as a microbenchmark (Katran's testPerfFromFixture):
`.venv/bin/python -m pytest bench/ --benchmark-only`.  Not part of the test
suite; figures, not assertions."""

import pytest

from pyfwd.dataplane.core import Core
from tests.cases import defs

GROUPS = {
    "forward": [c for c in defs.wellformed() if c.reason == "forward"],
    "pass-punt": [c for c in defs.wellformed() if c.reason != "forward"],
    "malformed": [c for c in defs.malformed() if len(c.frame) < 2048],
}


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_classify_256(benchmark, group):
    # No MAC of ours: a forwarded frame (now addressed to its real server)
    # is still ours on the next round, so every round forwards again.
    core = Core(flows=1 << 12)
    core.publish_services(defs.SERVICES, defs.MACS)
    cases = GROUPS[group]
    batch = core.prepare([cases[i % len(cases)].frame for i in range(256)])
    benchmark.extra_info["frames_per_call"] = 256
    benchmark(core.run, batch)
