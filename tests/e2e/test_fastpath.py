"""The XDP fast path end to end (docs/fastpath.md): an HTTP download
through a DR VIP (one-arm) and a NAT VIP (two-arm) with `fastpath="xdp"`
comes whole, and the fast path carries most of its packets; a halted
real's flows leave it as without the fast path (its download is cut: the
packets go to the other real, which resets them).  nginx on two real
servers; the client (and NAT's reals) send with tx checksum offload off (a
veth's unfinished sums are the core's: with it on, the core completes
every packet and the fast path carries none), and the switch ports facing
the balancer run an XDP program (see xdp_on_the_lbs_peers).  Root; the
labs are removed whatever happens."""

import ctypes
import os
import secrets
import struct
import subprocess

import pytest
from pyroute2 import IPRoute
from pyroute2.ethtool.ioctl import IoctlEthtool

from pyfwd.control.engine import Engine
from pyfwd.lab.topology import Lab
from pyfwd.model import Real, Service, Vip

from .procs import curl, nginx_with_big_file, realserver_setup, wait_for

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

VIP4 = "10.0.0.100"
WEB = Vip.parse(f"{VIP4}:80/tcp")
SIZE = 40_000_000
libc = ctypes.CDLL(None, use_errno=True)
NR_BPF, BPF_PROG_LOAD, BPF_PROG_TYPE_XDP = 321, 5, 6     # x86_64
SERVER = """
    server {{
        listen 80;
        location = /name {{ default_type text/plain; return 200 "{role}\\n"; }}
        location = /big {{ alias {d}/big; }}
    }}"""


def offload(lab, role, ifname, flag, on):
    """`ethtool -K ifname flag on|off` in role's namespace."""
    def apply():
        ethtool = IoctlEthtool(ifname)
        try:
            ethtool.set_offload_flag(flag, int(on))
        finally:
            ethtool.close()
    lab.call(role, apply)


def xdp_pass_fd():
    """A loaded XDP program that passes every frame (r0 = XDP_PASS; exit),
    through bpf(2): its fd."""
    insns = ctypes.create_string_buffer(struct.pack(
        "<BBhiBBhi", 0xb7, 0, 0, 2, 0x95, 0, 0, 0), 16)
    licence = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQ", attr, 0, BPF_PROG_TYPE_XDP, 2,
                     ctypes.addressof(insns), ctypes.addressof(licence))
    fd = libc.syscall(NR_BPF, BPF_PROG_LOAD, attr, len(attr))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_PROG_LOAD")
    return fd


def xdp_on_the_lbs_peers(lab, ifnames):
    """veth hands XDP_TX and redirected frames to its peer at once only
    when the peer runs an XDP program (else they wait in its ring for other
    traffic to wake it: Linux 6.18 veth_xdp_flush): one that passes
    everything, on the switch ports facing the balancer.  A NIC needs
    nothing of the kind."""
    for ifname in ifnames:
        iface = lab.node("lb").interface(ifname)

        def attach(port=iface.port):
            fd = xdp_pass_fd()
            try:
                with IPRoute() as ipr:
                    idx, = ipr.link_lookup(ifname=port)
                    ipr.link("set", index=idx, xdp_fd=fd)
            finally:
                os.close(fd)
        lab.call(iface.switch, attach)


TOPOLOGY = {"dr": "one-arm", "nat": "two-arm"}


@pytest.fixture(scope="module")
def labs(tmp_path_factory):
    """{mode: lab}, each built when first asked for, removed at the end."""
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    made = {}

    def get(mode):
        if mode not in made:
            gen = make_lab(mode, tmp_path_factory.mktemp(mode))
            made[mode] = (gen, next(gen))
        return made[mode][1]

    yield get
    for gen, _ in made.values():
        next(gen, None)         # its teardown


def make_lab(mode, base):
    procs = []
    with Lab("pffp" + secrets.token_hex(3), topology=TOPOLOGY[mode],
             reals=2) as lab:
        try:
            for role in lab.reals:
                if mode == "dr":
                    realserver_setup(lab, role, VIP4)
                d = base / role
                procs.append(nginx_with_big_file(
                    lab, role, d, SERVER.format(d=d, role=role), SIZE))
            # finished sums: DR's real answers the client itself, NAT's
            # answers come back through the balancer
            for role in ["client", *(lab.reals if mode == "nat" else ())]:
                offload(lab, role, "eth0", "tx-checksumming", False)
            xdp_on_the_lbs_peers(lab, ["eth0", "eth1"] if mode == "nat"
                                 else ["eth0"])
            for role in lab.reals:
                wait_for(lambda: curl(lab, f"http://{lab.ip(role)}/name",
                                      timeout=2, role="lb").stdout ==
                         f"{role}\n", 10, f"nginx on {role}")
            yield lab
        finally:
            for p in procs:
                p.kill()
                p.wait(timeout=5)


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
          f"removed {s['fast_removed']}")
    assert s["fast_installed"] >= 1
    # all but the handshake and the close
    assert s["fast_frames"] >= 0.9 * forwarded and forwarded > 50, s
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
