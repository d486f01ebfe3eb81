"""--json of the commands that change a host, run for real (root):
`realserver setup|teardown` (DR, IPv6, --persist, --tun) and `cleanup` in
a namespace made here, `lab up|down` with a lab of their own; each reply
checked against what the kernel then has.  Names start with the run's
PREFIX (tests/e2e/conftest.py); everything is removed whatever happens."""

import json

import pytest

from pyfwd.lab.programs import PYFWD

from .test_cli_lab import ours, pyfwd as pyfwd_cli
from .test_realserver_persist import sh, sysctl

pytestmark = pytest.mark.root

VIP = "10.0.0.100"
VIP6 = "fd00::100"


@pytest.fixture
def ns(new_name):
    """A namespace of our own with a veth pair up (eth0, eth1)."""
    name = new_name() + "-rs"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer",
           "name", "eth1")
        for dev in ("eth0", "eth1"):
            sh("ip", "-n", name, "link", "set", dev, "up")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def pyfwd_json(ns_name, *args):
    """`pyfwd ARGS --json` inside ns_name: the reply, which must be ok."""
    r = sh("ip", "netns", "exec", ns_name, *PYFWD, *args, "--json")
    reply = json.loads(r.stdout)
    assert reply["ok"] is True, reply
    return reply


def addresses(ns_name, dev):
    out = json.loads(sh("ip", "-j", "-n", ns_name, "addr", "show", "dev",
                        dev).stdout)
    return {f"{a['local']}/{a['prefixlen']}" for a in out[0]["addr_info"]}


def of(reply, what):
    return [c for c in reply["changes"] if c["what"] == what]


def test_realserver_setup_teardown_json(ns, tmp_path):
    reply = pyfwd_json(ns, "realserver", "setup", "--vip", VIP, "--persist",
                       "--root", str(tmp_path))
    assert (reply["vip"], reply["mode"], reply["undo"]) == (VIP, "dr", False)
    sysctls = {c["key"]: (c["from"], c["to"]) for c in of(reply, "sysctl")}
    for ifname in ("all", "eth0", "eth1"):
        assert sysctls[f"net.ipv4.conf.{ifname}.arp_ignore"] == (0, 1)
        assert sysctls[f"net.ipv4.conf.{ifname}.arp_announce"] == (0, 2)
        assert sysctl(ns, f"net.ipv4.conf.{ifname}.arp_ignore") == 1
    assert of(reply, "link") == [{"what": "link", "dev": "lo", "state": "up",
                                  "text": "set lo up"}]
    added, = of(reply, "address")
    assert (added["action"], added["address"], added["dev"]) == \
        ("added", f"{VIP}/32", "lo")
    assert f"{VIP}/32" in addresses(ns, "lo")
    wrote = [c["path"] for c in of(reply, "file")]
    assert all(p.startswith(str(tmp_path)) for p in wrote) and len(wrote) == 2
    assert (tmp_path / wrote[0].removeprefix(str(tmp_path) + "/")).exists()
    unit, = of(reply, "unit")
    assert unit["action"] == "enabled" and unit["unit"].endswith(".service")
    # idempotent: nothing to change, an empty list
    assert pyfwd_json(ns, "realserver", "setup", "--vip", VIP)["changes"] \
        == []

    reply = pyfwd_json(ns, "realserver", "teardown", "--vip", VIP,
                       "--persist", "--root", str(tmp_path))
    assert (reply["mode"], reply["undo"]) == ("dr", True)
    removed, = of(reply, "address")
    assert (removed["action"], removed["address"]) == ("removed", f"{VIP}/32")
    assert f"{VIP}/32" not in addresses(ns, "lo")
    assert {(c["key"], c["to"]) for c in of(reply, "sysctl")} >= {
        ("net.ipv4.conf.all.arp_ignore", 0),
        ("net.ipv4.conf.all.arp_announce", 0)}
    assert sysctl(ns, "net.ipv4.conf.all.arp_ignore") == 0
    assert {c["action"] for c in of(reply, "file")} == {"removed"}
    assert len(of(reply, "file")) == 3          # the unit, its link, sysctl
    assert not list(tmp_path.rglob("*.service")) and \
        not list(tmp_path.rglob("*.conf"))


def test_realserver_ipv6_json(ns):
    reply = pyfwd_json(ns, "realserver", "setup", "--vip", VIP6)
    added, = of(reply, "address")
    assert (added["address"], added["nodad"]) == (f"{VIP6}/128", True)
    assert f"{VIP6}/128" in addresses(ns, "lo")
    reply = pyfwd_json(ns, "realserver", "setup", "--undo", "--vip", VIP6)
    assert [c["action"] for c in of(reply, "address")] == ["removed"]
    assert f"{VIP6}/128" not in addresses(ns, "lo")


def test_realserver_tun_xdp_json(ns):
    """--tun --decap xdp (any kernel: no ipip needed): the VIP on lo and
    pyfwd's XDP decapsulation on eth0, attached then detached."""
    tun = ["--tun", "--decap", "xdp", "--iface", "eth0"]
    reply = pyfwd_json(ns, "realserver", "setup", "--vip", VIP, *tun)
    assert reply["mode"] == "tun"
    assert [c["address"] for c in of(reply, "address")] == [f"{VIP}/32"]
    attached, = of(reply, "xdp")
    assert (attached["action"], attached["iface"]) == ("attached", "eth0")
    assert isinstance(attached["id"], int) and attached["id"] > 0
    assert f"id {attached['id']}" in sh("ip", "-n", ns, "link", "show",
                                        "eth0").stdout
    reply = pyfwd_json(ns, "realserver", "teardown", "--vip", VIP, *tun)
    detached, = of(reply, "xdp")
    assert (detached["action"], detached["program"]) == \
        ("detached", attached["program"])
    assert "xdp" not in sh("ip", "-n", ns, "link", "show", "eth0").stdout
    assert f"{VIP}/32" not in addresses(ns, "lo")


def test_cleanup_json(ns):
    assert pyfwd_json(ns, "cleanup", "--iface", "eth0") == {
        "ok": True, "iface": "eth0", "removed": None}
    r = sh("ip", "netns", "exec", ns, *PYFWD, "cleanup", "--iface", "eth7",
           "--json", check=False)
    assert r.returncode == 1
    assert json.loads(r.stdout) == {
        "ok": False, "error": "interface 'eth7': no such interface in this "
        "network namespace"}


def test_lab_up_down_json(new_name):
    name = new_name()
    try:
        up = json.loads(pyfwd_cli("lab", "up", "--name", name, "--reals",
                                  "1", "--json").stdout)
        assert up["ok"] is True and up["topology"] == "one-arm"
        assert up["namespaces"] == ours(name) == sorted(
            f"{name}-{role}" for role in ("client", "lb", "real1", "sw"))
        assert up["bridges"] == [{"namespace": f"{name}-sw", "ifname": "br0"}]
        assert {(link["namespace"], link["ifname"]) for link in up["links"]} \
            == {(f"{name}-{role}", "eth0") for role in ("client", "lb",
                                                        "real1")}
        for link in up["links"]:        # each veth's peer is a switch port
            sh("ip", "-n", link["peer_namespace"], "link", "show",
               link["peer"])
        assert up["plan"]["name"] == name
        down = json.loads(pyfwd_cli("lab", "down", "--name", name,
                                    "--json").stdout)
        assert down == {"ok": True, "name": name,
                        "removed": up["namespaces"]}
        assert ours(name) == []
        again = pyfwd_cli("lab", "up", "--name", "no/such", "--json",
                          check=False)
        assert again.returncode == 1 and \
            json.loads(again.stdout)["ok"] is False
    finally:
        if ours(name):
            pyfwd_cli("lab", "down", "--name", name, check=False)
