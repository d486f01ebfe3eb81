"""NAT and SNAT on several workers (csrc/handoff.c, csrc/pyfwd_mq.h), no
root: the owner of a flow, the SNAT range split between the workers, and
frames handed to their flow's owner through the core with two workers in
one thread (each burst run as the worker whose RX queue got it)."""

import collections
import ipaddress

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from pyfwd.dataplane.core import Core
from pyfwd.model import Real, Service

from . import nat_defs as nd

WEB, DNS = nd.WEB, nd.DNS
REALS, MACS, OUT_IFS = nd.POOL, nd.POOL_MACS, nd.POOL_OUT_IFS
PORTS = (61000, 61999)
CLIENT = ipaddress.ip_address(nd.CLIENT)
SNAT = ipaddress.ip_address(nd.SNAT)


def core_with(mode="nat", workers=2, ports=PORTS):
    core = Core(mac=nd.OUT_MAC, mac2=nd.IN_MAC, flows=1 << 12,
                workers=workers)
    core.set_snat(SNAT, ports)
    core.publish_services([Service(WEB, list(REALS), "maglev", mode),
                           Service(DNS, [REALS[0]], "wrr", mode)],
                          MACS, OUT_IFS)
    return core


def syn(sport, flags="S"):
    return bytes(Ether(dst=nd.OUT_MAC, src=nd.CLIENT_MAC)
                 / IP(src=nd.CLIENT, dst=nd.VIP)
                 / TCP(sport=sport, dport=80, flags=flags))


def answer(frame_out, flags="SA"):
    """The real server's answer to a frame the core sent it."""
    p = Ether(frame_out)
    return bytes(Ether(dst=p.src, src=p.dst)
                 / IP(src=p[IP].dst, dst=p[IP].src)
                 / TCP(sport=p[TCP].dport, dport=p[TCP].sport, flags=flags))


def run_on(core, worker, frames, in_if=0):
    """A burst as `worker`, then each worker's hand-overs taken and run
    (its loop's next round): (out frames, results) of what was forwarded
    or decided, the handed frames' final ones in place of "handoff"."""
    outs, res = core.process(frames, in_if=in_if, worker=worker)
    done = [(o, r) for o, r in zip(outs, res) if r.verdict != "handoff"]
    for w in range(core.workers):
        o2, r2 = core.process_handoffs(w)
        done += list(zip(o2, r2))
    return [o for o, _ in done], [r for _, r in done]


def test_one_worker_owns_everything():
    core = core_with(workers=1)
    assert {core.flow_owner(CLIENT, p) for p in range(1000, 1100)} == {0}
    assert core.process_handoffs(0) == ([], [])


def test_owner_spreads_clients_and_is_stable():
    core = core_with(workers=4)
    owners = [core.flow_owner(CLIENT, p) for p in range(20000, 24000)]
    count = collections.Counter(owners)
    assert set(count) == {0, 1, 2, 3}
    assert min(count.values()) > 800         # about 1000 each
    assert owners == [core.flow_owner(CLIENT, p) for p in range(20000, 24000)]
    v6 = ipaddress.ip_address("2001:db8::5")
    assert len({core.flow_owner(v6, p) for p in range(100)}) == 4


def test_every_snat_port_is_owned_by_the_worker_whose_pool_gives_it():
    for workers in (2, 3, 4):
        core = core_with(workers=workers)
        pools = [core.stats(w)["snat_ports_pool"] for w in range(workers)]
        assert sum(pools) == PORTS[1] - PORTS[0] + 1
        assert max(pools) - min(pools) <= 1
        owners = collections.Counter(core.flow_owner(SNAT, p)
                                     for p in range(PORTS[0], PORTS[1] + 1))
        assert [owners[w] for w in range(workers)] == pools
        # Each worker's SNAT flows take ports it owns.
        core.publish_services([Service(WEB, list(REALS), "maglev",
                                       "snat")], MACS, OUT_IFS)
        for w in range(workers):
            sports = [p for p in range(30000, 30400)
                      if core.flow_owner(CLIENT, p) == w]
            outs, res = core.process([syn(p) for p in sports], worker=w)
            assert {r.verdict for r in res} == {"forward"}
            assert {core.flow_owner(SNAT, Ether(o)[TCP].sport)
                    for o in outs} == {w}


def test_nat_answers_on_the_other_queue_reach_the_owner():
    core = core_with("nat")
    sports = range(40000, 40200)
    fwd, res = [], []
    for p in sports:     # each SYN on the queue that does not own it
        wrong = 1 - core.flow_owner(CLIENT, p)
        o, r = run_on(core, wrong, [syn(p)])
        fwd += o
        res += r
    assert {r.reason for r in res} == {"forward"}
    assert len(fwd) == len(sports)
    # The real's answers come in on queue 0, all of them.
    back, bres = run_on(core, 0, [answer(o) for o in fwd], in_if=1)
    assert {r.reason for r in bres} == {"forward_reply"}
    assert sorted(Ether(b)[TCP].dport for b in back) == list(sports)
    assert {(Ether(b)[IP].src, Ether(b)[TCP].sport) for b in back} == {
        (nd.VIP, 80)}
    handed_out = sum(core.stats(w)["handoff_out"] for w in (0, 1))
    handed_in = sum(core.stats(w)["handoff_in"] for w in (0, 1))
    assert handed_out == handed_in
    # every SYN, and the answers whose owner is 1
    assert handed_out == len(sports) + sum(
        core.flow_owner(CLIENT, p) == 1 for p in sports)
    # One flow per connection, each in its owner's table only.
    s = core.stats()
    assert s["flows_new"] == len(sports)
    assert s["reason"]["drop_no_flow"] == 0


def test_snat_answers_reach_the_worker_that_gave_the_port():
    core = core_with("snat")
    fwd, _ = run_on(core, 0, [syn(p) for p in range(41000, 41100)])
    assert len(fwd) == 100
    for w in (0, 1):     # every answer on each queue
        back, res = run_on(core, w, [answer(o) for o in fwd], in_if=1)
        assert {r.reason for r in res} == {"forward_reply"}
        assert sorted(Ether(b)[TCP].dport for b in back) == list(
            range(41000, 41100))
    assert core.stats()["reason"]["drop_no_flow"] == 0


def test_icmp_error_about_a_flow_reaches_its_owner():
    core = core_with("nat")
    p = next(p for p in range(42000, 43000) if core.flow_owner(CLIENT, p))
    [to_real], _ = run_on(core, 1, [syn(p)])
    q = Ether(to_real)
    err = bytes(Ether(dst=nd.IN_MAC, src=q.dst)
                / IP(src="192.168.50.1", dst=q[IP].src)
                / ICMP(type=3, code=4) / bytes(q[IP])[:28])
    outs, res = core.process([err], in_if=1, worker=0)
    assert res[0].verdict == "handoff"
    [out], [r] = core.process_handoffs(1)
    assert r.reason == "forward_icmp"
    assert Ether(out)[IP].dst == nd.CLIENT


def test_a_full_ring_drops_and_counts():
    core = core_with("nat")
    mine = [p for p in range(10000, 20000) if core.flow_owner(CLIENT, p)]
    frames = [syn(p) for p in mine]
    handed = 0
    for i in range(0, len(frames), 256):
        _, res = core.process(frames[i:i + 256], worker=0)
        handed += sum(r.verdict == "handoff" for r in res)
    s = core.stats(0)
    assert s["reason"]["drop_handoff_full"] == len(mine) - handed > 0
    assert s["handoff_out"] == handed
    outs, res = core.process_handoffs(1, max_frames=4096)
    assert len(res) == handed
    assert {r.reason for r in res} == {"forward"}


def test_dr_is_not_handed_over():
    core = Core(mac=nd.OUT_MAC, flows=1 << 12, workers=2)
    dr = [Real.parse(f"192.168.50.{10 + i}") for i in (1, 2, 3)]
    core.publish_services([Service(WEB, dr, "maglev", "dr")],
                          {r.address: MACS[REALS[i].address]
                           for i, r in enumerate(dr)})
    _, res = core.process([syn(p) for p in range(50000, 50100)], worker=1)
    assert {r.verdict for r in res} == {"forward"}
    assert core.stats(1)["handoff_out"] == 0


def test_udp_nat_flows_on_both_queues():
    core = core_with("nat")
    q = [bytes(Ether(dst=nd.OUT_MAC, src=nd.CLIENT_MAC)
               / IP(src=nd.CLIENT, dst=nd.VIP) / UDP(sport=p, dport=53))
         for p in range(5000, 5050)]
    fwd, res = run_on(core, 1, q)
    assert len(fwd) == 50 and {r.reason for r in res} == {"forward"}


def test_the_owner_takes_from_every_ring_in_turn():
    core = core_with("nat", workers=3)
    mine = [p for p in range(10000, 14000) if core.flow_owner(CLIENT, p) == 1]
    a, b = mine[:200], mine[200:400]
    for worker, ports in ((0, a), (2, b)):
        _, res = core.process([syn(p) for p in ports], worker=worker)
        assert {r.verdict for r in res} == {"handoff"}
    seen = []
    for _ in range(2):       # a full ring each: each call starts elsewhere
        outs, res = core.process_handoffs(1, max_frames=100)
        assert len(res) == 100
        seen.append({Ether(o)[TCP].sport for o in outs})
    assert {bool(s & set(a)) for s in seen} == {True, False}
    assert {bool(s & set(b)) for s in seen} == {True, False}
