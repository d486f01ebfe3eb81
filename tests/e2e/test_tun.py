"""L4 TUN end to end (issue 19): real servers on a subnet of their own,
behind a router, reached through IPIP / IP6IP6 tunnels; their answers go
straight to the client through the router, never through the balancer.

The tun lab: client -- router -- balancer (10.0.0.0/24, the VIP's
segment); router -- real servers (10.0.4.0/24): no real server shares a
segment with the balancer, so DR could not reach them.  Each real server
is prepared by `pyfwd realserver setup --tun` (this kernel has no ipip or
ip6tnl device, so with --decap xdp: pyfwd's XDP decapsulation on eth0,
the VIP on lo) and runs nginx.  Default sysctls and offloads everywhere.

- a 4 MB download over IPv4 and IPv6 completes, the engine forwarded only
  the client's side (a small fraction of the bytes, no forward_reply);
- requests spread over both real servers;
- the client, whose MTU is 1500 like every link's, uploads with full-size
  segments: each no longer fits once wrapped (1520 bytes), the engine
  answers ICMP fragmentation needed / packet too big (MTU 1480 / 1460),
  the client's kernel learns it and the upload completes.

On AF_XDP and on the raw-socket backend, which receives the router's GSO
frames (a veth passes a sender's TSO on): the core does not tunnel one as
a whole (drop_tun_gso), the backend cuts it into its TCP segments
(tun_gso_cut), each tunnelled.  Root; the lab is removed whatever
happens."""

import os
import re
import time

import pytest

from pyfwd.control.engine import Engine
from pyfwd.lab.programs import PYFWD
from pyfwd.model import Real, Service, Vip

from .procs import web_lab

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

VIP4, VIP6 = "10.0.0.100", "fd00:0:0:1::100"
SIZE = 4_000_000
UPLOAD = 2_000_000
SERVER = """
    server {{
        listen 80;
        listen [::]:80;
        client_max_body_size 20m;
        location = /name {{ default_type text/plain; return 200 "{role}\\n"; }}
        location = /big {{ alias {d}/big; }}
        location /up/ {{ alias {d}/up/; dav_methods PUT;
                         create_full_put_path on; }}
    }}"""


def run(lab, role, *argv, timeout=30):
    r = lab.run(role, list(argv), capture_output=True, text=True,
                timeout=timeout)
    assert r.returncode == 0, f"{role}: {argv}: {r.stdout} {r.stderr}"
    return r.stdout


def url(vip, path):
    return f"http://{vip}{path}" if ":" not in vip else f"http://[{vip}]{path}"


def tun_real(lab, role):
    """role decapsulates the VIPs' tunnels (XDP: this kernel has no ipip
    or ip6tnl device) and says it is ready."""
    for vip in (VIP4, VIP6):
        tun = ["--vip", vip, "--tun", "--decap", "xdp", "--iface", "eth0"]
        run(lab, role, *PYFWD, "realserver", "setup", *tun)
        out = run(lab, role, *PYFWD, "realserver", "status", *tun)
        assert out.startswith("ok"), out


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    base = tmp_path_factory.mktemp("tun")

    def prepare(lab):
        (base / "upload").write_bytes(os.urandom(UPLOAD))
        lab.base = base
    yield from web_lab("pftun", "tun", base, None,
                       lambda role, d: SERVER.format(d=d, role=role), SIZE,
                       prepare, topology="tun", setup=tun_real,
                       asker="router")


@pytest.fixture(scope="module", params=["xdp", "afpacket"])
def engine(lab, request):
    """The engine on each backend: both VIPs in TUN mode, Maglev."""
    services = []
    for vip, fam in ((VIP4, 4), (VIP6, 6)):
        reals = [Real(lab.ip(role) if fam == 4 else
                      lab.node(role).interfaces[0].addr6)
                 for role in lab.reals]
        v = Vip.parse(f"{vip}:80/tcp" if fam == 4 else f"[{vip}]:80/tcp")
        services.append(Service(v, reals, "maglev", "tun"))
    eng = Engine("eth0", services, busy_poll=0, flows=1 << 14,
                 backend=request.param)
    lab.call("lb", eng.start)
    yield eng
    eng.stop()


def curl(lab, *args, seconds=20):
    return lab.run("client", ["curl", "-sS", "--max-time", str(seconds),
                              *args], capture_output=True, text=True,
                   timeout=seconds + 10)


def core(engine):
    return engine.stats()["core"]


@pytest.mark.parametrize("vip", [VIP4, VIP6])
def test_download_comes_straight_from_the_real(lab, engine, vip):
    before = core(engine)
    t0 = time.monotonic()
    r = curl(lab, "-o", "/dev/null", "-w", "%{size_download}",
             url(vip, "/big"))
    took = time.monotonic() - t0
    after = core(engine)
    assert (r.returncode, int(r.stdout or 0)) == (0, SIZE), r.stderr
    frames = after["frames"] - before["frames"]
    seen = after["bytes"] - before["bytes"]
    print(f"{engine.info.backend} {vip}: {SIZE} bytes in {took:.2f} s; "
          f"the engine saw {frames} frames, {seen} bytes")
    assert after["reason"]["forward"] - before["reason"]["forward"] > 10
    assert after["reason"]["forward_reply"] == 0
    assert seen < SIZE // 10       # ACKs and the request only
    assert after["reason"]["drop_tun_no_room"] == \
        before["reason"]["drop_tun_no_room"]


def test_requests_spread_over_the_reals(lab, engine):
    names = set()
    for _ in range(16):
        r = curl(lab, url(VIP4, "/name"), seconds=5)
        assert r.returncode == 0, r.stderr
        names.add(r.stdout.strip())
    assert names == set(lab.reals)


@pytest.mark.parametrize("vip", [VIP4, VIP6])
def test_too_big_gets_icmp_and_the_upload_completes(lab, engine, vip):
    run(lab, "client", "ip", "route", "flush", "cache")
    run(lab, "client", "ip", "-6", "route", "flush", "cache")
    xdp = engine.info.backend == "xdp"
    before, cut0 = core(engine)["reason"], core(engine)["tun_gso_cut"]
    r = curl(lab, "-T", str(lab.base / "upload"), "-o", "/dev/null",
             "-w", "%{http_code}", url(vip, "/up/file"),
             seconds=20 if xdp else 4)
    after = core(engine)["reason"]
    moved = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    print(f"{engine.info.backend} {vip}: upload: curl {r.returncode}, "
          f"HTTP {r.stdout}; {moved}")
    assert after["forward_too_big"] > before["forward_too_big"]
    route = run(lab, "client", "ip", "route", "get", vip)
    m = re.search(r"\bmtu (\d+)", route)
    want = 1480 if ":" not in vip else 1460
    assert m and int(m.group(1)) == want, route
    assert r.returncode == 0 and r.stdout in ("201", "204"), \
        (r.returncode, r.stdout, r.stderr)
    if xdp:     # a veth with XDP attached has its peer send no GSO frames
        assert after["drop_tun_gso"] == before["drop_tun_gso"]
    else:       # the router's GSO frames, each cut into its segments
        cut = core(engine)["tun_gso_cut"] - cut0
        assert after["drop_tun_gso"] - before["drop_tun_gso"] == cut > 0
    stored = [(lab.base / role / "up" / "file") for role in lab.reals]
    assert any(p.exists() and p.stat().st_size == UPLOAD for p in stored)
