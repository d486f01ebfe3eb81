import ipaddress

import pytest

from pyfwd.errors import ConfigError, PyfwdError
from pyfwd.model import Real, Service, Vip


@pytest.mark.parametrize("text,addr,port,proto", [
    ("10.0.0.100:80/tcp", "10.0.0.100", 80, "tcp"),
    ("10.0.0.100:11112/TCP", "10.0.0.100", 11112, "tcp"),
    ("[fd00::100]:53/udp", "fd00::100", 53, "udp"),
    (" 192.168.1.5:104/tcp ", "192.168.1.5", 104, "tcp"),
])
def test_parse(text, addr, port, proto):
    v = Vip.parse(text)
    assert v == Vip(ipaddress.ip_address(addr), port, proto)
    assert Vip.parse(str(v)) == v


@pytest.mark.parametrize("text,words", [
    ("10.0.0.100", "ADDR:PORT/PROTO"),
    ("10.0.0.100:80", "ADDR:PORT/PROTO"),
    ("10.0.0.256:80/tcp", "10.0.0.256"),
    ("10.0.0.1:0/tcp", "1 to 65535"),
    ("10.0.0.1:65536/tcp", "1 to 65535"),
    ("10.0.0.1:http/tcp", "'http'"),
    ("10.0.0.1:80/sctp", "'sctp'"),
    ("224.0.0.5:80/tcp", "unicast"),
    ("255.255.255.255:80/tcp", "unicast"),
    ("0.0.0.0:80/tcp", "unicast"),
    ("fd00::1:80/tcp", "[fd00::100]:80/tcp"),   # IPv6 needs brackets
    (None, "ADDR:PORT/PROTO"),
])
def test_parse_errors_name_the_value(text, words):
    with pytest.raises(ConfigError) as exc:
        Vip.parse(text)
    assert words in str(exc.value)
    assert isinstance(exc.value, PyfwdError) and isinstance(exc.value,
                                                            ValueError)


# --- addresses no VIP or real server may have, and why (issue 15) -----------

@pytest.mark.parametrize("addr,why", [
    ("0.1.2.3", "'this network'"), ("0.0.0.0", "'this network'"),
    ("127.0.0.2", "loopback"), ("169.254.10.1", "link-local"),
    ("224.0.0.5", "multicast"), ("239.255.0.1", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"),
    ("::", "unspecified"), ("::1", "loopback"), ("fe80::1", "link-local"),
    ("ff02::1", "multicast"), ("::ffff:10.0.0.1", "IPv4-mapped"),
])
def test_vip_addresses_no_client_can_reach_are_refused(addr, why):
    with pytest.raises(ConfigError) as exc:
        Vip(addr, 80, "tcp")
    msg = str(exc.value)
    assert msg.startswith(f"vip address {ipaddress.ip_address(addr)}: {why}"
                          ), msg
    assert "expected a unicast address" in str(exc.value)


@pytest.mark.parametrize("addr,why", [
    ("0.1.2.3", "'this network'"), ("169.254.10.1", "link-local"),
    ("224.0.0.5", "multicast"), ("240.0.0.1", "reserved"),
    ("fe80::1", "link-local"), ("ff02::1", "multicast"),
])
def test_real_addresses_no_host_has_are_refused(addr, why):
    with pytest.raises(ConfigError, match=f"real address .*: {why}"):
        Real(addr)


WEB = Vip.parse("10.0.0.100:80/tcp")


@pytest.mark.parametrize("mode", ["dr", "nat", "snat"])
def test_l4_reals_on_this_host_or_the_vip_are_refused(mode):
    with pytest.raises(ConfigError, match="real 127.0.0.1: loopback.*L7"):
        Service(WEB, [Real("127.0.0.1")], mode=mode)
    with pytest.raises(ConfigError, match="real 10.0.0.100: the VIP's own "
                       "address; the balancer owns it"):
        Service(WEB, [Real("10.0.0.100")], mode=mode)
    with pytest.raises(ConfigError, match="fallback 10.0.0.100: the VIP's "
                       "own"):
        Service(WEB, [], mode=mode, fallback=Real("10.0.0.100"))


def test_l7_reals_on_this_host_are_fine_but_not_haproxy_itself():
    s = Service(WEB, [Real("127.0.0.1", 8080), Real("10.0.0.100", 8081)],
                mode="l7")
    assert [r.key for r in s.reals] == ["127.0.0.1:8080", "10.0.0.100:8081"]
    with pytest.raises(ConfigError, match="the VIP itself"):
        Service(WEB, [Real("10.0.0.100")], mode="l7")


def test_dr_cannot_translate_ports():
    assert Service(WEB, [Real("10.0.0.11", 80), Real("10.0.0.12")]).reals
    with pytest.raises(ConfigError) as exc:
        Service(WEB, [Real("10.0.0.11", 8080)])
    assert str(exc.value) == (
        "vip 10.0.0.100:80/tcp: real 10.0.0.11:8080: port 8080 in DR, which "
        "rewrites MAC addresses only, so the real server receives the VIP's "
        "port 80; leave the port out, or use nat or snat to translate ports")
    for mode in ("nat", "snat", "l7"):
        assert Service(WEB, [Real("10.0.0.11", 8080)], mode=mode).reals


def test_snat_takes_ipv4_vips_only():
    v6 = Vip.parse("[fd00::100]:80/tcp")
    with pytest.raises(ConfigError, match="snat takes IPv4 VIPs only"):
        Service(v6, [Real("fd00::11")], mode="snat")
    assert Service(v6, [Real("fd00::11")], mode="nat").reals


def test_a_real_added_at_run_time_is_checked_as_the_configs():
    from pyfwd.control import services as svcs
    services = [Service(WEB, [Real("10.0.0.11")], name="web")]
    for bad, words in (("10.0.0.12:8080", "in DR"),
                       ("10.0.0.100", "VIP's own address"),
                       ("127.0.0.1", "loopback")):
        with pytest.raises(ConfigError, match=words):
            svcs.add_real(services, "web", Real.parse(bad))
    assert services[0].reals == [Real("10.0.0.11")]
