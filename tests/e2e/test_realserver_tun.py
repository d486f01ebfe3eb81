"""`pyfwd realserver setup|status|teardown --tun` as an operator runs them,
in a real server's namespace of a tun lab: status says what is missing,
setup makes it ready and is idempotent, teardown undoes it (the VIP gone,
the ARP settings back, the XDP decapsulation detached).  `--tun` with the
kernel's tunnel device: where the kernel has ipip (tunl0), the VIP lands
there with rp_filter relaxed; where it has not (this CI's kernel), setup
fails with a message that names the way out (--decap xdp), changing
nothing.  Root; the lab is removed whatever happens."""

import os
import secrets

import pytest

from pyfwd.lab.programs import PYFWD
from pyfwd.lab.topology import Lab

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

VIP, VIP6 = "10.0.0.100", "fd00:0:0:1::100"
XDP = ["--tun", "--decap", "xdp", "--iface", "eth0"]


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    with Lab("pfrt" + secrets.token_hex(3), topology="tun", reals=1) as lab:
        yield lab


def pyfwd(lab, *args):
    return lab.run("real1", PYFWD + list(args), capture_output=True,
                   text=True, timeout=60)


def ip(lab, *args):
    return lab.run("real1", ["ip", *args], capture_output=True, text=True,
                   timeout=30, check=True).stdout


@pytest.mark.parametrize("vip", [VIP, VIP6])
def test_xdp_decap_setup_status_teardown(lab, vip):
    r = pyfwd(lab, "realserver", "status", "--vip", vip, *XDP)
    assert r.returncode == 1 and "no pyfwd_xdp_decap attached" in r.stdout
    r = pyfwd(lab, "realserver", "setup", "--vip", vip, *XDP)
    assert r.returncode == 0, r.stderr
    assert "attached XDP pyfwd_xdp_decap" in r.stdout
    assert vip in ip(lab, "addr", "show", "dev", "lo")
    assert "xdp" in ip(lab, "link", "show", "dev", "eth0")
    again = pyfwd(lab, "realserver", "setup", "--vip", vip, *XDP)
    assert (again.returncode, again.stdout) == (0, "nothing to change\n")
    r = pyfwd(lab, "realserver", "status", "--vip", vip, *XDP)
    assert r.returncode == 0 and r.stdout.startswith("ok (TUN"), r.stdout
    r = pyfwd(lab, "realserver", "teardown", "--vip", vip, *XDP)
    assert r.returncode == 0 and "detached XDP" in r.stdout, r.stderr
    assert vip not in ip(lab, "addr", "show", "dev", "lo")
    assert "xdp" not in ip(lab, "link", "show", "dev", "eth0")
    r = pyfwd(lab, "realserver", "status", "--vip", vip, *XDP)
    assert r.returncode == 1


def test_kernel_tunnel_device_or_a_clear_refusal(lab):
    before = ip(lab, "addr")
    r = pyfwd(lab, "realserver", "setup", "--vip", VIP, "--tun")
    status = pyfwd(lab, "realserver", "status", "--vip", VIP, "--tun")
    if r.returncode:        # no ipip in this kernel: nothing changed
        assert "no ipip device" in r.stderr and "--decap xdp" in r.stderr
        assert ip(lab, "addr") == before
        assert status.returncode == 1 and "no tunl0" in status.stdout
        return
    assert f"added {VIP}/32 to tunl0" in r.stdout
    assert status.returncode == 0, status.stdout
    rp = lab.run("real1", ["sysctl", "-n", "net.ipv4.conf.tunl0.rp_filter"],
                 capture_output=True, text=True).stdout.strip()
    assert rp == "0"
    r = pyfwd(lab, "realserver", "teardown", "--vip", VIP, "--tun")
    assert r.returncode == 0 and VIP not in ip(lab, "addr", "show", "tunl0")


def test_tun_options_need_tun(lab):
    r = pyfwd(lab, "realserver", "setup", "--vip", VIP, "--decap", "xdp")
    assert r.returncode == 2 and "go with --tun" in r.stderr
