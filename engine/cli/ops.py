"""Commands that prepare and check hosts: `pyfwd realserver` (a DR real
server), `pyfwd arp-check` (the ARP problem), `pyfwd doctor` (this
machine and its interfaces)."""

import json
import sys

import click

from .common import CONTEXT, JSON_OPTION, Group, need_root
from ..model import MODES


@click.group(cls=Group, context_settings=CONTEXT)
def realserver():
    """Prepare this Linux host as a DR (or, with --tun, TUN) real server
    (run it ON the real server)."""


# TUN real servers (ops.realserver_tun): how the outer header comes off.
_TUN = click.option("--tun", is_flag=True,
                    help="a TUN real server: the VIP on the kernel's "
                    "tunnel device (tunl0, ip6tnl0), rp_filter relaxed, "
                    "ARP as for DR")
_DECAP = click.option("--decap", type=click.Choice(["tunnel", "xdp"]),
                      default="tunnel", show_default=True,
                      help="with --tun: the kernel's tunnel device, or "
                      "pyfwd's XDP decapsulation on --iface (kernels "
                      "without ipip/ip6tnl) with the VIP on lo")
_IFACE = click.option("--iface", metavar="IF",
                      help="with --decap xdp: where the tunnelled packets "
                      "come in")


def _tun_only(tun, decap, iface):
    if not tun and (decap != "tunnel" or iface):
        raise click.UsageError("--decap and --iface go with --tun")


_ROOT = click.option("--root", default="/", show_default=True,
                     metavar="DIR", type=click.Path(file_okay=False),
                     help="where the files a reboot needs are (the target "
                     "system's root)")


def _self_command():
    """How a unit runs this pyfwd at boot: this script by its absolute
    path, or this Python with -m pyfwd.cli."""
    import os
    argv0 = os.path.abspath(sys.argv[0])
    if os.path.basename(argv0) == "pyfwd" and os.access(argv0, os.X_OK):
        return [argv0]
    return [sys.executable, "-m", "pyfwd.cli"]


def _report(changes, as_json, **about):
    """Print what setup/teardown changed: a line each, or with --json
    {"ok": true, **about, "changes": [{"what", ..., "text"}]} (the kinds:
    ops.realserver_changes)."""
    if as_json:
        from ..ops.realserver_changes import to_json
        click.echo(json.dumps({"ok": True, **about,
                               "changes": to_json(changes)}, indent=2))
        return
    for line in changes:
        click.echo(line)
    if not changes:
        click.echo("nothing to change")


@realserver.command("setup")
@click.option("--vip", required=True, metavar="ADDR",
              help="the VIP this real server serves")
@click.option("--dev", default="lo", show_default=True,
              help="where the VIP goes")
@click.option("--undo", is_flag=True,
              help="remove the VIP (and the ARP settings when no VIP "
              "remains); the same as `teardown`")
@click.option("--persist", is_flag=True,
              help="also write what a reboot needs: a sysctl.d file and an "
              "enabled oneshot systemd unit that runs this setup at boot "
              "(with --undo: remove them)")
@_ROOT
@_TUN
@_DECAP
@_IFACE
@JSON_OPTION
def realserver_setup(vip, dev, undo, persist, root, tun, decap, iface,
                     as_json):
    """Put VIP/32 on lo and stop this host answering ARP for it
    (arp_ignore=1, arp_announce=2); an IPv6 VIP: VIP/128 on lo with
    nodad (Linux answers no NDP for it there).  --tun: the VIP on the
    tunnel device instead (tunl0 or ip6tnl0, up, rp_filter relaxed), or
    with --decap xdp on lo behind pyfwd's XDP decapsulation.
    Idempotent.  --json: {"ok", "vip", "mode", "undo", "changes": [{"what":
    "sysctl"|"address"|"link"|"file"|"unit"|"xdp", ..., "text"}]}."""
    from ..ops import realserver as rs
    need_root("pyfwd realserver setup")
    _tun_only(tun, decap, iface)
    if tun:
        from ..ops import realserver_tun as rt
        if persist:
            raise click.UsageError("--persist is for DR real servers only")
        _report(rt.teardown(vip, decap, iface) if undo
                else rt.setup(vip, decap, iface), as_json, vip=vip,
                mode="tun", undo=undo)
        return
    changes = rs.setup(vip, undo=undo, dev=dev)
    if persist:
        changes += rs.unpersist(vip, root=root) if undo else \
            rs.persist(vip, dev, root=root, command=_self_command())
    _report(changes, as_json, vip=vip, mode="dr", undo=undo)


@realserver.command("teardown")
@click.option("--vip", required=True, metavar="ADDR")
@click.option("--dev", default="lo", show_default=True)
@click.option("--persist", is_flag=True,
              help="also remove what `setup --persist` wrote (the sysctl "
              "file with the last VIP)")
@_ROOT
@_TUN
@_DECAP
@_IFACE
@JSON_OPTION
def realserver_teardown(vip, dev, persist, root, tun, decap, iface, as_json):
    """Undo `setup`: remove VIP from DEV, and the ARP settings when no
    other VIP remains (--tun: as `setup --tun` did it).  --json: as
    `setup --json`."""
    from ..ops import realserver as rs
    need_root("pyfwd realserver teardown")
    _tun_only(tun, decap, iface)
    if tun:
        from ..ops import realserver_tun as rt
        _report(rt.teardown(vip, decap, iface), as_json, vip=vip,
                mode="tun", undo=True)
        return
    changes = rs.setup(vip, undo=True, dev=dev)
    if persist:
        changes += rs.unpersist(vip, root=root)
    _report(changes, as_json, vip=vip, mode="dr", undo=True)


@realserver.command("status")
@click.option("--vip", required=True, metavar="ADDR")
@click.option("--dev", default="lo", show_default=True)
@_ROOT
@click.option("--running-only", is_flag=True,
              help="check the running state only, not what a reboot needs")
@_TUN
@_DECAP
@_IFACE
@JSON_OPTION
def realserver_status(vip, dev, root, running_only, tun, decap, iface,
                      as_json):
    """Say whether this host is set up as a DR real server for VIP, now
    and after a reboot (what `setup --persist` writes, present and in
    agreement).  Exits 1 with the reasons when not.  --tun: as a TUN real
    server, now.  --json: what was found, "ok" and "problems" included
    (exit status as without)."""
    from ..ops import realserver as rs
    _tun_only(tun, decap, iface)
    if tun:
        from ..ops import realserver_tun as rt
        st = rt.status(vip, decap, iface)
        if as_json:
            _json_exit({"mode": "tun", **st})
        if st["ok"]:
            click.echo(f"ok (TUN, VIP on {st['dev']}, decap {decap})")
            return
        click.echo("not ready: " + "; ".join(st["problems"]))
        sys.exit(1)
    st = rs.status(vip, dev=dev, root=None if running_only else root)
    if as_json:
        _json_exit({"mode": "dr", **st})
    if st["ok"]:
        click.echo("ok" if running_only else "ok, and after a reboot too")
        return
    if st["problems"]:
        click.echo("not ready: " + "; ".join(st["problems"]))
    if st["persisted"]:
        click.echo("not ready after a reboot: " + "; ".join(st["persisted"]))
    sys.exit(1)


@click.command("arp-check")
@click.option("--iface", "-i", required=True, metavar="IF",
              help="an interface on the VIP's segment")
@click.option("--vip", required=True, metavar="ADDR")
@click.option("--balancer-mac", metavar="MAC",
              help="the balancer's MAC (default: IF's own, when run on "
              "the balancer)")
@click.option("--timeout", type=float, default=1.0, show_default=True)
@JSON_OPTION
def arp_check(iface, vip, balancer_mac, timeout, as_json):
    """Ask who has VIP and list every MAC that answers.

    Any answer that is not the balancer's is the ARP problem: that host
    takes traffic for the VIP away from the balancer.  Exits 1 if any.
    Run it from any host on the segment; on the balancer itself while the
    engine runs, the engine reports such answers in its log instead.
    --json: {"vip", "iface", "ok", "answers": [{"mac", "balancer"}]}.
    """
    from ..neighbours.check import arp_check as check
    need_root("pyfwd arp-check")
    own = balancer_mac
    if own is None:
        from ..neighbours.kernel import interface
        own = interface(iface)[1]
    answers = check(iface, vip, timeout=timeout, own_mac=own)
    bad = [a for a in answers if not a.is_balancer]
    if as_json:
        _json_exit({"vip": vip, "iface": iface, "ok": not bad,
                    "answers": [{"mac": a.mac, "balancer": a.is_balancer}
                                for a in answers]})
    for a in answers:
        what = "balancer" if a.is_balancer else \
            "ARP PROBLEM: not the balancer"
        click.echo(f"{a.mac}  {what}")
    if not answers:
        click.echo(f"nobody answered ARP for {vip}")
    if bad:
        raise click.ClickException(
            f"{len(bad)} host(s) answer ARP for {vip}: run `pyfwd "
            f"realserver setup --vip {vip}` on them")


@click.command()
@click.option("--iface", "-i", metavar="IF",
              help="also check this interface: its veth peer's checksum "
              "offload and XDP program (the fast path), LRO/GRO, MTU, "
              "rp_filter, RX queues")
@click.option("--inside-iface", metavar="IF",
              help="two-arm NAT: the inside interface, checked too (NAT "
              "replies come in there)")
@click.option("--mode", "modes", multiple=True, type=click.Choice(MODES),
              help="the modes the VIPs will use (repeatable; default: any): "
              "rp_filter and the RX queues matter for NAT and SNAT")
@click.option("--vip", metavar="ADDR",
              help="with --iface: ask who answers ARP for ADDR on IF; any "
              "host but this one is the ARP problem.  Needs root and sends "
              "one broadcast ARP request on IF")
@click.option("--fastpath", type=click.Choice(["off", "xdp"]), default=None,
              help="the XDP fast path the engine will run with (default: "
              "either): with xdp, or by default, a veth whose peer runs no "
              "XDP program is a warning")
@click.option("--json", "as_json", is_flag=True,
              help="print the findings as JSON; an error is then "
              "{\"ok\": false, \"error\": MESSAGE} on stdout, with the "
              "same exit status")
def doctor(iface, inside_iface, modes, vip, fastpath, as_json):
    """Check the build, the XDP program, the kernel and, with --iface, an
    interface: each finding says what breaks and the fix.

    \b
    ok        nothing to do
    note      it works, at a cost worth knowing
    warn      it degrades: slower, or less than it could (JSON: "degrades")
    FAIL      it blocks forwarding, or part of it (JSON: "blocks")

    Exits 1 when something blocks forwarding.  `pyfwd start` logs the
    same interface checks as warnings (not the ARP one).
    """
    from ..ops import doctor as doc
    from ..ops.findings import blocking, text, to_json
    if vip and not iface:
        raise click.UsageError("--vip needs --iface (where to ask)")
    found = doc.run(iface, inside_iface, modes=modes, vip=vip,
                    fastpath=None if fastpath is None else fastpath == "xdp")
    click.echo(to_json(found) if as_json else
               "\n".join(text(f) for f in found))
    if blocking(found):
        if as_json:
            sys.exit(1)
        raise click.ClickException(
            f"{len(blocking(found))} finding(s) block forwarding")


def _json_exit(result):
    """Print result as JSON; exit 1 unless result["ok"]."""
    click.echo(json.dumps(result, indent=2, default=str))
    sys.exit(0 if result.get("ok") else 1)
