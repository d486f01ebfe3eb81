"""`pyfwd ctl add-vip`'s VIP argument: a [[vip]] table as JSON (or @FILE),
or the ipvsadm-like form

    pyfwd ctl add-vip 10.0.0.10:104/tcp --scheduler wlc --mode dr \\
        [--name N] [--real ADDR[:PORT][@W] ...] [--persistence S]

which builds the same table: {"address", "port", "protocol", "scheduler",
"mode", "name", "persistence", "real": [{"address", "port", "weight"}]}.
The engine checks it as a [[vip]] table of the config file.
"""

import json

import click

from ..errors import ConfigError
from ..model import MODES, SCHEDULERS, Real, Vip

VIP_OPTIONS = {
    "scheduler": click.Option(["--scheduler"], type=click.Choice(SCHEDULERS),
                              help="how new flows pick a real server "
                              "(ADDR:PORT/PROTO form; required there)"),
    "mode": click.Option(["--mode"], type=click.Choice(MODES),
                         help="the forwarding mode (ADDR:PORT/PROTO form; "
                         "required there)"),
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
    with a JSON object, a missing --scheduler or --mode, or a bad VIP or
    real; click.ClickException for a JSON that is not an object."""
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
        reals = [Real.parse(r) for r in given.get("real", ())]
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    missing = [k for k in ("scheduler", "mode") if k not in given]
    if missing:
        raise click.UsageError(f"VIP {text}: --{' and --'.join(missing)} "
                               "needed (or give a JSON object)")
    table = {"address": str(vip.address), "port": vip.port,
             "protocol": vip.protocol, "scheduler": given["scheduler"],
             "mode": given["mode"]}
    if "name" in given:
        table["name"] = given["name"]
    if "persistence" in given:
        p = given["persistence"]
        table["persistence"] = int(p) if p.isdigit() else p
    table["real"] = [{"address": str(r.address), "weight": r.weight,
                      **({"port": r.port} if r.port else {})}
                     for r in reals]
    return table


def json_object(what, text):
    """The JSON object of `text`, or of the file @PATH;
    click.ClickException naming what is wrong."""
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
