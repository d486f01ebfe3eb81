"""Unfinished checksums through the C core, packet in / packet out (no
root): csum_defs' cases, and every packet case of defs and nat_defs again
flagged as a veth's: finished sums come out as they came."""

import pytest

from pyfwd.dataplane.core import Core
from pyfwd.dataplane.native import CSUM_COUNTERS
from pyfwd.model import Real

from . import csum_defs as cd
from . import defs
from . import nat_defs as nd
from .harness import check_case


def make_core(setup):
    if setup == "dr":
        core = Core(mac=defs.LB_MAC, flows=4096)
        core.publish_services(defs.SERVICES, defs.MACS)
        return core
    core = Core(mac=nd.OUT_MAC, mac2=nd.IN_MAC, flows=4096)
    if setup == "nat":
        core.set_snat(Real(nd.SNAT).address, nd.SNAT_PORTS)
        core.publish_services(nd.SERVICES, nd.MACS, nd.OUT_IFS)
    else:
        core.publish_services(cd.NAT6_SERVICES, cd.NAT6_MACS,
                              cd.NAT6_OUT_IFS)
    return core


def counts(core):
    s = core.stats()
    return {k: s[k] for k in CSUM_COUNTERS}


def run_steps(core, steps):
    for case in steps:
        before = counts(core)
        [out], [result] = core.process([case.frame], in_if=case.in_if,
                                       csum_partial=case.csum_partial,
                                       gso=case.gso)
        check_case(case, out, result)
        moved = {k: counts(core)[k] - before[k] for k in CSUM_COUNTERS}
        want = {k: int(case.csum is not None and k == f"csum_{case.csum}")
                for k in CSUM_COUNTERS}
        assert moved == want, f"{case.name}: counters {moved}, want {want}"


@pytest.mark.parametrize("name,setup,steps", cd.sequences(),
                         ids=[n for n, _, _ in cd.sequences()])
def test_sequence(name, setup, steps):
    run_steps(make_core(setup), steps)


def test_the_cases_cover_what_they_say():
    steps = [c for _, _, s in cd.sequences() for c in s]
    completed = {c.name for c in steps if c.csum == "completed"}
    for mode in ("dr-tcp4", "dr-udp4", "dr-tcp6", "dr-udp6", "nat-syn",
                 "nat-udp", "nat6-syn", "nat6-udp", "snat-syn"):
        assert f"{mode}-unfinished" in completed, mode
    assert any(c.csum == "bad" for c in steps)
    assert {"forward", "forward_reply"} <= {c.reason for c in steps
                                            if c.csum == "completed"}
    gso = {c.name for c in steps if c.gso}
    assert {"dr-gso", "nat-gso", "nat-gso-reply", "snat-gso-reply",
            "nat6-gso-reply"} <= gso


def flagged(cases):
    return [(c, dict(c.__dict__, csum_partial=True)) for c in cases]


def test_every_finished_case_comes_out_the_same_when_flagged():
    """All of defs' and nat_defs' cases (finished sums, and malformed and
    cut frames) flagged as a veth's: the same verdicts and bytes, and
    nothing completed or found bad."""
    plain, veth = make_core("dr"), make_core("dr")
    frames = [c.frame for c in defs.wellformed() + defs.malformed()]
    frames += [c.frame for c, _ in defs.truncations(plain.classify)]
    want = plain.process(frames)
    got = veth.process(frames, csum_partial=True)
    assert got == want
    assert counts(veth) == dict.fromkeys(CSUM_COUNTERS, 0)
    for _, steps in nd.sequences():
        core = make_core("nat")
        for case in steps:
            [out], [result] = core.process([case.frame], in_if=case.in_if,
                                           csum_partial=True)
            check_case(case, out, result)
        assert counts(core) == dict.fromkeys(CSUM_COUNTERS, 0)


def test_every_payload_length_and_both_families_complete_right():
    """Completion sums 8 bytes at a time, then 4, 2 and 1: payloads of 0
    to 80 bytes (every tail), TCP and UDP, IPv4 and IPv6, unfinished then
    finished, with scapy's checksums coming out."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Raw

    from .harness import checksum_problems, unfinished
    core = make_core("dr")
    frames = []
    for n in range(81):
        payload = Raw(bytes((7 * i + n) & 0xFF for i in range(n)))
        for l3 in (IP(src=defs.CLIENT4, dst=defs.VIP4),
                   IPv6(src=defs.CLIENT6, dst=defs.VIP6)):
            frames.append(bytes(defs.eth() / l3 / TCP(sport=1000 + n,
                                                      dport=80) / payload))
            frames.append(bytes(defs.eth() / l3 / UDP(sport=1000 + n,
                                                      dport=53) / payload))
    outs, res = core.process([unfinished(f) for f in frames],
                             csum_partial=True)
    assert {r.reason for r in res} == {"forward"}
    assert [o[12:] for o in outs] == [f[12:] for f in frames]
    assert not [p for o in outs for p in checksum_problems(o)]
    assert counts(core) == {"csum_completed": len(frames), "csum_bad": 0}
    outs, _ = core.process(frames, csum_partial=True)
    assert [o[12:] for o in outs] == [f[12:] for f in frames]
    assert counts(core) == {"csum_completed": len(frames), "csum_bad": 0}
