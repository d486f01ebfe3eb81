"""Fair punting without root (issue 17, point 3): ARP is answered by the
punt thread while the engine's lock is held elsewhere; the VIPs and the
role are snapshots swapped in one store, and a node that stood down sends
nothing more once set_role() returned; ARP/NDP answers are rate-limited
per asking MAC and in total (a fake clock); the conflict, conflict-log
and HA peer tables are bounded and count what they push out; the limits
are [engine] keys; the counters reach stats, metrics and `ctl stats`."""

import threading
import time

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from pyfwd.control import config as config_mod
from pyfwd.control import ctl, metrics
from pyfwd.control.engine import Engine
from pyfwd.control.ha import MAX_PEERS, HaState
from pyfwd.control.punts import Punts, PuntView
from pyfwd.control.puntthread import BATCH, PuntThread
from pyfwd.errors import ConfigError
from pyfwd.neighbours import ndp
from pyfwd.neighbours.arp import ArpResponder
from pyfwd.neighbours.ratelimit import NeighbourLimits, SourceLimiter
from pyfwd.neighbours.responder import MAX_CONFLICTS

from .test_engine_ndp import (CLIENT_MAC, LB_MAC, VIP4, VIP6, VIPS4, VIPS6,
                              FakeCore, FakeSock, make_punts, services)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def mac(i):
    """A MAC of its own for each i (none of the lab's 02:00:00:00:...)."""
    return f"02:00:01:{i >> 16 & 0xff:02x}:{i >> 8 & 0xff:02x}:{i & 0xff:02x}"


def who_has(vip=VIP4, src=CLIENT_MAC, psrc="10.0.0.1"):
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=src)
                 / ARP(hwsrc=src, psrc=psrc, pdst=vip))


def claim(vip, src):
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=src)
                 / ARP(op=2, hwsrc=src, psrc=vip, pdst=vip))


def ns(src=CLIENT_MAC):
    group = str(ndp.solicited_node(VIP6))
    return bytes(Ether(dst=ndp.multicast_mac(group), src=src)
                 / IPv6(src="fd00:0:0:1::1", dst=group, hlim=255)
                 / ICMPv6ND_NS(tgt=VIP6) / ICMPv6NDOptSrcLLAddr(lladdr=src))


def arp_replies(sock):
    return [Ether(f) for f in sock.sent if ARP in Ether(f)]


# --- rate limits ---

def test_one_source_over_its_rate_leaves_the_others_answered():
    clock = Clock()
    lim = SourceLimiter(rate=100, burst=10, source_rate=2, source_burst=3,
                        clock=clock)
    assert [lim.allow("a") for _ in range(5)] == [True] * 3 + [False] * 2
    assert lim.allow("b")                   # its own bucket
    assert lim.counters == {"limited_source": 2, "limited_total": 0,
                            "sources_evicted": 0}
    clock.now += 0.5                        # 2/s: one token back
    assert lim.allow("a") and not lim.allow("a")


def test_many_sources_are_capped_by_the_total():
    clock = Clock()
    lim = SourceLimiter(rate=10, burst=5, source_rate=10, source_burst=10,
                        clock=clock)
    assert sum(lim.allow(i) for i in range(20)) == 5
    assert lim.counters["limited_total"] == 15
    assert lim.counters["limited_source"] == 0
    clock.now += 1.0                        # 10 more
    assert sum(lim.allow(i) for i in range(100, 120)) == 5  # burst 5


def test_the_source_table_is_bounded_oldest_out():
    lim = SourceLimiter(1000, 1000, 1, 1, max_sources=3, clock=Clock())
    for s in "abcd":
        assert lim.allow(s)
    assert len(lim) == 3 and lim.counters["sources_evicted"] == 1
    assert not lim.allow("d")               # still known: spent
    assert lim.allow("a")                   # "a" was pushed out: fresh


def test_arp_and_ndp_answers_are_rate_limited_and_counted():
    clock = Clock()
    limits = NeighbourLimits(arp_rate=100, arp_burst=100, arp_source_rate=1,
                             arp_source_burst=2)
    arp = ArpResponder(LB_MAC, VIPS4, limiter=limits.limiter(clock))
    assert [arp.handle(who_has()) is not None for _ in range(4)] == \
        [True, True, False, False]
    assert arp.counters == {"requests_answered": 2, "conflicts": 0,
                            "ignored": 0, "rate_limited": 2}
    assert arp.handle(who_has(src="02:00:00:00:01:05")) is not None
    nd = ndp.NdpResponder(LB_MAC, VIPS6, limiter=limits.limiter(clock))
    out = [nd.handle(ns()) is not None for _ in range(3)]
    assert out == [True, True, False]
    assert nd.counters["answered"] == 2
    assert nd.counters["ns_rate_limited"] == 1
    assert sum(nd.counters.values()) == 3       # each frame counted once
    clock.now += 1.0
    assert nd.handle(ns()) is not None


def test_punts_limits_come_from_the_engine_keys():
    cfg = config_mod.parse('[engine]\niface = "eth0"\narp_rate = 50\n'
                           'arp_source_burst = 4\n\n[[vip]]\naddress = '
                           '"10.0.0.100"\nport = 80\n')
    assert cfg.neighbour_limits == NeighbourLimits(arp_rate=50,
                                                   arp_source_burst=4)
    assert config_mod.parse('[[vip]]\naddress = "10.0.0.100"\nport = 80\n'
                            ).neighbour_limits == NeighbourLimits()
    for key, bad in (("arp_rate", "0"), ("arp_burst", "0.5"),
                     ("arp_source_rate", "-1"), ("arp_source_burst", "nan"),
                     ("arp_rate", "true")):
        with pytest.raises(ConfigError, match=f"engine.{key}"):
            config_mod.parse(f'[engine]\n{key} = {bad}\n\n[[vip]]\n'
                             'address = "10.0.0.100"\nport = 80\n')


def test_a_flood_from_one_mac_leaves_a_client_answered():
    punts = make_punts(limits=NeighbourLimits(arp_source_rate=1,
                                              arp_source_burst=5))
    flooder = "02:00:00:00:09:09"
    punts.core.punts = [who_has(src=flooder)] * 200 + [who_has()]
    punts.answer_punts()
    dst = [r.dst for r in arp_replies(punts.sock)]
    assert dst.count(flooder) == 5 and dst[-1] == CLIENT_MAC
    assert punts.counters()["arp"]["rate_limited"] == 195
    fair = punts.fairness()
    assert fair["arp"]["limited_source"] == 195 and fair["frames"] == 201


# --- bounded tables ---

def test_the_conflict_table_is_bounded_oldest_out():
    arp = ArpResponder(LB_MAC, VIPS4)
    arp.max_conflicts = 3
    for i in range(5):
        arp.handle(claim(VIP4, mac(i)))
    arp.handle(claim(VIP4, mac(2)))         # seen again: most recent
    arp.handle(claim(VIP4, mac(5)))
    assert sorted(arp.conflicts[arp.vips and next(iter(arp.vips))]) == \
        [mac(2), mac(4), mac(5)]
    assert arp.conflicts_evicted == 3


def test_a_flood_of_forged_claims_is_bounded_and_logged_once(caplog):
    punts = make_punts()
    claims = [claim(VIP4, mac(i)) for i in range(MAX_CONFLICTS + 50)]
    with caplog.at_level("WARNING", logger="pyfwd"):
        for batch in (claims[:MAX_CONFLICTS], claims[MAX_CONFLICTS:]):
            punts.core.punts = batch
            punts.answer_punts()
    assert len(punts.conflicts_logged) == MAX_CONFLICTS
    assert sum(map(len, punts.arp.conflicts.values())) == MAX_CONFLICTS
    fair = punts.fairness()
    assert fair["arp_conflicts_evicted"] == 50
    assert fair["conflicts_unlogged"] == 50
    problems = [r for r in caplog.records if "ARP problem" in r.getMessage()]
    assert len(problems) == MAX_CONFLICTS
    assert sum("no longer logged" in r.getMessage()
               for r in caplog.records) == 1


def test_the_ha_peer_table_is_bounded_oldest_out():
    punts = make_punts("standby")
    punts.core.punts = [claim(VIP4, mac(i)) for i in range(MAX_PEERS + 5)]
    punts.answer_punts()
    ha = punts.ha
    assert len(ha.peers) == MAX_PEERS
    assert ha.counters["peers_evicted"] == 5
    assert mac(0) not in ha.peers and mac(MAX_PEERS + 4) in ha.peers
    assert ha.status()["peers_evicted"] == 5


# --- snapshots and the role ---

def test_vips_are_swapped_as_a_whole():
    punts = make_punts()
    before = punts.view
    punts.update_vips(["10.0.0.101"], [])
    assert punts.view is not before and isinstance(punts.view, PuntView)
    assert before.vips4 == frozenset(VIPS4)     # the old one is untouched
    with pytest.raises(ConfigError):
        punts.update_vips(["not an address"], [])
    assert [str(a) for a in punts.view.vips4] == ["10.0.0.101"]
    punts.core.punts = [who_has(VIP4), who_has("10.0.0.101")]
    punts.answer_punts()
    [reply] = arp_replies(punts.sock)
    assert reply[ARP].psrc == "10.0.0.101"
    assert punts.fairness()["views"] == 1


class BlockingSock(FakeSock):
    """send() waits for `go` on the first frame."""

    def __init__(self):
        super().__init__()
        self.entered = threading.Event()
        self.go = threading.Event()

    def send(self, frame):
        self.entered.set()
        assert self.go.wait(5)
        super().send(frame)


def test_no_reply_leaves_after_standing_down():
    eng = Engine("eth0", services())
    eng.punts = Punts(FakeCore(), BlockingSock(), LB_MAC, eng.ha,
                      vips4=VIPS4, vips6=VIPS6)
    sock = eng.punts.sock
    eng.punts.core.punts = [who_has(src=mac(i)) for i in range(3)]
    answering = threading.Thread(target=eng.punts.answer_punts)
    answering.start()
    assert sock.entered.wait(5)             # the first reply is leaving
    done = threading.Event()
    stood_down = threading.Thread(
        target=lambda: (eng.set_role("standby"), done.set()))
    stood_down.start()
    # set_role waits for that one send(), not for the batch
    assert not done.wait(0.3)
    sock.go.set()
    assert done.wait(5)
    sent_then = len(sock.sent)
    answering.join(5)
    stood_down.join(5)
    assert sent_then == 1 and len(sock.sent) == 1   # the other two: never
    eng.punts.core.punts = [who_has()]
    eng.punts.answer_punts()
    assert len(sock.sent) == 1 and eng.ha.counters["arp_withheld"] == 1


def test_arp_is_answered_while_the_engine_lock_is_held():
    eng = Engine("eth0", services())
    eng.punts = make_punts(ha=eng.ha)
    thread = PuntThread(eng.punts, tick=0.001).start()
    try:
        holding, release = threading.Event(), threading.Event()

        def hold():
            with eng._lock:         # as a reload or HAProxy call would
                holding.set()
                release.wait(5)
        holder = threading.Thread(target=hold)
        holder.start()
        assert holding.wait(5)
        t0 = time.monotonic()
        eng.punts.core.punts = [who_has()]
        while not eng.punts.sock.sent and time.monotonic() - t0 < 2:
            time.sleep(0.001)
        waited = time.monotonic() - t0
        release.set()
        holder.join(5)
    finally:
        thread.stop()
    assert eng.punts.sock.sent, "ARP not answered while the lock was held"
    assert waited < 0.5
    assert Ether(eng.punts.sock.sent[0])[ARP].op == 2


class FullCore:
    """Hands out `batches` full batches, then nothing."""

    def __init__(self, batches):
        self.left = batches

    def drain_punts(self):
        if not self.left:
            return []
        self.left -= 1
        return [b"\0" * 14] * BATCH


def test_the_punt_thread_drains_full_batches_back_to_back():
    punts = make_punts()
    punts.core = FullCore(3)
    thread = PuntThread(punts)
    assert thread.drain() == 3 * BATCH


def test_a_failing_send_is_logged_once_in_a_row(caplog):
    class DownSock(FakeSock):
        def send(self, frame):
            raise OSError(100, "Network is down")
    punts = make_punts()
    punts.sock = DownSock()
    thread = PuntThread(punts)
    with caplog.at_level("ERROR", logger="pyfwd"):
        for _ in range(3):
            punts.core.punts = [who_has()]
            thread.drain()
    assert thread.errors == 3
    assert caplog.text.count("Network is down") == 1


# --- reports ---

def test_fairness_counters_reach_metrics_and_ctl():
    punts = make_punts(limits=NeighbourLimits(arp_source_burst=1))
    punts.core.punts = [who_has()] * 3 + [ns(), ns()]
    punts.answer_punts()
    stats = {**punts.counters(), "punt": punts.fairness(),
             "ha": punts.ha.status()}
    text = metrics.render(stats)
    assert 'pyfwd_punt_rate_limited_total{by="source",kind="arp"} 2' in \
        text or 'pyfwd_punt_rate_limited_total{kind="arp",by="source"} 2' \
        in text
    assert "pyfwd_punt_frames_total 5" in text
    assert "pyfwd_ha_peers_evicted_total 0" in text
    assert 'event="rate_limited"' in text
    assert 'event="ns_rate_limited"' in text
    line = ctl.punt_line(stats["punt"])
    assert line.startswith("frames 5") and "arp limited 2/0" in line
    assert "ndp limited 1/0" in line
    assert "punt" in ctl.format_stats(stats)


def test_ping_flood_answers_arp_first():
    punts = make_punts()
    pings = [bytes(Ether(dst=LB_MAC, src=CLIENT_MAC)
                   / IP(src="10.0.0.1", dst=VIP4) / ICMP(seq=i))
             for i in range(200)]
    punts.core.punts = pings + [who_has()]
    punts.answer_punts()
    first = Ether(punts.sock.sent[0])
    assert ARP in first                     # before the echo replies
    assert punts.counters()["icmp"]["rate_limited"] == 150   # burst 50


def test_sorting_by_ethertype_counts_as_every_responder_would():
    from scapy.layers.l2 import Dot1Q

    from pyfwd.neighbours.icmp import EchoResponder
    frames = [who_has(), ns(), claim(VIP4, mac(1)), b"\x01" * 9,
              bytes(Ether(dst=LB_MAC, src=CLIENT_MAC)
                    / IP(src="10.0.0.1", dst=VIP4) / ICMP()),
              bytes(Ether(dst=LB_MAC, src=CLIENT_MAC) / Dot1Q(vlan=5)
                    / IP(src="10.0.0.1", dst=VIP4) / ICMP()),
              bytes(Ether(dst=LB_MAC, src=CLIENT_MAC, type=0x88cc)
                    / (b"\0" * 40))]
    punts = make_punts()
    punts.core.punts = list(frames)
    punts.answer_punts()
    alone = {"arp": ArpResponder(LB_MAC, VIPS4),
             "icmp": EchoResponder(LB_MAC, VIPS4),
             "ndp": ndp.NdpResponder(LB_MAC, VIPS6)}
    for kind, responder in alone.items():
        responder.handle_batch(frames)
        assert punts.counters()[kind] == responder.counters, kind
