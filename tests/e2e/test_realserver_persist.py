"""`pyfwd realserver setup --persist` end to end, in network namespaces
made here (a veth pair up in each): the files a reboot needs written under
a temporary --root, checked by systemd-analyze verify and sysctl -p, a
"reboot" (a fresh namespace, where the sysctl file and then the unit's
ExecStart are applied, as systemd-sysctl and systemd would) that comes back
set up, `realserver status` finding each thing that would be missing after
a reboot, and `teardown --persist`.  Root; the namespaces are removed
whatever happens."""

import os
import secrets
import shlex
import subprocess

import pytest

from pyfwd.lab.programs import PYFWD
from pyfwd.ops import realserver_boot as boot

pytestmark = pytest.mark.root

VIP = "10.0.0.100"
UNIT = f"etc/systemd/system/{boot.unit_name(VIP)}"


def sh(*argv, check=True):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, (argv, r.stdout, r.stderr)
    return r


@pytest.fixture
def netns():
    """Factory: a new namespace (pfrs + hex) with a veth pair up; all
    removed at the end."""
    made = []

    def make():
        name = "pfrs" + secrets.token_hex(3)
        sh("ip", "netns", "add", name)
        made.append(name)
        sh("ip", "-n", name, "link", "add", "eth0", "type", "veth",
           "peer", "name", "eth1")
        for dev in ("eth0", "eth1"):
            sh("ip", "-n", name, "link", "set", dev, "up")
        return name

    yield make
    for name in made:
        sh("ip", "netns", "del", name, check=False)


def pyfwd(ns, *args, check=True):
    return sh("ip", "netns", "exec", ns, *PYFWD, *args, check=check)


def sysctl(ns, key):
    return int(sh("ip", "netns", "exec", ns, "sysctl", "-n", key)
               .stdout.strip())


def exec_start(root):
    with open(os.path.join(root, UNIT)) as f:
        line = next(x for x in f if x.startswith("ExecStart="))
    return shlex.split(line[len("ExecStart="):])


def test_persist_writes_what_a_reboot_needs_and_status_checks_it(netns,
                                                                 tmp_path):
    root = str(tmp_path)
    ns = netns()
    out = pyfwd(ns, "realserver", "setup", "--vip", VIP, "--persist",
                "--root", root).stdout
    assert f"added {VIP}/32 to lo" in out
    for rel in (boot.SYSCTL_FILE, UNIT):
        assert f"wrote {os.path.join(root, rel)}" in out
    assert f"enabled {boot.unit_name(VIP)}" in out
    link = os.path.join(root, "etc/systemd/system/multi-user.target.wants",
                        boot.unit_name(VIP))
    assert os.readlink(link) == "/" + UNIT
    # idempotent: nothing written the second time
    again = pyfwd(ns, "realserver", "setup", "--vip", VIP, "--persist",
                  "--root", root).stdout
    assert again.strip() == "nothing to change"

    # systemd takes the unit as it is (its ExecStart exists on this host)
    r = sh("systemd-analyze", "verify", os.path.join(root, UNIT),
           check=False)
    assert r.returncode == 0, r.stderr

    # the unit's command is looked for under --root: mirror it there
    exe = exec_start(root)[0]
    mirror = os.path.join(root, exe.lstrip("/"))
    os.makedirs(os.path.dirname(mirror))
    os.symlink(exe, mirror)
    r = pyfwd(ns, "realserver", "status", "--vip", VIP, "--root", root)
    assert r.stdout.strip() == "ok, and after a reboot too"

    # "reboot": a fresh namespace, the sysctl file, then the unit's command
    fresh = netns()
    assert sysctl(fresh, "net.ipv4.conf.all.arp_ignore") == 0
    r = pyfwd(fresh, "realserver", "status", "--vip", VIP, "--root", root,
              check=False)
    assert r.returncode == 1 and f"{VIP} is not on lo" in r.stdout
    sh("ip", "netns", "exec", fresh, "sysctl", "-p",
       os.path.join(root, boot.SYSCTL_FILE))
    assert sysctl(fresh, "net.ipv4.conf.all.arp_ignore") == 1
    assert sysctl(fresh, "net.ipv4.conf.all.arp_announce") == 2
    assert sysctl(fresh, "net.ipv4.conf.default.arp_ignore") == 1
    sh("ip", "netns", "exec", fresh, *exec_start(root))
    r = pyfwd(fresh, "realserver", "status", "--vip", VIP, "--root", root)
    assert r.stdout.strip() == "ok, and after a reboot too"

    # what a reboot would lack is found, with the reason, exit 1
    later = os.path.join(root, "etc/sysctl.d/99-zz-admin.conf")
    with open(later, "w") as f:
        f.write("net.ipv4.conf.all.arp_ignore = 0\n")
    r = pyfwd(ns, "realserver", "status", "--vip", VIP, "--root", root,
              check=False)
    assert r.returncode == 1
    assert (f"not ready after a reboot: {later} leaves "
            "net.ipv4.conf.all.arp_ignore = 0 at boot") in r.stdout
    os.unlink(later)
    os.unlink(link)
    r = pyfwd(ns, "realserver", "status", "--vip", VIP, "--root", root,
              check=False)
    assert r.returncode == 1
    assert f"{boot.unit_name(VIP)} is not enabled" in r.stdout
    # the running state alone still passes with --running-only
    assert pyfwd(ns, "realserver", "status", "--vip", VIP,
                 "--running-only").stdout.strip() == "ok"
    # a unit for another device disagrees with the VIP running on lo
    pyfwd(ns, "realserver", "setup", "--vip", VIP, "--persist", "--root",
          root)
    unit = os.path.join(root, UNIT)
    with open(unit) as f:
        text = f.read()
    with open(unit, "w") as f:
        f.write(text.replace("--dev lo", "--dev dummy0"))
    r = pyfwd(ns, "realserver", "status", "--vip", VIP, "--root", root,
              check=False)
    assert r.returncode == 1
    assert f"{unit} puts {VIP} on dummy0, not {VIP} on lo" in r.stdout
    assert "not ready:" not in r.stdout         # running: fine
    pyfwd(ns, "realserver", "setup", "--vip", VIP, "--persist", "--root",
          root)         # rewrites it
    assert pyfwd(ns, "realserver", "status", "--vip", VIP, "--root",
                 root).returncode == 0

    # teardown --persist undoes the running state and the files
    out = pyfwd(ns, "realserver", "teardown", "--vip", VIP, "--persist",
                "--root", root).stdout
    assert f"removed {VIP}/32 from lo" in out
    assert f"removed {os.path.join(root, UNIT)}" in out
    assert f"removed {os.path.join(root, boot.SYSCTL_FILE)}" in out
    assert not os.path.lexists(link)
    assert sysctl(ns, "net.ipv4.conf.all.arp_ignore") == 0
    r = pyfwd(ns, "realserver", "status", "--vip", VIP, "--root", root,
              check=False)
    assert r.returncode == 1 and "not put back at boot" in r.stdout


def test_the_sysctl_file_stays_while_another_vip_is_persisted(netns,
                                                              tmp_path):
    root = str(tmp_path)
    ns = netns()
    for vip in (VIP, "10.0.0.101", "fd00::100"):
        pyfwd(ns, "realserver", "setup", "--vip", vip, "--persist",
              "--root", root)
    assert os.path.exists(os.path.join(
        root, "etc/systemd/system", boot.unit_name("fd00::100")))
    r = sh("systemd-analyze", "verify", os.path.join(
        root, "etc/systemd/system", boot.unit_name("fd00::100")),
        check=False)
    assert r.returncode == 0, r.stderr
    out = pyfwd(ns, "realserver", "teardown", "--vip", VIP, "--persist",
                "--root", root).stdout
    assert "99-pyfwd-realserver.conf" not in out
    assert os.path.exists(os.path.join(root, boot.SYSCTL_FILE))
    pyfwd(ns, "realserver", "teardown", "--vip", "10.0.0.101", "--persist",
          "--root", root)
    pyfwd(ns, "realserver", "teardown", "--vip", "fd00::100", "--persist",
          "--root", root)
    assert not os.path.exists(os.path.join(root, boot.SYSCTL_FILE))
    assert not os.listdir(os.path.join(root, "etc/systemd/system",
                                       "multi-user.target.wants"))
