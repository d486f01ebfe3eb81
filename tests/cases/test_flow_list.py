"""pyfwd_flow_list (`ctl flows`): the live flows of the core's tables,
packet in, listing out, on the core's fixed clock (no root, no loop: the
table is read in place, PYFWD_FLOW_LIST_INPLACE)."""

import ctypes
import errno
import inspect
import threading
import time

import pytest
from scapy.layers.inet import IP, TCP, UDP

from pyfwd.control.ctlviews import CtlViews
from pyfwd.control.protocol import COMMANDS, FLOWS_LIMIT_DEFAULT
from pyfwd.dataplane import flows as flows_mod
from pyfwd.dataplane.core import Core
from pyfwd.dataplane.flows import list_flows
from pyfwd.dataplane.native import ffi, lib
from pyfwd.errors import DataplaneError
from pyfwd.model import Real, Service, Vip

from . import defs
from . import nat_defs as nd

T0 = 1000
TIMEOUTS = {"tcp_syn": 30, "tcp_established": 900, "udp": 300}


def dr_core():
    core = Core(mac=defs.LB_MAC, flows=4096, timeouts=TIMEOUTS)
    core.publish_services(defs.SERVICES, defs.MACS)
    core.set_clock(T0)
    return core


def dr_tcp(sport, flags="S", dport=80, dst=defs.VIP4):
    return bytes(defs.eth() / IP(src=defs.CLIENT4, dst=dst)
                 / TCP(sport=sport, dport=dport, flags=flags, seq=1,
                       ack=0 if flags == "S" else 5))


def test_dr_flows_list_client_vip_real_state_and_expiry():
    core = dr_core()
    core.process([dr_tcp(40000), dr_tcp(40001), dr_tcp(40001, "A")])
    core.process([bytes(defs.eth() / IP(src=defs.CLIENT4, dst=defs.VIP4)
                        / UDP(sport=5353, dport=53) / b"q")])
    core.set_clock(T0 + 10)
    rows, total = list_flows(core)
    assert total == 3 and len(rows) == 3
    by_port = {r["client"]: r for r in rows}
    syn = by_port[f"{defs.CLIENT4}:40000"]
    est = by_port[f"{defs.CLIENT4}:40001"]
    dns = by_port[f"{defs.CLIENT4}:5353"]
    assert (syn["proto"], syn["state"], syn["vip"], syn["real"],
            syn["mode"]) == ("tcp", "syn", f"{defs.VIP4}:80",
                             f"{defs.REAL1}:80", "dr")
    assert syn["expires"] == 20.0               # tcp_syn 30 s, 10 s ago
    assert (est["state"], est["expires"]) == ("established", 890.0)
    assert (dns["proto"], dns["state"], dns["real"]) == \
        ("udp", "udp", f"{defs.REAL2}:53")
    assert syn["snat_port"] is None and not syn["fast"]
    assert rows[0]["expires"] >= rows[-1]["expires"]


def test_filter_by_vip_and_limit_keep_the_total():
    core = dr_core()
    core.process([dr_tcp(40000 + i) for i in range(5)]
                 + [dr_tcp(41000, dport=11112)])
    rows, total = list_flows(core, vip=Vip.parse(f"{defs.VIP4}:80/tcp"),
                             limit=2)
    assert (len(rows), total) == (2, 5)
    assert {r["vip"] for r in rows} == {f"{defs.VIP4}:80"}
    rows, total = list_flows(core, limit=0)     # 0: all of them
    assert (len(rows), total) == (6, 6)
    rows, total = list_flows(core, vip=Vip.parse(f"{defs.VIP4}:81/tcp"))
    assert (rows, total) == ([], 0)


def test_expired_flows_are_not_listed():
    core = dr_core()
    core.process([dr_tcp(40000)])
    core.set_clock(T0 + 31)                      # past tcp_syn
    assert list_flows(core) == ([], 0)


def test_ipv6_flow_is_bracketed():
    core = dr_core()
    core.process([bytes(defs.eth() / defs.syn6())])
    [row], total = list_flows(core)
    assert row["client"] == f"[{defs.CLIENT6}]:40000"
    assert row["vip"] == f"[{defs.VIP6}]:80"
    assert row["real"] == f"{defs.REAL2}:80"


def test_nat_and_snat_pairs_are_listed_once_with_real_and_snat_port():
    core = Core(mac=nd.OUT_MAC, mac2=nd.IN_MAC, flows=4096)
    core.set_snat(Real(nd.SNAT).address, nd.SNAT_PORTS)
    core.publish_services(nd.SERVICES, nd.MACS, nd.OUT_IFS)
    core.process([nd.tcp(nd.CLIENT, 40000, nd.VIP, 80, "S", nd.OUT_MAC,
                         nd.ROUTER_MAC),
                  nd.tcp(nd.CLIENT, 40001, nd.SVIP, 80, "S", nd.OUT_MAC,
                         nd.ROUTER_MAC)])
    rows, total = list_flows(core)
    assert total == 2
    nat, = [r for r in rows if r["mode"] == "nat"]
    snat, = [r for r in rows if r["mode"] == "snat"]
    assert nat["real"] == f"{nd.REAL1}:8080" and nat["snat_port"] is None
    assert nat["client"] == f"{nd.CLIENT}:40000"
    assert snat["real"] == f"{nd.SREAL}:8080"
    assert snat["snat_port"] in range(nd.SNAT_PORTS[0],
                                      nd.SNAT_PORTS[1] + 1)


def test_a_huge_limit_is_capped_by_the_table():
    core = dr_core()
    core.process([dr_tcp(40000)])
    rows, total = list_flows(core, limit=10 ** 12)
    assert (len(rows), total) == (1, 1)


def test_a_persistence_entry_is_no_flow():
    # DR with persistence: the SYN makes a flow and a persistence entry
    # (proto 255) in the table; only the flow is listed and counted.
    vip = Vip.parse(f"{defs.VIP4}:80/tcp")
    core = Core(mac=defs.LB_MAC, flows=4096)
    core.publish_services([Service(vip, [Real(defs.REAL1)], "maglev",
                                   persistence=60)], defs.MACS)
    core.set_clock(T0)
    core.process([dr_tcp(40000)])
    rows, total = list_flows(core)
    assert total == 1 and len(rows) == 1, rows
    assert (rows[0]["proto"], rows[0]["state"], rows[0]["client"]) == \
        ("tcp", "syn", f"{defs.CLIENT4}:40000")
    rows, total = list_flows(core, vip=vip)
    assert total == 1 and len(rows) == 1, rows


class _Counting:
    """flows.py's lib, counting the calls of pyfwd_flow_list."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return getattr(lib, name)

    def pyfwd_flow_list(self, *args):
        self.calls.append(args[4])          # max
        return lib.pyfwd_flow_list(*args)


def test_all_of_them_in_one_pass_with_the_tables_room(monkeypatch):
    core = dr_core()
    core.process([dr_tcp(40000 + i) for i in range(6)])
    counting = _Counting()
    monkeypatch.setattr(flows_mod, "lib", counting)
    rows, total = list_flows(core, limit=0)
    assert (len(rows), total) == (6, 6)
    assert counting.calls == [4096]         # one call: the table's slots
    counting.calls.clear()
    list_flows(core, limit=4)
    assert counting.calls == [4]


def test_the_default_limit_has_one_home():
    assert not hasattr(flows_mod, "LIMIT_DEFAULT")
    limit, = [a for a in COMMANDS["flows"].args if a.name == "limit"]
    assert limit.default == FLOWS_LIMIT_DEFAULT
    assert inspect.signature(CtlViews.flows).parameters["limit"].default \
        == FLOWS_LIMIT_DEFAULT


def test_wait_0_is_refused_not_read_in_place():
    core = dr_core()
    total = ffi.new("uint64_t *")
    assert lib.pyfwd_flow_list(core.ctx, 0, ffi.NULL, ffi.NULL, 0, total,
                               0) == -errno.EINVAL
    core.process([dr_tcp(40000)])
    assert lib.pyfwd_flow_list(core.ctx, 0, ffi.NULL, ffi.NULL, 0, total,
                               lib.PYFWD_FLOW_LIST_INPLACE) == 0
    assert total[0] == 1


class _FakeIo:
    """An I/O backend as list_flows sees it: its loops and its lock."""

    def __init__(self, running):
        self._io_lock = threading.Lock()
        self.running = running

    def loops(self):
        return [{"running": r} for r in self.running]


def test_in_place_waits_for_the_io_close_to_finish():
    # close() frees the fast path's maps under _io_lock: a listing read in
    # place (no loop runs) must not run beside it.
    core = dr_core()
    core.process([dr_tcp(40000)])
    io = _FakeIo([False])
    done = []
    with io._io_lock:                       # close() under way
        t = threading.Thread(target=lambda: done.append(
            list_flows(core, io=io)))
        t.start()
        time.sleep(0.2)
        assert not done                     # waits for it
    t.join(5)
    assert done and done[0][1] == 1


def test_a_running_loop_is_asked_not_read_in_place():
    core = dr_core()
    core.process([dr_tcp(40000)])
    with pytest.raises(DataplaneError) as e:   # no real loop answers
        list_flows(core, io=_FakeIo([True]), wait_ms=20)
    assert e.value.errno == errno.ETIMEDOUT


def _allocated():
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("no glibc mallinfo2")

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc.mallinfo2.restype = Mallinfo2
    m = libc.mallinfo2()
    return m.uordblks + m.hblkhd


def test_a_listing_that_timed_out_leaks_nothing():
    # No loop answers: each request (7 MB of room) times out, is withdrawn
    # and freed; one more that works, and EBUSY while one waits.
    core = dr_core()
    big = 100_000
    out = ffi.new("struct pyfwd_flow_info[]", big)
    total = ffi.new("uint64_t *")
    res = {}

    def call(name, ms):
        res[name] = lib.pyfwd_flow_list(core.ctx, 0, ffi.NULL, out, big,
                                        total, ms)

    call("warm", 1)
    before = _allocated()
    for _ in range(20):
        call("t", 1)
        assert res["t"] == -errno.ETIMEDOUT
    t = threading.Thread(target=call, args=("a", 300))
    t.start()
    time.sleep(0.05)
    call("b", 20)
    t.join()
    assert (res["a"], res["b"]) == (-errno.ETIMEDOUT, -errno.EBUSY)
    assert _allocated() - before < big * ffi.sizeof(out[0])
