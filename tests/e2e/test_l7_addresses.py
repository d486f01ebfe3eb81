"""VIP addresses shared, end to end: two L7 VIPs on one address (80 and
443, the PACS viewer's pair) and an L4 DR VIP on the same address (104:
the XDP program steers that port to the engine, the kernel keeps 80 and
443 for HAProxy); an address the operator put on the interface stays;
the addresses pyfwd added leave with the last VIP that needs one (del-vip,
reload) and at stop.  A one-arm lab, two real servers set up for DR with
whoami on 104 (DR) and 8080 (HAProxy's servers).  Root; the lab and every
process are removed whatever happens."""

import os
import re
import secrets
import signal
import subprocess
import textwrap

import pytest
from pyroute2 import IPRoute

from pyfwd.control.config import load
from pyfwd.control.engine import Engine
from pyfwd.control.l7.addresses import ADDR_PROTO
from pyfwd.lab import whoami
from pyfwd.lab.programs import PYFWD
from pyfwd.lab.topology import Lab

from ..certs import self_signed
from .procs import wait_line

pytestmark = pytest.mark.root

VIP4 = "10.0.0.100"     # shared: L7 :80, L7 :443, DR :104
OWN = "10.0.0.101"      # the operator's, on the balancer's eth0 already
LEFT = "10.0.0.102"     # left behind by a pyfwd that was killed


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    base = tmp_path_factory.mktemp("l7addr")
    procs = []
    with Lab("pfa" + secrets.token_hex(3), topology="one-arm",
             reals=2) as lab:
        try:
            for role in lab.reals:
                r = lab.run(role, PYFWD + ["realserver", "setup", "--vip",
                                           VIP4], capture_output=True,
                            text=True, timeout=60)
                assert r.returncode == 0, r.stderr
                for port in (104, 8080):
                    p = lab.popen(role, whoami.command(port, role),
                                  stdout=subprocess.PIPE, text=True)
                    procs.append(p)
                    wait_line(p, "listening")
            self_signed(base)
            lab.base = base
            yield lab
        finally:
            for p in procs:
                p.kill()
                p.wait(timeout=5)


def l7(lab, name, address, port, **extra):
    """A [[vip]] table: an L7 HTTP VIP on the two reals' port 8080."""
    reals = "".join(f'\n[[vip.real]]\naddress = "{lab.ip(r)}"\nport = 8080\n'
                    for r in lab.reals)
    more = "".join(f'{k} = "{v}"\n' for k, v in extra.items())
    return (f'[[vip]]\nname = "{name}"\naddress = "{address}"\n'
            f'port = {port}\nmode = "l7"\nscheduler = "rr"\n{more}{reals}\n')


def dr(lab, name, address, port):
    reals = "".join(f'\n[[vip.real]]\naddress = "{lab.ip(r)}"\n'
                    for r in lab.reals)
    return (f'[[vip]]\nname = "{name}"\naddress = "{address}"\n'
            f'port = {port}\nmode = "dr"\nscheduler = "rr"\n{reals}\n')


def lb_addresses(lab):
    """{address: its `ip addr` line} of the balancer's eth0 (IPv4)."""
    out = lab.run("lb", ["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
                  capture_output=True, text=True, check=True).stdout
    return {re.search(r"inet ([\d.]+)/", ln).group(1): ln
            for ln in out.splitlines()}


def curl(lab, url, *args, timeout=10):
    r = lab.run("client", ["curl", "-sS", "--max-time", str(timeout), *args,
                           url], capture_output=True, text=True,
                timeout=timeout + 10)
    return r.stdout if r.returncode == 0 else f"curl failed: {r.stderr}"


def https(lab):
    return curl(lab, "https://pacs.test/", "--cacert",
                str(lab.base / "cert.pem"), "--resolve",
                f"pacs.test:443:{VIP4}")


def test_two_l7_vips_and_a_dr_vip_on_one_address(lab, tmp_path):
    """The issue's case, through `pyfwd start` and `pyfwd ctl`: 80 and
    443 of one address in HAProxy and 104 of it in DR all answer; the
    address leaves with the last L7 VIP, and DR goes on."""
    sock = tmp_path / "pyfwd.sock"
    cfg = tmp_path / "pyfwd.toml"
    cfg.write_text(textwrap.dedent(f"""
        [engine]
        iface = "eth0"
        control_socket = "{sock}"
        metrics = "127.0.0.1:10104"
        """) + l7(lab, "web", VIP4, 80) +
        l7(lab, "tls", VIP4, 443, tls_cert=lab.base / "both.pem") +
        dr(lab, "dicom", VIP4, 104))
    proc = lab.popen("lb", PYFWD + ["start", "--config", str(cfg),
                                    "--busy-poll", "0"],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                     text=True)
    ctl = PYFWD + ["ctl", "--socket", str(sock)]
    try:
        wait_line(proc, "metrics at")
        # HAProxy: the client's address in X-Forwarded-For, the proxy's
        # as the source; DR: the client's own, straight from the real
        assert "xff=10.0.0.1" in curl(lab, f"http://{VIP4}/")
        assert "xff=10.0.0.1" in https(lab)
        out = curl(lab, f"http://{VIP4}:104/")
        assert "client=10.0.0.1:" in out and "xff" not in out, out
        assert f"local={VIP4}:104" in out, out
        assert VIP4 in lb_addresses(lab)
        r = lab.run("lb", ctl + ["del-vip", "web"], capture_output=True,
                    text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert VIP4 in lb_addresses(lab)            # 443 still binds it
        assert "curl failed" in curl(lab, f"http://{VIP4}/", timeout=2)
        assert "xff=10.0.0.1" in https(lab)
        r = lab.run("lb", ctl + ["del-vip", "tls"], capture_output=True,
                    text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert VIP4 not in lb_addresses(lab)
        assert "client=10.0.0.1:" in curl(lab, f"http://{VIP4}:104/")
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out


def test_reload_and_stop_remove_only_what_pyfwd_added(lab, tmp_path):
    """The operator's address is used and left; ours leaves with the last
    VIP on it (reload) and at stop; one a killed pyfwd left behind
    (marked with pyfwd's address protocol) is taken back and removed."""
    lab.run("lb", ["ip", "addr", "add", f"{OWN}/24", "dev", "eth0"],
            check=True)

    def leave():        # iproute2 6.1 has no `proto` for addresses yet
        with IPRoute() as ipr:
            ipr.addr("add", index=ipr.link_lookup(ifname="eth0")[0],
                     address=LEFT, prefixlen=32, proto=ADDR_PROTO)
    lab.call("lb", leave)
    cfg = tmp_path / "pyfwd.toml"
    both = l7(lab, "web", VIP4, 80) + l7(lab, "own", OWN, 80)
    cfg.write_text(both)
    eng = Engine("eth0", load(str(cfg)).services, busy_poll=0,
                 flows=1 << 12, config_path=str(cfg))
    try:
        lab.call("lb", eng.start)
        have = lb_addresses(lab)
        assert VIP4 in have and OWN in have and LEFT not in have, have
        for address in (VIP4, OWN):
            assert "xff=10.0.0.1" in curl(lab, f"http://{address}/")
        cfg.write_text(l7(lab, "own", OWN, 80))
        lab.call("lb", eng.reload)
        have = lb_addresses(lab)
        assert VIP4 not in have and OWN in have, have
        assert "xff=10.0.0.1" in curl(lab, f"http://{OWN}/")
        cfg.write_text(both)
        lab.call("lb", eng.reload)
        assert "xff=10.0.0.1" in curl(lab, f"http://{VIP4}/")
        cfg.write_text(l7(lab, "web", VIP4, 80))
        lab.call("lb", eng.reload)                 # OWN: no L7 VIP left
        assert OWN in lb_addresses(lab)
    finally:
        lab.call("lb", eng.stop)
        have = lb_addresses(lab)
        lab.run("lb", ["ip", "addr", "del", f"{OWN}/24", "dev", "eth0"])
        lab.run("lb", ["ip", "addr", "del", f"{LEFT}/32", "dev", "eth0"])
    assert VIP4 not in have and LEFT not in have, have
    assert f"{OWN}/24" in have[OWN], have        # as the operator put it
