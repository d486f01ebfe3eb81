"""The ARP problem lesson's pure parts (pyfwd.lab.arpproblem and
arpmeasure): reading arp-check's output, whose MAC, the request lines, the
announcement, and what the Result concludes from its measurements."""

import subprocess
import time

import pytest

from pyfwd.lab import arpmeasure, arpproblem
from pyfwd.lab.arpmeasure import (ArpCheckRun, Request, Result, frame_counts,
                                  parse_arp_check, punts_handled,
                                  wait_for_announcement)
from pyfwd.lab.arpproblem import (format_announcement, format_arp_check,
                                  format_request, format_times, owner)
from pyfwd.errors import LabError

CLIENT, LB, REAL1, REAL2 = "02:00:00:00:01:01", "02:00:00:00:01:02", \
    "02:00:00:00:01:11", "02:00:00:00:01:12"
OWNERS = {CLIENT: "client", LB: "lb", REAL1: "real1", REAL2: "real2"}

FAILED_CHECK = (f"{REAL1}  ARP PROBLEM: not the balancer\n"
                f"{LB}  balancer\n"
                "Error: 1 host(s) answer ARP for 10.0.0.100: run `pyfwd "
                "realserver setup --vip 10.0.0.100` on them")


def req(before, after, node="real1", flows=0, frames=0, **kw):
    return Request("cause", before, after, node, flows, frames, **kw)


def check(rc, output):
    return ArpCheckRun(rc, output, parse_arp_check(output), LB)


def shown() -> Result:
    """What a good run measures: bypasses and a flip before, all through
    the balancer after."""
    res = Result(dict(OWNERS))
    res.before = [req(None, REAL1, frames=1), req(REAL1, REAL1),
                  req(LB, REAL1, flows=1, frames=2), req(REAL1, REAL1)]
    res.check_before = check(1, FAILED_CHECK)
    res.after = [req(None, LB, "real2", 1, 8), req(LB, LB, "real1", 1, 7)]
    res.cache_after = LB
    res.check_after = check(0, f"{LB}  balancer")
    return res


def test_parse_arp_check_lists_the_macs_in_order_and_skips_the_rest():
    assert parse_arp_check(FAILED_CHECK) == (REAL1, LB)
    assert parse_arp_check("nobody answered ARP for 10.0.0.100") == ()
    assert parse_arp_check("02:00:00:00:01:0A  balancer") == \
        ("02:00:00:00:01:0a",)


def test_parse_arp_check_takes_a_mac_alone_on_its_line_not_a_longer_word():
    assert parse_arp_check(LB) == (LB,)
    assert parse_arp_check(f"{LB}\n{REAL1}\t x") == (LB, REAL1)
    assert parse_arp_check(f"{LB}99  balancer") == ()


def test_format_arp_check_names_the_owner_of_each_listed_mac():
    text = format_arp_check(check(0, f"{LB}\nno one else"), OWNERS)
    assert f"    {LB}   <- lb" in text
    assert "no one else\n" in text and "<- " not in text.split("\n")[2]


def test_owner():
    assert owner(REAL1, OWNERS) == "real1"
    assert owner(LB.upper(), OWNERS) == "lb"
    assert owner(None, OWNERS) == "none"
    assert owner("02:00:00:00:09:09", OWNERS) == "unknown"


def test_result_finds_the_roles_macs_in_the_owners():
    res = Result(dict(OWNERS))
    assert (res.lb_mac, res.broken_mac) == (LB, REAL1)
    with pytest.raises(LabError):
        Result({LB: "lb"}).broken_mac


def test_request_crossed_and_bypassed():
    assert req(None, REAL1).bypassed and not req(None, REAL1).crossed
    assert req(LB, LB, flows=1).crossed and not req(LB, LB, flows=1).bypassed
    failed = Request("cause", None, None, None, 0, 0, "timeout")
    assert not failed.bypassed and not failed.crossed


def test_frame_counts_reads_flows_frames_forwarded_arp_and_answers():
    reason = {r: 0 for r in ("forward", "pass_arp", "punt_arp",
                             "pass_other_mac")}
    reason.update(forward=5, pass_arp=1, punt_arp=2, pass_other_mac=4)
    stats = {"core": {"flows_new": 3, "frames": 12, "reason": reason},
             "arp": {"requests_answered": 2, "conflicts": 1}}
    assert frame_counts(stats) == {"flows": 3, "frames": 12, "forwarded": 5,
                                   "arp": 3, "arp_answered": 2,
                                   "arp_claims": 1}


def test_punts_handled_when_the_arp_counters_caught_up_with_the_punts():
    def stats(punted, overflow, **arp):
        return {"core": {"verdict": {"punt": punted},
                         "punt_overflow": overflow}, "arp": arp}
    assert punts_handled(stats(0, 0))
    assert punts_handled(stats(3, 0, requests_answered=1, conflicts=1,
                               ignored=1))
    assert not punts_handled(stats(3, 0, requests_answered=1, conflicts=1))
    assert punts_handled(stats(3, 1, requests_answered=1, conflicts=1))


def test_format_request_says_the_cache_change_and_the_path():
    text = format_request(3, req(LB, REAL1, flows=1, frames=2, forwarded=1,
                                 arp=1), OWNERS)
    assert f"{LB} lb -> {REAL1} real1" in text
    assert "answered by real1; crossed the balancer (1 new flow there)" \
        in text
    assert "the balancer counted 2 frames while it ran: 1 forwarded to a " \
        "real server, 1 ARP" in text
    failed = Request("cause", None, None, None, 0, 0, "timeout")
    assert "FAILED (timeout)" in format_request(1, failed, OWNERS)


def test_format_request_says_what_the_frames_of_a_bypass_were():
    text = format_request(1, req(REAL1, REAL1, frames=1, arp=1,
                                 arp_answered=1), OWNERS)
    assert "->" not in text
    assert "BYPASSED the balancer (no new flow there)" in text
    assert "counted 1 frame while it ran: 1 ARP\n     (it answered 1 ARP " \
        "request for the VIP)" in text
    text = format_request(1, req(REAL1, REAL1, frames=2, arp=2,
                                 arp_answered=1, arp_claims=1), OWNERS)
    assert "(it answered 1 ARP request for the VIP; 1 ARP frame from " \
        "another MAC named the VIP as sender)" in text
    assert "no frame while it ran" in format_request(
        2, req(REAL1, REAL1), OWNERS)
    # what is neither forwarded nor ARP is "other", never left unsaid
    assert "1 frame while it ran: 1 other" in format_request(
        2, req(REAL1, REAL1, frames=1), OWNERS)


def test_format_times_follows_the_schedule():
    from pyfwd.control.ha import GARP_REPEAT
    assert format_times((0.0, 1.0, 3.0)) == "0, 1 and 3 s"
    assert format_times((0.5, 2.0)) == "0.5 and 2 s"
    assert format_times((1.0,)) == "1 s"
    assert format_times(GARP_REPEAT).endswith(f"{GARP_REPEAT[-1]:g} s")
    assert "{times}" in arpproblem._ANNOUNCE      # not written out by hand


class _Lab:
    """Answers cached_mac's lab.call with the MAC ``mac_at(t)`` for the
    time since ``started``."""

    def __init__(self, eng, mac_at):
        self.eng, self.mac_at = eng, mac_at

    def call(self, role, job, timeout):
        return self.mac_at(time.monotonic() - self.eng.started)


class _Eng:
    def __init__(self, started_ago):
        self.started = time.monotonic() - started_ago


def _wait(mac_at, started_ago=0.6):
    # the announcement at 1.0 s is 0.4 s away: a loaded machine does not
    # get there before wait_for_announcement() looks (0.1 s did, once)
    eng = _Eng(started_ago)
    return wait_for_announcement(_Lab(eng, mac_at), eng, LB,
                                 times=(0.0, 1.0), wait=0.2)


def test_wait_for_announcement_credits_a_change_to_the_lb_mac():
    ann = _wait(lambda t: LB if t >= 1.0 else REAL1)
    assert ann.due == 1.0 and ann.took and not ann.already_held
    assert (ann.mac_before, ann.mac_after) == (REAL1, LB)
    assert 1.0 <= ann.seen < 1.2
    assert f"went from {REAL1} real1 to {LB} lb" in \
        format_announcement(ann, OWNERS)


def test_wait_for_announcement_does_not_credit_what_was_already_held():
    ann = _wait(lambda t: LB)
    assert ann.already_held and not ann.took and ann.seen is None
    text = format_announcement(ann, OWNERS)
    assert "already held" in text and "changed nothing" in text


def test_wait_for_announcement_when_nothing_changed_or_none_is_left():
    ann = _wait(lambda t: REAL1)
    assert not ann.took and not ann.already_held
    assert "still held 02:00:00:00:01:11 real1" in \
        format_announcement(ann, OWNERS)
    ann = _wait(lambda t: REAL1, started_ago=5.0)
    assert ann.due is None
    assert "last announcement" in format_announcement(ann, OWNERS)


class _Namespaces:
    """A lab whose run() times out (or answers ``said``) and whose cache
    reads give ``mac``: request() and run_arp_check() without root."""

    reals = ["real1", "real2"]

    def __init__(self, said=None, mac=LB):
        self.said, self.mac = said, mac

    def call(self, role, job, timeout):
        return self.mac

    def run(self, role, argv, **kw):
        if self.said is None:
            raise subprocess.TimeoutExpired(argv, kw.get("timeout"))
        return subprocess.CompletedProcess(argv, 0, self.said, "")


class _Counting:
    """An engine whose counters move by one flow and 3 frames a read."""

    def __init__(self):
        self.reads = 0

    def stats(self):
        self.reads += 1
        n = self.reads
        return {"core": {"flows_new": n, "frames": 3 * n,
                         "reason": {"forward": 2 * n, "punt_arp": n},
                         "verdict": {"punt": n}, "punt_overflow": 0},
                "arp": {"requests_answered": 0, "conflicts": n}}


def test_request_turns_a_curl_timeout_into_a_failed_request():
    r = arpmeasure.request(_Namespaces(), _Counting(), "cause")
    assert r.node is None and "did not finish" in r.error
    assert (r.flows, r.frames, r.forwarded, r.arp, r.arp_claims) == \
        (1, 3, 2, 1, 1)


def test_request_reads_the_node_from_the_whoami_answer():
    ns = _Namespaces("node=real2 client=10.0.0.1:4000 local=10.0.0.100:8080")
    r = arpmeasure.request(ns, _Counting(), "cause")
    assert (r.node, r.error, r.mac_before, r.mac_after) == \
        ("real2", None, LB, LB)
    r = arpmeasure.request(_Namespaces("hello"), _Counting(), "cause")
    assert r.node is None and "hello" in r.error


def test_run_arp_check_turns_a_timeout_into_a_lab_error():
    with pytest.raises(LabError, match="arp-check.*no answer"):
        arpmeasure.run_arp_check(_Namespaces(), LB)


def test_result_shown_and_fixed():
    res = shown()
    assert len(res.bypassed) == 3
    assert res.cache_history == [REAL1, LB, REAL1]
    assert res.flipped and res.failure_seen and res.fixed and res.ok


def test_result_without_a_bypass_shows_no_failure():
    res = shown()
    res.before = [req(LB, LB, flows=1)]
    assert not res.failure_seen and not res.flipped and not res.ok


def test_result_needs_arp_check_to_name_real1():
    res = shown()
    res.check_before = check(1, f"{REAL2}  ARP PROBLEM: not the balancer\n"
                                f"{LB}  balancer")
    assert not res.failure_seen


def test_result_not_fixed_if_a_request_bypassed_or_the_cache_is_wrong():
    res = shown()
    res.after = res.after + [req(REAL1, REAL1)]
    assert not res.fixed
    res = shown()
    res.cache_after = REAL1
    assert not res.fixed
    res = shown()
    res.check_after = check(1, FAILED_CHECK)
    assert not res.fixed
    res = shown()
    res.after = []
    assert not res.fixed
