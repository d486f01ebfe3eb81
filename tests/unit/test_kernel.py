"""pyfwd.neighbours.kernel's readers of netlink answers, fed fake netlink
messages (no root, no namespaces; the e2e tests ask real kernels)."""

import ipaddress
import socket

import pytest

from pyfwd.errors import ConfigError, PyfwdError
from pyfwd.neighbours import kernel

ETH0, ETH1 = 2, 3
REACHABLE, STALE, FAILED, INCOMPLETE, PERMANENT = 0x02, 0x04, 0x20, 0x01, \
    0x80


class FakeIPRoute:
    """The few IPRoute calls kernel.py makes, answered from lists of
    messages (dicts: pyroute2's messages answer get() and [] alike)."""

    def __init__(self, links=None, addrs=(), neighs=()):
        self.links = links or {"eth0": ETH0, "eth1": ETH1}
        self.addrs = list(addrs)
        self.neighs = list(neighs)

    def link_lookup(self, ifname):
        return [self.links[ifname]] if ifname in self.links else []

    def addr(self, cmd, family, index=None):
        assert cmd == "dump"
        return [m for m in self.addrs if m["family"] == family
                and (index is None or m["index"] == index)]

    def neigh(self, cmd, family, ifindex):
        assert cmd == "dump"
        return [m for m in self.neighs if m["family"] == family]


def addr(index, text, secondary=False, family=socket.AF_INET):
    ip, prefix = text.split("/")
    return {"family": family, "index": index, "IFA_LOCAL": ip,
            "prefixlen": int(prefix), "flags": 1 if secondary else 0}


def neigh(index, dst, mac, state=REACHABLE, family=socket.AF_INET):
    return {"family": family, "ifindex": index, "NDA_DST": dst,
            "NDA_LLADDR": mac, "state": state}


def test_ifindex_names_what_is_missing():
    ipr = FakeIPRoute()
    assert kernel.ifindex(ipr, "eth1") == ETH1
    with pytest.raises(ConfigError, match="interface 'nope0': no such"):
        kernel.ifindex(ipr, "nope0")
    with pytest.raises(PyfwdError, match="dev 'dummy9'"):
        kernel.ifindex(ipr, "dummy9", "dev")


def test_addresses_of_the_namespace_or_one_interface():
    ipr = FakeIPRoute(addrs=[
        addr(ETH0, "10.0.0.2/24"), addr(ETH1, "192.168.50.1/24"),
        addr(ETH0, "fd00::2/64", family=socket.AF_INET6)])
    assert [(a.index, str(a.interface)) for a in kernel.addresses(ipr)] == \
        [(ETH0, "10.0.0.2/24"), (ETH1, "192.168.50.1/24")]
    assert kernel.addresses(ipr, socket.AF_INET6, ETH0) == [
        kernel.Address(ETH0, ipaddress.ip_interface("fd00::2/64"), False)]


def test_source_ipv4_prefers_a_primary_address_on_the_subnet():
    target = ipaddress.IPv4Address("10.0.0.11")
    ipr = FakeIPRoute(addrs=[
        addr(ETH0, "10.0.0.9/24", secondary=True),
        addr(ETH0, "10.0.0.100/32"),            # a VIP: another subnet
        addr(ETH0, "10.0.0.2/24"),
        addr(ETH1, "10.0.0.3/24")])             # another interface
    assert kernel.source_ipv4(ipr, ETH0, target) == \
        ipaddress.IPv4Address("10.0.0.2")
    assert kernel.source_ipv4(ipr, ETH0, target, exclude={
        ipaddress.IPv4Address("10.0.0.2")}) == \
        ipaddress.IPv4Address("10.0.0.9")
    # none on the subnet (or only the target itself): an ARP probe's 0.0.0.0
    assert kernel.source_ipv4(ipr, ETH0, ipaddress.IPv4Address(
        "172.16.0.1")) == ipaddress.IPv4Address(0)
    assert kernel.source_ipv4(FakeIPRoute(addrs=[addr(ETH0, "10.0.0.11/24")]),
                              ETH0, target) == ipaddress.IPv4Address(0)


def test_neighbour_table_keeps_the_usable_entries_of_one_interface():
    mac = "02:00:00:00:01:11"
    ipr = FakeIPRoute(neighs=[
        neigh(ETH0, "10.0.0.11", mac),
        neigh(ETH0, "10.0.0.12", "02:00:00:00:01:12", STALE),
        neigh(ETH0, "10.0.0.13", "02:00:00:00:01:13", FAILED),
        neigh(ETH0, "10.0.0.14", None, INCOMPLETE),
        neigh(ETH0, "10.0.0.15", "00:00:00:00:00:00", PERMANENT),
        neigh(ETH0, "10.0.0.16", "not a mac", PERMANENT),
        neigh(ETH1, "10.0.0.17", mac),
        neigh(ETH0, "fd00::11", mac, family=socket.AF_INET6)])
    assert kernel.neighbour_table(ipr, ETH0) == {
        ipaddress.ip_address("10.0.0.11"): b"\x02\0\0\0\x01\x11",
        ipaddress.ip_address("10.0.0.12"): b"\x02\0\0\0\x01\x12"}
    assert kernel.neighbour_table(ipr, ETH0, socket.AF_INET6) == {
        ipaddress.ip_address("fd00::11"): b"\x02\0\0\0\x01\x11"}


@pytest.mark.parametrize("timeout,retries,words", [
    (0, 1, "timeout"), (-1, 1, "timeout"), (True, 1, "timeout"),
    ("1", 1, "timeout"), (1, 0, "retries"), (1, 1.5, "retries"),
    (1, True, "retries")])
def test_check_wait(timeout, retries, words):
    kernel.check_wait(0.5, 3)
    with pytest.raises(ConfigError, match=words):
        kernel.check_wait(timeout, retries)


def test_neighbour_macs_refuses_bad_input_before_asking():
    with pytest.raises(ConfigError, match="'10.0.0.300'"):
        kernel.neighbour_macs("eth0", ["10.0.0.300"])
    with pytest.raises(ConfigError, match="retries"):
        kernel.neighbour_macs("eth0", ["10.0.0.1"], retries=0)

