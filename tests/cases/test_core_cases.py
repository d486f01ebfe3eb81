"""Golden packet-in / packet-out cases of the C core (no root needed)."""

import pytest

from pyfwd.dataplane.native import REASONS, VERDICTS, lib
from pyfwd.dataplane.core import Core

from . import defs
from .harness import check_case

WELLFORMED = defs.wellformed()
MALFORMED = defs.malformed()


def make_core(**kw):
    c = Core(mac=defs.LB_MAC, flows=4096, **kw)
    c.publish_services(defs.SERVICES, defs.MACS)
    return c


@pytest.fixture
def core():
    return make_core()


@pytest.mark.parametrize("case", WELLFORMED + MALFORMED,
                         ids=lambda c: c.name)
def test_case(core, case):
    [out], [result] = core.process([case.frame])
    check_case(case, out, result)
    assert result.verdict == VERDICTS[lib.pyfwd_reason_verdict(
        REASONS.index(case.reason))]


# Reasons whose cases need a state that a packet case cannot set up.
COVERED_ELSEWHERE = {
    "drop_table_full": "tests/unit/test_nat_core.py::test_full_table_drops"
                       "_new_flows_and_keeps_established_ones",
    "drop_handoff_full": "tests/cases/test_handoff.py::test_a_full_ring_"
                         "drops_and_counts",
}


def test_cases_cover_every_verdict_and_reason():
    from . import icmp_defs, nat_defs, tun_defs
    reasons = {c.reason for c in WELLFORMED + MALFORMED}
    reasons |= {c.reason for _, steps in nat_defs.sequences() for c in steps}
    reasons |= {c.reason for c in tun_defs.cases()}
    reasons |= icmp_defs.reasons()
    reasons |= set(COVERED_ELSEWHERE)
    assert reasons == set(REASONS), set(REASONS) - reasons
    verdicts = {VERDICTS[lib.pyfwd_reason_verdict(REASONS.index(r))]
                for r in reasons}
    assert verdicts == set(VERDICTS)


def test_truncated_at_every_byte(core):
    cases = defs.truncations(core.classify)
    assert len(cases) > 500
    bad = []
    for case, allowed in cases:
        [out], [r] = core.process([case.frame])
        if r.reason not in allowed or out != case.frame:
            bad.append(f"{case.name}: {r.reason}, want one of "
                       f"{sorted(allowed)}")
    assert not bad, "\n".join(bad[:40])


def test_one_batch_equals_frame_by_frame(core):
    cases = WELLFORMED + MALFORMED
    _, batch = core.process([c.frame for c in cases])
    assert [r.reason for r in batch] == [c.reason for c in cases]


def test_counters_count_every_frame_once(core):
    cases = WELLFORMED + MALFORMED
    core.process([c.frame for c in cases])
    s = core.stats()
    assert s["frames"] == len(cases)
    assert s["bytes"] == sum(len(c.frame) for c in cases)
    for reason in REASONS:
        assert s["reason"][reason] == sum(c.reason == reason for c in cases)
    assert sum(s["verdict"].values()) == len(cases)
    assert s["verdict"]["drop"] == sum(c.reason.startswith("drop_")
                                       for c in cases)
    assert s["verdict"]["drop"] > len(MALFORMED) - 1


def test_any_mac_core_accepts_other_unicast():
    core = Core(flows=64)   # no MAC: used where the NIC filters for us
    core.publish_services(defs.SERVICES, defs.MACS)
    frame = bytes(defs.eth(dst=defs.OTHER_MAC) / defs.syn())
    assert core.classify(frame).reason == "forward"


def test_vips_without_reals_drop_new_flows_and_say_so():
    core = Core(mac=defs.LB_MAC, flows=64)
    core.publish_vips(defs.VIPS)
    r = core.classify(bytes(defs.eth() / defs.syn()))
    assert (r.verdict, r.reason, r.vip) == ("drop", "drop_no_real", 0)
