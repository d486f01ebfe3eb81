"""`pyfwd ha`: the keepalived.conf of an active/passive pair, and the
check that nobody but root can replace the program keepalived runs."""

import os
import shutil
import stat
import sys

import click

from .common import CONTEXT, Group
from ..control.server import DEFAULT_PATH


@click.group(cls=Group, context_settings=CONTEXT)
def ha():
    """High availability: an active/passive pair elected by keepalived.

    \b
    Both nodes run `pyfwd start` on the same VIPs and real servers (Maglev:
    a DR flow goes to the same real server through either node); the
    standby one (`--role standby` or [engine] role = "standby") answers no
    ARP for the VIPs.  keepalived elects and checks the engine every
    second; its notify scripts run `pyfwd ctl ha active|standby`, and
    becoming active sends gratuitous ARP.
      pyfwd ha keepalived-conf --iface eth0 --priority 150 > keepalived.conf
    """


def _advert_int(ctx, param, value):
    """--advert-int: whole seconds, 1..255, as an int."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not number.is_integer() or \
            not 1 <= number <= 255:
        raise click.BadParameter(
            f"{value!r}: expected whole seconds, 1 to 255 (VRRPv2; "
            "keepalived runs sub-second VRRPv3 adverts only with a "
            "virtual_ipaddress, which pyfwd cannot have)")
    return int(number)


@ha.command("keepalived-conf")
@click.option("--iface", "-i", required=True, metavar="IF",
              help="the interface VRRP runs on: the engine's")
@click.option("--vrid", type=int, default=51, show_default=True,
              help="virtual router id, 1-255: the same on both nodes, "
              "unique on the segment")
@click.option("--priority", type=int, required=True,
              help="1-254; the higher wins (e.g. 150 on the preferred "
              "node, 100 on the other)")
@click.option("--socket", "-s", "sock", default=None, metavar="PATH",
              help=f"the engine's control socket [default: {DEFAULT_PATH}]")
@click.option("--peer", "peers", multiple=True, metavar="ADDR",
              help="the other node's address: unicast VRRP (default: "
              "multicast 224.0.0.18 on IF)")
@click.option("--advert-int", default="1", show_default=True,
              callback=_advert_int, metavar="SECONDS",
              help="whole seconds between VRRP adverts, 1-255; a dead "
              "master is noticed after about three")
@click.option("--nopreempt", is_flag=True,
              help="a node that comes back (higher priority, engine up "
              "again) stays backup instead of taking the master role back: "
              "no second switch-over, so no second outage of a few "
              "adverts (and, in NAT/SNAT, no second loss of the flows); "
              "the other node stays master until it fails")
@click.option("--instance", default="pyfwd", show_default=True,
              help="the vrrp_instance name")
@click.option("--pyfwd", "pyfwd_path", metavar="PATH",
              help="the pyfwd program keepalived runs as root [default: "
              "this one]; it should be root-owned and not writable by "
              "others, e.g. installed under /opt/pyfwd")
@click.option("--no-script-security", is_flag=True,
              help="leave out enable_script_security, which makes "
              "keepalived refuse a program (or a directory above it) that "
              "a non-root user could replace; better: install pyfwd where "
              "only root can write")
def ha_keepalived_conf(iface, vrid, priority, sock, peers, advert_int,
                       nopreempt, instance, pyfwd_path, no_script_security):
    """Print a keepalived.conf that elects this node and drives its engine.

    No virtual_ipaddress: in DR the VIP is not a kernel address of the
    balancer (pyfwd answers ARP for it when active); keepalived only
    elects.  It runs `pyfwd ctl -s SOCK ha-renew` every second (an engine
    that does not answer twice puts the node in FAULT, and the peer takes
    over; each answer renews the engine's lease, and an active engine
    whose keepalived stops renewing it stands down after [ha] lease
    seconds) and `pyfwd ctl -s SOCK ha active|standby` from notify_master,
    notify_backup, notify_fault and notify_stop, as root.  A warning on
    stderr when a non-root user could replace the program or its
    interpreter.
    """
    from ..control import ha as hamod
    spec = hamod.KeepalivedSpec(
        iface, vrid, priority, sock or DEFAULT_PATH,
        pyfwd_path or _own_program(), tuple(peers), advert_int, instance,
        not no_script_security, nopreempt)
    text = hamod.keepalived_conf(spec)
    for why in _replaceable(spec.pyfwd):
        click.echo(f"warning: {why}: a non-root user could replace what "
                   "keepalived runs as root"
                   + ("; keepalived (enable_script_security) will refuse "
                      "to run it" if spec.script_security else "")
                   + "; install pyfwd where only root can write (e.g. "
                   "/opt/pyfwd)", err=True)
    click.echo(text, nl=False)


def _replaceable(program):
    """Why a non-root user could replace `program` or the interpreter its
    #! line names: ["DIR is writable by others", ...], [] when neither.
    keepalived's rule for each path component (file or directory): owned
    by root, not writable by others nor by a non-root group; a directory
    with the sticky bit (/tmp) may be writable by others.  keepalived
    checks the program only; the interpreter runs as root just the same.
    """
    paths = [program]
    try:
        with open(program, "rb") as f:
            first = f.readline(4096)
    except OSError:
        first = b""
    if first.startswith(b"#!"):
        words = first[2:].decode("utf-8", "replace").split()
        if words and words[0].startswith("/"):
            paths.append(words[0])
    out = []
    for path in paths:
        for name in _components(path) + _components(os.path.realpath(path)):
            try:
                st = os.stat(name)
            except OSError:
                continue            # missing: keepalived says so
            sticky_dir = stat.S_ISDIR(st.st_mode) and \
                st.st_mode & stat.S_ISVTX
            if st.st_uid != 0:
                why = f"{name} is owned by uid {st.st_uid}"
            elif not sticky_dir and (st.st_mode & stat.S_IWOTH or (
                    st.st_gid != 0 and st.st_mode & stat.S_IWGRP)):
                why = f"{name} is writable by " + (
                    "others" if st.st_mode & stat.S_IWOTH else
                    f"group {st.st_gid}")
            else:
                continue
            if why not in out:
                out.append(why)
            break                   # one reason per path is enough
    return out


def _components(path):
    """/a/b/c -> ["/", "/a", "/a/b", "/a/b/c"]."""
    path = os.path.abspath(path)
    out, head = [path], path
    while head != "/":
        head = os.path.dirname(head)
        out.append(head)
    return out[::-1]


def _own_program():
    """The absolute path of the running pyfwd program (a console script),
    else `pyfwd` on PATH."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "pyfwd" and os.path.exists(argv0):
        return os.path.abspath(argv0)
    found = shutil.which("pyfwd")
    if found:
        return os.path.abspath(found)
    raise click.ClickException("cannot tell where the pyfwd program is: "
                               "give --pyfwd PATH")
