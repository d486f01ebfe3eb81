"""Helpers for the programs the end-to-end tests start, and for the labs
they share."""

import contextlib
import os
import secrets
import subprocess
import time

import pytest

from pyfwd.dataplane.xdppass import load as xdp_pass_fd  # noqa: F401
from pyfwd.lab.programs import PYFWD
from pyfwd.lab.topology import Lab


# nginx in the foreground as a real server, everything under one folder
# (the test's); {servers}: its server blocks.
NGINX = """
user root;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {d}/t1; proxy_temp_path {d}/t2;
    fastcgi_temp_path {d}/t3; uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;
{servers}
}}
"""


def realserver_setup(lab, role, vip):
    """`pyfwd realserver setup --vip vip` in role's namespace (a DR real
    server); AssertionError with its stderr if it fails."""
    r = lab.run(role, PYFWD + ["realserver", "setup", "--vip", vip],
                capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def nginx_with_big_file(lab, role, d, servers, size):
    """start_nginx() in the new folder d, which also holds `big`, a file of
    `size` bytes for the server blocks to serve (alias {d}/big)."""
    d.mkdir()
    with open(d / "big", "wb") as f:
        f.truncate(size)
    return start_nginx(lab, role, d, servers)


def start_nginx(lab, role, d, servers):
    """nginx in `role`'s namespace with the server blocks `servers`, its
    files in the folder d; the Popen."""
    (d / "nginx.conf").write_text(NGINX.format(d=d, servers=servers))
    return lab.popen(role, ["nginx", "-c", str(d / "nginx.conf")],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_line(proc, needle, timeout=15):
    """Read proc's stdout until a line has needle; the lines read.
    AssertionError with what it said if the line does not come."""
    lines, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"no {needle!r} from the process:\n" +
                         "".join(lines))


def alive(pid) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(cond, timeout, what):
    """Poll cond() every 50 ms; AssertionError naming `what` if it is not
    true within `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def curl(lab, *args, timeout=10, role="client"):
    """curl -sS in role's namespace: its CompletedProcess (text)."""
    return lab.run(role, ["curl", "-sS", "--max-time", str(timeout),
                          *args], capture_output=True, text=True,
                   timeout=timeout + 10)


@contextlib.contextmanager
def lazy_labs(tmp_path_factory, make_lab):
    """A getter of labs by mode, for a module's fixture: lab(mode) builds
    one when first asked for, with make_lab(mode, a new temporary folder),
    a generator that yields the lab and then tears it down; every lab made
    is torn down on the way out.  Fails (not skips) without root."""
    if os.geteuid() != 0:
        pytest.fail("needs root, as CI runs it")
    made = {}

    def get(mode):
        if mode not in made:
            gen = make_lab(mode, tmp_path_factory.mktemp(mode))
            made[mode] = (gen, next(gen))
        return made[mode][1]

    try:
        yield get
    finally:
        for gen, _ in made.values():
            next(gen, None)         # its teardown


# A web lab's topology by mode: DR is one-arm, NAT two-arm.
WEB_TOPOLOGY = {"dr": "one-arm", "nat": "two-arm"}


def web_lab(prefix, mode, base, vip, servers, size, prepare=None,
            topology=None, setup=None, asker="lb"):
    """A generator for lazy_labs (or a module fixture's `yield from`): a
    lab (namespaces prefix + 6 random hex digits, ``topology`` or
    WEB_TOPOLOGY[mode]) with nginx on its two real servers, each serving
    the server blocks servers(role, folder) from its folder under base,
    which holds `big` (size bytes).  setup(lab, role) prepares each real
    first (default: DR's reals own vip, realserver setup); prepare(lab),
    if given, runs before nginx is waited for (asked from ``asker``, for
    /name).  Yields the lab once every nginx answers; then kills them and
    removes the lab."""
    if setup is None and mode == "dr":
        def setup(lab, role):
            realserver_setup(lab, role, vip)
    procs = []
    with Lab(prefix + secrets.token_hex(3),
             topology=topology or WEB_TOPOLOGY[mode], reals=2) as lab:
        try:
            for role in lab.reals:
                if setup:
                    setup(lab, role)
                d = base / role
                procs.append(nginx_with_big_file(lab, role, d,
                                                 servers(role, d), size))
            if prepare:
                prepare(lab)
            for role in lab.reals:
                wait_for(lambda: curl(lab, f"http://{lab.ip(role)}/name",
                                      timeout=2, role=asker).stdout ==
                         f"{role}\n", 10, f"nginx on {role}")
            yield lab
        finally:
            for p in procs:
                p.kill()
                p.wait(timeout=5)
