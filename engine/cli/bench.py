"""`pyfwd bench`: DR against NAT, side by side with the kernel and
HAProxy."""

import sys

import click


@click.command()
@click.option("--quick", is_flag=True,
              help="one run of each row with short windows (3 s) instead "
              "of three of 5 s: a first look in a few minutes")
@click.option("--out", "-o", default="bench-results", show_default=True,
              metavar="DIR", help="where results.json, results.md and "
              "results.png go")
@click.option("--only", metavar="NAMES",
              help="comma-separated rows, groups (micro, pps, http) or "
              "patterns (http-*-1m); default: every row")
@click.option("--repeat", type=click.IntRange(1, 20), default=None,
              help="runs of each row (default 3, 1 with --quick)")
@click.option("--seconds", type=click.FloatRange(1, 120), default=None,
              help="measuring window per row (default 5, 3 with --quick)")
@click.option("--connections", type=click.IntRange(1, 1024), default=32,
              show_default=True, help="wrk connections for the HTTP rows")
@click.option("--perf", is_flag=True,
              help="sample the balancer's CPU with perf(1) in every window: "
              "results.md names the functions its time went to")
@click.option("--replot", is_flag=True,
              help="measure nothing: draw DIR/results.png again from "
              "DIR/results.json (after installing matplotlib)")
def bench(quick, out, only, repeat, seconds, connections, perf, replot):
    """Measure DR against NAT, side by side with the kernel and HAProxy.

    \b
    Builds its own namespaces (and removes them, also when interrupted):
      micro   ns per packet of the C core, Maglev build, flow table memory
      pps     64-byte UDP delivered: generator, xdp-kernel, xsk-minimal,
              kernel-nat (references), dr-xdp, nat-xdp, snat-xdp,
              dr-afpacket, and with the XDP fast path dr-fastpath,
              snat-fastpath, nat-fastpath
      http    wrk to nginx through the VIP, 1k/100k/1m responses, in dr,
              nat, nat-busy, nat-adaptive (the --poll modes),
              nat-fastpath, snat, kernel-nat, haproxy-tcp, haproxy-http
              (and the NAT ones with a connection per request:
              http-*-close-*): requests/s, p50/p99, balancer CPU per
              1000 requests, packets through the balancer per request
    Each row also records CPU per thread, the AF_XDP sockets' counters
    and whether busy polling engaged (results.md: where the time went).
    The load runs on CPU 0, the balancer on CPU 1.  Writes DIR/results.json,
    results.md (ratios, the DR : NAT headline, the targets) and, with
    matplotlib installed (pip install 'pyfwd[bench]'), results.png; DIR is
    checked (made if missing, written to) before anything is measured.
    Compare figures within one run: ratios, not absolute numbers.
    """
    from ..bench import results as bench_results
    from ..bench import run as bench_run

    if replot:
        _replot(bench_results, out)
        return

    try:
        res = bench_run.run(out, quick=quick, only=only, repeats=repeat,
                            seconds=seconds, connections=connections,
                            log=lambda m: click.echo(m, err=True),
                            perf=perf, argv=["pyfwd", "bench", *sys.argv[2:]])
    except KeyboardInterrupt:
        click.echo(f"interrupted; partial results in {out}", err=True)
        sys.exit(130)
    click.echo(bench_run.main_table(res))
    click.echo("written: " + ", ".join(res.files), err=True)
    if not any(f.endswith(".png") for f in res.files):
        click.echo(bench_results.NO_PNG.format(out=out), err=True)
    if res.failures:
        raise click.ClickException(
            f"{len(res.failures)} row run(s) failed: "
            + "; ".join(f"{n}: {m}" for n, m in res.failures[:3]))


def _replot(bench_results, out):
    try:
        path = bench_results.replot(out)
    except ImportError:
        raise click.ClickException(
            "--replot needs matplotlib: pip install matplotlib (or "
            "'pyfwd[bench]')") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(
            f"--replot: cannot read {out}/results.json: {exc}") from None
    click.echo(f"written: {path}", err=True)
