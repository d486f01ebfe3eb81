"""A 100 MB download survives a two-second health flap of its own real
server (issue 16): a one-arm DR lab and a two-arm NAT lab, nginx on two
real servers (port 80, and 81 for the health check), the engine in the lb
namespace with a TCP health check on port 81.  While curl (rate-limited,
so it lasts several seconds) downloads through the VIP, an nft rule in its
real server's namespace refuses the check for two seconds: the engine logs
DOWN, then up; new flows meanwhile go to the other real; with on_down =
"quiesce" (the default) the download completes whole, with on_down =
"reset" it is cut.  Likewise when its real server stops answering ARP for
a few seconds: its last MAC is kept (neighbour_stale), unless the grace is
shorter than the silence.  Root; the labs are removed whatever happens."""

import ipaddress
import logging
import re
import subprocess
import time

import pytest

from pyfwd.control.engine import Engine
from pyfwd.control.health.spec import HealthSpec
from pyfwd.model import Real, Service, Vip

from .procs import curl, lazy_labs, wait_for, web_lab

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

VIP4 = "10.0.0.100"
WEB = Vip.parse(f"{VIP4}:80/tcp")
SIZE = 100_000_000
RATE = "16M"            # curl --limit-rate: ~6 s for SIZE
FLAP = 2.0              # s the check is refused
CHECK_PORT = 81
CHECK = HealthSpec(type="tcp", interval=0.2, timeout=0.3, rise=2, fall=2,
                   port=CHECK_PORT)
SERVER = """
    server {{
        listen 80;
        listen {check};
        location = /name {{ default_type text/plain; return 200 "{role}\\n"; }}
        location = /big {{ alias {d}/big; }}
    }}"""
# In a real server's namespace: refuse the health check, never the VIP's
# traffic (on port 80).
FLAP_RULES = """table inet pfqsflap {{
    chain input {{
        type filter hook input priority 0;
        tcp dport %d reject with tcp reset
    }}
}}
""" % CHECK_PORT
# In a real server's namespace: answer no ARP request for its address (its
# own requests and their answers go on: it still reaches the client).
ARP_RULES = """table arp pfqsarp {{
    chain input {{
        type filter hook input priority 0;
        arp operation request arp daddr ip {ip} drop
    }}
}}
"""


@pytest.fixture(scope="module")
def labs(tmp_path_factory):
    """{mode: lab}, each built when first asked for, removed at the end."""
    with lazy_labs(tmp_path_factory, make_lab) as get:
        yield get


def make_lab(mode, base):
    return web_lab("pfqs", mode, base, VIP4, lambda role, d: SERVER.format(
        d=d, role=role, check=CHECK_PORT), SIZE)


def names(lab, n=16):
    """Which real server each of n new connections to the VIP reached."""
    r = curl(lab, "-H", "Connection: close", *[f"http://{VIP4}/name"] * n)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def start(lab, mode, on_down):
    """An engine in lab's lb namespace, its real servers checked; stop()
    it."""
    reals = [Real(lab.ip(role)) for role in lab.reals]
    eng = Engine("eth0", [Service(WEB, reals, "maglev", mode, name="web",
                                  health=CHECK, on_down=on_down)],
                 inside_iface="eth1" if mode == "nat" else None,
                 busy_poll=0, flows=1 << 16, backend="xdp")
    lab.call("lb", eng.start)
    try:
        wait_for(lambda: all(eng.monitor.state((WEB, r.key))["last_ok"]
                             for r in reals), 5, "first health checks")
    except BaseException:
        eng.stop()
        raise
    return eng


def download(lab):
    """curl fetching /big through the VIP, rate-limited: its Popen."""
    return lab.popen("client", ["curl", "-sS", "--max-time", "60",
                                "--limit-rate", RATE, "-o", "/dev/null",
                                "-w", "%{size_download} %{http_code}",
                                f"http://{VIP4}/big"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True)


def real_of_the_download(eng):
    """The real server (key) the download's flow is on: the one with an
    active flow that carried the most frames (a stray packet of an
    earlier test's connection, a FIN or RST that arrives late, can open
    a flow of a frame or two on the other one)."""
    rows = sorted((r for r in eng.show()[0]["reals"] if r["active"]),
                  key=lambda r: r["frames"], reverse=True)
    assert rows and rows[0]["frames"] >= 10, rows
    assert all(r["frames"] * 4 < rows[0]["frames"] for r in rows[1:]), rows
    return rows[0]["real"]


def row(eng, real):
    return next(r for r in eng.show()[0]["reals"] if r["real"] == real)


def check_download(dl, whole):
    """The download of dl (ended) came whole, or was cut."""
    out, err = dl.communicate(timeout=60)
    if whole:
        assert dl.returncode == 0, err
        assert out == f"{SIZE} 200", out
    else:
        # its flow went to the other real, which knows no such connection
        # and resets it
        assert dl.returncode != 0 and int(out.split()[0]) < SIZE, (out, err)
    return out, err


@pytest.mark.parametrize("mode,on_down", [("dr", "quiesce"),
                                          ("dr", "reset"),
                                          ("nat", "quiesce"),
                                          ("nat", "reset")])
def test_a_download_survives_a_health_flap_of_its_real(labs, mode, on_down,
                                                       caplog, tmp_path):
    lab = labs(mode)
    eng = start(lab, mode, on_down)
    try:
        flap(lab, eng, caplog, tmp_path)
    finally:
        time.sleep(0.3)
        eng.stop()


def flap(lab, eng, caplog, tmp_path):
    """Download, flap its real's health check, check what happened."""
    on_down = eng.services[0].on_down
    role_of = {lab.ip(role): role for role in lab.reals}
    rules = tmp_path / "flap.nft"
    caplog.set_level(logging.WARNING, logger="pyfwd")
    t0 = time.monotonic()
    dl = download(lab)
    try:
        time.sleep(1.0)
        victim = real_of_the_download(eng)
        other = next(role for ip, role in role_of.items() if ip != victim)
        rules.write_text(FLAP_RULES.format(ip=victim))
        key = (WEB, victim)
        r = lab.run(role_of[victim], ["nft", "-f", str(rules)],
                    capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        flapped = time.monotonic()
        try:
            wait_for(lambda: not eng.health.get(key, (True,))[0], FLAP,
                     f"{victim} DOWN")
            during = names(lab)
            shown = row(eng, victim)
            time.sleep(max(0.0, flapped + FLAP - time.monotonic()))
        finally:
            lab.run(role_of[victim], ["nft", "delete", "table", "inet",
                                      "pfqsflap"])
        wait_for(lambda: eng.health[key][0], 3, f"{victim} up again")
        back = time.monotonic()
        after = names(lab, 32)
        out, err = check_download(dl, whole=on_down == "quiesce")
    finally:
        if dl.poll() is None:
            dl.kill()
            dl.wait()
    took = time.monotonic() - t0
    said = [r.getMessage() for r in caplog.records]
    assert any(f"real {victim} is DOWN" in m for m in said), said
    assert any(f"real {victim} is up" in m for m in said), said
    # new flows during the flap: the other real only; after: both again
    assert set(during) == {other}, during
    assert set(after) == set(lab.reals), after
    assert shown["health"] == "down" and not shown["scheduled"]
    print(f"{eng.services[0].mode} on_down={on_down}: flap "
          f"{back - flapped:.1f} s (DOWN to up), download {took:.1f} s: "
          f"curl exit {dl.returncode} {out!r} {err.strip()!r}")
    rescheduled = eng.core.stats()["flows_rescheduled"]
    if on_down == "quiesce":
        assert rescheduled == 0
        assert "quiesced" in shown["why"], shown
    else:
        assert rescheduled >= 1
        assert "quiesced" not in shown["why"], shown


@pytest.mark.parametrize("stale", [60, 1])
def test_a_download_survives_a_silent_arp_of_its_real(labs, stale, caplog,
                                                      tmp_path):
    """Its real answers no ARP for 4 s (the refresh asks every 0.5 s): with
    neighbour_stale 60 its MAC is kept and the download comes whole; with 1
    the MAC goes after 1 s and the download is cut."""
    lab = labs("dr")
    reals = [Real(lab.ip(role)) for role in lab.reals]
    eng = Engine("eth0", [Service(WEB, reals, "maglev", name="web")],
                 busy_poll=0, flows=1 << 16, backend="xdp", arp_refresh=0.5,
                 neighbour_stale=stale)
    role_of = {lab.ip(role): role for role in lab.reals}
    rules = tmp_path / "arp.nft"
    caplog.set_level(logging.INFO, logger="pyfwd")
    lab.call("lb", eng.start)
    dl = None
    try:
        t0 = time.monotonic()
        dl = download(lab)
        time.sleep(1.0)
        victim = real_of_the_download(eng)
        a = ipaddress.ip_address(victim)
        mac = row(eng, victim)["mac"]
        rules.write_text(ARP_RULES.format(ip=victim))
        r = lab.run(role_of[victim], ["nft", "-f", str(rules)],
                    capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        try:
            # the kernel forgets it, so the engine asks ARP itself
            lab.run("lb", ["ip", "neigh", "flush", "to", victim, "dev",
                           "eth0"], check=True)
            time.sleep(4.0)
            shown = row(eng, victim)
        finally:
            lab.run(role_of[victim], ["nft", "delete", "table", "arp",
                                      "pfqsarp"])
        wait_for(lambda: eng.hops.macs.get(a) and a not in
                 eng.hops.unanswered, 5, f"{victim} answers ARP again")
        out, err = check_download(dl, whole=stale == 60)
    finally:
        if dl and dl.poll() is None:
            dl.kill()
            dl.wait()
        time.sleep(0.3)
        eng.stop()
    said = [r.getMessage() for r in caplog.records]
    print(f"neighbour_stale {stale}: {shown['why']!r}, curl {out!r} "
          f"{err.strip()!r}, {time.monotonic() - t0:.1f} s")
    assert any(m.startswith(f"real {victim}: MAC unknown: no ARP answer on "
                            f"eth0: MAC {mac}") and
               m.endswith(f"kept for up to {stale} s") for m in said), said
    assert any(m.startswith(f"real {victim}: next hop answers again") or
               m.startswith(f"real {victim}: next hop MAC") for m in said)
    if stale == 60:
        assert shown["scheduled"] and shown["mac"] == mac, shown
        assert re.fullmatch(r"MAC kept \(unanswered for [2-4] s\)",
                            shown["why"]), shown
    else:
        assert not shown["scheduled"] and shown["mac"] is None, shown
        assert any(f"real {victim}: MAC " in m and m.endswith(
            "(neighbour_stale 1 s): dropped") for m in said), said
