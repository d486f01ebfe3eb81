"""SNAT's source ports: the order the pool hands them out in (csrc/flow.c,
csrc/core.h struct port_pool), on the core's fixed clock (no root).

A real server keeps a connection it closed in TIME-WAIT for 60 s and
drops a new SYN from the same address and port whose TCP timestamp is
older (PAWS); Linux clients offset their timestamps per connection, so a
new connection's is older half the time.  Hence a freed port goes last
(FIFO: reused as late as the pool allows), except when the client of a
closing flow sends a new SYN on the same tuple: that is how it answers a
real's TIME-WAIT (its RST ended it), and the same port then finds the real
clear.
"""

from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

from pyfwd.dataplane.core import Core
from pyfwd.model import Real

from . import nat_defs as nd

SYN_S, EST_S, FIN_S = 30, 900, 10
PORTS = (61000, 61003)                  # four ports
T0 = 1000


def snat_core(ports=PORTS):
    core = Core(mac=nd.OUT_MAC, mac2=nd.IN_MAC, flows=4096,
                timeouts={"tcp_syn": SYN_S, "tcp_established": EST_S,
                          "tcp_fin": FIN_S})
    core.set_snat(Real(nd.SNAT).address, ports)
    core.publish_services(nd.SERVICES, nd.MACS, nd.OUT_IFS)
    return core


def client(core, seconds, cport, flags):
    """The client's segment from cport to the SNAT VIP at T0 + seconds:
    the source port it left with toward the real."""
    core.set_clock(T0 + seconds)
    frame = nd.tcp(nd.CLIENT, cport, nd.SVIP, 80, flags, nd.OUT_MAC,
                   nd.CLIENT_MAC)
    [out], [result] = core.process([frame])
    assert result.reason == "forward", (cport, flags, result.reason)
    return Ether(out)[TCP].sport


def real(core, seconds, snat_port, flags):
    """The real's segment to our snat_port at T0 + seconds."""
    core.set_clock(T0 + seconds)
    frame = nd.tcp(nd.SREAL, 8080, nd.SNAT, snat_port, flags, nd.OUT_MAC,
                   nd.SREAL_MAC)
    [_], [result] = core.process([frame])
    assert result.reason == "forward_reply", (snat_port, flags,
                                              result.reason)


def connection(core, seconds, cport):
    """An established connection from cport: its SNAT port."""
    port = client(core, seconds, cport, "S")
    real(core, seconds, port, "SA")
    client(core, seconds, cport, "A")
    return port


def close(core, seconds, cport, port):
    """The server closes first (Connection: close), the client follows."""
    real(core, seconds, port, "FA")
    client(core, seconds, cport, "FA")


def expire(core, seconds):
    core.set_clock(T0 + seconds)
    core.expire()


def test_fresh_pool_hands_ports_out_from_the_low_end():
    core = snat_core()
    assert [connection(core, 0, 40000 + i) for i in range(4)] == [
        61000, 61001, 61002, 61003]
    assert core.stats()["snat_ports_used"] == 4


def test_a_freed_port_goes_last_not_first():
    """The soak's finding: a stack handed the port freed last to the next
    connection, ~10 s after its close, while the real still held it in
    TIME-WAIT.  A FIFO hands out the port freed longest ago."""
    core = snat_core()
    a = connection(core, 0, 40000)              # 61000
    b = connection(core, 0, 40001)              # 61001
    close(core, 1, 40000, a)
    close(core, 5, 40001, b)
    expire(core, 1 + FIN_S + 1)                 # a's flow goes: 61000 freed
    expire(core, 5 + FIN_S + 1)                 # then b's: 61001
    assert core.stats()["snat_ports_used"] == 0
    got = [connection(core, 20, 41000 + i) for i in range(4)]
    # never used first, then a's, then b's (a stack: b, a, 61002, 61003)
    assert got == [61002, 61003, a, b]


def test_a_port_freed_comes_back_after_every_other_port():
    core = snat_core((61000, 61001))
    order = []
    for i in range(6):
        t = i * (FIN_S + 2)
        port = connection(core, t, 40000 + i)
        order.append(port)
        close(core, t, 40000 + i, port)
        expire(core, t + FIN_S + 1)
    assert order == [61000, 61001] * 3          # a stack: 61000 each time


def test_client_new_syn_on_a_closing_flow_keeps_its_port():
    """A real whose TIME-WAIT drops the SYN (PAWS) answers with an ACK of
    its old connection; the client answers RST (which ends that TIME-WAIT)
    and sends its SYN again ~10 ms later on the same tuple.  That SYN must
    leave from the same port, now clear at the real: the next port in the
    ring may be in TIME-WAIT too, and a second refusal costs the client
    its retransmission timeout (1 s, then 3 s)."""
    core = snat_core()
    port = client(core, 0, 40000, "S")
    real(core, 0, port, "A")                    # PAWS: the old conn's ACK
    client(core, 0, 40000, "R")                 # the flow is closing
    again = client(core, 0.01, 40000, "S")
    assert again == port
    real(core, 0.01, port, "SA")
    client(core, 0.01, 40000, "A")
    s = core.stats()
    assert (s["snat_ports_used"], s["flows_new"]) == (1, 2)
    # and the next connection takes the next port, as before
    assert connection(core, 1, 40001) == port + 1


def test_a_new_syn_on_a_closed_tuple_after_expiry_takes_the_next_port():
    core = snat_core()
    port = connection(core, 0, 40000)
    close(core, 0, 40000, port)
    expire(core, FIN_S + 1)                     # gone: no tuple to keep
    assert connection(core, FIN_S + 2, 40000) == port + 1


def test_every_port_taken_still_drops_with_ports_full():
    core = snat_core((61000, 61001))
    connection(core, 0, 40000)
    connection(core, 0, 40001)
    core.set_clock(T0 + 1)
    frame = nd.tcp(nd.CLIENT, 40002, nd.SVIP, 80, "S", nd.OUT_MAC,
                   nd.CLIENT_MAC)
    [_], [result] = core.process([frame])
    assert result.reason == "drop_ports_full"
    assert core.stats()["snat_ports_used"] == 2
