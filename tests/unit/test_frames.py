"""pyfwd.frames: the one set of MAC helpers, Ethernet/VLAN
unwrapping and headers, addresses of one family.  No root, no sockets."""

import ipaddress

import pytest
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from pyfwd.errors import ConfigError
from pyfwd import frames
from pyfwd.frames import (ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP,
                                     ETH_P_IP, mac_to_bytes, mac_to_str)

LB_MAC = "02:00:00:00:01:02"
CLIENT_MAC = "02:00:00:00:01:01"

# -- MAC helpers


def test_mac_round_trip():
    raw = b"\x02\x00\x00\x00\x01\xab"
    assert mac_to_bytes("02:00:00:00:01:AB") == raw
    assert mac_to_bytes("02-00-00-00-01-ab") == raw
    assert mac_to_bytes(raw) == raw
    assert mac_to_str(raw) == "02:00:00:00:01:ab"
    assert mac_to_str("2:0:0:0:1:ab") == "02:00:00:00:01:ab"


def test_mac_forms_the_core_took_too():
    # the data plane's configuration parsed these before it used frames.py
    raw = b"\x02\x00\x00\x00\x01\xab"
    assert mac_to_bytes("0200000001AB") == raw
    assert mac_to_bytes(bytearray(raw)) == raw
    assert mac_to_bytes(" 02:00:00:00:01:ab\n") == raw


@pytest.mark.parametrize("bad", ["", "02:00:00:00:01", "02:00:00:00:01:zz",
                                 "020:00:00:00:01:02", b"\x00" * 5, None, 7,
                                 "02000000010", "02000000010g",
                                 "02:00:00:00:00:01:02"])
def test_mac_errors_name_the_value(bad):
    with pytest.raises(ConfigError) as exc:
        mac_to_bytes(bad)
    assert repr(bad) in str(exc.value)
    assert "six bytes" in str(exc.value)


def test_is_unicast():
    assert frames.is_unicast(mac_to_bytes(LB_MAC))
    assert not frames.is_unicast(frames.ZERO_MAC)
    assert not frames.is_unicast(frames.BROADCAST)
    assert not frames.is_unicast(mac_to_bytes("33:33:00:00:00:01"))


# -- Ethernet and VLAN


def test_unwrap_untagged_and_tagged():
    plain = bytes(Ether(dst=LB_MAC, src=CLIENT_MAC) / ARP())
    l2 = frames.unwrap_eth(plain)
    assert (l2.dst, l2.src, l2.ethertype, l2.tag, l2.offset) == (
        mac_to_bytes(LB_MAC), mac_to_bytes(CLIENT_MAC), ETH_P_ARP, None, 14)
    for tag, tpid in ((Dot1Q(vlan=7, prio=3), ETH_P_8021Q),
                      (Dot1AD(vlan=9), ETH_P_8021AD)):
        frame = bytes(Ether(dst=LB_MAC, src=CLIENT_MAC) / tag / ARP())
        l2 = frames.unwrap_eth(frame)
        assert l2.ethertype == ETH_P_ARP and l2.offset == 18
        assert l2.tag == (tpid, frame[14] << 8 | frame[15])
    # only the TPIDs asked for are unwrapped
    frame = bytes(Ether(dst=LB_MAC, src=CLIENT_MAC) / Dot1AD(vlan=9) / ARP())
    assert frames.unwrap_eth(frame, (ETH_P_8021Q,)).ethertype == ETH_P_8021AD


@pytest.mark.parametrize("frame", [b"", b"\x00" * 13, None, 7,
                                   b"\x00" * 12 + b"\x81\x00\x00"])
def test_unwrap_refuses_what_is_too_short(frame):
    assert frames.unwrap_eth(frame) is None


def test_unwrap_payload_says_why():
    frame = bytes(Ether(dst=LB_MAC, src=CLIENT_MAC, type=ETH_P_IP)) \
        + b"\x45" + b"\0" * 19
    l2, why = frames.unwrap_payload(frame, ETH_P_IP, 20, "not_ipv4")
    assert why is None and l2.offset == 14
    assert frames.unwrap_payload(frame[:-1], ETH_P_IP, 20, "not_ipv4") \
        == (None, "malformed")
    assert frames.unwrap_payload(frame, ETH_P_ARP, 20, "not_arp") \
        == (None, "not_arp")
    assert frames.unwrap_payload(b"", ETH_P_IP, 20, "x") == (None,
                                                            "malformed")


def test_eth_header_matches_scapy():
    dst, src = mac_to_bytes(LB_MAC), mac_to_bytes(CLIENT_MAC)
    assert frames.eth_header(dst, src, ETH_P_ARP) == bytes(
        Ether(dst=LB_MAC, src=CLIENT_MAC, type=ETH_P_ARP))
    assert frames.eth_header(dst, src, ETH_P_ARP, (ETH_P_8021Q, 42)) == \
        bytes(Ether(dst=LB_MAC, src=CLIENT_MAC) / Dot1Q(vlan=42,
                                                        type=ETH_P_ARP))


@pytest.mark.parametrize("bad", [-1, 0x10000, True, "7", None])
def test_check_tci(bad):
    frames.check_tci(0)
    frames.check_tci(0xffff)
    with pytest.raises(ConfigError, match="vlan"):
        frames.check_tci(bad)


# -- addresses of one family


def test_ip_of():
    v4 = ipaddress.IPv4Address("10.0.0.1")
    assert frames.ip_of(4, "10.0.0.1", "vip", "why") == v4
    assert frames.ip_of(4, v4, "vip", "why") is v4
    assert frames.ip_of(6, "fd00::1", "vip", "why") == \
        ipaddress.IPv6Address("fd00::1")
    with pytest.raises(ConfigError, match="vip 'nope': expected an IPv4"):
        frames.ip_of(4, "nope", "vip", "why")
    with pytest.raises(ConfigError, match="vip fd00::1: IPv4 only"):
        frames.ip_of(4, "fd00::1", "vip", "IPv4 only")
    with pytest.raises(ConfigError, match="target 10.0.0.1: six only"):
        frames.ip_of(6, v4, "target", "six only")
