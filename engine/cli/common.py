"""What every pyfwd command group shares: the context settings, the group
class that turns a PyfwdError into a one-line error (a JSON object under
--json), the root check.
"""

import json
import os

import click

from ..errors import PyfwdError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
# What --json says of errors, in the help of the commands that have it.
JSON_HELP = ("print JSON (for scripts); an error is then "
             "{\"ok\": false, \"error\": MESSAGE} on stdout, with the same "
             "exit status")
_JSON_META = "pyfwd.json"       # ctx.meta: --json was on the command line
# The --json option of a command (as_json): the Group below makes its
# errors JSON too.
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help=JSON_HELP)


class JsonError(click.ClickException):
    """An error under --json: {"ok": false, "error": MESSAGE} on stdout,
    with the exit status the error had."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None):
        click.echo(json.dumps({"ok": False, "error": self.format_message()}))


class Group(click.Group):
    """A click group that turns PyfwdError into a clean one-line error,
    and, when --json is on the command line (before any `--`), every
    error of its commands into a JsonError: usage errors included."""

    def parse_args(self, ctx, args):
        argv = list(args)
        if "--" in argv:
            argv = argv[:argv.index("--")]
        if "--json" in argv:
            ctx.meta[_JSON_META] = True
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as exc:
            raise _as_json(ctx, exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except JsonError:
            raise
        except PyfwdError as exc:
            raise _as_json(ctx, click.ClickException(str(exc))) from None
        except click.ClickException as exc:
            raise _as_json(ctx, exc) from None


def _as_json(ctx, exc):
    if isinstance(exc, JsonError) or not ctx.meta.get(_JSON_META):
        return exc
    return JsonError(exc.format_message(), exc.exit_code)


def need_root(what):
    if os.geteuid() != 0:
        raise click.ClickException(f"{what} needs root (network namespaces "
                                   "and BPF); run it with sudo")
