"""`check-config`'s L7 part (control.l7.check): the configuration pyfwd
would render for the L7 VIPs, checked with `haproxy -c`.  The real HAProxy
refuses what pyfwd's own checks let through (a tls_cert PEM without its
key); a fake one shows how a refusal is pinned to its VIP."""

import shutil

import pytest

from pyfwd.control.config import parse
from pyfwd.control.l7.check import SBIN, check_haproxy
from pyfwd.errors import ConfigError

from ..certs import self_signed


def l7(name, port, **extra):
    more = "".join(f'{k} = "{v}"\n' for k, v in extra.items())
    return (f'[[vip]]\nname = "{name}"\naddress = "10.0.0.100"\n'
            f'port = {port}\nmode = "l7"\n{more}'
            '[[vip.real]]\naddress = "10.0.0.11"\nport = 8080\n')


DR = ('[[vip]]\nname = "dicom"\naddress = "10.0.0.100"\nport = 104\n'
      '[[vip.real]]\naddress = "10.0.0.11"\n')


def services(*tables):
    return parse("\n".join(tables), "test.toml").services


@pytest.fixture(scope="module")
def pems(tmp_path_factory):
    """(a PEM with the certificate alone, one with certificate and key)."""
    if shutil.which("haproxy") is None and \
            shutil.which("haproxy", path=SBIN) is None:
        pytest.fail("needs HAProxy (apt-get install haproxy), as CI has it")
    cert, _, both = self_signed(tmp_path_factory.mktemp("pem"))
    return cert, both


def test_haproxy_refuses_a_certificate_without_its_key(pems):
    cert_only, both = pems
    svcs = services(l7("web", 80), l7("tls", 443, tls_cert=cert_only), DR)
    with pytest.raises(ConfigError, match=r"^vip tls: HAProxy rejects the "
                       r"configuration: parsing \[haproxy\.cfg:\d+\] : "
                       r"'bind 10\.0\.0\.100:443' .*No Private Key"):
        check_haproxy(svcs)
    svcs = services(l7("web", 80), l7("tls", 443, tls_cert=both), DR)
    assert check_haproxy(svcs).startswith("2 L7 VIP(s) checked with "
                                          "HAProxy 2.")


def test_without_haproxy_or_l7_vips_nothing_is_checked():
    svcs = services(l7("web", 80), DR)
    note = check_haproxy(svcs, binary="no-such-haproxy")
    assert note == ("1 L7 VIP(s) not checked by HAProxy: 'no-such-haproxy' "
                    "is not installed (`pyfwd start` needs it)")
    assert check_haproxy(services(DR)) is None


FAKE = """#!/bin/sh
[ "$1" = -v ] && { echo 'HAProxy version 2.6.99 2024/01/01'; exit 0; }
if grep -q 'bind 10.0.0.100:443' "$3" && {refuse_both}; then
    echo "[ALERT]    (1) : config : parsing [$3:12] : no, not {what}"
    exit 1
fi
exit 0
"""


@pytest.mark.parametrize("refuse_both,named", [
    ("true", "vip tls: "),                       # refused alone: named
    ("grep -q 'bind 10.0.0.100:80 transparent$' \"$3\"",
     "vip web, tls: "),  # together
])
def test_a_refusal_names_its_vip(tmp_path, refuse_both, named):
    fake = tmp_path / "haproxy"
    fake.write_text(FAKE.replace("{refuse_both}", refuse_both)
                    .replace("{what}", "this"))
    fake.chmod(0o755)
    svcs = services(l7("web", 80), l7("tls", 443), DR)
    with pytest.raises(ConfigError) as err:
        check_haproxy(svcs, binary=str(fake))
    assert str(err.value) == (named + "HAProxy rejects the configuration: "
                              "parsing [haproxy.cfg:12] : no, not this")
    assert check_haproxy(services(l7("web", 80)), binary=str(fake)) == \
        "1 L7 VIP(s) checked with HAProxy 2.6.99 (haproxy -c)"


def test_check_config_says_what_haproxy_says(pems, tmp_path):
    from click.testing import CliRunner
    from pyfwd.cli.main import cli
    cert_only, both = pems
    conf = tmp_path / "pyfwd.toml"
    conf.write_text(l7("tls", 443, tls_cert=cert_only) + DR)
    r = CliRunner().invoke(cli, ["check-config", str(conf)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert r.output.startswith("Error: vip tls: HAProxy rejects"), r.output
    conf.write_text(l7("tls", 443, tls_cert=both) + DR)
    r = CliRunner().invoke(cli, ["check-config", str(conf)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        f"{conf}: ok: 2 VIP(s), 2 real server(s)",
        f"{conf}: 1 L7 VIP(s) checked with HAProxy " +
        r.output.split("HAProxy ")[1].split()[0] + " (haproxy -c)"]
