"""`pyfwd lab`: build, inspect and remove namespace labs, and the lessons
that run in them (demo, trace, arp-problem)."""

import json
import sys

import click

from .common import CONTEXT, JSON_OPTION, Group, need_root


def lab_name(default="pyfwd", what="lab name"):
    """The --name option of the lab commands."""
    return click.option("--name", "-n", default=default, show_default=True,
                        help=f"{what}: prefix of its namespaces (a lowercase "
                        "letter, then letters and digits, 12 at most)")


LAB_NAME = lab_name()


@click.group(cls=Group, context_settings=CONTEXT)
def lab():
    """Namespace labs: a client, a balancer and real servers on one machine.

    \b
    Topologies:
      one-arm   client, lb and real servers on one L2 segment (DR, SNAT)
      two-arm   client outside, real servers inside, lb routes between
                (NAT: the lb is the real servers' default gateway)
      one-arm-ha  one-arm with a second balancer, lb2 (an HA pair)
      two-arm-ha  two-arm with a second balancer, lb2; the reals'
                  gateway 192.168.50.1 is held by the active one
      ecmp      a client behind a router (BIRD, ECMP) and three active
                balancers, lb lb2 lb3, announcing the VIP by BGP (DR)
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
                                                     "one-arm-ha",
                                                     "two-arm-ha",
                                                     "ecmp", "tun"]),
              default="one-arm", show_default=True)
@click.option("--reals", "-r", type=int, default=3, show_default=True,
              help="number of real servers (1-16)")
@JSON_OPTION
def lab_up(name, topology, reals, as_json):
    """Build a lab and print its address plan.  --json: {"ok", "name",
    "topology", "namespaces", "bridges": [{"namespace", "ifname"}],
    "links": [{"kind": "veth", "namespace", "ifname", "peer_namespace",
    "peer"}], "plan": as `lab show --json`}."""
    from ..lab import topology as labmod
    need_root("pyfwd lab up")
    built = labmod.Lab(name, topology=topology, reals=reals).up()
    if as_json:
        click.echo(json.dumps({"ok": True, "name": name,
                               "topology": topology, **_made(built),
                               "plan": built.plan().to_dict()}, indent=2))
        return
    click.echo(built.format_plan())
    click.echo(f"\nlab '{name}' is up; `pyfwd lab exec -n {name} client -- "
               "ping -c1 <addr>` runs a command in it, `pyfwd lab down -n "
               f"{name}` removes it")


def _made(built):
    """What Lab.up() made, from its plan: a namespace per node, a bridge
    in each switch's, a veth pair per host interface (its peer a port of
    the switch)."""
    from ..lab.plan import BRIDGE
    plan = built.plan()
    return {"namespaces": sorted(n.namespace for n in plan.nodes),
            "bridges": [{"namespace": n.namespace, "ifname": BRIDGE}
                        for n in plan.switches],
            "links": [{"kind": "veth", "namespace": n.namespace,
                       "ifname": i.name, "peer_namespace": built.ns(i.switch),
                       "peer": i.port}
                      for n in plan.hosts for i in n.interfaces]}


@lab.command("down")
@LAB_NAME
@click.option("--all", "all_", is_flag=True,
              help="remove every pyfwd lab on this machine (only namespaces "
              "pyfwd marked as its own)")
@JSON_OPTION
def lab_down(name, all_, as_json):
    """Remove a lab (its namespaces, veths and bridges).  --json: {"ok",
    "name" (null with --all), "removed": the namespaces (their veths and
    bridges went with them)}."""
    from ..lab import topology as labmod
    need_root("pyfwd lab down")
    if all_:
        removed = labmod.down_all()
    else:
        removed = labmod.Lab.load(name).down()
    if as_json:
        click.echo(json.dumps({"ok": True, "name": None if all_ else name,
                               "removed": removed}))
        return
    click.echo(f"removed {len(removed)} namespaces"
               + (": " + " ".join(removed) if removed else ""))


@lab.command("show")
@LAB_NAME
@JSON_OPTION
def lab_show(name, as_json):
    """Print a running lab's address plan (nodes, interfaces, routes)."""
    from ..lab import topology as labmod
    need_root("pyfwd lab show")
    built = labmod.Lab.load(name)
    if as_json:
        click.echo(json.dumps(built.plan().to_dict(), indent=2))
    else:
        click.echo(built.format_plan())


@lab.command("list")
@JSON_OPTION
def lab_list(as_json):
    """List the labs present on this machine (--json: their names)."""
    from ..lab import topology as labmod
    need_root("pyfwd lab list")
    names = labmod.list_labs()
    if as_json:
        click.echo(json.dumps(names))
        return
    for name in names:
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
    from ..lab import topology as labmod
    need_root("pyfwd lab exec")
    built = labmod.Lab.load(name)
    try:
        rc = built.run(node, list(command), timeout=None).returncode
    except FileNotFoundError:
        raise click.ClickException(f"{command[0]}: command not found")
    sys.exit(rc)


@lab.command("demo")
@click.option("--mode", "-m", type=click.Choice(["dr", "nat", "snat", "tun",
                                                 "l7", "all", "ecmp"]),
              default="all", show_default=True,
              help="the forwarding mode to show; all ends with a table of "
              "the modes side by side; ecmp: three balancers behind a "
              "router's ECMP, by BGP (not in all)")
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
    segment; NAT: the balancer between two; TUN: the real servers behind a
    router), sets up the real servers, starts the balancer, sends requests
    and a 20 MB download through the VIP, and explains from a capture at
    the switch ports which real server answered, which client address it
    saw, which way the reply went and how many frames and bytes crossed
    the balancer in each direction.  Every lab is removed at the end.
    """
    from ..lab import demo
    from ..lab import modes as labmodes
    need_root("pyfwd lab demo")
    if pacs:
        from ..lab import pacs as pacsmod
        missing = pacsmod.missing()
        if missing:
            raise click.ClickException(
                "--pacs needs " + ", ".join(missing) + " (./tools/run setup "
                "installs them)")
    if mode == "ecmp":
        from ..lab import ecmpdemo
        if not ecmpdemo.run(click.echo, name=name):
            raise click.ClickException("a connection did not survive "
                                       "(see above)")
        return
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
    from ..lab import trace
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
    from ..lab import arpproblem
    need_root("pyfwd lab arp-problem")
    if not arpproblem.run(click.echo, name=name, reals=reals):
        raise click.ClickException("the lesson did not show what it should "
                                   "(see above)")
