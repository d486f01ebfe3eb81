"""The balancer's commands: `pyfwd start` (run it), `pyfwd cleanup` (an
XDP program left behind), `pyfwd check-config`."""

import logging
import os
import sys

import click

from .common import JSON_OPTION, need_root
from ..control.ha import ROLES
from ..control.server import DEFAULT_PATH
from ..errors import ConfigError, DataplaneError, PyfwdError
from ..model import MODES, SCHEDULERS, SNAT_PORTS

log = logging.getLogger("pyfwd")

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
              "snat: the source too; tun: wrap in IPIP to reals on any "
              "subnet, replies bypass us (--vip/--real only: with --config, "
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
              "and a live dashboard at http://ADDR:PORT/ (loopback unless "
              "ADDR says otherwise; e.g. 10104, 127.0.0.1:10104, "
              "[::1]:10104)")
@click.option("--dashboard-token", metavar="FILE",
              type=click.Path(dir_okay=False),
              help="let the dashboard drain, halt, online and weigh real "
              "servers for whoever gives the token in FILE (owned by the "
              "engine's user, mode 600: `head -c 32 /dev/urandom | base64 "
              "> FILE`); default [engine] dashboard_token, else the "
              "dashboard is read-only")
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
@click.option("--poll", type=click.Choice(["busy", "adaptive"]),
              default=None,
              help="with --busy-poll: busy spins all the time; adaptive "
              "spins while frames come and sleeps in poll() once idle "
              "(less CPU when the load is light; default: [engine] poll, "
              "else adaptive).  Either sleeps in poll() when idle where "
              "busy polling cannot engage (no NAPI id: AF_XDP copy mode, "
              "veth), as `pyfwd ctl status` says")
@click.option("--frames", type=int, default=None, metavar="N",
              help="AF_XDP UMEM frames (4 KiB) per queue (default: [engine] "
              "frames, else twice the fill ring per interface)")
@click.option("--rx-ring", type=int, default=None, metavar="N",
              help="AF_XDP RX ring size, a power of two (default 2048)")
@click.option("--tx-ring", type=int, default=None, metavar="N",
              help="AF_XDP TX ring size, a power of two (default 2048)")
@click.option("--fill-ring", type=int, default=None, metavar="N",
              help="AF_XDP fill ring size, a power of two (default 4096)")
@click.option("--comp-ring", type=int, default=None, metavar="N",
              help="AF_XDP completion ring size, a power of two (default "
              "2048)")
@click.option("--fastpath", type=click.Choice(["off", "xdp"]), default=None,
              help="xdp: established flows are rewritten and sent by the "
              "XDP program itself, new flows and state changes stay on "
              "AF_XDP (docs/fastpath.md); default [engine] fastpath, else "
              "off; a reload does not change it")
@click.option("--queues", type=click.IntRange(1, 64), default=None,
              help="RX queues to serve (default: all)")
@click.option("--flows", type=click.IntRange(64, 1 << 26), default=None,
              help="flow table slots per queue, 72 bytes each; a DR flow "
              "takes one, a NAT/SNAT flow two (default: 2M for DR; with "
              "NAT/SNAT 4M in all, split between the queues, 1M each at "
              "least)")
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
              "them at a restart (default: [engine] state_file, else under "
              "systemd's StateDirectory= $STATE_DIRECTORY/<config file's "
              "name without .toml>.state, else the config file's path + "
              ".state; with --vip/--real, none: they end with the engine)")
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
          copy_mode, busy_poll, poll, frames, rx_ring, tx_ring, fill_ring,
          comp_ring, queues, flows, neighbour_stale, stats_file, role,
          standby, log_level, state_file=None, fastpath=None,
          dashboard_token=None):
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

    SIGHUP reads --config again (as `pyfwd ctl reload`; a bad file is
    logged and the running config kept).  Under systemd (Type=notify,
    tools/systemd/pyfwd.service) it says READY=1 once forwarding,
    RELOADING=1/READY=1 around a reload, STOPPING=1, and WATCHDOG=1 only
    while every data-plane loop and the control thread are alive.

    \b
    Exit status:
      0  stopped by SIGTERM or SIGINT
      1  failed: a runtime error, or a start-up one not below
      2  usage or configuration error (options, the file, the interfaces):
         starting again will not help
      3  the data plane was refused (loading the BPF program, attaching
         XDP, AF_XDP or raw-socket rings: a missing capability, another
         XDP program on the interface, the driver)
      4  not root
    """
    try:
        cfg, ports, metrics_addr = _start_config(
            click.get_current_context(), iface, vips, reals, config_path,
            mode, inside_iface, snat_address, snat_ports, scheduler,
            control_socket, metrics, role, standby, neighbour_stale)
        cfg = cfg.with_flags(poll=poll, dashboard_token=dashboard_token,
                             rings=dict(frames=frames, rx_ring=rx_ring,
                                        tx_ring=tx_ring, fill_ring=fill_ring,
                                        comp_ring=comp_ring))
    except ConfigError as exc:
        raise Exit(EXIT_USAGE, exc) from None
    if os.geteuid() != 0:
        raise Exit(EXIT_NOT_ROOT, "pyfwd start needs root (BPF, AF_XDP "
                   "and the interfaces); run it with sudo or as a service")
    token = dashboard_token_of(cfg, metrics_addr)
    logging_setup(log_level)
    _run(cfg, ports, (metrics_addr, token), dict(
        xdp_mode=xdp_mode, copy_mode=copy_mode, busy_poll=busy_poll,
        queues=queues, flows=flows, stats_file=stats_file, backend=backend,
        fastpath=fastpath or cfg.fastpath,
        config_path=os.path.abspath(config_path) if config_path else None,
        state_file=state_file_of(state_file, config_path, cfg.state_file)))


# pyfwd start's exit statuses (its --help and docs/operating say them).
EXIT_STOPPED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2          # click's own for a usage error too
EXIT_DATAPLANE = 3
EXIT_NOT_ROOT = 4


class Exit(click.ClickException):
    """A one-line error and pyfwd start's exit status for it."""

    def __init__(self, code, message):
        super().__init__(str(message))
        self.exit_code = code


def _start_config(ctx, iface, vips, reals, config_path, mode, inside_iface,
                  snat_address, snat_ports, scheduler, control_socket,
                  metrics, role, standby, neighbour_stale):
    """(config, SNAT ports, metrics address) from the options and the file;
    UsageError or ConfigError when they say nothing that can run."""
    from ..control import config as config_mod
    from ..control.metrics_http import parse_address
    if config_path and (vips or reals):
        raise click.UsageError("give either --config or --vip/--real")
    if config_path:
        refuse_vip_flags(ctx, ("mode", "scheduler"))
    if standby:
        if role == "active":
            raise click.UsageError("--standby and --role active: give one "
                                   "role")
        role = "standby"
    if config_path:
        # the command line's role, not the file's, is checked against the
        # file's VIPs
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
    return cfg, ports, metrics_addr


def dashboard_token_of(cfg, metrics_addr):
    """The dashboard's token file (control.web.token.TokenFile: read
    again when it changes) from cfg, or None (read-only); Exit (usage)
    when the file will not do, or when there is no metrics listener to
    serve the dashboard."""
    from ..control.web.token import TokenFile
    if not cfg.dashboard_token:
        return None
    if not metrics_addr:
        raise Exit(EXIT_USAGE, "--dashboard-token (or [engine] "
                   "dashboard_token) needs --metrics: the dashboard is on "
                   "the metrics listener")
    try:
        return TokenFile(cfg.dashboard_token)
    except ConfigError as exc:
        raise Exit(EXIT_USAGE, exc) from None


def _run(cfg, ports, web, options):
    """Start the engine and its servers, tell the service manager, serve
    until a stop signal (SIGHUP: reload); exits through Exit on failure.
    web: (the metrics listener's address or None, the dashboard's
    token or None)."""
    import signal

    from ..control.bgp import BgpSpeaker
    from ..control.engine import Engine
    from ..control.metrics_http import MetricsServer
    from ..control.notify import Notifier
    from ..control.server import ControlServer
    from ..control.web import Dashboard
    from ..ops.doctor import warn_at_start

    notifier = Notifier()
    signals = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: signals.append(signum))
    try:
        # `pyfwd doctor`'s interface checks, as warnings: start carries on
        warn_at_start(cfg.iface, cfg.inside_iface,
                      backend=options["backend"],
                      modes={s.mode for s in cfg.services},
                      queues=options["queues"],
                      fastpath=options["fastpath"] == "xdp")
        engine = Engine(cfg.iface, cfg.services,
                        inside_iface=cfg.inside_iface,
                        snat_address=cfg.snat_address, snat_ports=ports,
                        role=cfg.role, ha_options=cfg.ha,
                        neighbour_stale=cfg.neighbour_stale,
                        neighbour_limits=cfg.neighbour_limits,
                        timeouts=cfg.timeouts,
                        new_flows_per_second=cfg.new_flows_per_second,
                        rings=cfg.rings, poll=cfg.poll,
                        tun=cfg.tun_sources, **options)
        engine.start()
    except ConfigError as exc:
        raise Exit(EXIT_USAGE, exc) from None
    except DataplaneError as exc:
        raise Exit(EXIT_DATAPLANE, exc) from None
    except PyfwdError as exc:
        raise Exit(EXIT_FAILED, exc) from None
    servers = []
    try:
        servers.append(ControlServer(engine, cfg.control_socket).start())
        if cfg.bgp.enabled:     # BIRD announces the VIPs: after the engine
            engine.bgp = BgpSpeaker(cfg.bgp, cfg.iface)
            engine.bgp.start()
            engine.bgp.follow(engine)
        metrics_addr, token = web
        if metrics_addr:    # the dashboard's actions: ctl's serialized path
            app = Dashboard(engine, servers[0].handle_line, token)
            servers.append(MetricsServer(engine.stats, metrics_addr,
                                         web=app).start())
            click.echo(f"metrics at {servers[-1].url}, dashboard at "
                       f"{servers[-1].url[:-len('metrics')]} ("
                       f"{'actions with the token' if token else 'read-only'}"
                       ")", err=True)
        notify_reloads(engine, notifier)
        notifier.ready(forwarding(engine))
        serve(engine, servers[0], notifier, signals)
    except PyfwdError as exc:
        raise Exit(EXIT_FAILED, exc) from None
    finally:
        notifier.stopping()
        if engine.bgp:          # withdrawn first, while traffic flows
            engine.bgp.stop()
        for server in reversed(servers):
            server.stop()
        engine.stop()
        s = engine.stats()["core"]
        click.echo(f"stopped: {s['rx']} frames in, {s['tx']} forwarded, "
                   f"{s['flows_new']} flows, {s['verdict']['drop']} "
                   "dropped", err=True)
        notifier.close()


def serve(engine, control, notifier, signals, *, tick=0.2):
    """The main loop, until SIGINT or SIGTERM lands in `signals`: reload on
    SIGHUP (here, not in the signal handler, and through the control
    server, so that it waits for the ctl commands in progress); WATCHDOG=1
    every notifier.watchdog_interval() while engine.liveness() finds
    nothing wrong, nothing otherwise (the service manager then restarts
    us)."""
    import signal
    import time

    interval = notifier.watchdog_interval()
    tick = min(tick, interval) if interval else tick
    next_beat = 0.0
    dead = None
    while True:
        while signals and signals[0] == signal.SIGHUP:
            signals.pop(0)
            reload_config(control, engine)
        if signals:
            return signals[0]
        now = time.monotonic()
        if interval and now >= next_beat:
            next_beat = now + interval
            problems = engine.liveness()
            if not problems:
                notifier.alive()
                if dead:
                    log.warning("alive again: watchdog resumed")
                    notifier.status(forwarding(engine))
            else:
                if dead is None:
                    log.error("not alive, watchdog stopped: %s",
                              "; ".join(problems))
                notifier.status("not alive: " + "; ".join(problems))
            dead = problems or None
        time.sleep(tick)


def reload_config(control, engine):
    """SIGHUP: the control command `reload` (between RELOADING=1 and
    READY=1: notify_reloads); a failure is logged and the running config
    stays."""
    import json
    log.info("SIGHUP: reloading %s", engine.config_path)
    reply = json.loads(control.handle("reload", ()))
    if not reply["ok"]:
        log.error("reload failed, the running config stays: %s",
                  reply["error"])


def notify_reloads(engine, notifier):
    """Every reload of engine, by SIGHUP or `pyfwd ctl reload`, between
    RELOADING=1 and READY=1 (STATUS= says what it serves, or that the
    reload failed and the running config stays).  It wraps the engine's
    reload, which the control server calls."""
    reload = engine.reload

    def reload_and_notify():
        notifier.reloading()
        try:
            summary = reload()
        except Exception as exc:
            notifier.ready(f"reload failed, running config kept: {exc}")
            raise
        notifier.ready(forwarding(engine))
        return summary

    engine.reload = reload_and_notify


def forwarding(engine):
    """STATUS= of a running engine: what it serves, where, how."""
    st = engine.status()
    info = engine.info
    how = (f"XDP {info.xdp_mode}, AF_XDP {info.copy_mode}"
           if info.backend == "xdp" else "raw sockets")
    return (f"forwarding: {st['vips']} VIP(s), {st['reals']} real "
            f"server(s) on {engine.iface} ({how}), {engine.role}")


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
    """Log lines on stderr: with a time stamp on a terminal or in a file;
    with a syslog priority prefix (`<3>`) and no time stamp when stderr is
    the journal (it stamps and ranks them itself: `journalctl -p err`)."""
    handler = logging.StreamHandler()
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s pyfwd %(levelname)s %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def stderr_is_journal(env=None, fd=None):
    """True when stderr is the journal: systemd sets $JOURNAL_STREAM to its
    DEVICE:INODE, and stderr is that file still (not redirected since)."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(sys.stderr.fileno() if fd is None else fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def state_file_of(given, config_path, configured, env=None):
    """Where pyfwd start keeps ctl's changes: --state-file `given`; else
    [engine] state_file (`configured`, None when the file has none; a
    relative one is the config directory's: control.changes.state_path);
    else, with a config file and $STATE_DIRECTORY set (systemd's
    StateDirectory=, the first of a ':' list),
    $STATE_DIRECTORY/<config file's stem>.state; else None, which
    state_path makes `<config>.state` (or nothing, with --vip/--real)."""
    if given:
        return os.path.abspath(given)
    directory = (os.environ if env is None else env).get(
        "STATE_DIRECTORY", "").split(":")[0]
    if configured or not config_path or not directory:
        return configured
    stem = os.path.splitext(os.path.basename(config_path))[0]
    return os.path.join(directory, f"{stem}.state")


class JournalFormatter(logging.Formatter):
    """`<N>message`: N the syslog priority of the record's level
    (sd-daemon(3)'s prefixes, which the journal reads)."""

    PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4,
                  logging.ERROR: 3, logging.CRITICAL: 2}

    def __init__(self):
        super().__init__("%(message)s")

    def format(self, record):
        prio = self.PRIORITIES.get(record.levelno, 6 if record.levelno <
                                   logging.WARNING else 3)
        text = super().format(record)
        # every line of a multi-line record (a traceback) keeps the rank
        return "\n".join(f"<{prio}>{line}" for line in text.split("\n"))


@click.command()
@click.option("--iface", "-i", required=True, metavar="IF")
@JSON_OPTION
def cleanup(iface, as_json):
    """Remove an XDP program left on IF by another attach mode.

    A running engine holds its program with a bpf_link: that one is not
    touched (stop the engine instead).  --json: {"ok", "iface",
    "removed": the program's id, or null when none was attached}.
    """
    from ..dataplane.io import xdp_cleanup
    from ..neighbours.kernel import interface
    need_root("pyfwd cleanup")
    ifindex = interface(iface)[0]
    prog = xdp_cleanup(ifindex)
    if as_json:
        import json
        click.echo(json.dumps({"ok": True, "iface": iface,
                               "removed": prog or None}))
        return
    click.echo(f"{iface}: removed XDP program {prog}" if prog else
               f"{iface}: no XDP program attached")


@click.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
@JSON_OPTION
def check_config(file, as_json):
    """Validate a config FILE without touching anything.  --json: {"ok",
    "file", "vips": [{"name", "vip", "mode", "scheduler", "reals"}],
    "notes"}."""
    from ..control import config as config_mod
    from ..control.bgp.speaker import check_config as check_bird
    from ..control.l7.check import check_haproxy
    cfg = config_mod.load(file)
    l7_note = check_haproxy(cfg.services)
    bgp_note = check_bird(cfg.bgp, {s.vip.address for s in cfg.services})
    notes = [note for note in (l7_note, bgp_note) if note]
    if as_json:
        import json
        click.echo(json.dumps({
            "ok": True, "file": file, "notes": notes,
            "vips": [{"name": s.label, "vip": str(s.vip), "mode": s.mode,
                      "scheduler": s.scheduler,
                      "reals": [str(r) for r in s.reals]}
                     for s in cfg.services]}, indent=2))
        return
    n = sum(len(s.reals) for s in cfg.services)
    click.echo(f"{file}: ok: {len(cfg.services)} VIP(s), {n} real "
               "server(s)")
    for note in notes:
        click.echo(f"{file}: {note}")
