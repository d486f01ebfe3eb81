"""pyfwd.dataplane.vethpeer: whether the XDP fast path may send on a veth
(its peer must run an XDP program in driver mode), from netlink messages
as pyroute2 decodes them; no root, a fake IPRoute."""

from pyroute2.netlink.exceptions import NetlinkError

from pyfwd.dataplane import vethpeer
from pyfwd.dataplane.vethpeer import VethPeer


class Msg:
    """An RTM_NEWLINK message: get_attr over a dict (nested: Msg)."""

    def __init__(self, **attrs):
        self.attrs = attrs

    def get_attr(self, name):
        return self.attrs.get(name)


def link(name, kind=None, peer=None, nsid=None, xdp=None):
    info = Msg(IFLA_INFO_KIND=kind) if kind else None
    return Msg(IFLA_IFNAME=name, IFLA_LINKINFO=info, IFLA_LINK=peer,
               IFLA_LINK_NETNSID=nsid, IFLA_XDP=xdp)


def xdp(attached=None, drv=None):
    return Msg(IFLA_XDP_ATTACHED=attached, IFLA_XDP_DRV_PROG_ID=drv)


class FakeIPRoute:
    """link("get", index=, IFLA_IF_NETNSID=) from {(index, nsid): msg};
    a missing one raises as the kernel does."""

    def __init__(self, links):
        self.links = links
        self.asked = []

    def get_netnsid(self, fd):
        return {}               # no named namespace is the peer's

    def link(self, cmd, index, IFLA_IF_NETNSID=None):
        assert cmd == "get"
        self.asked.append((index, IFLA_IF_NETNSID))
        try:
            return [self.links[(index, IFLA_IF_NETNSID)]]
        except KeyError:
            raise NetlinkError(19, "No such device") from None


def test_xdp_modes_as_netlink_says_them():
    assert vethpeer.xdp_mode(link("a")) is None
    assert vethpeer.xdp_mode(link("a", xdp=xdp())) is None
    assert vethpeer.xdp_mode(link("a", xdp=xdp("xdp", 7))) == "native"
    assert vethpeer.xdp_mode(link("a", xdp=xdp("xdpgeneric"))) == "generic"
    # several programs, one of them in driver mode: enough
    assert vethpeer.xdp_mode(link("a", xdp=xdp("xdpmulti", 9))) == "native"


def test_a_nic_is_not_a_veth_and_needs_nothing():
    ipr = FakeIPRoute({(2, None): link("eth0")})
    assert vethpeer.peer_of(ipr, 2) is None


def test_a_peer_in_another_namespace_is_asked_for_by_its_nsid():
    ipr = FakeIPRoute({(2, None): link("eth0", "veth", peer=5, nsid=3),
                       (5, 3): link("sw0", "veth", xdp=xdp("xdp", 11))})
    peer = vethpeer.peer_of(ipr, 2)
    assert ipr.asked == [(2, None), (5, 3)]
    assert peer == VethPeer("eth0", 5, 3, "sw0", "native")
    assert peer.ready and peer.why_not() == ""


def test_a_peer_without_xdp_is_not_ready_and_says_so():
    ipr = FakeIPRoute({(2, None): link("eth0", "veth", peer=5, nsid=3),
                       (5, 3): link("sw0", "veth")})
    peer = vethpeer.peer_of(ipr, 2)
    assert not peer.ready
    assert peer.why_not() == (
        "eth0: its veth peer sw0 (netns id 3) runs no XDP program; a veth "
        "drops what XDP sends to a peer without one in driver mode")


def test_a_generic_mode_program_on_the_peer_is_not_enough():
    ipr = FakeIPRoute({(2, None): link("eth0", "veth", peer=5),
                       (5, None): link("sw0", "veth",
                                       xdp=xdp("xdpgeneric"))})
    peer = vethpeer.peer_of(ipr, 2)
    assert not peer.ready
    assert "sw0 (this namespace) runs an XDP program in generic mode " \
        "only" in peer.why_not()


def test_a_peer_that_cannot_be_looked_at_counts_as_one_without_xdp():
    ipr = FakeIPRoute({(2, None): link("eth0", "veth", peer=5, nsid=4)})
    peer = vethpeer.peer_of(ipr, 2)
    assert not peer.ready and peer.unseen
    assert peer.why_not().startswith(
        "eth0: its veth peer ifindex 5 (netns id 4) could not be looked at "
        "(")


def test_a_named_namespace_is_said_by_its_name(tmp_path, monkeypatch):
    """netns_name asks each file of /run/netns for its nsid (RTM_GETNSID)
    and names the peer's namespace as `ip netns` does."""
    import os
    for name in ("pfa", "pfb"):
        (tmp_path / name).write_text("")
    monkeypatch.setattr(vethpeer, "NETNS_DIR", str(tmp_path))
    nsids = {"pfa": 1, "pfb": 3}

    class Named(FakeIPRoute):
        def get_netnsid(self, fd):
            path = os.readlink(f"/proc/self/fd/{fd}")
            return {"nsid": nsids[os.path.basename(path)]}

    ipr = Named({(2, None): link("eth0", "veth", peer=5, nsid=3),
                 (5, 3): link("sw0", "veth")})
    peer = vethpeer.peer_of(ipr, 2)
    assert peer.netns == "pfb" and peer.where == "netns pfb"
    assert "its veth peer sw0 (netns pfb) runs no XDP" in peer.why_not()
    assert vethpeer.netns_name(ipr, 9) is None
