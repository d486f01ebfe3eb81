"""`pyfwd ctl CMD ARGS`: one click command per control command, made from
control/protocol.py's COMMANDS (the table that also drives the socket's
validation and its help): a required field is an argument, an optional
one an --option.  add-vip also takes the ipvsadm-like form
`ADDR:PORT/PROTO [--scheduler S] [--mode M] [--real R ...]` (addvip.py)."""

import json

import click

from .addvip import VIP_OPTIONS, json_object, vip_table
from .common import CONTEXT, JSON_HELP, Group
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
                         help=JSON_HELP)]


@click.group(cls=Group, context_settings=CONTEXT, params=_options())
@click.pass_context
def ctl(ctx, sock, as_json):
    """Talk to a running engine through its control socket.

    Every change takes effect at once, without dropping established
    flows (halt and del-real move the flows of that real server).
    --socket and --json go before or after the command; under --json an
    error is {"ok": false, "error": MESSAGE} on stdout, with the exit
    status it has without --json.
    """
    ctx.obj = {"socket": sock, "json": as_json}


def _param(a):
    """The click parameter of protocol field a: an argument when required,
    an --option when it has a default."""
    kind = click.Choice(a.choices) if a.choices else \
        int if a.type is int else str
    if a.default is protocol.REQUIRED:
        return click.Argument([a.name], type=kind)
    return click.Option([f"--{a.name}"], type=kind, default=None,
                        metavar=a.name.upper(), help=a.help + (
                            "" if a.default is None
                            else f" [default: {a.default}]"))


def _ctl_command(name, spec):
    """The click command of control command `name` (a protocol.Command):
    its fields as arguments and options, its help as the help."""

    def run(ctx, sock, as_json, **kw):
        sock = sock or ctx.obj["socket"] or control.DEFAULT_PATH
        args = {}
        for a in spec.args:
            value = kw[a.name]
            if value is None:
                continue                # optional, left out
            if a.type is int:
                value = int(value)
            elif a.type is dict:
                value = vip_table(value, kw) if name == "add-vip" else \
                    json_object(a.name, value)
            args[a.name] = value
        result = control.request(sock, name, **args)
        if as_json or ctx.obj["json"]:
            click.echo(json.dumps(result, indent=2))
        else:
            click.echo(fmt.format_result(name, result))

    params = [_param(a) for a in spec.args] + _options()
    doc = spec.help
    if name == "add-vip":
        params[1:1] = list(VIP_OPTIONS.values())
        doc += ("\n\nVIP is ADDR:PORT/PROTO with the options below "
                "(--scheduler and --mode left out: the config file's "
                "defaults), as ipvsadm -A, e.g.\n\n"
                "\b\n  pyfwd ctl add-vip 10.0.0.10:104/tcp --scheduler wlc "
                "--mode dr \\\n      --real 10.0.0.11 --real 10.0.0.12@2"
                "\n\nor a JSON object, or @FILE holding one (a [[vip]] "
                "table of the config file).")
    if name == "rate":
        doc += ("\n\nCPS: new flows, INPPS: packets, INBPS: bytes per "
                "second toward the real servers, averaged as IPVS's "
                "estimator does (an exponentially weighted average of "
                "2-second samples, each weighing 1/4).  The answers of the "
                "real servers (ipvsadm's OutPPS, OutBPS) are not counted "
                "per real server; an L7 VIP's are HAProxy's.")
    if name == "zero":
        doc += ("\n\nThe counters are not reset: the engine keeps a "
                "baseline that ctl's show and stats subtract (rates are "
                "differences: unchanged).  The "
                "Prometheus metrics and the stats file keep counting, "
                "never going down.")
    if name == "flows":
        doc += ("\n\nOne row per flow, the soonest to expire last: "
                "EXPIRES is the time left unless a packet comes (an XDP "
                "fast path flow, `fast`, is listed too: the core keeps "
                "tracking it).  --limit 0 lists them all; past the limit, "
                "how many more there are.  Each loop copies its own table "
                "between bursts: no flow is read half written.")
    return click.Command(name, params=params, help=doc,
                         callback=click.pass_context(run),
                         context_settings=CONTEXT)


for _name, _spec in protocol.COMMANDS.items():
    ctl.add_command(_ctl_command(_name, _spec))
