"""pyfwd_flow_list (`ctl flows`): the live flows of the core's tables,
packet in, listing out, on the core's fixed clock (no root, no loop: the
table is read in place, wait_ms 0)."""

from scapy.layers.inet import IP, TCP, UDP

from pyfwd.dataplane.core import Core
from pyfwd.dataplane.flows import list_flows
from pyfwd.model import Real, Vip

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
