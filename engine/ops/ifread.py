"""Read what the doctor's checks (ifchecks.py) look at: an interface's link
info, ethtool features and sysctls, its veth peer (in this network
namespace or another one we can enter), and the host's bpffs, AF_XDP and
tcx.

Everything here reads; nothing changes the machine.  Netlink and ethtool
go through pyroute2.
"""

import ctypes
import ctypes.util
import errno
import os
import platform
import re
import socket

from pyroute2 import IPRoute
from pyroute2.ethtool import Ethtool
from pyroute2.netlink.exceptions import NetlinkError

from .._netns import in_netns
from ..dataplane.vethpeer import nsid_of, xdp_mode
from ..neighbours.kernel import ifindex, rx_queues
from .ifchecks import Host, Link, Peer

AF_XDP = 44             # not in Python's socket module
BPF_TCX_INGRESS = 46    # enum bpf_attach_type, Linux 6.6
TCX_SINCE = (6, 6)
NETNS_DIR = "/run/netns"


def sysctl(key):
    """The integer value of net sysctl `key` ("net/ipv4/conf/all/...") in
    this network namespace, or None when it cannot be read."""
    try:
        with open(f"/proc/sys/{key}", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def features(name):
    """{ethtool feature name: on} of interface `name` in the calling
    thread's network namespace; None when they cannot be read."""
    try:
        with Ethtool() as et:
            found = et.get_features(name).features
    except (OSError, NetlinkError):
        return None
    return {k: bool(f.enable) for k, f in found.items()}


def _kind(msg):
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info else None


def read_link(name):
    """ifchecks.Link of interface `name` in this network namespace, with
    its veth peer when it is a veth.  ConfigError naming it when it does
    not exist."""
    with IPRoute() as ipr:
        msg = ipr.get_links(ifindex(ipr, name))[0]
    kind = _kind(msg)
    peer = None
    if kind == "veth" and msg.get_attr("IFLA_LINK"):
        peer = find_peer(msg.get_attr("IFLA_LINK"),
                         msg.get_attr("IFLA_LINK_NETNSID"))
    return Link(name=name, kind=kind, mtu=msg.get_attr("IFLA_MTU"),
                rx_queues=rx_queues(name), features=features(name) or {},
                rp_filter=sysctl(f"net/ipv4/conf/{name}/rp_filter"),
                peer=peer)


def _look(index):
    """(name, features, XDP mode) of ifindex `index` in the calling
    thread's namespace."""
    with IPRoute() as ipr:
        msg = ipr.get_links(index)[0]
    name = msg.get_attr("IFLA_IFNAME")
    return name, features(name), xdp_mode(msg)


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8",
                  errors="replace") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _peer(index, where, looked):
    """Peer `index` in `where` from what _look() found there."""
    name, feats, xdp = looked
    return Peer(index, where, name, feats,
                unseen="" if feats is not None else
                f"the ethtool features of {name} cannot be read", xdp=xdp)


def _namespaces():
    """(label, path) of the network namespaces one might enter: the named
    ones (ip netns), then those of the running processes, once each.  The
    one of kthreadd (kernel threads live in it) is the initial one."""
    seen = {os.stat("/proc/thread-self/ns/net").st_ino}

    def new(path):
        try:
            inode = os.stat(path).st_ino
        except OSError:
            return False
        fresh = inode not in seen
        seen.add(inode)
        return fresh

    try:
        names = sorted(os.listdir(NETNS_DIR))
    except OSError:
        names = []
    for name in names:
        if new(os.path.join(NETNS_DIR, name)):
            yield f"netns {name}", os.path.join(NETNS_DIR, name)
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()),
                      key=int):
        path = f"/proc/{pid}/ns/net"
        if new(path):
            comm = _comm(pid)
            yield ("the initial netns" if comm == "kthreadd" else
                   f"the netns of pid {pid} ({comm})"), path


def _enter(fd, index, label):
    """Peer `index` looked at from inside the namespace of `fd`."""
    try:
        return _peer(index, label, in_netns(fd, lambda: _look(index),
                                            name="pyfwd-doctor"))
    except (OSError, NetlinkError) as exc:
        return Peer(index, label, unseen=str(exc))


def find_peer(index, nsid):
    """ifchecks.Peer: the veth peer with ifindex `index` in the namespace
    this one calls `nsid` (IFLA_LINK_NETNSID; None: this one).  Another
    namespace is found by asking this one which nsid each namespace has
    (RTM_GETNSID, which assigns none), then entered from a thread."""
    if nsid is None:
        try:
            return _peer(index, "this namespace", _look(index))
        except NetlinkError as exc:
            return Peer(index, "this namespace", unseen=str(exc))
    if os.geteuid() != 0:
        return Peer(index, f"netns id {nsid}",
                    unseen="entering another namespace needs root")
    with IPRoute() as ipr:
        for label, path in _namespaces():
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if nsid_of(ipr, fd) == nsid:
                    return _enter(fd, index, label)
            finally:
                os.close(fd)
    return Peer(index, f"netns id {nsid}",
                unseen="no named namespace nor process is in it")


def bpffs_mounted():
    """True if a bpffs is mounted at /sys/fs/bpf."""
    try:
        with open("/proc/mounts", encoding="ascii") as f:
            return any(line.split()[1:3] == ["/sys/fs/bpf", "bpf"]
                       for line in f)
    except OSError:
        return False


def af_xdp_sockets():
    """(True, "") if the kernel makes AF_XDP sockets; (False, why) if it
    does not; (None, why) if we may not ask (not root)."""
    try:
        s = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            return None, "making one needs root"
        return False, exc.strerror or str(exc)
    s.close()
    return True, ""


def kernel_at_least(release, version):
    """True if kernel `release` ("6.18.4-foo") is `version` or newer; None
    when the release does not parse."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return None if m is None else (int(m[1]), int(m[2])) >= version


def tcx_from(query_errno, release):
    """(tcx known to the kernel: True/False/None, how that was found) from
    a tcx BPF_PROG_QUERY's errno (0: it answered; None: not asked) and the
    kernel release."""
    if query_errno in (0, errno.ENODEV):
        return True, "probed: BPF_PROG_QUERY knows tcx"
    if query_errno == errno.EINVAL:
        return False, "probed: BPF_PROG_QUERY does not know tcx"
    since = ".".join(map(str, TCX_SINCE))
    newer = kernel_at_least(release, TCX_SINCE)
    return newer, f"kernel {release}, tcx since {since}"


def _tcx_query(index):
    """The errno of BPF_PROG_QUERY for tcx ingress on ifindex `index`
    (0: it answered), which only reads; None if it cannot be asked (not
    root, no libbpf)."""
    if os.geteuid() != 0:
        return None
    path = ctypes.util.find_library("bpf")
    if path is None:
        return None
    try:
        libbpf = ctypes.CDLL(path, use_errno=True)
    except OSError:
        return None
    count = ctypes.c_uint32(0)
    ret = libbpf.bpf_prog_query(index, BPF_TCX_INGRESS, 0, None, None,
                                ctypes.byref(count))
    return -ret if ret < 0 else 0


def tcx(index=1):
    """tcx_from() of this kernel, probed on ifindex `index` (lo: 1)."""
    return tcx_from(_tcx_query(index), platform.release())


def read_host(index=1):
    """ifchecks.Host of this machine (the tcx probe on ifindex `index`)."""
    has_tcx, how = tcx(index)
    has_xsk, why = af_xdp_sockets()
    return Host(rp_filter_all=sysctl("net/ipv4/conf/all/rp_filter"),
                bpffs=bpffs_mounted(), tcx=has_tcx, tcx_how=how,
                af_xdp=has_xsk, af_xdp_error=why)
