"""`pyfwd ctl add-vip`'s VIP argument: a [[vip]] table as JSON (or @FILE),
or the ipvsadm-like form

    pyfwd ctl add-vip 10.0.0.10:104/tcp [--scheduler wlc] [--mode dr] \\
        [--name N] [--real ADDR[:PORT][@W] ...] [--persistence S]

which builds the same table: {"address", "port", "protocol", "scheduler",
"mode", "name", "persistence", "real": [{"address", "port", "weight"}]}.
--scheduler and --mode default to what a [[vip]] table without them gets
(model.Service's defaults).  The engine checks it as a [[vip]] table of
the config file.
"""

import json

import click

from ..errors import ConfigError
from ..model import MODES, SCHEDULERS, Real, Service, Vip

VIP_OPTIONS = {
    "scheduler": click.Option(["--scheduler"], type=click.Choice(SCHEDULERS),
                              help="how new flows pick a real server "
                              "(ADDR:PORT/PROTO form) [default: "
                              f"{Service.scheduler}, as in the config file]"),
    "mode": click.Option(["--mode"], type=click.Choice(MODES),
                         help="the forwarding mode (ADDR:PORT/PROTO form) "
                         f"[default: {Service.mode}, as in the config "
                         "file]"),
    "name": click.Option(["--name"], help="the VIP's name (ctl and the "
                         "metrics use it)"),
    "real": click.Option(["--real"], multiple=True,
                         metavar="ADDR[:PORT][@W]", help="a real server "
                         "(repeat the option for more)"),
    "persistence": click.Option(["--persistence"], metavar="SECONDS",
                                help="source-IP affinity for this long "
                                "(L7: \"source\" or seconds)"),
}


def vip_table(text, options):
    """The [[vip]] table of add-vip's VIP argument `text` and its options
    ({name: value} of VIP_OPTIONS' names).  click.UsageError for options
    with a JSON object, or a bad VIP or real (--scheduler and --mode
    default to model.Service's, a [[vip]] table's); click.ClickException
    for a JSON that is not an object."""
    given = {k: v for k, v in options.items()
             if k in VIP_OPTIONS and v not in (None, ())}
    if text.lstrip().startswith(("{", "@")):
        if given:
            raise click.UsageError(
                "--" + ", --".join(given) + ": only with the "
                "ADDR:PORT/PROTO form of VIP, not with a JSON object")
        return json_object("vip", text)
    try:
        vip = Vip.parse(text)
    except ConfigError as exc:
        raise click.UsageError(_not_a_vip(text, exc)) from None
    try:
        reals = [Real.parse(r) for r in given.get("real", ())]
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    table = {"address": str(vip.address), "port": vip.port,
             "protocol": vip.protocol,
             "scheduler": given.get("scheduler", Service.scheduler),
             "mode": given.get("mode", Service.mode)}
    if "name" in given:
        table["name"] = given["name"]
    if "persistence" in given:
        p = given["persistence"]
        table["persistence"] = int(p) if p.isdecimal() else p
    table["real"] = [{"address": str(r.address), "weight": r.weight,
                      **({"port": r.port} if r.port else {})}
                     for r in reals]
    return table


def _not_a_vip(text, exc):
    """The message for a VIP argument that Vip.parse refused (exc): JSON
    that is not an object (an array, a number) is neither form."""
    try:
        json.loads(text)
    except ValueError:
        return str(exc)
    return (f"VIP {text!r}: neither a JSON object nor ADDR:PORT/PROTO "
            "(e.g. 10.0.0.100:80/tcp)")


def json_object(what, text):
    """The JSON object of `text`, or of the file @PATH;
    click.ClickException naming what is wrong."""
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise click.ClickException(f"{what}: {exc.strerror}: {text[1:]}")
        except UnicodeDecodeError as exc:
            raise click.ClickException(f"{what}: not UTF-8 (byte "
                                       f"{exc.start}): {text[1:]}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.ClickException(f"{what}: not JSON: {exc}")
    if not isinstance(value, dict):
        raise click.ClickException(f"{what}: expected a JSON object")
    return value
