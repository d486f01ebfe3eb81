"""A SYN flood end to end (issue 17, point 2), DR and NAT: real kernels,
nginx on the real servers, the balancer started with `pyfwd start` (a
small flow table, a short tcp_syn).  An attacker namespace beside the
client sends SYNs to the VIP from random sources of 10.99.0.0/16, 20
times the table's slots in 15 s (pyfwd.lab.flood); the reals' answers go
back to it (DR: a route on the reals; NAT: the balancer sends them to the
attacker's MAC) and are dropped there.  Meanwhile a legitimate client
makes HTTP requests on new connections, 20 a second, and the engine's
flow counters are sampled.  It asserts: at least 99% of the client's
requests succeed during the flood and after it; the flow count is back to
its baseline within tcp_syn (+ the sweep's margin) after the flood ends.
The figures are printed (docs/reliability/flood.md has them).  Root; the
lab ("pfsf" + random hex) and the attacker are removed whatever happens.
"""

import json
import secrets
import subprocess
import textwrap
import time

import pytest

from pyfwd.control.server import request
from pyfwd.errors import PyfwdError
from pyfwd.lab.flood import Attacker, FlowSampler, LegitClient
from pyfwd.lab.programs import PYFWD
from pyfwd.lab.topology import Lab

from .procs import realserver_setup, start_nginx, wait_line

pytestmark = [pytest.mark.root, pytest.mark.timeout(150)]

VIP4 = "10.0.0.100"
FLOWS = 4096            # --flows: table slots (one queue)
TCP_SYN = 5             # [engine.timeouts] tcp_syn, s
FLOOD_S = 15            # s of flood
SYNS = 20 * FLOWS       # spoofed SYNs in all
BASE_S = 3              # s of legitimate traffic before the flood
AFTER_S = TCP_SYN + 4   # s of legitimate traffic after it
CAP = 400               # new_flows_per_second, the cap variant
MARGIN = 2.0            # s beyond tcp_syn for the sweep to reach a slot
LEGIT_RATE = 20         # legitimate requests a second
TOPOLOGY = {"dr": "one-arm", "nat": "two-arm"}
SERVER = """
    server {
        listen 80;
        location / { default_type text/plain; return 200 "ok\\n"; }
    }"""


def config(lab, mode, sock, cap):
    inside = 'inside_iface = "eth1"\n' if mode == "nat" else ""
    inside += f"new_flows_per_second = {cap}\n"
    reals = "".join(f'\n[[vip.real]]\naddress = "{lab.ip(r)}"\n'
                    for r in lab.reals)
    return textwrap.dedent(f"""\
        [engine]
        iface = "eth0"
        control_socket = "{sock}"
        """) + inside + textwrap.dedent(f"""
        [engine.timeouts]
        tcp_syn = {TCP_SYN}
        tcp_fin = 2

        [[vip]]
        name = "web"
        address = "{VIP4}"
        port = 80
        mode = "{mode}"
        scheduler = "maglev"
        """) + reals


def tcpext(lab, role):
    """The TcpExt counters of role's namespace (/proc/net/netstat)."""
    r = lab.run(role, ["cat", "/proc/net/netstat"], capture_output=True,
                text=True, check=True)
    lines = [x.split() for x in r.stdout.splitlines()
             if x.startswith("TcpExt:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:])))


def wait_for(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def answers(sock):
    try:
        return request(sock, "status") is not None
    except PyfwdError:
        return False


def back_to_baseline(samples, t_end, base):
    """Seconds from t_end to the first sample at or after it whose flows
    and half-open flows are within the baseline's (its maximum, plus a
    handful of legitimate flows in flight); None if none is."""
    for t, s in samples:
        if t >= t_end and s["flows"] <= base["flows"] + 8 and \
                s["flows_half_open"] <= base["flows_half_open"] + 4:
            return round(t - t_end, 2)
    return None


CASES = [
    pytest.param("dr", "xdp", 0, id="dr-xdp"),
    pytest.param("nat", "xdp", 0, id="nat-xdp"),
    # beyond the cap, DR Maglev forwards new flows by the Maglev table
    # alone (flows_bypassed): the table holds at most cap x tcp_syn flows
    # (2,000: it never fills)
    pytest.param("dr", "xdp", CAP, id="dr-xdp-cap"),
    pytest.param("dr", "afpacket", 0, id="dr-afpacket",
                 marks=pytest.mark.slow),
    pytest.param("nat", "afpacket", 0, id="nat-afpacket",
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("mode,backend,cap", CASES)
def test_syn_flood_leaves_the_legitimate_client_served(mode, backend, cap,
                                                       tmp_path):
    r = scenario(tmp_path, mode, backend, cap=cap)
    sent, peak, during, later = (r["flood"], r["peak"], r["legit_during"],
                                 r["legit_after"])
    assert r["engine_exit"] == 0, r["engine_log"]
    assert sent["sent"] >= SYNS * 0.95, sent
    assert sent["rate"] >= SYNS / FLOOD_S * 0.9, sent
    if cap:
        assert r["counters"]["flows_bypassed"] >= SYNS // 2, r["counters"]
        # the table never fills: cap x tcp_syn flows at most, + the client
        assert peak["flows"] <= cap * (TCP_SYN + MARGIN) < FLOWS, peak
    else:
        assert peak["flows"] > FLOWS // 4, peak     # the flood reached us
    assert during["requests"] >= LEGIT_RATE * FLOOD_S * 0.8, during
    assert during["rate"] >= 99.0, during
    assert later["rate"] >= 99.0, later
    back = r["back_to_baseline_s"]
    assert back is not None and back <= TCP_SYN + MARGIN, (back,
                                                           r["series"])


def scenario(tmp_path, mode, backend, cap=0, flows=FLOWS, syns=SYNS,
             seconds=FLOOD_S):
    """One flood (see the module) against a fresh lab; the report: what
    the flood sent, the client's figures during and after, the flow
    counts over time (series: [(s from the flood's start, flows,
    half-open)]), the engine's counters, the reals' SYN cookies.  Also
    written to tmp_path/flood.json."""
    sock = str(tmp_path / "ctl.sock")
    cfg = tmp_path / "pyfwd.toml"
    with Lab("pfsf" + secrets.token_hex(3), topology=TOPOLOGY[mode],
             reals=2) as lab:
        for role in lab.reals:
            if mode == "dr":
                realserver_setup(lab, role, VIP4)
            d = tmp_path / role
            d.mkdir()
            start_nginx(lab, role, d, SERVER)
        cfg.write_text(config(lab, mode, sock, cap))
        eng = lab.popen("lb", PYFWD + [
            "start", "--config", str(cfg), "--control-socket", sock,
            "--flows", str(flows), "--busy-poll", "0", "--backend",
            backend], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        wait_line(eng, "attached", timeout=30)
        wait_for(lambda: answers(sock), 10, "the control socket")
        wait_for(lambda: lab.run("client", [
            "curl", "-s", "--max-time", "1", f"http://{VIP4}/"],
            capture_output=True, text=True).stdout == "ok\n", 15,
            "nginx through the VIP")
        lb_mac = lab.node("lb").interface("eth0").mac
        with Attacker(lab) as atk:
            client = LegitClient(lambda: lab.socket("client"), VIP4,
                                 rate=LEGIT_RATE, timeout=3.0)
            sampler = FlowSampler(sock, interval=0.25)
            before = {r: tcpext(lab, r) for r in lab.reals}
            sampler.start()
            client.start()
            try:
                time.sleep(BASE_S)
                t_flood = time.monotonic()
                flood = atk.flood(VIP4, 80, lb_mac, seed=17)
                sent = atk.run(flood, syns / seconds, seconds)
                t_end = time.monotonic()
                time.sleep(AFTER_S)
            finally:
                results = client.stop()
                samples = sampler.stop()
            stats = request(sock, "stats")
            after = {r: tcpext(lab, r) for r in lab.reals}
        eng.terminate()
        out, _ = eng.communicate(timeout=15)

    base = {k: max(s[k] for t, s in samples if t < t_flood)
            for k in ("flows", "flows_half_open")}
    core = stats["core"]
    series = [(round(t - t_flood, 2), s["flows"], s["flows_half_open"])
              for t, s in samples]
    report = {
        "mode": mode, "backend": backend, "flow_slots": flows, "cap": cap,
        "tcp_syn": TCP_SYN, "flood": sent, "baseline": base,
        "legit_during": LegitClient.summary(results, t_flood, t_end),
        "legit_after": LegitClient.summary(results, t_end, t_end + AFTER_S),
        "peak": max(samples, key=lambda ts: ts[1]["flows"])[1],
        "back_to_baseline_s": back_to_baseline(samples, t_end, base),
        "counters": {k: core.get(k) for k in (
            "flows_new", "flows_evicted", "flows_expired", "flows_bypassed",
            "punt_overflow", "tx_ring_full")} | {
            k: n for k, n in core["reason"].items()
            if n and k.startswith("drop")},
        "sockets": stats.get("sockets"),
        "reals_tcpext": {r: {k: after[r][k] - before[r][k] for k in (
            "SyncookiesSent", "SyncookiesRecv", "ListenOverflows",
            "ListenDrops")} for r in after},
        "series": series, "engine_exit": eng.returncode,
        "engine_log": out[-3000:]}
    (tmp_path / "flood.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items()
                      if k not in ("series", "engine_log")}))
    print("t(s) flows/half-open:", " ".join(
        f"{t}:{f}/{h}" for t, f, h in series[::4]))
    return report
