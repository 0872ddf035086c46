"""`trace-halfclose run`: Run the reproduction, traced (the default command)."""
from __future__ import annotations

import sys

import click

from tracer.errors import UserError
from tracer.cli.common import EPILOG, check_outputs, fail, ladder_options, show


@click.command(epilog=EPILOG)
@click.option("--scenario", default="close", show_default=True, metavar="NAME|all",
              help="Which variant of the half-close to run (`trace-halfclose scenarios` lists them), "
                   "or `all` for a matrix of every one.")
@click.option("--ipv6", is_flag=True, help="The same over IPv6 (::1).")
@click.option("--writes", type=click.IntRange(1, 10), default=None,
              help="How many write(2) calls the client makes once the peer closed "
                   "(default 2 as the article; 3 with --scenario all, to show the third write's path).")
@click.option("--delay", type=click.FloatRange(0, 60), default=0.0, show_default=True,
              help="Extra seconds between CLOSE_WAIT and write 1 (the article sleeps 5).")
@click.option("--gap", type=click.FloatRange(0.0, 10), default=0.1, show_default=True,
              help="Seconds between writes, for the RST to arrive (the article sleeps 1).")
@click.option("--port", type=click.IntRange(1, 65535), default=9999, show_default=True,
              help="Server port inside the private network namespace.")
@click.option("--json", "as_json", is_flag=True, help="NDJSON on stdout, one object per line (see README).")
@click.option("--record", type=click.Path(dir_okay=False, writable=True),
              help="Also save the raw events to FILE, for `trace-halfclose replay FILE`.")
@click.option("--backend", type=click.Choice(["auto", "kprobe", "fentry", "tracepoint"]), default="auto",
              show_default=True,
              help="How to trace. auto tries kprobe, then fentry/fexit, then stable tracepoints only "
                   "(which cannot see inside tcp_sendmsg_locked: such facts are marked inferred).")
@click.option("--check", is_flag=True,
              help="Exit status 1 unless every claim got the verdict, and every scenario the results, that the "
                   "tool's own reading of the kernel source expects for this kernel.")
@click.option("--ebpf", is_flag=True, help="Print the BPF C program and exit (as bcc tools do).")
@ladder_options
def run(scenario, ipv6, writes, delay, gap, port, as_json, record, backend, check, ebpf, ladder, svg) -> None:
    """Run the reproduction and annotate each write with its kernel path.

    A server and a client (SIGPIPE ignored) in a private network namespace:
    the client connects, the server closes, and once the client's socket is
    seen in CLOSE_WAIT the client writes WRITES times.
    """
    check_outputs(as_json, ladder, svg)  # before anything is loaded or traced
    from tracer.display import console
    from tracer.collect.repro import ReproOptions

    if ebpf:
        from tracer.collect.prepare import ebpf_listing

        try:
            click.echo(ebpf_listing("repro", backend), nl=False)
        except UserError as exc:
            fail(exc)
        return
    from tracer.collect.runner import collect

    from tracer.process.scenarios import ORDER

    if scenario != "all" and scenario not in ORDER:
        fail(UserError(f"unknown scenario {scenario!r}", f"choose one of {', '.join(ORDER)}, or all"))
    names = ORDER if scenario == "all" else (scenario,)
    runs = [ReproOptions(scenario=n, ipv6=ipv6, writes=writes or (3 if scenario == "all" else 2), delay=delay,
                         gap=gap, port=port) for n in names]
    try:
        with console.status("checking the kernel") as progress:
            recs = collect(runs, backend, progress)
    except UserError as exc:
        fail(exc)
    except KeyboardInterrupt:
        console.note("interrupted: probes detached, reproduction stopped")
        sys.exit(130)
    if record:
        with open(record, "w", encoding="utf-8") as f:
            for rec in recs:
                rec.dump(f)
    show(recs, as_json, check, ladder, svg)
