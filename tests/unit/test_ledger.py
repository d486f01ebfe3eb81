"""Counters that never go down (control.ledger): the ledger alone over
made-up counters, then an Engine with a real C core (test_changes's
fakes for the kernel's parts) whose real servers leave, halt, come back
and are replaced while frames flow through the core."""

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pyfwd.control.ledger import RealLedger
from pyfwd.model import Vip

from .test_changes import LB_MAC, WEB, started

A, B, C = ((WEB, k) for k in ("10.0.0.11", "10.0.0.12", "10.0.0.13"))
OTHER = Vip.parse("10.0.0.200:80/tcp")


def raw(**ids):
    """{id: counters} from id=(frames, bytes, flows_new, active[,
    inactive])."""
    keys = ("frames", "bytes", "flows_new", "active", "inactive")
    return {int(k[1:]): dict(zip(keys, v)) for k, v in ids.items()}


def test_a_real_keeps_its_counts_across_ids():
    clock = iter(range(100, 200)).__next__
    led = RealLedger(clock)
    assert not led.seen
    led.published([A, B], {A: 0, B: 1}, raw(i0=(10, 100, 1, 1),
                                             i1=(5, 50, 1, 0)),
                  {A: ("online", True, False), B: ("online", True, False)})
    assert led.seen
    # from publish on: the counts it had when it got the id are not its
    # active and inactive: the id's gauges now, never a difference
    assert led.counters(A, raw(i0=(12, 120, 2, 1, 3))) == {
        "frames": 2, "bytes": 20, "flows_new": 1, "active": 1, "inactive": 3}
    # A halted: out of the tables, its id released; it keeps its counts
    led.published([A, B], {B: 1}, raw(i0=(15, 150, 3, 0), i1=(5, 50, 1, 0)),
                  {A: ("halt", True, False), B: ("online", True, False)})
    assert led.counters(A, raw(i0=(99, 990, 9, 0))) == {
        "frames": 5, "bytes": 50, "flows_new": 2, "active": 0, "inactive": 0}
    assert led.last_change(A) == 101 and led.last_change(B) == 100
    # online again with another id (2, which had someone's 40 frames)
    led.published([A, B], {A: 2, B: 1}, raw(i1=(5, 50, 1, 0),
                                             i2=(40, 400, 4, 0)),
                  {A: ("online", True, False), B: ("online", True, False)})
    assert led.counters(A, raw(i2=(41, 410, 5, 1)))["frames"] == 6
    assert led.last_change(A) == 102


def test_a_vip_keeps_what_its_departed_reals_counted():
    led = RealLedger()
    led.published([A, B], {A: 0, B: 1}, raw(i0=(0, 0, 0, 0), i1=(0, 0, 0, 0)))
    now = raw(i0=(30, 300, 3, 2), i1=(10, 100, 1, 0))
    before = led.vip_totals(WEB, now)
    assert before == {"frames": 40, "bytes": 400, "flows_new": 4}
    # B removed (del-real, reload): its 10 frames stay the VIP's
    led.published([A], {A: 0}, now)
    after = led.vip_totals(WEB, now)
    assert after == before
    # its id goes to C, with B's counts in the data plane: C starts at 0
    led.published([A, C], {A: 0, C: 1}, now)
    assert led.counters(C, now)["frames"] == 0
    assert led.vip_totals(WEB, raw(i0=(30, 300, 3, 0),
                                   i1=(12, 120, 2, 1)))["frames"] == 42
    # a deleted VIP's totals go with it: re-added, it starts from 0
    led.published([(OTHER, "10.0.0.11")], {(OTHER, "10.0.0.11"): 0}, now)
    assert led.vip_totals(WEB, now) == dict.fromkeys(
        ("frames", "bytes", "flows_new"), 0)


def test_conditions_of_reals_that_left_are_forgotten():
    led = RealLedger(iter(range(10)).__next__)
    led.published([], {}, {}, {A: 1, B: 1})
    led.published([], {}, {}, {A: 1})
    assert (led.last_change(A), led.last_change(B)) == (0, None)
    led.published([], {}, {}, {A: 1, B: 1})
    assert led.last_change(B) == 2


L7 = Vip.parse("10.0.0.101:80/tcp")
S1, S2 = (L7, "10.0.0.21:8080"), (L7, "10.0.0.22:8080")


def test_haproxy_counters_are_carried_over_its_restarts():
    led = RealLedger()
    led.published([], {}, {}, l7={S1: {"flows_new": 5, "bytes": 500},
                                  S2: {"flows_new": 1, "bytes": 10}})
    assert led.observed(S1, {"flows_new": 7, "bytes": 700, "active": 2}) \
        == {"flows_new": 7, "bytes": 700, "frames": 0, "active": 2}
    # HAProxy reloaded: its counters start again from 0
    got = led.observed(S1, {"flows_new": 1, "bytes": 100, "active": 1})
    assert (got["flows_new"], got["bytes"], got["active"]) == (8, 800, 1)
    # HAProxy did not answer: the last counts stand
    assert led.observed(S1, {})["flows_new"] == 8
    assert led.vip_totals(L7, {}) == {"frames": 0, "bytes": 810,
                                      "flows_new": 9}
    # S2 leaves (HAProxy forgets it): the VIP keeps its counts
    led.published([], {}, {}, l7={S1: {"flows_new": 1, "bytes": 100}})
    assert led.vip_totals(L7, {}) == {"frames": 0, "bytes": 810,
                                      "flows_new": 9}
    # the L7 VIP deleted: its totals go
    led.published([], {}, {}, l7={})
    assert led.vip_totals(L7, {})["flows_new"] == 0


def test_a_vip_without_reals_keeps_its_totals():
    """Its last real deleted, the VIP stays configured: its totals stay,
    and go on counting from there when a real (on the same id) comes."""
    led = RealLedger()
    led.published([A], {A: 1}, raw(i1=(0, 0, 0, 0)), vips=[WEB])
    counted = raw(i1=(100, 1000, 5, 0))
    led.published([], {}, counted, vips=[WEB])          # del real A
    assert led.vip_totals(WEB, counted) == {"frames": 100, "bytes": 1000,
                                            "flows_new": 5}
    led.published([B], {B: 1}, counted, vips=[WEB])     # add real B
    assert led.vip_totals(WEB, raw(i1=(130, 1300, 6, 0))) == {
        "frames": 130, "bytes": 1300, "flows_new": 6}
    led.published([], {}, counted, vips=[])             # del vip: a reset
    led.published([B], {B: 1}, counted, vips=[WEB])
    assert led.vip_totals(WEB, counted)["frames"] == 0


def test_a_real_switched_from_l4_to_l7_keeps_its_l4_counts():
    led = RealLedger()
    led.published([A], {A: 1}, raw(i1=(0, 0, 0, 0)), l7={}, vips=[WEB])
    counted = raw(i1=(100, 1000, 5, 0))
    assert led.counters(A, counted)["frames"] == 100
    l7 = {A: {"frames": 3, "bytes": 30, "flows_new": 1}}
    led.published([], {}, counted, l7=l7, vips=[WEB])   # now L7
    assert led.observed(A, l7[A]) == {"frames": 103, "bytes": 1030,
                                      "flows_new": 6}
    assert led.vip_totals(WEB, counted) == {"frames": 103, "bytes": 1030,
                                            "flows_new": 6}
    led.published([A], {A: 2}, raw(i2=(0, 0, 0, 0)), l7={},
                  vips=[WEB])                           # and L4 again
    assert led.counters(A, raw(i2=(1, 10, 1, 0)))["frames"] == 104


# --- an engine with frames through its core -------------------------------

CLIENT_MAC = "02:00:00:00:00:99"


def syns(eng, n, first=1000):
    """n new flows from a client to WEB through the core."""
    frames = [bytes(Ether(dst=LB_MAC, src=CLIENT_MAC)
                    / IP(src="192.0.2.7", dst="10.0.0.100")
                    / TCP(sport=first + i, dport=80, flags="S"))
              for i in range(n)]
    eng.core.process(frames)


def vip_totals(eng):
    [web] = [v for v in eng.show() if v["name"] == "web"]
    return web["totals"], {r["real"]: r for r in web["reals"]}


@pytest.fixture
def eng(tmp_path):
    return started(tmp_path)[0]


def test_removing_a_real_does_not_lower_the_vip_counters(eng):
    syns(eng, 40)
    before, reals = vip_totals(eng)
    assert before["flows_new"] == 40 and before["frames"] == 40
    gone = max(reals, key=lambda k: reals[k]["frames"])
    gone_flows = reals[gone]["flows_new"]
    assert gone_flows > 0
    eng.del_real("web", gone)
    after, reals = vip_totals(eng)
    assert gone not in reals
    assert all(after[k] >= before[k] for k in before), (before, after)
    assert after == before
    # a newcomer takes the departed real's id (FIFO, the first free): it
    # starts from 0, and the VIP counts on from its total
    eng.add_real("web", "10.0.0.13")
    _, reals = vip_totals(eng)
    assert reals["10.0.0.13"]["frames"] == 0
    syns(eng, 30, first=5000)
    after2, reals = vip_totals(eng)
    assert after2["flows_new"] == 70
    assert reals["10.0.0.13"]["flows_new"] > 0
    # the reals' own counts, and the departed one's in the VIP's
    assert after2["flows_new"] == gone_flows + sum(
        r["flows_new"] for r in reals.values())


def test_a_real_counter_survives_halt_and_online(eng):
    syns(eng, 20)
    _, reals = vip_totals(eng)
    counts = {k: r["frames"] for k, r in reals.items()}
    for key in counts:
        eng.halt("web", key)
        eng.online("web", key)
    _, reals = vip_totals(eng)
    assert {k: r["frames"] for k, r in reals.items()} == counts
    first = reals["10.0.0.11"]["last_change"]
    assert first is not None


def test_reload_keeps_the_counts_of_reals_that_stay(eng, tmp_path):
    syns(eng, 20)
    before, reals = vip_totals(eng)
    path = tmp_path / "pyfwd.toml"
    text = path.read_text()
    # 10.0.0.12 leaves the file, 10.0.0.14 comes
    path.write_text(text.replace('address = "10.0.0.12"',
                                 'address = "10.0.0.14"'))
    reload_before = eng.changes.reload_status()
    eng.reload()
    after, now = vip_totals(eng)
    assert after == before
    assert now["10.0.0.11"]["frames"] == reals["10.0.0.11"]["frames"]
    assert now["10.0.0.14"]["frames"] == 0
    status = eng.changes.reload_status()
    assert status["ok"] and status["last"] >= reload_before["last"]
    assert status["last_ok"] == status["last"]
    # a refused reload: ok False, the last good one's time stays
    path.write_text("[[vip]]\nnot toml = = =\n")
    with pytest.raises(Exception):
        eng.reload()
    refused = eng.changes.reload_status()
    assert not refused["ok"] and refused["last_ok"] == status["last_ok"]
    assert refused["last"] >= status["last"]


def test_a_vip_whose_last_real_left_keeps_its_totals(eng):
    syns(eng, 30)
    before, _ = vip_totals(eng)
    eng.del_real("web", "10.0.0.11")
    eng.del_real("web", "10.0.0.12")            # web has no real server
    assert vip_totals(eng) == (before, {})
    eng.add_real("web", "10.0.0.13")            # on a released id
    syns(eng, 10, first=5000)
    after, reals = vip_totals(eng)
    assert after["flows_new"] == before["flows_new"] + 10
    assert reals["10.0.0.13"]["flows_new"] == 10


def test_ctl_zero_forgets_a_real_deleted_and_added_again(eng):
    syns(eng, 30)
    eng.views.zero()
    gone = next(k for k, r in vip_totals(eng)[1].items() if r["frames"])
    eng.del_real("web", gone)
    eng.add_real("web", gone)                   # counts from 0 again
    for first in range(5000, 8000, 100):        # past its old count
        syns(eng, 100, first=first)
    [web] = [v for v in eng.views.show() if v["name"] == "web"]
    shown = {r["real"]: r["frames"] for r in web["reals"]}
    assert shown[gone] == vip_totals(eng)[1][gone]["frames"] > 0
    assert web["totals"]["frames"] == 3000      # since the zero
