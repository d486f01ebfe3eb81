"""control.nexthops without root: fake routes and neighbour look-ups say
which interface and MAC each real server gets, why one is not scheduled,
what changed; the refresh handshake between a change and the control
thread."""

import ipaddress
import logging
import threading

from pyfwd.control.nexthops import NextHops, Refresh

A = ipaddress.ip_address
MAC1, MAC2 = b"\x02\x00\x00\x00\x01\x11", b"\x02\x00\x00\x00\x01\x12"


def hops_for(routes, macs, ifaces=("eth0", "eth1")):
    """NextHops over fake look-ups: routes {addr: (oif, hop)}, macs {hop:
    MAC}; asked: [(ifname, [hops])] in order."""
    asked = []

    def lookup(ifname, ips):
        asked.append((ifname, list(ips)))
        return {ip: macs.get(ip) for ip in ips}
    hops = NextHops(ifaces, route=lambda a: routes[a], arp_lookup=lookup,
                    ndp_lookup=lookup)
    return hops, asked


def test_find_names_the_slot_the_router_and_why():
    routes = {A("10.0.0.11"): ("eth0", A("10.0.0.11")),
              A("10.1.0.11"): ("eth1", A("10.1.0.1")),     # via a router
              A("10.1.0.12"): ("eth1", A("10.1.0.1")),
              A("192.0.2.9"): ("wlan0", A("192.0.2.1")),
              A("198.51.100.1"): (None, A("198.51.100.1")),
              A("10.0.0.13"): ("eth0", A("10.0.0.13"))}
    hops, asked = hops_for(routes, {A("10.0.0.11"): MAC1,
                                    A("10.1.0.1"): MAC2})
    found = hops.find(list(routes))
    assert sorted(asked) == [("eth0", [A("10.0.0.11"), A("10.0.0.13")]),
                             ("eth1", [A("10.1.0.1")])]  # the router once
    assert found[A("10.0.0.11")] == (MAC1, 0, None)
    assert found[A("10.1.0.11")] == (MAC2, 1, None)
    assert found[A("192.0.2.9")] == (None, 0, "route via wlan0, not eth0 "
                                     "or eth1")
    assert found[A("198.51.100.1")][2] == "route via nowhere, not eth0 or " \
        "eth1"
    assert found[A("10.0.0.13")][2] == "MAC unknown: no ARP answer on eth0"
    assert hops.macs == {}                      # find() changes nothing


def test_a_silent_router_is_named():
    routes = {A("10.1.0.11"): ("eth0", A("10.0.0.1"))}
    hops, _ = hops_for(routes, {}, ifaces=["eth0"])
    assert hops.find(list(routes))[A("10.1.0.11")][2] == \
        "MAC unknown (via 10.0.0.1): no ARP answer on eth0"


def test_apply_logs_changes_and_says_whether_any(caplog):
    hops = NextHops(["eth0", "eth1"], stale=0)     # no grace: see below
    a = A("10.0.0.11")
    with caplog.at_level(logging.INFO, logger="pyfwd"):
        assert hops.apply({a: (MAC1, 0, None)})
        assert not hops.apply({a: (MAC1, 0, None)})      # the same
        assert hops.apply({a: (MAC1, 1, None)})          # other interface
        assert hops.apply({a: (None, 1, "MAC unknown: no ARP answer")})
        assert not hops.apply({a: (None, 1, "MAC unknown: no ARP answer")})
    said = [r.getMessage() for r in caplog.records]
    assert said == ["real 10.0.0.11: next hop MAC 02:00:00:00:01:11 on eth0",
                    "real 10.0.0.11: MAC unknown: no ARP answer: not "
                    "scheduled"]
    assert hops.via(a) == "eth1" and hops.via(A("10.9.9.9")) == "eth0"


def test_explain_puts_the_next_hop_reason_in_the_tables():
    hops = NextHops(["eth0"])
    hops.apply({A("10.0.0.11"): (None, 0, "route via wlan0, not eth0"),
                A("10.0.0.12"): (MAC1, 0, None)})
    unscheduled = {("vip", "10.0.0.11:80"): "no MAC",
                   ("vip", "10.0.0.12"): "weight 0",
                   ("vip", "10.0.0.13"): "no MAC"}
    hops.explain(unscheduled)
    assert unscheduled == {("vip", "10.0.0.11:80"):
                           "route via wlan0, not eth0",
                           ("vip", "10.0.0.12"): "weight 0",
                           ("vip", "10.0.0.13"): "no MAC"}


def test_refresh_is_due_by_period_or_when_asked():
    t = [0.0]
    lock = threading.RLock()
    refresh = Refresh(lock, 5.0, clock=lambda: t[0])
    assert not refresh.due()
    t[0] = 5.0
    assert refresh.due() and not refresh.due()

    def control_thread():       # the engine's loop, in short
        while not refresh.due():
            pass
        with lock:
            refresh.done()
    th = threading.Thread(target=control_thread)
    th.start()
    with lock:
        assert refresh.wait(timeout=5)          # asked: done at once
    th.join(timeout=5)
    with lock:
        assert not refresh.wait(timeout=0.05)   # nobody refreshes
