"""pyfwd's command line (click).  Thin: every command calls a module API.

A PyfwdError becomes one line on stderr and exit status 1; a traceback is a
bug.
"""

import json
import os
import sys

import click

from pyfwd import __version__
from pyfwd.errors import PyfwdError
from pyfwd.control.ha import ROLES

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Group(click.Group):
    """A click group that turns PyfwdError into a clean one-line error."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PyfwdError as exc:
            raise click.ClickException(str(exc)) from None


def need_root(what):
    if os.geteuid() != 0:
        raise click.ClickException(f"{what} needs root (network namespaces "
                                   "and BPF); run it with sudo")


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="pyfwd")
def cli():
    """pyfwd: a userspace load balancer (L4 DR, NAT, SNAT; L7 via HAProxy)
    with a C AF_XDP data plane.

    \b
    Start here:
      pyfwd lab demo        namespace labs: DR, NAT, SNAT and L7 through a VIP,
                            measured and explained
      pyfwd lab trace       one request across every hop: pcaps and a diagram
      pyfwd lab arp-problem the ARP problem of DR: shown, found, fixed
      pyfwd start --iface eth0 --vip 10.0.0.100:80/tcp --real 10.0.0.11
                            balance a VIP in direct routing (DR) mode
      pyfwd realserver setup --vip 10.0.0.100
                            prepare a Linux real server for DR
      pyfwd arp-check --iface eth0 --vip 10.0.0.100
                            find real servers that wrongly answer ARP
      pyfwd doctor          check the build, the kernel and the XDP program
    """


# --- lab ------------------------------------------------------------------

def lab_name(default="pyfwd", what="lab name"):
    """The --name option of the lab commands."""
    return click.option("--name", "-n", default=default, show_default=True,
                        help=f"{what}: prefix of its namespaces (a lowercase "
                        "letter, then letters and digits, 12 at most)")


LAB_NAME = lab_name()


@cli.group(cls=Group, context_settings=CONTEXT)
def lab():
    """Namespace labs: a client, a balancer and real servers on one machine.

    \b
    Topologies:
      one-arm   client, lb and real servers on one L2 segment (DR, SNAT)
      two-arm   client outside, real servers inside, lb routes between
                (NAT: the lb is the real servers' default gateway)
      one-arm-ha  one-arm with a second balancer, lb2 (an HA pair)
    Namespaces are named NAME-client, NAME-lb, NAME-real1.. and NAME-sw*;
    `pyfwd lab show` prints the address plan.

    \b
    Lessons (each builds its own labs and removes them):
      demo          every mode through a VIP, measured, then side by side
      trace         one request across every hop: pcaps and a diagram
      arp-problem   a real server answering ARP for the VIP: shown, fixed
    docs/lab.md is a short course of exercises built on them.
    """


@lab.command("up")
@LAB_NAME
@click.option("--topology", "-t", type=click.Choice(["one-arm", "two-arm",
                                                     "one-arm-ha"]),
              default="one-arm", show_default=True)
@click.option("--reals", "-r", type=int, default=3, show_default=True,
              help="number of real servers (1-16)")
def lab_up(name, topology, reals):
    """Build a lab and print its address plan."""
    from pyfwd.lab import topology as labmod
    need_root("pyfwd lab up")
    built = labmod.Lab(name, topology=topology, reals=reals).up()
    click.echo(built.format_plan())
    click.echo(f"\nlab '{name}' is up; `pyfwd lab exec -n {name} client -- "
               "ping -c1 <addr>` runs a command in it, `pyfwd lab down -n "
               f"{name}` removes it")


@lab.command("down")
@LAB_NAME
@click.option("--all", "all_", is_flag=True,
              help="remove every pyfwd lab on this machine (only namespaces "
              "pyfwd marked as its own)")
def lab_down(name, all_):
    """Remove a lab (its namespaces, veths and bridges)."""
    from pyfwd.lab import topology as labmod
    need_root("pyfwd lab down")
    if all_:
        removed = labmod.down_all()
    else:
        removed = labmod.Lab.load(name).down()
    click.echo(f"removed {len(removed)} namespaces"
               + (": " + " ".join(removed) if removed else ""))


@lab.command("show")
@LAB_NAME
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def lab_show(name, as_json):
    """Print a running lab's address plan (nodes, interfaces, routes)."""
    from pyfwd.lab import topology as labmod
    need_root("pyfwd lab show")
    built = labmod.Lab.load(name)
    if as_json:
        click.echo(json.dumps(built.plan().to_dict(), indent=2))
    else:
        click.echo(built.format_plan())


@lab.command("list")
def lab_list():
    """List the labs present on this machine."""
    from pyfwd.lab import topology as labmod
    need_root("pyfwd lab list")
    for name in labmod.list_labs():
        click.echo(name)


@lab.command("exec", context_settings={"ignore_unknown_options": True,
                                       **CONTEXT})
@LAB_NAME
@click.argument("node")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def lab_exec(name, node, command):
    """Run COMMAND inside NODE's namespace (client, lb, real1, ...).

    \b
    Example: pyfwd lab exec client -- curl http://10.0.0.11:8080/
    """
    from pyfwd.lab import topology as labmod
    need_root("pyfwd lab exec")
    built = labmod.Lab.load(name)
    try:
        rc = built.run(node, list(command), timeout=None).returncode
    except FileNotFoundError:
        raise click.ClickException(f"{command[0]}: command not found")
    sys.exit(rc)


@lab.command("demo")
@click.option("--mode", "-m", type=click.Choice(["dr", "nat", "snat", "l7",
                                                 "all"]),
              default="all", show_default=True,
              help="the forwarding mode to show; all ends with a table of "
              "the modes side by side")
@click.option("--pacs", is_flag=True,
              help="also a PACS workload: Orthanc on the real servers, a "
              "study stored with dcmtk's storescu through the DICOM VIP and "
              "fetched back over DICOMweb, in DR and NAT (only the --mode "
              "given, if dr or nat; needs the orthanc, "
              "orthanc-dicomweb and dcmtk packages)")
@lab_name("demo", "the lab's name while the demo runs")
@click.option("--reals", "-r", type=click.IntRange(1, 8), default=3,
              show_default=True, help="real servers in each lab")
def lab_demo(mode, pacs, name, reals):
    """Show what each forwarding mode does, measured.

    For each mode it builds the lab that mode needs (DR, SNAT, L7: one
    segment; NAT: the balancer between two), sets up the real servers,
    starts the balancer, sends requests and a 20 MB download through the
    VIP, and explains from a capture at the switch ports which real server
    answered, which client address it saw, which way the reply went and how
    many frames and bytes crossed the balancer in each direction.  Every
    lab is removed at the end.
    """
    from pyfwd.lab import demo
    from pyfwd.lab import modes as labmodes
    need_root("pyfwd lab demo")
    if pacs:
        from pyfwd.lab import pacs as pacsmod
        missing = pacsmod.missing()
        if missing:
            raise click.ClickException(
                "--pacs needs " + ", ".join(missing) + " (./tools/run setup "
                "installs them)")
    modes = labmodes.MODES if mode == "all" else (mode,)
    failed = []
    if not demo.run(click.echo, modes, reals, name=name):
        failed.append("requests through the VIP failed or a capture lost "
                      "frames")
    if pacs:
        # the PACS workload runs in DR and NAT: the chosen one, or both
        pacs_modes = (mode,) if mode in pacsmod.MODES else pacsmod.MODES
        if not pacsmod.run(click.echo, modes=pacs_modes, name=name,
                           reals=max(2, reals)):
            failed.append("the PACS workload did not store and fetch "
                          "its study")
    if failed:
        raise click.ClickException("; ".join(failed) + " (see above)")


@lab.command("trace")
@click.option("--mode", "-m", type=click.Choice(["dr", "nat", "snat"]),
              default="dr", show_default=True,
              help="the L4 mode to follow (L7 is two connections, HAProxy's "
              "own: `pyfwd lab demo --mode l7` shows it)")
@click.option("--out", "-o", default="trace", show_default=True,
              type=click.Path(file_okay=False),
              help="directory for client.pcap, lb.pcap, real.pcap and "
              "trace.svg (made if missing; those files are overwritten)")
@lab_name("trace", "the lab's name while the trace runs")
def lab_trace(mode, out, name):
    """Follow one HTTP request and its reply across every hop.

    Builds the mode's lab with one real server, captures one connection on
    the client, on every interface of the balancer and on the real server
    (at the switch ports, as a mirror port would), writes one pcap per hop
    and draws the journey as a sequence diagram, in the terminal and in
    OUT/trace.svg, with the fields the balancer rewrote highlighted.
    """
    from pyfwd.lab import trace
    need_root("pyfwd lab trace")
    if not trace.run(click.echo, mode=mode, out=out, name=name):
        raise click.ClickException("the trace is incomplete (see above)")


@lab.command("arp-problem")
@lab_name("arp", "the lab's name while the lesson runs")
@click.option("--reals", "-r", type=click.IntRange(2, 8), default=2,
              show_default=True, help="real servers (real1 is the one left "
              "answering ARP)")
def lab_arp_problem(name, reals):
    """Show the ARP problem of DR, find it and fix it.

    One real server holds the VIP without `pyfwd realserver setup`, so it
    answers ARP for it: the client's ARP cache flips and connections go to
    that server directly, past the balancer.  `pyfwd arp-check` finds it;
    `pyfwd realserver setup` fixes it; the same requests then all cross the
    balancer.
    """
    from pyfwd.lab import arpproblem
    need_root("pyfwd lab arp-problem")
    if not arpproblem.run(click.echo, name=name, reals=reals):
        raise click.ClickException("the lesson did not show what it should "
                                   "(see above)")


# --- the balancer -----------------------------------------------------------

@cli.command()
@click.option("--iface", "-i", metavar="IF",
              help="the interface that receives VIP traffic (DR: the one "
              "the real servers are on too); or [engine] iface in --config")
@click.option("--vip", "vips", multiple=True, metavar="ADDR:PORT/PROTO",
              help="a VIP service, e.g. 10.0.0.100:80/tcp (repeatable)")
@click.option("--real", "reals", multiple=True, metavar="ADDR[:PORT][@W]",
              help="a real server of every --vip, e.g. 10.0.0.11@200 "
              "(repeatable; weight 1 by default, 0 = drain)")
@click.option("--config", "-c", "config_path", metavar="FILE",
              type=click.Path(dir_okay=False),
              help="a TOML file of VIPs and real servers instead of "
              "--vip/--real")
@click.option("--mode", type=click.Choice(["dr", "nat", "snat"]),
              default="dr", show_default=True,
              help="dr: rewrite MACs, replies bypass us; nat: rewrite the "
              "destination (two-arm: we are the real servers' gateway); "
              "snat: the source too (--vip/--real only)")
@click.option("--inside-iface", metavar="IF",
              help="two-arm NAT: the interface on the real servers' side")
@click.option("--snat-address", metavar="ADDR",
              help="SNAT source address (default: --iface's first IPv4)")
@click.option("--snat-ports", metavar="LOW-HIGH", default="61000-65535",
              show_default=True,
              help="SNAT source ports (keep them out of the kernel's "
              "ip_local_port_range)")
@click.option("--scheduler", type=click.Choice(["rr", "wrr", "lc", "wlc",
                                                "sh", "maglev"]),
              default="maglev", show_default=True,
              help="how new flows pick a real server (--vip/--real only): "
              "round robin, weighted, least connections, weighted least "
              "connections, source hash, Maglev consistent hashing")
@click.option("--control-socket", metavar="PATH",
              help="the control socket for `pyfwd ctl` (default: "
              "[engine] control_socket, else /run/pyfwd/pyfwd.sock)")
@click.option("--metrics", metavar="[ADDR:]PORT",
              help="serve Prometheus metrics at http://ADDR:PORT/metrics "
              "(loopback unless ADDR says otherwise)")
@click.option("--backend", type=click.Choice(["auto", "xdp", "afpacket"]),
              default="auto", show_default=True,
              help="xdp: AF_XDP sockets; afpacket: raw sockets (TPACKET_V3) "
              "where AF_XDP does not work; auto: AF_XDP, else raw sockets "
              "(the log says which and why)")
@click.option("--xdp-mode", type=click.Choice(["auto", "native", "generic"]),
              default="auto", show_default=True,
              help="XDP attach mode; auto tries native, then generic")
@click.option("--copy-mode", type=click.Choice(["auto", "copy",
                                                "zerocopy"]),
              default="auto", show_default=True,
              help="AF_XDP mode; auto tries zero-copy, then copy")
@click.option("--busy-poll", type=click.IntRange(0, 10000), default=20,
              show_default=True, metavar="USECS",
              help="preferred busy polling (SO_PREFER_BUSY_POLL, "
              "SO_BUSY_POLL); 0 sleeps in poll() when idle instead of "
              "spinning")
@click.option("--queues", type=click.IntRange(1, 64), default=None,
              help="RX queues to serve (default: all)")
@click.option("--flows", type=click.IntRange(64, 1 << 26), default=None,
              help="flow table slots per queue, 72 bytes each; a DR flow "
              "takes one, a NAT/SNAT flow two (default: 2M for DR, 4M with "
              "NAT/SNAT: about 1.7M flows either way)")
@click.option("--stats-file", type=click.Path(dir_okay=False),
              help="write the counters as JSON here every second")
@click.option("--role", type=click.Choice(ROLES),
              default=None,
              help="the high-availability role at start (overrides [engine] "
              "role; default active).  standby: everything runs but ARP for "
              "the VIPs is left to the active node until `pyfwd ctl ha "
              "active` (keepalived calls it)")
@click.option("--standby", is_flag=True,
              help="the same as --role standby")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning",
                                                "error"]),
              default="info", show_default=True)
def start(iface, vips, reals, config_path, mode, inside_iface, snat_address,
          snat_ports, scheduler, control_socket, metrics, backend, xdp_mode,
          copy_mode, busy_poll, queues, flows, stats_file, role, standby,
          log_level):
    """Run the balancer in the foreground until SIGINT or SIGTERM.

    \b
    dr    frames to a VIP get the chosen real server's MAC as destination
          and go back out; the real server (VIP on lo, `pyfwd realserver
          setup`) answers the client directly.
    nat   destination := real ADDR:PORT (port translation allowed); its
          answers come back through us (we are its gateway: two-arm with
          --inside-iface) and leave from the VIP.  Real servers see the
          client's address.
    snat  source := our --snat-address and a port of --snat-ports too;
          real servers may be anywhere the routes reach, and see us.
    The XDP program is attached with a bpf_link that the kernel removes
    when this process ends, however it ends.
    """
    import signal
    import time

    from pyfwd.control import config as config_mod
    from pyfwd.control.server import ControlServer
    from pyfwd.control.config import parse_ports, parse_services
    from pyfwd.control.engine import Engine
    from pyfwd.control.metrics import MetricsServer, parse_address

    if config_path and (vips or reals):
        raise click.UsageError("give either --config or --vip/--real")
    if standby:
        if role == "active":
            raise click.UsageError("--standby and --role active: give one "
                                   "role")
        role = "standby"
    if config_path:
        # the command line's role, not the file's, is checked against the
        # file's VIPs (standby refuses L7 VIPs)
        cfg = config_mod.load(config_path, role=role)
        services, iface = cfg.services, iface or cfg.iface
        inside_iface = inside_iface or cfg.inside_iface
        snat_address = snat_address or cfg.snat_address
        snat_ports = cfg.snat_ports or snat_ports
        control_socket = control_socket or cfg.control_socket
        metrics = metrics or cfg.metrics
        role = cfg.role
    else:
        if not reals:
            raise click.UsageError("no --real given")
        services = parse_services(vips, reals, scheduler, mode)
    if not iface:
        raise click.UsageError("no --iface given (nor [engine] iface)")
    ports = parse_ports(snat_ports)
    metrics_addr = parse_address(metrics) if metrics else None
    control_socket = control_socket or config_mod.CONTROL_SOCKET
    need_root("pyfwd start")
    logging_setup(log_level)
    engine = Engine(iface, services, inside_iface=inside_iface,
                    snat_address=snat_address, snat_ports=ports,
                    xdp_mode=xdp_mode, copy_mode=copy_mode,
                    busy_poll=busy_poll, queues=queues, flows=flows,
                    stats_file=stats_file, backend=backend,
                    role=role or "active",
                    config_path=os.path.abspath(config_path)
                    if config_path else None)
    stop = []

    def on_signal(signum, frame):
        stop.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    servers = []
    engine.start()
    try:
        servers.append(ControlServer(engine, control_socket).start())
        if metrics_addr:
            servers.append(MetricsServer(engine.stats, metrics_addr).start())
            click.echo(f"metrics at {servers[-1].url}", err=True)
        while not stop:
            time.sleep(0.2)
    finally:
        for server in reversed(servers):
            server.stop()
        engine.stop()
        s = engine.stats()["core"]
        click.echo(f"stopped: {s['rx']} frames in, {s['tx']} forwarded, "
                   f"{s['flows_new']} flows, {s['verdict']['drop']} "
                   "dropped", err=True)


def logging_setup(level):
    import logging
    logging.basicConfig(level=level.upper(), format="%(asctime)s pyfwd "
                        "%(levelname)s %(message)s", datefmt="%H:%M:%S")


@cli.command()
@click.option("--iface", "-i", required=True, metavar="IF")
def cleanup(iface):
    """Remove an XDP program left on IF by another attach mode.

    A running engine holds its program with a bpf_link: that one is not
    touched (stop the engine instead).
    """
    from pyfwd.dataplane.core import xdp_cleanup
    from pyfwd.neighbours.kernel import interface
    need_root("pyfwd cleanup")
    ifindex = interface(iface)[0]
    prog = xdp_cleanup(ifindex)
    click.echo(f"{iface}: removed XDP program {prog}" if prog else
               f"{iface}: no XDP program attached")


@cli.group(cls=Group, context_settings=CONTEXT)
def realserver():
    """Prepare this Linux host as a DR real server (run it ON the real
    server)."""


@realserver.command("setup")
@click.option("--vip", required=True, metavar="ADDR",
              help="the VIP this real server serves")
@click.option("--dev", default="lo", show_default=True,
              help="where the VIP goes")
@click.option("--undo", is_flag=True,
              help="remove the VIP (and the ARP settings when no VIP "
              "remains)")
def realserver_setup(vip, dev, undo):
    """Put VIP/32 on lo and stop this host answering ARP for it
    (arp_ignore=1, arp_announce=2); an IPv6 VIP: VIP/128 on lo with
    nodad (Linux answers no NDP for it there).  Idempotent."""
    from pyfwd.ops import realserver as rs
    need_root("pyfwd realserver setup")
    changes = rs.setup(vip, undo=undo, dev=dev)
    for line in changes:
        click.echo(line)
    if not changes:
        click.echo("nothing to change")


@realserver.command("status")
@click.option("--vip", required=True, metavar="ADDR")
@click.option("--dev", default="lo", show_default=True)
def realserver_status(vip, dev):
    """Say whether this host is set up as a DR real server for VIP."""
    from pyfwd.ops import realserver as rs
    st = rs.status(vip, dev=dev)
    click.echo("ok" if st["ok"] else "not ready: " + "; ".join(
        st["problems"]))
    if not st["ok"]:
        sys.exit(1)


@cli.command("arp-check")
@click.option("--iface", "-i", required=True, metavar="IF",
              help="an interface on the VIP's segment")
@click.option("--vip", required=True, metavar="ADDR")
@click.option("--balancer-mac", metavar="MAC",
              help="the balancer's MAC (default: IF's own, when run on "
              "the balancer)")
@click.option("--timeout", type=float, default=1.0, show_default=True)
def arp_check(iface, vip, balancer_mac, timeout):
    """Ask who has VIP and list every MAC that answers.

    Any answer that is not the balancer's is the ARP problem: that host
    takes traffic for the VIP away from the balancer.  Exits 1 if any.
    Run it from any host on the segment; on the balancer itself while the
    engine runs, the engine reports such answers in its log instead.
    """
    from pyfwd.neighbours.check import arp_check as check
    need_root("pyfwd arp-check")
    own = balancer_mac
    if own is None:
        from pyfwd.neighbours.kernel import interface
        own = interface(iface)[1]
    answers = check(iface, vip, timeout=timeout, own_mac=own)
    bad = [a for a in answers if not a.is_balancer]
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


@cli.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
def check_config(file):
    """Validate a config FILE without touching anything."""
    from pyfwd.control import config as config_mod
    cfg = config_mod.load(file)
    n = sum(len(s.reals) for s in cfg.services)
    click.echo(f"{file}: ok: {len(cfg.services)} VIP(s), {n} real "
               "server(s)")


# --- ha ---------------------------------------------------------------------

@cli.group(cls=Group, context_settings=CONTEXT)
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
              help="the engine's control socket [default: "
              "/run/pyfwd/pyfwd.sock]")
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
    elects.  It runs `pyfwd ctl -s SOCK status` every second (an engine
    that does not answer twice puts the node in FAULT, and the peer takes
    over) and `pyfwd ctl -s SOCK ha active|standby` from notify_master,
    notify_backup, notify_fault and notify_stop, as root.  A warning on
    stderr when a non-root user could replace the program or its
    interpreter.
    """
    from pyfwd.control import server as control
    from pyfwd.control import ha as hamod
    spec = hamod.KeepalivedSpec(
        iface, vrid, priority, sock or control.DEFAULT_PATH,
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
    import stat
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
    import shutil
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "pyfwd" and os.path.exists(argv0):
        return os.path.abspath(argv0)
    found = shutil.which("pyfwd")
    if found:
        return os.path.abspath(found)
    raise click.ClickException("cannot tell where the pyfwd program is: "
                               "give --pyfwd PATH")


# --- ctl --------------------------------------------------------------------

def _ctl_group():
    """`pyfwd ctl CMD ARGS`: one click command per control command."""
    from pyfwd.control import server as control

    @cli.group(cls=Group, context_settings=CONTEXT)
    @click.option("--socket", "-s", "sock", default=None, metavar="PATH",
                  help=f"the engine's control socket "
                  f"[default: {control.DEFAULT_PATH}]")
    @click.option("--json", "as_json", is_flag=True,
                  help="print the reply as JSON (for scripts)")
    @click.pass_context
    def ctl(ctx, sock, as_json):
        """Talk to a running engine through its control socket.

        Every change takes effect at once, without dropping established
        flows (halt and del-real move the flows of that real server).
        """
        ctx.obj = {"socket": sock or control.DEFAULT_PATH, "json": as_json}

    for name, spec in control.COMMANDS.items():
        ctl.add_command(_ctl_command(name, spec))
    return ctl


def _ctl_command(name, spec):
    from pyfwd.control import server as control
    from pyfwd.control import ctl as fmt

    def run(ctx, **kw):
        args = {}
        for a in spec.args:
            value = kw[a.name]
            if a.type is int:
                value = int(value)
            elif a.type is dict:
                value = _json_arg(a.name, value)
            args[a.name] = value
        result = control.request(ctx.obj["socket"], name, **args)
        if ctx.obj["json"]:
            click.echo(json.dumps(result, indent=2))
        else:
            click.echo(fmt.format_result(name, result))

    params = [click.Argument([a.name], type=click.Choice(a.choices)
                             if a.choices else int if a.type is int
                             else str)
              for a in spec.args]
    doc = spec.help
    if any(a.type is dict for a in spec.args):
        doc += ("\n\nVIP is a JSON object, or @FILE holding one (a [[vip]] "
                "table of the config file).")
    return click.Command(name, params=params, help=doc,
                         callback=click.pass_context(run),
                         context_settings=CONTEXT)


def _json_arg(what, text):
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise click.ClickException(f"{what}: {exc.strerror}: {text[1:]}")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.ClickException(f"{what}: not JSON: {exc}")
    if not isinstance(value, dict):
        raise click.ClickException(f"{what}: expected a JSON object")
    return value


_ctl_group()


# --- bench ----------------------------------------------------------------

@cli.command()
@click.option("--quick", is_flag=True,
              help="one run of each row with short windows (3 s) instead "
              "of three of 5 s: a first look in a few minutes")
@click.option("--out", "-o", default="bench-results", show_default=True,
              metavar="DIR", help="where results.json, results.md and "
              "results.png go")
@click.option("--only", metavar="NAMES",
              help="comma-separated rows, groups (micro, pps, http) or "
              "patterns (http-*-1m); default: every row")
@click.option("--repeat", type=click.IntRange(1, 20), default=None,
              help="runs of each row (default 3, 1 with --quick)")
@click.option("--seconds", type=click.FloatRange(1, 120), default=None,
              help="measuring window per row (default 5, 3 with --quick)")
@click.option("--connections", type=click.IntRange(1, 1024), default=32,
              show_default=True, help="wrk connections for the HTTP rows")
def bench(quick, out, only, repeat, seconds, connections):
    """Measure DR against NAT, side by side with the kernel and HAProxy.

    \b
    Builds its own namespaces (and removes them, also when interrupted):
      micro   ns per packet of the C core, Maglev build, flow table memory
      pps     64-byte UDP delivered: generator, xdp-kernel, xsk-minimal,
              kernel-nat (references), dr-xdp, nat-xdp, snat-xdp,
              dr-afpacket
      http    wrk to nginx through the VIP, 1k/100k/1m responses, in dr,
              nat, snat, kernel-nat, haproxy-tcp, haproxy-http:
              requests/s, p50/p99, balancer CPU per 1000 requests,
              packets through the balancer per request
    The load runs on CPU 0, the balancer on CPU 1.  Writes DIR/results.json,
    results.md (ratios, the DR : NAT headline, the targets) and results.png.
    Compare figures within one run: ratios, not absolute numbers.
    """
    import sys

    from pyfwd.bench import run as bench_run
    from pyfwd.bench.system import BenchError

    try:
        res = bench_run.run(out, quick=quick, only=only, repeats=repeat,
                            seconds=seconds, connections=connections,
                            log=lambda m: click.echo(m, err=True),
                            argv=["pyfwd", "bench", *sys.argv[2:]])
    except KeyboardInterrupt:
        click.echo(f"interrupted; partial results in {out}", err=True)
        sys.exit(130)
    click.echo(bench_run.main_table(res))
    click.echo(f"written: {out}/results.json, results.md, results.png",
               err=True)
    if res.failures:
        raise click.ClickException(
            f"{len(res.failures)} row run(s) failed: "
            + "; ".join(f"{n}: {m}" for n, m in res.failures[:3]))


# --- doctor ---------------------------------------------------------------

@cli.command()
def doctor():
    """Check the native build, the XDP program and the kernel features."""
    from pyfwd.ops import doctor as doc
    ok = True
    for check in doc.checks():
        mark = "ok  " if check.ok else "FAIL" if check.required else "warn"
        click.echo(f"{mark} {check.name}: {check.detail}")
        ok &= check.ok or not check.required
    if not ok:
        raise click.ClickException("some checks failed")


def main():
    cli(prog_name="pyfwd")


if __name__ == "__main__":
    main()
