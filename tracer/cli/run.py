"""`trace-halfclose run`: Run the reproduction, traced (the default command)."""
from __future__ import annotations

import sys

import click

from tracer.errors import UserError
from tracer.cli.common import (EPILOG, RecordFile, Seconds, abandon, check_outputs, chosen_scenarios, fail, interrupted,
                               ladder_options, show, stdout_gone)
from tracer.cli.evidence import check_evidence, evidence_options, write_evidence


@click.command(epilog=EPILOG)
@click.option("--scenario", default="close", show_default=True, metavar="NAME|PATH|all",
              help="Which variant of the half-close to run (`trace-halfclose scenarios` lists them), "
                   "a scenario file of your own (`trace-halfclose scenarios --show close` prints one to copy), "
                   "or `all` for a matrix of every built-in.")
@click.option("--ipv6", is_flag=True, help="The same over IPv6 (::1).")
@click.option("--writes", type=click.IntRange(1, 10), default=None,
              help="How many write(2) calls the client makes once the peer closed "
                   "(default 2 as the article; with --scenario all, a newer built-in or a file, the "
                   "scenario's own writes).")
@click.option("--delay", type=Seconds(0, 60), default=0.0, show_default=True,
              help="Extra seconds between CLOSE_WAIT and write 1 (the article sleeps 5).")
@click.option("--gap", type=Seconds(0.0, 10), default=0.1, show_default=True,
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
@click.option("--timings", is_flag=True,
              help="Also a line on stderr: how long each phase took (start, checks, compile and attach, "
                   "reproduce, output, detach), and from start to attached.")
@ladder_options
@evidence_options
def run(scenario, ipv6, writes, delay, gap, port, as_json, record, backend, check, ebpf, timings, ladder, svg,
        pcap_file, packetdrill_file) -> None:
    """Run the reproduction and annotate each write with its kernel path.

    A server and a client (SIGPIPE ignored) in a private network namespace:
    the client connects, the server closes, and once the client's socket is
    seen in CLOSE_WAIT the client writes WRITES times.
    """
    check_outputs(as_json, ladder, svg)  # before anything is loaded or traced
    check_evidence(pcap_file, packetdrill_file)
    if ebpf:
        given = [name for name, value in (("--record", record), ("--json", as_json), ("--check", check),
                                          ("--ladder", ladder), ("--svg", svg)) if value]
        if given:
            fail(UserError(f"--ebpf prints the BPF program and exits, so {', '.join(given)} would do nothing: "
                           "give --ebpf alone (with --backend), or drop it"))
        from tracer.collect.prepare import ebpf_listing

        try:
            click.echo(ebpf_listing("repro", backend), nl=False)
        except UserError as exc:
            fail(exc)
        except BrokenPipeError:
            stdout_gone()
        return
    chosen = chosen_scenarios(scenario, ipv6)  # a bad file ends here, before anything is loaded
    out = RecordFile(record, {"--svg": svg}) if record else None
    from contextlib import ExitStack

    from tracer.display import console
    from tracer.collect.repro import ReproOptions
    from tracer.collect.runner import collected
    from tracer.collect.timings import Timings

    # The article's built-ins alone write twice, as the article; in `all`, the others, and a file
    # write as the scenario says.
    from tracer.process.scenarios import writes_alone

    def count(name: str, file: str | None) -> int | None:
        return writes or writes_alone(name, file, scenario == "all")

    runs = [ReproOptions(scenario=n, ipv6=ipv6, writes=count(n, f), delay=delay, gap=gap, port=port, file=f)
            for n, f in chosen]
    clock = Timings()
    # The probes stay attached until the results are out: detaching is the slowest step.
    with ExitStack() as attached:
        try:
            with console.status("checking the kernel") as progress:
                recs = attached.enter_context(collected(runs, backend, progress, clock))
        except (UserError, KeyboardInterrupt) as exc:
            abandon(out, exc, "probes detached, reproduction stopped")
        try:
            with clock.phase("output"):
                if out:
                    out.commit(lambda f: [rec.dump(f) for rec in recs])
                write_evidence(recs, pcap_file, packetdrill_file)
                verdict = show(recs, as_json, check, ladder, svg, exit_on_check=False)
        except KeyboardInterrupt as exc:
            if out:
                out.discard()
            interrupted(exc, "while showing the results")
        except BrokenPipeError:
            stdout_gone()
    if timings:
        console.timings(clock)
    if check and not verdict:
        sys.exit(1)
