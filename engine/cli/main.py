"""The `pyfwd` program: the root group and its commands, one module of
pyfwd.cli per group.  main() is the console script.
"""

import os
import platform

import click

from . import balancer, bench, ctl, ha, lab, ops, soak
from .common import CONTEXT, Group


def _version(ctx, param, value):
    """--version: the version, where this pyfwd lives and its Python (as
    pip --version does: which of several installs answered)."""
    if not value or ctx.resilient_parsing:
        return
    import pyfwd
    where = os.path.dirname(os.path.abspath(pyfwd.__file__))
    click.echo(f"pyfwd {pyfwd.__version__} from {where} "
               f"(Python {platform.python_version()})")
    ctx.exit()


@click.group(cls=Group, context_settings=CONTEXT)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_version, help="Show the version, where pyfwd is "
              "installed, and exit.")
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
      pyfwd soak            minutes of load and faults in a lab, then verdicts
    """


for command in (lab.lab, balancer.start, balancer.cleanup,
                balancer.check_config, ops.realserver, ops.arp_check,
                ops.doctor, ha.ha, ctl.ctl, bench.bench, soak.soak):
    cli.add_command(command)


def main():
    cli(prog_name="pyfwd")
