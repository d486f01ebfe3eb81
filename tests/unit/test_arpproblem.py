"""pyfwd.arpproblem's pure parts: reading arp-check's output, whose MAC,
the request lines, and what the Result concludes from its measurements."""

from pyfwd.arpproblem import (ArpCheckRun, Request, Result, format_request,
                              owner, parse_arp_check)

LB, REAL1, REAL2 = "02:00:00:00:01:02", "02:00:00:00:01:11", \
    "02:00:00:00:01:12"
MACS = {"client": "02:00:00:00:01:01", "lb": LB, "real1": REAL1,
        "real2": REAL2}

FAILED_CHECK = (f"{REAL1}  ARP PROBLEM: not the balancer\n"
                f"{LB}  balancer\n"
                "Error: 1 host(s) answer ARP for 10.0.0.100: run `pyfwd "
                "realserver setup --vip 10.0.0.100` on them")


def req(before, after, node="real1", flows=0, frames=0):
    return Request("cause", before, after, node, flows, frames)


def check(rc, output):
    return ArpCheckRun(rc, output, parse_arp_check(output), LB)


def shown() -> Result:
    """What a good run measures: bypasses and a flip before, all through
    the balancer after."""
    res = Result(dict(MACS))
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


def test_owner():
    assert owner(REAL1, MACS) == "real1"
    assert owner(LB.upper(), MACS) == "lb"
    assert owner(None, MACS) == "none"
    assert owner("02:00:00:00:09:09", MACS) == "unknown"


def test_request_crossed_and_bypassed():
    assert req(None, REAL1).bypassed and not req(None, REAL1).crossed
    assert req(LB, LB, flows=1).crossed and not req(LB, LB, flows=1).bypassed
    failed = Request("cause", None, None, None, 0, 0, "timeout")
    assert not failed.bypassed and not failed.crossed


def test_format_request_says_the_cache_change_and_the_path():
    text = format_request(3, req(LB, REAL1, flows=1, frames=2), MACS)
    assert f"{LB} lb -> {REAL1} real1" in text
    assert "answered by real1; crossed the balancer (1 new flow, 2 frames)" \
        in text
    text = format_request(1, req(REAL1, REAL1, frames=1), MACS)
    assert "->" not in text and "BYPASSED the balancer (1 frame there)" \
        in text
    failed = Request("cause", None, None, None, 0, 0, "timeout")
    assert "FAILED (timeout)" in format_request(1, failed, MACS)


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
