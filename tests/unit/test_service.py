import ipaddress

import pytest

from pyfwd.errors import ConfigError, PyfwdError
from pyfwd.model import Vip


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
