"""pyfwd's command line (click).  Thin: every command calls a module API.

A PyfwdError becomes one line on stderr and exit status 1; a traceback is a
bug.
"""

import json
import os
import sys

import click

from . import __version__
from .errors import PyfwdError

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
      pyfwd lab demo        build a namespace lab and show traffic through it
      pyfwd lab --help      build, inspect and remove namespace labs
      pyfwd doctor          check the build, the kernel and the XDP program
    """


# --- lab ------------------------------------------------------------------

LAB_NAME = click.option("--name", "-n", default="pyfwd", show_default=True,
                        help="lab name: prefix of its namespaces "
                        "(lowercase letters and digits, 12 at most)")


@cli.group(cls=Group, context_settings=CONTEXT)
def lab():
    """Namespace labs: a client, a balancer and real servers on one machine.

    \b
    Topologies:
      one-arm   client, lb and real servers on one L2 segment (DR, SNAT)
      two-arm   client outside, real servers inside, lb routes between
                (NAT: the lb is the real servers' default gateway)
    Namespaces are named NAME-client, NAME-lb, NAME-real1.. and NAME-sw*;
    `pyfwd lab show` prints the address plan.
    """


@lab.command("up")
@LAB_NAME
@click.option("--topology", "-t", type=click.Choice(["one-arm", "two-arm"]),
              default="one-arm", show_default=True)
@click.option("--reals", "-r", type=int, default=3, show_default=True,
              help="number of real servers (1-16)")
def lab_up(name, topology, reals):
    """Build a lab and print its address plan."""
    from . import lab as labmod
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
    from . import lab as labmod
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
    from . import lab as labmod
    need_root("pyfwd lab show")
    built = labmod.Lab.load(name)
    if as_json:
        click.echo(json.dumps(built.plan().to_dict(), indent=2))
    else:
        click.echo(built.format_plan())


@lab.command("list")
def lab_list():
    """List the labs present on this machine."""
    from . import lab as labmod
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
    from . import lab as labmod
    need_root("pyfwd lab exec")
    built = labmod.Lab.load(name)
    try:
        rc = built.run(node, list(command), timeout=None).returncode
    except FileNotFoundError:
        raise click.ClickException(f"{command[0]}: command not found")
    sys.exit(rc)


@lab.command("demo")
@click.option("--name", "-n", default="demo", show_default=True,
              help="lab name used while the demo runs")
@click.option("--topology", "-t", type=click.Choice(["one-arm", "two-arm",
                                                     "all"]),
              default="all", show_default=True)
@click.option("--reals", "-r", type=int, default=3, show_default=True)
def lab_demo(name, topology, reals):
    """Build the lab, send real traffic through it, explain, tear down."""
    from . import demo
    need_root("pyfwd lab demo")
    topologies = ("one-arm", "two-arm") if topology == "all" else (topology,)
    if not demo.run(click.echo, topologies, reals, name=name):
        raise click.ClickException("some requests failed (see above)")


# --- doctor ---------------------------------------------------------------

@cli.command()
def doctor():
    """Check the native build, the XDP program and the kernel features."""
    from . import doctor as doc
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
