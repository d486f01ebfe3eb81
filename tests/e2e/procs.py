"""Helpers for the programs the end-to-end tests start."""

import subprocess
import time

from pyfwd.lab.programs import PYFWD

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
