"""The engine sets busy polling's interface settings itself (issue 18,
point 2e): `pyfwd start --busy-poll 20` (here with --poll adaptive and
non-default ring sizes) writes napi_defer_hard_irqs and gro_flush_timeout
of its interface, forwards, sleeps when idle (adaptive), and puts them
back when it stops.  An
in-process engine whose thread entered the namespace by setns sees the
machine's /sys, not the namespace's: it must leave the machine's devices
alone (and say so).  Root; the lab is removed at the end."""

import logging
import os
import secrets
import signal
import subprocess
import time

import pytest

from pyfwd.control.engine import Engine
from pyfwd.lab import whoami
from pyfwd.lab.programs import PYFWD
from pyfwd.lab.topology import Lab
from pyfwd.model import Real, Service, Vip

from .procs import realserver_setup, wait_line

pytestmark = pytest.mark.root

VIP4 = "10.0.0.100"
SYSFS = "/sys/class/net/eth0/"
FILES = ("napi_defer_hard_irqs", "gro_flush_timeout")


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    with Lab("pfxk" + secrets.token_hex(3), topology="one-arm",
             reals=1) as lab:
        role = lab.reals[0]
        realserver_setup(lab, role, VIP4)
        p = lab.popen(role, whoami.command(80, role),
                      stdout=subprocess.PIPE, text=True)
        wait_line(p, "listening")
        yield lab
        p.kill()


def napi(lab):
    r = lab.run("lb", ["cat", *(SYSFS + f for f in FILES)],
                capture_output=True, text=True, check=True)
    return tuple(r.stdout.split())


def cpu_share(pid, seconds):
    """The share of one CPU that process pid used over `seconds`."""
    def ticks():
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])    # utime + stime
    t0, c0 = time.monotonic(), ticks()
    time.sleep(seconds)
    used = (ticks() - c0) / os.sysconf("SC_CLK_TCK")
    return used / (time.monotonic() - t0)


def start(lab, sock, *options):
    """`pyfwd start` in the lb with busy polling asked (and ``options``),
    once it attached and the NAPI settings are on, a request answered
    through the VIP: (its Popen, what it said)."""
    proc = lab.popen("lb", PYFWD + [
        "start", "--iface", "eth0", "--vip", f"{VIP4}:80/tcp", "--real",
        "10.0.0.11", "--busy-poll", "20", *options,
        "--control-socket", sock],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        said = wait_line(proc, "attached")
        assert napi(lab) == ("2", "200000"), said
        r = lab.run("client", ["curl", "-sS", "--max-time", "5",
                               f"http://{VIP4}/"], capture_output=True,
                    text=True, timeout=15)
        assert r.returncode == 0 and "node=real1" in r.stdout, r.stderr
    except BaseException:
        proc.kill()
        proc.communicate(timeout=15)
        raise
    return proc, said


def test_start_sets_them_while_it_runs_and_puts_them_back(lab):
    before = napi(lab)
    assert before != ("2", "200000")
    proc, said = start(lab, f"/tmp/{lab.name}-ctl.sock", "--poll",
                       "adaptive", "--rx-ring", "1024", "--fill-ring", "2048")
    try:
        # idle, the adaptive loop sleeps in poll(): the engine takes a
        # small share of a CPU (busy polling would take all of one)
        assert cpu_share(proc.pid, 1.0) < 0.3
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=15)[0]
    assert proc.returncode == 0, out
    assert napi(lab) == before


def test_busy_polling_that_cannot_engage_sleeps_and_says_so(lab):
    """veth gives AF_XDP copy mode, whose sockets have no NAPI id: busy
    polls would reach nothing.  Once frames came, `--poll busy` does not
    spin: the log and `pyfwd ctl status` say so, the idle engine takes a
    small share of a CPU, and the NAPI settings stay until it stops."""
    before = napi(lab)
    sock = f"/tmp/{lab.name}-busy.sock"
    proc, said = start(lab, sock, "--poll", "busy")
    try:
        said = wait_line(proc, "busy polling cannot engage")
        assert napi(lab) == ("2", "200000"), said
        status = subprocess.run(PYFWD + ["ctl", "--socket", sock, "status"],
                                capture_output=True, text=True, timeout=15)
        assert "busy poll on but not engaged (NAPI id 0): sleeps in poll()" \
            in status.stdout, status
        assert cpu_share(proc.pid, 1.0) < 0.3
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=15)[0]
    assert proc.returncode == 0, out
    assert napi(lab) == before


def test_an_engine_in_a_setns_thread_leaves_the_machines_sysfs_alone(
        lab, caplog):
    host = {}
    for name in os.listdir("/sys/class/net"):
        try:
            host[name] = tuple(open(f"/sys/class/net/{name}/{f}").read()
                               for f in FILES)
        except OSError:
            pass
    eng = Engine("eth0", [Service(Vip.parse(f"{VIP4}:80/tcp"),
                                  [Real.parse("10.0.0.11")])],
                 busy_poll=20, flows=1 << 12, backend="xdp")
    with caplog.at_level(logging.WARNING, logger="pyfwd"):
        lab.call("lb", eng.start)
        try:
            assert eng.info.busy_poll
        finally:
            eng.stop()
    for name, values in host.items():
        assert tuple(open(f"/sys/class/net/{name}/{f}").read()
                     for f in FILES) == values, name
    assert "another network namespace's eth0" in caplog.text \
        or "no eth0 here" in caplog.text or "no /sys" in caplog.text
