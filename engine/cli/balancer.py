"""The balancer's commands: `pyfwd start` (run it), `pyfwd cleanup` (an
XDP program left behind), `pyfwd check-config`."""

import os

import click

from .common import need_root
from ..control.ha import ROLES
from ..control.server import DEFAULT_PATH
from ..model import MODES, SCHEDULERS, SNAT_PORTS

# The modes of the C core (l7 VIPs come from a config file only).
L4_MODES = [m for m in MODES if m != "l7"]


@click.command()
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
@click.option("--mode", type=click.Choice(L4_MODES), default="dr", show_default=True,
              help="dr: rewrite MACs, replies bypass us; nat: rewrite the "
              "destination (two-arm: we are the real servers' gateway); "
              "snat: the source too (--vip/--real only: with --config, "
              "each [[vip]] sets its own)")
@click.option("--inside-iface", metavar="IF",
              help="two-arm NAT: the interface on the real servers' side")
@click.option("--snat-address", metavar="ADDR",
              help="SNAT source address (default: --iface's first IPv4)")
@click.option("--snat-ports", metavar="LOW-HIGH",
              help="SNAT source ports (keep them out of the kernel's "
              "ip_local_port_range)  [default: %d-%d]" % SNAT_PORTS)
@click.option("--scheduler", type=click.Choice(SCHEDULERS),
              default="maglev", show_default=True,
              help="how new flows pick a real server (--vip/--real only): "
              "round robin, weighted, least connections, weighted least "
              "connections, source hash, Maglev consistent hashing")
@click.option("--control-socket", metavar="PATH",
              help="the control socket for `pyfwd ctl` (default: "
              f"[engine] control_socket, else {DEFAULT_PATH})")
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
@click.option("--neighbour-stale", type=float, default=None,
              metavar="SECONDS",
              help="keep a real server's last MAC this long while ARP or "
              "neighbour discovery goes unanswered, so one lost answer drops "
              "no flows (0: drop it at once; default: [engine] "
              "neighbour_stale, else 60)")
@click.option("--stats-file", type=click.Path(dir_okay=False),
              help="write the counters as JSON here every second")
@click.option("--state-file", type=click.Path(dir_okay=False),
              help="keep the changes made by `pyfwd ctl` here, to replay "
              "them at a restart (default: [engine] state_file, else the "
              "config file's path + .state; with --vip/--real, none: they "
              "end with the engine)")
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
          copy_mode, busy_poll, queues, flows, neighbour_stale, stats_file,
          role, standby, log_level, state_file=None):
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

    from ..control import config as config_mod
    from ..control.engine import Engine
    from ..control.metrics import MetricsServer, parse_address
    from ..control.server import ControlServer
    from ..ops.doctor import warn_at_start

    if config_path and (vips or reals):
        raise click.UsageError("give either --config or --vip/--real")
    if config_path:
        refuse_vip_flags(click.get_current_context(), ("mode", "scheduler"))
    if standby:
        if role == "active":
            raise click.UsageError("--standby and --role active: give one "
                                   "role")
        role = "standby"
    if config_path:
        # the command line's role, not the file's, is checked against the
        # file's VIPs (standby refuses L7 VIPs)
        cfg = config_mod.load(config_path, role=role)
    else:
        if not reals:
            raise click.UsageError("no --real given")
        cfg = config_mod.Config(None, services=config_mod.parse_services(
            vips, reals, scheduler, mode))
    cfg = cfg.with_flags(iface=iface, inside_iface=inside_iface,
                         snat_address=snat_address, snat_ports=snat_ports,
                         control_socket=control_socket, metrics=metrics,
                         role=role, neighbour_stale=neighbour_stale)
    if not cfg.iface:
        raise click.UsageError("no --iface given (nor [engine] iface)")
    ports = cfg.ports()
    metrics_addr = parse_address(cfg.metrics) if cfg.metrics else None
    need_root("pyfwd start")
    logging_setup(log_level)
    # `pyfwd doctor`'s interface checks, as warnings: start carries on
    warn_at_start(cfg.iface, cfg.inside_iface, backend=backend,
                  modes={s.mode for s in cfg.services}, queues=queues)
    engine = Engine(cfg.iface, cfg.services, inside_iface=cfg.inside_iface,
                    snat_address=cfg.snat_address, snat_ports=ports,
                    xdp_mode=xdp_mode, copy_mode=copy_mode,
                    busy_poll=busy_poll, queues=queues, flows=flows,
                    stats_file=stats_file, backend=backend, role=cfg.role,
                    neighbour_stale=cfg.neighbour_stale,
                    state_file=os.path.abspath(state_file) if state_file
                    else cfg.state_file,
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
        servers.append(ControlServer(engine, cfg.control_socket).start())
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


def refuse_vip_flags(ctx, names):
    """UsageError if one of these options (a VIP's own settings, for
    --vip/--real) was given: under --config each [[vip]] says its own, and
    a flag over them all would not last, since `pyfwd ctl reload` reads the
    file again."""
    from click.core import ParameterSource
    given = [f"--{n}" for n in names
             if ctx.get_parameter_source(n) not in (ParameterSource.DEFAULT,
                                                    None)]
    if given:
        raise click.UsageError(
            f"{' and '.join(given)} with --config: each [[vip]] sets its own "
            "(mode = ..., scheduler = ...; a flag over them all would be "
            "undone by `pyfwd ctl reload`, which reads the file); give "
            f"{' and '.join(given)} with --vip/--real only")


def logging_setup(level):
    import logging
    logging.basicConfig(level=level.upper(), format="%(asctime)s pyfwd "
                        "%(levelname)s %(message)s", datefmt="%H:%M:%S")


@click.command()
@click.option("--iface", "-i", required=True, metavar="IF")
def cleanup(iface):
    """Remove an XDP program left on IF by another attach mode.

    A running engine holds its program with a bpf_link: that one is not
    touched (stop the engine instead).
    """
    from ..dataplane.io import xdp_cleanup
    from ..neighbours.kernel import interface
    need_root("pyfwd cleanup")
    ifindex = interface(iface)[0]
    prog = xdp_cleanup(ifindex)
    click.echo(f"{iface}: removed XDP program {prog}" if prog else
               f"{iface}: no XDP program attached")


@click.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
def check_config(file):
    """Validate a config FILE without touching anything."""
    from ..control import config as config_mod
    from ..control.l7.check import check_haproxy
    cfg = config_mod.load(file)
    l7_note = check_haproxy(cfg.services)
    n = sum(len(s.reals) for s in cfg.services)
    click.echo(f"{file}: ok: {len(cfg.services)} VIP(s), {n} real "
               "server(s)")
    if l7_note:
        click.echo(f"{file}: {l7_note}")
