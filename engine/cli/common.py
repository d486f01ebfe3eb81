"""What every pyfwd command group shares: the context settings, the group
class that turns a PyfwdError into a one-line error, the root check.
"""

import os

import click

from ..errors import PyfwdError

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

