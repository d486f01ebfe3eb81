"""pyfwd.lab.topology against the real kernel: build labs, send traffic,
tear down.

Traffic uses real programs where it matters (python3 -m http.server in the
real namespaces, curl in the client) and lab.socket() for quick checks.
"""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from pyroute2 import IPRoute, netns

import pyfwd
from pyfwd.lab import topology as lab
from pyfwd.errors import LabError

HTTP_PORT = 8000


# -- helpers


def root_links() -> set:
    with IPRoute() as ipr:
        return {(link["index"], link.get("IFLA_IFNAME"))
                for link in ipr.link("dump")}


def namespaces_of(name: str) -> list:
    return sorted(n for n in netns.listnetns() if n.startswith(f"{name}-"))


def wait_listening(the_lab, role, address, port, timeout=5.0):
    """Connect from ``role`` until something listens at address:port."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    deadline = time.monotonic() + timeout
    while True:
        with the_lab.socket(role, family) as sock:
            sock.settimeout(1)
            try:
                sock.connect((address, port))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
        time.sleep(0.02)


def start_http(the_lab, role, address, directory):
    """python3 -m http.server in ``role``, serving ``directory``; the
    access log (with the peer address) goes to the process's stderr."""
    return the_lab.popen(
        role, [sys.executable, "-u", "-m", "http.server", "--bind", address,
               "--directory", str(directory), str(HTTP_PORT)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def curl(the_lab, role, url) -> str:
    done = the_lab.run(role, ["curl", "-sS", "--max-time", "5", url],
                       capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout


def stop(proc) -> str:
    proc.terminate()
    return proc.communicate(timeout=5)[1]


# -- traffic


@pytest.mark.root
def test_one_arm_client_reaches_every_real(new_name, tmp_path):
    with lab.Lab(new_name(), "one-arm", reals=3) as the_lab:
        servers = {}
        for role in the_lab.reals:
            (tmp_path / role).mkdir()
            (tmp_path / role / "who").write_text(role)
            servers[role] = start_http(the_lab, role, the_lab.ip(role),
                                       tmp_path / role)
        for role in the_lab.reals:
            wait_listening(the_lab, "client", the_lab.ip(role), HTTP_PORT)
            url = f"http://{the_lab.ip(role)}:{HTTP_PORT}/who"
            assert curl(the_lab, "client", url) == role
            log = stop(servers[role])
            assert '10.0.0.1 - - ' in log and '"GET /who' in log, log


@pytest.mark.root
def test_one_arm_sockets_ipv4_and_ipv6(new_name):
    with lab.Lab(new_name(), "one-arm", reals=1) as the_lab:
        for version, family in ((4, socket.AF_INET), (6, socket.AF_INET6)):
            server = the_lab.socket("real1", family)
            server.bind((the_lab.ip("real1", version=version), 9000))
            server.listen()
            client = the_lab.socket("client", family)
            client.settimeout(2)
            client.connect((the_lab.ip("real1", version=version), 9000))
            conn, peer = server.accept()
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"
            assert peer[0] == the_lab.ip("client", version=version)
            for sock in (conn, client, server):
                sock.close()


@pytest.mark.root
def test_two_arm_routes_through_lb_and_keeps_client_address(new_name,
                                                             tmp_path):
    with lab.Lab(new_name(), "two-arm", reals=2) as the_lab:
        assert the_lab.ip("real1") == "192.168.50.11"
        assert the_lab.sysctl("lb", "net.ipv4.ip_forward") == "1"
        assert the_lab.sysctl("client", "net.ipv4.ip_forward") == "0"
        (tmp_path / "who").write_text("real1")
        server = start_http(the_lab, "real1", "192.168.50.11", tmp_path)
        wait_listening(the_lab, "client", "192.168.50.11", HTTP_PORT)
        assert curl(the_lab, "client",
                    f"http://192.168.50.11:{HTTP_PORT}/who") == "real1"
        log = stop(server)
        assert log.startswith("10.0.0.1 - - "), log

        # IPv6 through the lb as well
        listener = the_lab.socket("real2", socket.AF_INET6)
        listener.bind(("fd00:0:0:2::12", 9000))
        listener.listen()
        client = the_lab.socket("client", socket.AF_INET6)
        client.settimeout(2)
        client.connect(("fd00:0:0:2::12", 9000))
        _, peer = listener.accept()
        assert peer[0] == "fd00:0:0:1::1"


@pytest.mark.root
def test_hosts_keep_default_offloads_so_checksums_arrive_unfinished(
        new_name):
    """The lab is a user's network: tx checksum offload stays on, so the
    SYN as it arrives at a real's eth0 carries only the pseudo-header sum
    (what an XDP/AF_XDP balancer sees, and the data plane completes)."""
    from scapy.layers.inet import TCP
    from scapy.layers.l2 import Ether

    from ..cases.harness import unfinished

    with lab.Lab(new_name(), "one-arm", reals=1) as the_lab:
        sniffer = the_lab.socket("real1", socket.AF_PACKET, socket.SOCK_RAW,
                                 socket.htons(0x0800))
        sniffer.bind(("eth0", 0))
        sniffer.settimeout(2)
        with the_lab.socket("client") as client:
            client.settimeout(1)
            with pytest.raises(ConnectionRefusedError):
                client.connect((the_lab.ip("real1"), 9))
        frame = Ether(sniffer.recv(2048))
        while TCP not in frame:
            frame = Ether(sniffer.recv(2048))
        assert bytes(frame) == unfinished(bytes(frame)), frame.command()


# -- life cycle


@pytest.mark.root
def test_up_matches_plan_and_down_leaves_nothing(new_name):
    before = root_links()
    name = new_name()
    the_lab = lab.Lab(name, "two-arm", reals=2).up()
    try:
        plan = the_lab.plan()
        assert namespaces_of(name) == sorted(n.namespace for n in plan.nodes)
        assert set(lab.scan(name)) == {n.namespace for n in plan.nodes}
        assert the_lab.missing() == []
        for node in plan.hosts:
            assert the_lab.addresses(node.role) == {
                i.name: {"mac": i.mac, "ipv4": [i.ipv4], "ipv6": [i.ipv6]}
                for i in node.interfaces}
            # sysfs inside lab.run() is the namespace's own
            done = the_lab.run(node.role,
                               ["cat", "/sys/class/net/eth0/address"],
                               capture_output=True, text=True, check=True)
            assert done.stdout.strip() == node.interfaces[0].mac
        assert root_links() == before
    finally:
        removed = the_lab.down()
    assert removed == sorted(n.namespace for n in plan.nodes)
    assert namespaces_of(name) == []
    assert not os.path.exists(os.path.join(lab.NETNS_DIR, f"{name}-lb"))
    assert lab.scan(name) == {} and not the_lab.exists()
    assert the_lab.down() == []                       # idempotent
    assert root_links() == before


def sys_mounts(mountinfo: str) -> set:
    return {line.split()[4] for line in mountinfo.splitlines()
            if line.split()[4].startswith("/sys/")}


def sys_mount_lines(mountinfo: str) -> list:
    return sorted(line for line in mountinfo.splitlines()
                  if line.split()[4] == "/sys"
                  or line.split()[4].startswith("/sys/"))


@pytest.mark.root
def test_run_sees_namespace_sysfs_and_host_mounts_below_sys(new_name):
    with open("/proc/self/mountinfo") as f:
        host = f.read()
    with lab.Lab(new_name(), "one-arm", reals=1) as the_lab:
        done = the_lab.run("real1", ["sh", "-c", "ls /sys/class/net; echo; "
                                     "cat /proc/self/mountinfo"],
                           capture_output=True, text=True, check=True)
    interfaces, inside = done.stdout.split("\n\n", 1)
    assert interfaces.split() == ["eth0", "lo"]
    assert sys_mounts(inside) == sys_mounts(host)   # bpffs, cgroup, ...
    with open("/proc/self/mountinfo") as f:        # nothing leaked back
        assert sys_mount_lines(f.read()) == sys_mount_lines(host)


@pytest.mark.root
def test_down_stops_programs_left_in_the_lab(new_name):
    name = new_name()
    with lab.Lab(name, "one-arm", reals=1):
        # started through another Lab object: down() must find it in the kernel
        sleeper = lab.Lab.load(name).popen("real1", ["sleep", "60"])
    assert sleeper.wait(timeout=5) == -15


@pytest.mark.root
def test_context_manager_tears_down_when_body_raises(new_name):
    name = new_name()
    with pytest.raises(RuntimeError, match="boom"):
        with lab.Lab(name, "one-arm", reals=1) as the_lab:
            assert the_lab.exists()
            raise RuntimeError("boom")
    assert namespaces_of(name) == []
    assert not the_lab.exists()


@pytest.mark.root
def test_up_twice_is_refused(new_name):
    with lab.Lab(new_name(), "one-arm", reals=1) as the_lab:
        with pytest.raises(LabError, match="already exists"):
            lab.Lab(the_lab.name, "two-arm", reals=2).up()
        assert the_lab.missing() == []


@pytest.mark.root
def test_failed_up_removes_what_it_built(new_name, foreign_netns):
    name = new_name()
    squatter = foreign_netns(f"{name}-real2")
    with pytest.raises(LabError, match=f"'{name}-real2' already exists"):
        lab.Lab(name, "one-arm", reals=3).up()
    assert namespaces_of(name) == [squatter]
    assert lab.scan(name) == {}


@pytest.mark.root
def test_two_labs_coexist_and_down_all_spares_foreign(new_name, prefix,
                                                      foreign_netns):
    first = lab.Lab(new_name(), "one-arm", reals=1).up()
    second = lab.Lab(new_name(), "two-arm", reals=1).up()
    # looks like a lab namespace, but carries no marker
    foreign = foreign_netns(f"{new_name()}-client")
    assert {first.name, second.name} <= set(lab.list_labs())
    for the_lab in (first, second):
        server = the_lab.socket("real1")
        server.bind((the_lab.ip("real1"), 9000))
        server.listen()
        with the_lab.socket("client") as client:
            client.settimeout(2)
            client.connect((the_lab.ip("real1"), 9000))
        server.close()

    # only this run's labs: other labs on the machine are not ours to remove
    removed = lab.down_all(prefix=prefix)

    expected = sorted(n.namespace for the_lab in (first, second)
                      for n in the_lab.plan().nodes)
    assert removed == expected
    assert namespaces_of(first.name) == namespaces_of(second.name) == []
    assert foreign in netns.listnetns()
    assert lab.down_all(prefix=prefix) == []


@pytest.mark.root
def test_load_from_the_kernel_in_a_new_process(new_name):
    with lab.Lab(new_name(), "two-arm", reals=2) as the_lab:
        assert lab.Lab.load(the_lab.name).plan() == the_lab.plan()
        code = ("import json, sys; from pyfwd.lab import topology as lab; "
                "plan = lab.Lab.load(sys.argv[1]).plan(); "
                "print(json.dumps(plan.to_dict()))")
        package_root = os.path.dirname(os.path.dirname(pyfwd.__file__))
        done = subprocess.run(
            [sys.executable, "-c", code, the_lab.name], capture_output=True,
            text=True, timeout=30, check=True,
            env=dict(os.environ, PYTHONPATH=package_root))
        assert json.loads(done.stdout) == the_lab.plan().to_dict()
        assert json.loads(json.dumps(the_lab.plan().to_dict())) == \
            the_lab.plan().to_dict()
        assert the_lab.name in lab.format_plan(the_lab.plan())


@pytest.mark.root
def test_load_of_a_missing_lab_fails(new_name):
    name = new_name()
    with pytest.raises(LabError, match=f"no lab named '{name}'"):
        lab.Lab.load(name)


# -- bad input


@pytest.mark.parametrize("name", ["", "Upper", "1abc", "a-b", "abcdefghijklm",
                                  "abc\n", None])
def test_bad_name(name):
    with pytest.raises(LabError, match="lab name") as info:
        lab.Lab(name)
    assert repr(name) in str(info.value)
    with pytest.raises(LabError):
        lab.Lab.load(name)


@pytest.mark.parametrize("topology", ["three-arm", "", None, ["one-arm"]])
def test_bad_topology(topology):
    with pytest.raises(LabError, match="topology") as info:
        lab.Lab("pyfwd", topology)
    assert repr(topology) in str(info.value)


@pytest.mark.parametrize("reals", [0, -1, 17, "3", 2.0, True])
def test_bad_reals(reals):
    with pytest.raises(LabError, match="reals") as info:
        lab.Lab("pyfwd", "one-arm", reals)
    assert repr(reals) in str(info.value)


# -- the plan (pure: no root)


def test_plans_follow_the_documented_address_plan():
    one = lab.make_plan("doc", "one-arm", 2)
    assert [n.namespace for n in one.nodes] == [
        "doc-client", "doc-lb", "doc-real1", "doc-real2", "doc-sw"]
    assert (one.vip4, one.vip6) == ("10.0.0.100", "fd00:0:0:1::100")
    real2 = one.node("real2").interface("eth0")
    assert (real2.mac, real2.ipv4, real2.ipv6) == (
        "02:00:00:00:01:12", "10.0.0.12/24", "fd00:0:0:1::12/64")
    assert one.node("real2").routes == () and not one.node("lb").forwarding
    assert one.node("sw").ports == ("client", "lb", "real1", "real2")

    two = lab.make_plan("doc", "two-arm", 16)
    lb = two.node("lb")
    assert [(i.name, i.ipv4, i.switch) for i in lb.interfaces] == [
        ("eth0", "10.0.0.2/24", "swout"), ("eth1", "192.168.50.1/24", "swin")]
    assert lb.forwarding
    real16 = two.node("real16")
    assert real16.interface("eth0").ipv4 == "192.168.50.26/24"
    assert (real16.gateway4, real16.gateway6) == ("192.168.50.1",
                                                 "fd00:0:0:2::1")
    client_routes = two.node("client").routes
    assert lab.Route("192.168.50.0/24", "10.0.0.2") in client_routes
    assert two.node("client").gateway4 is None
    assert lab.make_plan("doc", "two-arm", 16) == two


def test_markers_round_trip_and_reject_junk():
    marker = lab.Marker("pyfwd", "real2", "one-arm", 3)
    assert str(marker) == "pyfwd-lab:pyfwd:real2:one-arm:3"
    assert lab.Marker.parse(str(marker)) == marker
    for junk in (None, "", "hello", "pyfwd-lab:pyfwd:real4:one-arm:3",
                 "pyfwd-lab:pyfwd:sw:two-arm:3", "other:pyfwd:lb:one-arm:3"):
        assert lab.Marker.parse(junk) is None


def test_unknown_role_is_a_lab_error():
    with pytest.raises(LabError, match="'real4'"):
        lab.Lab("pyfwd", "one-arm", 3).ns("real4")
    with pytest.raises(LabError, match="'eth1'"):
        lab.Lab("pyfwd", "one-arm", 3).ip("lb", "eth1")
