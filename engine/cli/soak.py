"""`pyfwd soak`: a soak and fault run in a namespace lab (pyfwd.lab.soak)."""

import click

from ..errors import PyfwdError
from .common import CONTEXT, need_root


@click.command(context_settings=CONTEXT)
@click.option("--minutes", type=float, default=10.0, show_default=True,
              help="how long the load runs")
@click.option("--seconds", type=float, default=None,
              help="how long the load runs, in seconds (short runs; "
              "overrides --minutes)")
@click.option("--rate", type=click.IntRange(10, 2000), default=200,
              show_default=True, help="requests per second, all streams "
              "together")
@click.option("--name", "-n", default="soak", show_default=True,
              help="the lab's name: prefix of its namespaces")
@click.option("--out", "-o", default="soak-report", show_default=True,
              type=click.Path(file_okay=False),
              help="directory of the report (report.json, report.md, "
              "plot.svg) and the engine's log")
@click.option("--flows", type=click.IntRange(64, 1 << 26), default=1 << 16,
              show_default=True, help="the engine's flow table slots per "
              "queue (`pyfwd start --flows`)")
@click.option("--json", "as_json", is_flag=True,
              help="print the report as JSON")
def soak(minutes, seconds, rate, name, out, flows, as_json):
    """Mixed load through the VIPs of a lab while faults come, then
    verdicts.

    \b
    Builds a one-arm lab (client, lb, real1..real4), runs `pyfwd start` in
    its lb namespace with five VIPs (HTTP over SNAT, DR and L7, DICOM over
    SNAT, UDP over SNAT) and sends HTTP with and without keep-alive, UDP
    and a long DICOM store (storescu) through them while: real servers
    flap (their health agent stops, then comes back), the config reloads
    every 5 s, a real is added and removed, drained and halted, the engine
    is SIGKILLed and restarted once, HAProxy is SIGKILLed once.

    \b
    Fails (exit 1) when a request failed that no fault excuses (halted,
    removed or down real, the restart or HAProxy's), when the engine's RSS
    or open fds grew, or when the flows did not come back to their
    baseline after the load.  docs/reliability/soak.md says how each is
    judged.
    """
    from ..lab import soak as soakmod
    need_root("pyfwd soak")
    secs = seconds if seconds is not None else minutes * 60
    if secs < 20:
        raise click.BadParameter("at least 20 seconds", param_hint="--seconds")
    try:
        report = soakmod.run(soakmod.Options(seconds=secs, rate=rate,
                                             name=name, out=out,
                                             flows=flows),
                             say=click.echo)
    except PyfwdError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        import json
        click.echo(json.dumps(report, indent=1))
    else:
        with open(f"{out}/report.md") as f:
            click.echo(f.read())
    if not report["ok"]:
        raise SystemExit(1)
