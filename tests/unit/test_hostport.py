"""model.hostport: an address with a port, as ctl, HAProxy's config and
the VIP probe write it (v6 bracketed)."""

import ipaddress

import pytest

from pyfwd.model import Real, Vip, hostport


@pytest.mark.parametrize("address, port, text", [
    ("10.0.0.1", 80, "10.0.0.1:80"),
    ("2001:db8::1", 443, "[2001:db8::1]:443"),
    ("2001:0db8:0::0001", 443, "[2001:db8::1]:443"),     # normalised
    (ipaddress.ip_address("10.0.0.1"), 8080, "10.0.0.1:8080"),
    (ipaddress.ip_address("fd00::11"), 53, "[fd00::11]:53"),
    ("10.0.0.1", None, "10.0.0.1"),
    ("fd00::11", None, "[fd00::11]"),
])
def test_hostport(address, port, text):
    assert hostport(address, port) == text


def test_not_an_address():
    with pytest.raises(ValueError):
        hostport("web", 80)


def test_vip_and_real_say_it_so():
    assert str(Vip.parse("[fd00::100]:443/udp")) == "[fd00::100]:443/udp"
    assert str(Vip.parse("10.0.0.100:80/tcp")) == "10.0.0.100:80/tcp"
    assert Real.parse("[fd00::11]:8080@5").key == "[fd00::11]:8080"
    assert Real.parse("[fd00::11]").key == "[fd00::11]"
    assert Real.parse("10.0.0.11@3").key == "10.0.0.11"
