"""pyfwd doctor's interface and host checks (pyfwd.ops.ifchecks): pure
functions over what was read, each case without root."""

import json
from dataclasses import replace

import pytest

from pyfwd.neighbours.check import ArpAnswer
from pyfwd.ops import findings, ifchecks
from pyfwd.ops.findings import Finding
from pyfwd.ops.ifchecks import Host, Link, Peer, Plan

TX_ON = {"tx-checksum-ip-generic": True, "tx-checksum-ipv4": False}
TX_OFF = {"tx-checksum-ip-generic": False, "tx-checksum-ipv4": False}
PLAN = Plan(frame_size=4096)
HOST = Host(rp_filter_all=0)


def veth(peer_features=TX_ON, where="netns pfdo-b", **kw):
    peer = Peer(7, where, "vb", peer_features)
    return Link("va", "veth", mtu=1500, rx_queues=1, peer=peer, **kw)


NIC = Link("eth0", None, mtu=1500, rx_queues=1, rp_filter=0)


# --- checksums -------------------------------------------------------------

def test_a_veth_whose_peer_offloads_checksums_is_a_note_naming_the_peer():
    f = ifchecks.checksums(veth())
    assert f.severity == "note"
    assert f.what == ("frames from vb (netns pfdo-b) arrive with unfinished "
                      "checksums; pyfwd completes them (csum_completed)")
    assert f.fix == "`ethtool -K vb tx off` in netns pfdo-b avoids the cost"


def test_a_peer_in_this_namespace_is_fixed_on_this_host():
    f = ifchecks.checksums(veth(where="this namespace"))
    assert f.fix == "`ethtool -K vb tx off` on this host avoids the cost"


def test_a_peer_with_tx_checksum_offload_off_is_ok():
    f = ifchecks.checksums(veth(TX_OFF))
    assert f.severity == "ok" and "vb" in f.what


@pytest.mark.parametrize("feature", ifchecks.TX_CSUM)
def test_each_tx_checksum_feature_counts(feature):
    assert ifchecks.checksums(veth({feature: True})).severity == "note"


def test_a_peer_we_cannot_look_at_is_still_a_note_and_says_why():
    link = replace(veth(), peer=Peer(7, "netns id 3",
                                     unseen="entering another namespace "
                                     "needs root"))
    f = ifchecks.checksums(link)
    assert f.severity == "note"
    assert "ifindex 7 in netns id 3" in f.what
    assert "needs root" in f.what and "csum_completed" in f.what


def test_a_peer_whose_features_cannot_be_read_is_a_note_naming_it():
    link = replace(veth(), peer=Peer(7, "this namespace", "vb",
                                     unseen="the ethtool features of vb "
                                     "cannot be read"))
    f = ifchecks.checksums(link)
    assert f.severity == "note"
    assert f.what.startswith("a veth whose peer (vb in this namespace) "
                             "could not be looked at (the ethtool features")


def test_a_nic_is_not_a_veth():
    assert ifchecks.checksums(NIC).severity == "ok"


# --- offloads --------------------------------------------------------------

def test_lro_or_hardware_gro_degrades_and_the_fix_names_them():
    link = replace(NIC, features={"rx-lro": True, "rx-gro-hw": True,
                                  "rx-gro": True})
    f = ifchecks.offloads(link)
    assert f.severity == "degrades"
    assert f.fix == "`ethtool -K eth0 lro off rx-gro-hw off`"
    only = ifchecks.offloads(replace(NIC, features={"rx-gro-hw": True}))
    assert only.fix == "`ethtool -K eth0 rx-gro-hw off`"


def test_software_gro_alone_is_fine_xdp_runs_before_it():
    assert ifchecks.offloads(replace(NIC, features={"rx-gro": True})) \
        .severity == "ok"


# --- MTU ------------------------------------------------------------------

def test_the_mtu_limit_is_the_frame_less_headroom_ethernet_and_a_tag():
    assert ifchecks.mtu_max(4096) == (3840, 3822)
    assert ifchecks.mtu_max(2048) == (1792, 1774)


def test_an_mtu_an_xdp_frame_holds_is_ok_one_more_byte_blocks():
    assert ifchecks.mtu(replace(NIC, mtu=3822), PLAN).severity == "ok"
    f = ifchecks.mtu(replace(NIC, mtu=3823), PLAN)
    assert f.severity == "blocks"
    assert "3840" in f.what and "4096" in f.what
    assert f.fix.startswith("`ip link set dev eth0 mtu 3822`")


def test_the_mtu_is_not_judged_without_a_frame_size_or_on_raw_sockets():
    big = replace(NIC, mtu=9000)
    assert ifchecks.mtu(big, Plan()).severity == "ok"
    assert "not checked" in ifchecks.mtu(big, Plan()).what
    assert ifchecks.mtu(big, replace(PLAN, backend="afpacket")) \
        .severity == "ok"


# --- rp_filter ---------------------------------------------------------------

@pytest.mark.parametrize("all_, iface, effective", [
    (1, 0, 1), (0, 1, 1), (1, 2, 2), (2, 1, 2), (0, 0, 0)])
def test_rp_filter_counts_the_larger_of_all_and_the_interface(all_, iface,
                                                                 effective):
    f = ifchecks.rp_filter(replace(NIC, rp_filter=iface),
                           Host(rp_filter_all=all_), PLAN)
    assert f"rp_filter {effective} " in f.what
    assert f.severity == ("degrades" if effective == 1 else "ok")


def test_strict_rp_filter_says_when_it_matters_and_the_loose_fix():
    f = ifchecks.rp_filter(replace(NIC, rp_filter=1), HOST, PLAN)
    assert "asymmetric" in f.what and "health checks" in f.what
    assert f.fix.startswith("`sysctl -w net.ipv4.conf.eth0.rp_filter=2`")


def test_a_vlan_interface_s_sysctl_key_has_a_slash():
    link = replace(NIC, name="eth0.100", rp_filter=1)
    f = ifchecks.rp_filter(link, HOST, PLAN)
    assert "net.ipv4.conf.eth0/100.rp_filter=2" in f.fix


def test_strict_rp_filter_does_not_matter_where_no_nat_reply_comes_in():
    strict = replace(NIC, rp_filter=1)
    dr = replace(PLAN, modes=frozenset({"dr"}))
    assert ifchecks.rp_filter(strict, HOST, dr).severity == "ok"
    # two-arm NAT: the replies come in on the inside interface
    two_arm = replace(PLAN, modes=frozenset({"nat"}), inside="eth1")
    assert ifchecks.rp_filter(strict, HOST, two_arm).severity == "ok"
    inside = replace(strict, name="eth1")
    assert ifchecks.rp_filter(inside, HOST, two_arm).severity == "degrades"
    # L7 traffic goes through the kernel wherever it comes in
    l7 = replace(PLAN, modes=frozenset({"dr", "l7"}))
    assert ifchecks.rp_filter(strict, HOST, l7).severity == "degrades"


def test_an_unreadable_rp_filter_is_not_judged():
    f = ifchecks.rp_filter(replace(NIC, rp_filter=None), Host(), PLAN)
    assert f.severity == "ok" and "not checked" in f.what


# --- queues -------------------------------------------------------------------

def test_nat_on_a_multi_queue_nic_serves_every_queue():
    nic = replace(NIC, rx_queues=4)
    f = ifchecks.queues(nic, replace(PLAN, modes=frozenset({"dr", "snat"})))
    assert f.severity == "ok"
    assert "4 RX queues, all served" in f.what and "handed" in f.what
    f = ifchecks.queues(nic, replace(PLAN, modes=frozenset({"nat"}),
                                     queues=1))
    assert f.severity == "blocks" and "other 3" in f.what
    assert f.fix.startswith("`ethtool -L eth0 combined 1`")


def test_dr_serves_every_queue_unless_fewer_are_asked_for():
    nic = replace(NIC, rx_queues=4)
    dr = replace(PLAN, modes=frozenset({"dr"}))
    assert ifchecks.queues(nic, dr).severity == "ok"
    assert "handed" not in ifchecks.queues(nic, dr).what
    f = ifchecks.queues(nic, replace(dr, queues=2))
    assert f.severity == "blocks" and "--queues" in f.what
    assert "combined 2" in f.fix


def test_queues_with_the_modes_unknown_are_all_served():
    f = ifchecks.queues(replace(NIC, rx_queues=2), PLAN)
    assert f.severity == "ok" and "NAT and SNAT" in f.what
    assert ifchecks.queues(NIC, PLAN).severity == "ok"


# --- the XDP fast path --------------------------------------------------------

def xdp_peer(xdp, where="netns pfdo-b", **kw):
    return replace(veth(), peer=Peer(7, where, "vb", TX_ON, xdp=xdp, **kw))


def test_a_veth_peer_without_xdp_warns_that_the_fast_path_stays_off():
    for plan in (PLAN, replace(PLAN, fastpath=True)):   # unknown, asked
        f = ifchecks.fastpath(xdp_peer(None), plan)
        assert f.severity == "degrades"
        assert f.what == (
            "veth peer vb (netns pfdo-b) runs no XDP program: `pyfwd start "
            "--fastpath xdp` keeps the XDP fast path off on va (established "
            "flows stay on AF_XDP): a veth drops what XDP sends to a peer "
            "without an XDP program in driver mode")
        assert f.fix.startswith("attach an XDP program in driver mode to "
                                "vb in netns pfdo-b (one that passes "
                                "everything will do: `ip link set dev vb "
                                "xdpdrv obj PROG.o sec xdp`)")


def test_a_generic_mode_program_on_the_peer_is_not_enough():
    f = ifchecks.fastpath(xdp_peer("generic", where="this namespace"), PLAN)
    assert f.severity == "degrades"
    assert "runs an XDP program in generic mode only" in f.what
    assert "to vb on this host" in f.fix


def test_a_veth_peer_with_a_driver_mode_program_is_ok():
    f = ifchecks.fastpath(xdp_peer("native"), PLAN)
    assert f.severity == "ok" and "vb" in f.what and "can send" in f.what


def test_a_peer_we_cannot_look_at_warns_and_says_why():
    link = replace(veth(), peer=Peer(7, "netns id 3",
                                     unseen="entering another namespace "
                                     "needs root"))
    f = ifchecks.fastpath(link, PLAN)
    assert f.severity == "degrades"
    assert f.what.startswith("a veth whose peer (ifindex 7 in netns id 3) "
                             "could not be looked at (entering another "
                             "namespace needs root): `pyfwd start "
                             "--fastpath xdp` keeps the XDP fast path off")


def test_a_nic_or_no_fast_path_needs_nothing():
    assert ifchecks.fastpath(NIC, PLAN).severity == "ok"
    assert "not a veth" in ifchecks.fastpath(NIC, PLAN).what
    for plan in (replace(PLAN, fastpath=False),
                 replace(PLAN, backend="afpacket")):
        assert ifchecks.fastpath(xdp_peer(None), plan).severity == "ok"


# --- host -------------------------------------------------------------------

def test_no_bpffs_is_a_note_with_the_mount_command():
    f = ifchecks.bpffs(Host(bpffs=False))
    assert f.severity == "note"
    assert f.fix == "`mount -t bpf bpf /sys/fs/bpf`"
    assert ifchecks.bpffs(Host()).severity == "ok"


def test_no_tcx_blocks_only_where_raw_sockets_are_the_backend():
    old = Host(tcx=False, tcx_how="kernel 6.1.0, tcx since 6.6")
    assert ifchecks.tcx(old, PLAN).severity == "note"
    assert "fallback" in ifchecks.tcx(old, PLAN).what
    assert ifchecks.tcx(old, replace(PLAN, backend="afpacket")) \
        .severity == "blocks"
    no_xdp = replace(old, af_xdp=False,
                     af_xdp_error="Address family not supported")
    assert ifchecks.tcx(no_xdp, PLAN).severity == "blocks"
    assert ifchecks.tcx(old, replace(PLAN, backend="xdp")).severity == "ok"
    assert ifchecks.tcx(Host(tcx=None), PLAN).severity == "note"
    assert ifchecks.tcx(Host(tcx=True), PLAN).severity == "ok"


def test_no_af_xdp_degrades_to_raw_sockets():
    f = ifchecks.af_xdp(Host(af_xdp=False,
                             af_xdp_error="Address family not supported"))
    assert f.severity == "degrades" and "raw sockets" in f.what
    f = ifchecks.af_xdp(Host(af_xdp=None, af_xdp_error="making one needs "
                             "root"))
    assert f.severity == "note" and "needs root" in f.what
    assert ifchecks.af_xdp(Host()).severity == "ok"


# --- ARP ----------------------------------------------------------------------

def test_another_host_answering_arp_for_the_vip_blocks():
    answers = [ArpAnswer("02:00:00:00:00:01", "10.0.0.100", True),
               ArpAnswer("02:00:00:00:00:0b", "10.0.0.100", False)]
    f = ifchecks.arp("va", "10.0.0.100", answers)
    assert f.severity == "blocks"
    assert "02:00:00:00:00:0b answers ARP" in f.what
    assert "02:00:00:00:00:01" not in f.what
    assert f.fix.startswith("`pyfwd realserver setup --vip 10.0.0.100`")
    assert ifchecks.arp("va", "10.0.0.100", answers[:1]).severity == "ok"
    assert ifchecks.arp("va", "10.0.0.100", []).severity == "ok"


# --- all of them, and their output ----------------------------------------

def test_link_checks_give_one_finding_each():
    found = ifchecks.link_checks(veth(), HOST, PLAN)
    assert [f.check for f in found] == ["checksums", "offloads", "mtu",
                                        "rp_filter", "queues", "fastpath"]
    assert [f.check for f in ifchecks.host_checks(HOST, PLAN)] == [
        "AF_XDP sockets", "bpffs", "tcx"]


def test_a_severity_outside_the_four_is_refused():
    with pytest.raises(ValueError, match="severity 'bad'"):
        Finding("x", "host", "bad", "what")


def test_text_json_and_the_log_line():
    found = [findings.ok("mtu", "va", "fine"),
             Finding("mtu", "vb", "blocks", "too big", "make it smaller"),
             Finding("checksums", "va", "note", "unfinished", "tx off")]
    assert findings.text(found[0]) == "ok   va mtu: fine"
    assert findings.text(found[1]) == ("FAIL vb mtu: too big\n"
                                       "     fix: make it smaller")
    doc = json.loads(findings.to_json(found))
    assert doc["ok"] is False and doc["blocks"] == 1 and doc["notes"] == 1
    assert doc["findings"][1] == {"check": "mtu", "subject": "vb",
                                  "severity": "blocks", "what": "too big",
                                  "fix": "make it smaller"}
    assert [f.check for f in findings.problems(found)] == ["mtu",
                                                           "checksums"]
    assert findings.log_line(found[2]) == ("doctor: va checksums (note): "
                                           "unfinished; fix: tx off")


def test_long_lines_wrap_under_the_mark():
    line = findings.text(Finding("rp_filter", "va", "degrades", "word " * 40,
                                 "`sysctl -w net.ipv4.conf.va.rp_filter=2`"))
    lines = line.splitlines()
    assert all(len(x) <= findings.WIDTH for x in lines)
    assert all(x.startswith("     ") for x in lines[1:])
    assert "`sysctl -w net.ipv4.conf.va.rp_filter=2`" in line
