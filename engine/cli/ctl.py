"""`pyfwd ctl CMD ARGS`: one click command per control command, made from
control/protocol.py's COMMANDS (the table that also drives the socket's
validation and its help)."""

import json

import click

from .common import CONTEXT, Group
from ..control import ctl as fmt
from ..control import protocol
from ..control import server as control


def _options():
    """--socket and --json: the group's and every command's, so that
    `pyfwd ctl --json show` and `pyfwd ctl show --json` are one."""
    return [click.Option(["--socket", "-s", "sock"], default=None,
                         metavar="PATH", help="the engine's control socket "
                         f"[default: {control.DEFAULT_PATH}]"),
            click.Option(["--json", "as_json"], is_flag=True,
                         help="print the reply as JSON (for scripts)")]


@click.group(cls=Group, context_settings=CONTEXT, params=_options())
@click.pass_context
def ctl(ctx, sock, as_json):
    """Talk to a running engine through its control socket.

    Every change takes effect at once, without dropping established
    flows (halt and del-real move the flows of that real server).
    --socket and --json go before or after the command.
    """
    ctx.obj = {"socket": sock, "json": as_json}


def _ctl_command(name, spec):
    """The click command of control command `name` (a protocol.Command):
    its fields as arguments, its help as the help."""

    def run(ctx, sock, as_json, **kw):
        sock = sock or ctx.obj["socket"] or control.DEFAULT_PATH
        args = {}
        for a in spec.args:
            value = kw[a.name]
            if a.type is int:
                value = int(value)
            elif a.type is dict:
                value = _json_arg(a.name, value)
            args[a.name] = value
        result = control.request(sock, name, **args)
        if as_json or ctx.obj["json"]:
            click.echo(json.dumps(result, indent=2))
        else:
            click.echo(fmt.format_result(name, result))

    params = [click.Argument([a.name], type=click.Choice(a.choices)
                             if a.choices else int if a.type is int
                             else str)
              for a in spec.args] + _options()
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


for _name, _spec in protocol.COMMANDS.items():
    ctl.add_command(_ctl_command(_name, _spec))
