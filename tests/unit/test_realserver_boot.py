"""What `pyfwd realserver setup --persist` writes and what `status` reads
back, under a temporary root, without root: the unit and the sysctl file,
idempotence, undo, and each problem persisted_problems() finds (the
sysctl files read in systemd-sysctl's order).  The commands themselves:
tests/e2e/test_realserver_persist.py."""

import os

import pytest

from pyfwd.errors import ConfigError
from pyfwd.ops import realserver_boot as boot

VIP = "10.0.0.100"
GOOD = {"arp_ignore": 1, "arp_announce": 2}


@pytest.fixture
def root(tmp_path):
    exe = tmp_path / "usr/bin/pyfwd"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return str(tmp_path)


def persist(root, vip=VIP, dev="lo", arp=GOOD):
    return boot.persist(vip, dev, root=root, command=["/usr/bin/pyfwd"],
                        arp=arp)


def path(root, rel):
    return os.path.join(root, rel)


def test_unit_text_runs_setup_before_the_network():
    text = boot.unit_text("10.0.0.100", "lo", ["/usr/bin/pyfwd"])
    assert ("ExecStart=/usr/bin/pyfwd realserver setup --vip 10.0.0.100 "
            "--dev lo\n") in text
    for line in ("Type=oneshot", "RemainAfterExit=yes",
                 "Before=network-pre.target shutdown.target",
                 "After=systemd-sysctl.service local-fs.target",
                 "WantedBy=multi-user.target", "DefaultDependencies=no"):
        assert line + "\n" in text, line
    quoted = boot.unit_text("10.0.0.100", "lo",
                            ["/opt/my venv/bin/python", "-m", "pyfwd.cli"])
    assert "ExecStart='/opt/my venv/bin/python' -m pyfwd.cli" in quoted


def test_unit_names():
    assert boot.unit_name("10.0.0.100") == \
        "pyfwd-realserver-10.0.0.100.service"
    assert boot.unit_name("fd00:0::100") == \
        "pyfwd-realserver-fd00__100.service"


def test_sysctl_text_sets_all_and_default():
    lines = [x for x in boot.sysctl_text(GOOD).splitlines()
             if not x.startswith("#")]
    assert lines == ["net.ipv4.conf.all.arp_ignore = 1",
                     "net.ipv4.conf.all.arp_announce = 2",
                     "net.ipv4.conf.default.arp_ignore = 1",
                     "net.ipv4.conf.default.arp_announce = 2"]


def test_persist_writes_links_and_is_idempotent(root):
    changes = persist(root)
    unit = path(root, "etc/systemd/system/pyfwd-realserver-10.0.0.100"
                ".service")
    link = path(root, "etc/systemd/system/multi-user.target.wants/"
                "pyfwd-realserver-10.0.0.100.service")
    assert changes == [f"wrote {path(root, boot.SYSCTL_FILE)}",
                       f"wrote {unit}",
                       f"enabled pyfwd-realserver-10.0.0.100.service: "
                       f"{link} -> /etc/systemd/system/"
                       "pyfwd-realserver-10.0.0.100.service"]
    assert persist(root) == []
    assert boot.persisted_problems(VIP, "lo", root=root) == []
    assert not [n for n in os.listdir(os.path.dirname(unit))
                if ".tmp" in n]


def test_an_ipv6_vip_needs_no_sysctl_file(root):
    persist(root, "fd00::100")
    assert not os.path.exists(path(root, boot.SYSCTL_FILE))
    assert boot.persisted_problems("fd00::100", "lo", root=root) == []


def test_persist_wants_an_absolute_command(root):
    with pytest.raises(ConfigError, match="expected an absolute path"):
        boot.persist(VIP, "lo", root=root, command=["pyfwd"], arp=GOOD)


def test_unpersist_keeps_the_sysctl_file_for_the_last_vip(root):
    persist(root)
    persist(root, "10.0.0.101")
    removed = boot.unpersist(VIP, root=root)
    assert len(removed) == 2 and all(".100.service" in r for r in removed)
    assert os.path.exists(path(root, boot.SYSCTL_FILE))
    removed = boot.unpersist("10.0.0.101", root=root)
    assert removed[-1] == f"removed {path(root, boot.SYSCTL_FILE)}"
    assert boot.unpersist("10.0.0.101", root=root) == []


def test_nothing_persisted(root):
    problems = boot.persisted_problems(VIP, "lo", root=root)
    assert problems[0].startswith("no ") and "not put back at boot" in \
        problems[0]
    assert any("no sysctl file sets net.ipv4.conf.all.arp_ignore" in p
               for p in problems)
    assert any("net.ipv4.conf.all.arp_announce" in p for p in problems)


def write(root, rel, text):
    p = path(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w") as f:
        f.write(text)
    return p


def test_a_later_file_that_undoes_ours_is_found(root):
    persist(root)
    later = write(root, "usr/lib/sysctl.d/99-zzz.conf",
                  "net.ipv4.conf.all.arp_announce=0\n")
    assert boot.persisted_problems(VIP, "lo", root=root) == [
        f"{later} leaves net.ipv4.conf.all.arp_announce = 0 at boot (want "
        "one of 2)"]
    # /etc's file of the same name replaces it
    write(root, "etc/sysctl.d/99-zzz.conf", "# nothing\n")
    assert boot.persisted_problems(VIP, "lo", root=root) == []
    # /etc/sysctl.conf comes last
    conf = write(root, "etc/sysctl.conf",
                 "net/ipv4/conf/all/arp_ignore = 0\n")
    assert boot.persisted_problems(VIP, "lo", root=root) == [
        f"{conf} leaves net.ipv4.conf.all.arp_ignore = 0 at boot (want one "
        "of 1, 2, 8)"]


def test_an_interface_above_all_is_found(root):
    persist(root)
    f = write(root, "etc/sysctl.d/50-eth.conf",
              "net.ipv4.conf.eth0.arp_ignore = 3\n"
              "net.ipv4.conf.eth1.arp_ignore = 0\n"    # below all: fine
              "; net.ipv4.conf.eth2.arp_ignore = 3\n")  # a comment
    assert boot.persisted_problems(VIP, "lo", root=root) == [
        f"{f} sets net.ipv4.conf.eth0.arp_ignore = 3: above all's, the "
        "kernel applies it (want one of 1, 2, 8)"]


def test_the_unit_is_checked(root):
    persist(root)
    name = "pyfwd-realserver-10.0.0.100.service"
    link = path(root, f"etc/systemd/system/multi-user.target.wants/{name}")
    os.unlink(link)
    assert boot.persisted_problems(VIP, "lo", root=root) == [
        f"{name} is not enabled (no link to it in "
        f"{path(root, 'etc/systemd/system/multi-user.target.wants')})"]
    persist(root)
    assert boot.persisted_problems(VIP, "dummy0", root=root) == [
        f"{path(root, 'etc/systemd/system/' + name)} puts 10.0.0.100 on lo, "
        "not 10.0.0.100 on dummy0"]
    os.unlink(path(root, "usr/bin/pyfwd"))
    (problem,) = boot.persisted_problems(VIP, "lo", root=root)
    assert problem.endswith("runs /usr/bin/pyfwd, which is not an "
                            "executable there")
