"""A real's live flows counted apart, as ipvsadm's ActiveConn and InActConn:
active (established or half-open) and inactive (closing: a FIN or RST
seen, kept tcp_fin seconds).  The core keeps, per worker and real, every
live flow (what LC and WLC weigh, unchanged) and the closing ones
(csrc/flow.h flow_touch, flow_uncount); pyfwd_real_stats reports active =
all - closing.  pyfwd_flow_counts_check compares both to a scan of the
table.  No root: frames through the core on its fixed clock."""

from pyfwd.dataplane.core import Core
from pyfwd.dataplane.native import lib
from pyfwd.model import Real, Service, Vip

from . import nat_defs as nd
from .nat_defs import answer, seg

T0 = 1000
FIN_S = 10
TIMEOUTS = {"tcp_syn": 30, "tcp_established": 900, "tcp_fin": FIN_S,
            "udp": 300}
DR = Vip.parse(f"{nd.VIP}:22/tcp")          # DR, least connections
DR_REALS = [Real(nd.REAL1), Real(nd.REAL2)]


def new_core(workers=1):
    core = Core(mac=nd.OUT_MAC, mac2=nd.IN_MAC, flows=4096,
                timeouts=TIMEOUTS, workers=workers)
    core.set_snat(Real(nd.SNAT).address, (61000, 61999))
    core.publish_services(
        [Service(nd.WEB, list(nd.POOL), "maglev", "nat"),
         Service(nd.SWEB, list(nd.POOL), "maglev", "snat"),
         Service(DR, list(DR_REALS), "lc", "dr")],
        {**nd.POOL_MACS, **nd.MACS}, {**nd.POOL_OUT_IFS, **nd.OUT_IFS})
    core.set_clock(T0)
    return core


def forwarded(core, frames, **kw):
    outs, res = core.process(frames, **kw)
    assert {r.reason for r in res} <= {"forward", "forward_reply"}, res
    return outs


def counts(core):
    """(active, inactive) over every real, checked against a scan and
    against the live flows LC weighs (core.flows())."""
    for w in range(core.workers):
        assert lib.pyfwd_flow_counts_check(core.ctx, w) == 0, w
    per = core.real_stats()
    live = core.flows()
    for rid, r in per.items():
        assert r["active"] + r["inactive"] == live[rid], rid
    return (sum(r["active"] for r in per.values()),
            sum(r["inactive"] for r in per.values()))


def test_dr_syn_fin_expiry():
    core = new_core()
    forwarded(core, [seg(DR, 40000)])
    assert counts(core) == (1, 0)               # half-open: active
    forwarded(core, [seg(DR, 40000, "A")])
    assert counts(core) == (1, 0)               # established
    forwarded(core, [seg(DR, 40000, "FA")])
    assert counts(core) == (0, 1)               # the client's FIN
    forwarded(core, [seg(DR, 40000, "A")])
    assert counts(core) == (0, 1)               # closing stays closing
    core.set_clock(T0 + FIN_S - 1)
    core.expire()
    assert counts(core) == (0, 1)
    core.set_clock(T0 + FIN_S + 1)
    core.expire()
    assert counts(core) == (0, 0)


def test_twenty_short_requests_leave_no_active_flow():
    # the report: after 20 short requests ACTIVE read 20 for tcp_fin
    core = new_core()
    for sport in range(40000, 40020):
        forwarded(core, [seg(DR, sport), seg(DR, sport, "A"),
                         seg(DR, sport, "FA")])
    assert counts(core) == (0, 20)


def test_rst_closes_and_a_first_rst_is_closing_at_once():
    core = new_core()
    forwarded(core, [seg(DR, 40000), seg(DR, 40000, "A")])
    forwarded(core, [seg(DR, 40000, "R")])
    assert counts(core) == (0, 1)
    forwarded(core, [seg(DR, 40001, "R")])      # a straggler's RST
    assert counts(core) == (0, 2)


def test_nat_the_reals_fin_in_the_reply_direction():
    core = new_core()
    for vip in (nd.WEB, nd.SWEB):
        [out] = forwarded(core, [seg(vip, 40000)])
        forwarded(core, [answer(out)], in_if=1)
        forwarded(core, [seg(vip, 40000, "A")])
    assert counts(core) == (2, 0)
    forwarded(core, [answer(out, "FA")], in_if=1)     # SNAT's real: FIN
    assert counts(core) == (1, 1)
    [out] = forwarded(core, [seg(nd.WEB, 40000, "A")])
    forwarded(core, [answer(out, "R")], in_if=1)      # NAT's real: RST
    assert counts(core) == (0, 2)
    core.set_clock(T0 + FIN_S + 1)
    core.expire()
    assert counts(core) == (0, 0)


def test_a_new_syn_on_a_closing_tuple_reopens_it():
    core = new_core()
    forwarded(core, [seg(DR, 40000), seg(DR, 40000, "A"),
                     seg(DR, 40000, "FA")])
    [out] = forwarded(core, [seg(nd.SWEB, 40001)])
    forwarded(core, [answer(out)], in_if=1)
    forwarded(core, [seg(nd.SWEB, 40001, "A"), seg(nd.SWEB, 40001, "FA")])
    assert counts(core) == (0, 2)
    forwarded(core, [seg(DR, 40000), seg(nd.SWEB, 40001)])
    assert counts(core) == (2, 0)               # new flows, half-open
    assert core.stats()["flows_half_open"] == 2


def test_several_workers_keep_their_own_counts():
    core = new_core(workers=2)
    for sport in range(40000, 40008):
        forwarded(core, [seg(DR, sport), seg(DR, sport, "A")],
                  worker=sport % 2)
    forwarded(core, [seg(DR, 40000, "FA")], worker=0)
    forwarded(core, [seg(DR, 40001, "R")], worker=1)
    assert counts(core) == (6, 2)


def test_lc_weighs_the_closing_flows_as_before():
    # X: two flows, both closing; Y: one open.  LC weighs every live flow
    # (X 2, Y 1): the next flow goes to Y.  Weighing only the active ones
    # (X 0) would send it to X.
    core = new_core()
    reals = []
    for sport in (40000, 40001, 40002):
        before = {i: r["flows_new"] for i, r in core.real_stats().items()}
        forwarded(core, [seg(DR, sport), seg(DR, sport, "A")])
        reals.append(next(i for i, r in core.real_stats().items()
                          if r["flows_new"] > before.get(i, 0)))
    x = reals[2]                                # the third: a tie, taken
    y = next(r for r in set(reals) if r != x)
    assert reals.count(x) == 2 and reals.count(y) == 1
    forwarded(core, [seg(DR, s, "FA") for s, r in
                     zip((40000, 40001, 40002), reals) if r == x])
    per = core.real_stats()
    assert (per[x]["active"], per[x]["inactive"]) == (0, 2)
    assert (per[y]["active"], per[y]["inactive"]) == (1, 0)
    forwarded(core, [seg(DR, 40003)])
    assert core.real_stats()[y]["flows_new"] == 2
    assert core.real_stats()[x]["flows_new"] == 2
