"""`pyfwd lab arp-problem`'s lesson in a real lab (root): the failure and
the fix, asserted on what the lesson measured, not on its text."""

import secrets

import pytest

from pyfwd.lab import arpproblem
from pyfwd.lab import topology as labmod
from pyfwd.lab.topology import Lab

pytestmark = pytest.mark.root

LESSON_TIMEOUT = 60     # seconds; the lesson takes about 6 here


@pytest.fixture
def one_arm():
    name = "pfa" + secrets.token_hex(3)
    with Lab(name, topology="one-arm", reals=2) as the_lab:
        yield the_lab
    assert labmod.scan(name) == {}


@pytest.mark.timeout(LESSON_TIMEOUT)
def test_lesson_shows_the_failure_then_the_fix(one_arm):
    lines = []
    res = arpproblem.lesson(one_arm, lines.append)
    text = "\n".join(lines)
    lb, real1 = res.lb_mac, res.broken_mac
    assert (lb, real1) == (one_arm.node("lb").interfaces[0].mac,
                           one_arm.node("real1").interfaces[0].mac)

    # before the fix: requests landed on real1 without the balancer seeing
    # them, and the client's cache went from real1 to the balancer and back
    assert res.bypassed, text
    assert all(r.node == "real1" for r in res.bypassed), text
    assert all(r.node for r in res.before), text
    assert res.before[0].mac_after == real1, text
    assert res.flipped, text
    assert res.cache_history[:2] == [real1, lb], text
    assert res.broken_sysctls == {"arp_ignore": "0", "arp_announce": "0"}
    # the balancer forwarded nothing of a bypass; the announcement is
    # credited only for changing real1's MAC to its own
    assert all(r.forwarded == 0 for r in res.bypassed), text
    ann = res.announcement
    assert ann.took and not ann.already_held, text
    assert (ann.mac_before, ann.mac_after) == (real1, lb), text
    # real1's own who-has (sender: the VIP) took the cache back under a
    # request that had begun through the balancer: fewer of its frames
    # crossed it than of a request after the fix
    flip = [r for r in res.before
            if r.crossed and (r.mac_before, r.mac_after) == (lb, real1)]
    assert flip and flip[0].arp_claims >= 1, text
    assert flip[0].forwarded < min(r.forwarded for r in res.after), text

    # found: arp-check exits 1 naming real1; the engine recorded it too
    assert res.check_before.returncode == 1, text
    assert res.check_before.others == (real1,), text
    assert lb in res.check_before.macs, text
    assert real1 in res.engine_conflicts.get(arpproblem.VIP, []), text

    # fixed: every request crossed the balancer, the cache holds its MAC,
    # nothing claims the VIP any more and arp-check passes
    assert "arp_ignore" in res.setup_output, text
    assert res.after and all(r.crossed and r.node for r in res.after), text
    assert {r.node for r in res.after} == set(one_arm.reals), text
    assert all(r.mac_after == lb for r in res.after), text
    assert res.cache_after == lb, text
    assert res.conflict_frames_after == 0, text
    assert res.check_after.returncode == 0, text
    assert res.check_after.macs == (lb,), text

    assert res.failure_seen and res.fixed and res.ok
    assert "BYPASSED" in text and "client$ pyfwd arp-check" in text


@pytest.mark.timeout(LESSON_TIMEOUT)
def test_run_builds_and_removes_its_lab():
    name = "pfa" + secrets.token_hex(3)
    lines = []
    try:
        assert arpproblem.run(lines.append, name=name, reals=2), \
            "\n".join(lines)
    finally:
        labmod.down_all(prefix=name)
    assert labmod.scan(name) == {}
    assert lines[-1].startswith("The ARP problem was shown")
