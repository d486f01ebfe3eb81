"""The XDP fast path end to end (docs/fastpath.md): an HTTP download
through a DR VIP (one-arm) and a NAT VIP (two-arm) with `fastpath="xdp"`
comes whole, and the fast path carries most of its packets, with the
kernel's default offloads everywhere (a veth sender's unfinished sums are
completed by the XDP program); a halted real's flows leave it as without
the fast path (its download is cut: the packets go to the other real,
which resets them).  nginx on two real servers; the switch ports facing
the balancer run an XDP program (see xdp_on_the_lbs_peers), and without
it the engine refuses the fast path, says why, and the download goes
through AF_XDP.  Root; the labs are removed whatever happens."""

import logging
import subprocess

import pytest
from pyroute2 import IPRoute

from pyfwd.control.engine import Engine
from pyfwd.dataplane import xdppass
from pyfwd.model import Real, Service, Vip

from .procs import lazy_labs, wait_for, web_lab

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

VIP4 = "10.0.0.100"
WEB = Vip.parse(f"{VIP4}:80/tcp")
SIZE = 40_000_000
SERVER = """
    server {{
        listen 80;
        location = /name {{ default_type text/plain; return 200 "{role}\\n"; }}
        location = /big {{ alias {d}/big; }}
    }}"""


def xdp_on_the_lbs_peers(lab, ifnames, on=True):
    """veth hands XDP_TX and redirected frames to its peer only when the
    peer runs an XDP program in driver mode (else they are dropped, or
    wait in its ring for other traffic to wake it: Linux 6.18
    veth_xdp_xmit): one that passes everything, on the switch ports facing
    the balancer (on=False: taken off again).  A NIC needs nothing of the
    kind."""
    for ifname in ifnames:
        iface = lab.node("lb").interface(ifname)

        def attach(port=iface.port):
            with IPRoute() as ipr:
                xdppass.on_peer(ipr, port, on)
        lab.call(iface.switch, attach)


def lb_facing(mode):
    """The balancer's interfaces in mode's lab."""
    return ["eth0", "eth1"] if mode == "nat" else ["eth0"]


@pytest.fixture(scope="module")
def labs(tmp_path_factory):
    """{mode: lab}, each built when first asked for, removed at the end."""
    with lazy_labs(tmp_path_factory, make_lab) as get:
        yield get


def make_lab(mode, base):
    """The kernel's default offloads everywhere (the client's and NAT's
    reals' sums come unfinished: XDP completes them), an XDP program on
    the switch ports facing the balancer."""
    return web_lab("pffp", mode, base, VIP4,
                   lambda role, d: SERVER.format(d=d, role=role), SIZE,
                   prepare=lambda lab: xdp_on_the_lbs_peers(
                       lab, lb_facing(mode)))


FAST = "xdp"


def start(lab, mode, timeouts=None):
    reals = [Real(lab.ip(role)) for role in lab.reals]
    eng = Engine("eth0", [Service(WEB, reals, "maglev", mode, name="web")],
                 inside_iface="eth1" if mode == "nat" else None,
                 busy_poll=0, flows=1 << 16, backend="xdp", fastpath=FAST,
                 timeouts=timeouts)
    lab.call("lb", eng.start)
    return eng


def download(lab, rate=None):
    return lab.popen("client", ["curl", "-sS", "--max-time", "60",
                                *(["--limit-rate", rate] if rate else []),
                                "-o", "/dev/null",
                                "-w", "%{size_download} %{http_code}",
                                f"http://{VIP4}/big"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True)


@pytest.mark.parametrize("mode", ["dr", "nat"])
def test_a_download_goes_by_the_fast_path(labs, mode):
    lab = labs(mode)
    eng = start(lab, mode)
    try:
        dl = download(lab)
        out, err = dl.communicate(timeout=60)
        s = eng.core.stats()
        reals = eng.core.real_stats()
    finally:
        eng.stop()
    after = eng.core.stats()        # the backend closed: kept, folded
    assert dl.returncode == 0, err
    assert out == f"{SIZE} 200", (out, err)
    forwarded = s["reason"]["forward"] + s["reason"]["forward_reply"]
    print(f"{mode} download: {forwarded} frames forwarded, "
          f"{s['fast_frames']} by XDP; installed {s['fast_installed']}, "
          f"removed {s['fast_removed']}; sums completed "
          f"{s['csum_completed']}")
    assert s["fast_installed"] >= 1
    # all but the handshake and the close
    assert s["fast_frames"] >= 0.9 * forwarded and forwarded > 50, s
    # with the kernel's default offloads every TCP segment a veth hands
    # over has an unfinished sum: the program completed them
    assert s["csum_completed"] >= 0.9 * s["fast_frames"], s
    # merged: what XDP carried in the client's way counts as flow hits
    assert s["flow_hits"] >= s["fast_frames"] - s["reason"]["forward_reply"]
    if mode == "nat":       # the answers went by XDP too (the bulk)
        assert s["reason"]["forward_reply"] > s["reason"]["forward"]
    # per real too: every frame sent to a real, whichever path
    assert sum(r["frames"] for r in reals.values()) >= \
        s["reason"]["forward"], (reals, s["reason"])
    assert after["fast_frames"] >= s["fast_frames"] and \
        after["frames"] >= s["frames"], (after, s)


@pytest.mark.parametrize("mode", ["dr", "nat"])
def test_a_veth_peer_without_xdp_keeps_the_fast_path_off(labs, mode,
                                                         caplog):
    """The switch ports facing the balancer without their XDP program: a
    veth would drop what XDP sends there, so the engine refuses the fast
    path, says why (log, status), and the download comes whole through
    AF_XDP."""
    lab = labs(mode)
    ifnames = lb_facing(mode)
    xdp_on_the_lbs_peers(lab, ifnames, on=False)
    try:
        with caplog.at_level(logging.WARNING, logger="pyfwd"):
            eng = start(lab, mode)
        try:
            status = eng.status()
            dl = download(lab)
            out, err = dl.communicate(timeout=60)
            s = eng.core.stats()
        finally:
            eng.stop()
    finally:
        xdp_on_the_lbs_peers(lab, ifnames)
    xsk = status["xsk"]
    assert xsk["fastpath"] == "refused", xsk
    for ifname in ifnames:
        iface = lab.node("lb").interface(ifname)
        assert f"{ifname}: its veth peer {iface.port} (netns " \
            f"{lab.ns(iface.switch)}) runs no XDP program" in \
            xsk["fastpath_why"], xsk
    warned = [r.getMessage() for r in caplog.records
              if "XDP fast path refused" in r.getMessage()]
    assert warned and xsk["fastpath_why"] in warned[0], warned
    assert dl.returncode == 0 and out == f"{SIZE} 200", (out, err)
    assert s["fast_installed"] == 0 and s["fast_frames"] == 0, s
    assert s["reason"]["forward"] > 50, s


@pytest.mark.parametrize("mode", ["dr", "nat"])
def test_a_halted_reals_flows_leave_it(labs, mode):
    lab = labs(mode)
    eng = start(lab, mode)
    try:
        dl = download(lab, rate="8M")      # ~5 s
        try:
            wait_for(lambda: eng.core.stats()["fast_frames"] > 20, 5,
                     "the download on the fast path")
            # the download's real: the busiest (a stray packet of an
            # earlier test's connection may have made a flow too)
            busiest = max(eng.show()[0]["reals"], key=lambda r: r["frames"])
            assert busiest["active"], busiest
            eng.halt(WEB, busiest["real"])
            out, err = dl.communicate(timeout=60)
        finally:
            if dl.poll() is None:
                dl.kill()
                dl.wait()
        s = eng.core.stats()
    finally:
        eng.stop()
    # as without the fast path: its flow goes to the other real, which
    # knows no such connection and resets it
    assert dl.returncode != 0 and int(out.split()[0]) < SIZE, (
        out, err, {k: v for k, v in s.items() if "fast" in k or "resch" in k})
    assert s["flows_rescheduled"] >= 1 and s["fast_stale"] >= 1, s
    assert s["fast_removed"] >= 1, s


def test_a_flow_xdp_carries_outlives_the_cores_timeout(labs):
    """A NAT download that lasts longer than tcp_established while XDP
    carries it: the core's sweep asks the program's last-seen times and
    keeps the flow (and its pair) rather than freeing it, so the answers
    keep their way back and the download comes whole, on its first
    entries."""
    lab = labs("nat")
    eng = start(lab, "nat", timeouts={"tcp_established": 1})
    try:
        dl = download(lab, rate="5M")       # ~8 s
        out, err = dl.communicate(timeout=60)
        s = eng.core.stats()
    finally:
        eng.stop()
    assert dl.returncode == 0 and out == f"{SIZE} 200", (out, err)
    # one pair, installed once: never freed and made again on the way
    # (the client's FIN may find it idle past the timeout at the end, as
    # without the fast path: the FIN is not installed)
    assert s["fast_installed"] == 2, {k: v for k, v in s.items()
                                      if "fast" in k or "flows" in k}
