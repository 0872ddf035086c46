"""`trace-halfclose watch`: Annotate the writes of any program."""
from __future__ import annotations

import sys

import click

from tracer.errors import UserError
from tracer.cli.common import check_outputs, fail, ladder_options, stdout_gone, write_svg


class AlsoSvg:
    """A watch's sink that passes everything on, then draws the watch's ladders into --svg FILE."""

    def __init__(self, sink, path: str):
        self.sink, self.path = sink, path

    def start(self, wrec) -> None:
        self.sink.start(wrec)

    def connection(self, ct) -> None:
        self.sink.connection(ct)

    def end(self, wrec, cts) -> None:
        from tracer.display.ladder import of_watch

        self.sink.end(wrec, cts)
        write_svg(of_watch(cts), self.path)


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--pid", "pids", type=int, multiple=True, metavar="PID",
              help="Watch this process (repeatable). The watch ends when all are gone.")
@click.option("--comm", metavar="NAME", help="Watch tasks with this name (as ps -o comm shows it).")
@click.option("--port", type=click.IntRange(1, 65535), help="Watch connections with this local or remote port.")
@click.option("--duration", type=click.FloatRange(0, min_open=True), metavar="SECONDS", help="Stop after SECONDS.")
@click.option("--json", "as_json", is_flag=True,
              help="NDJSON on stdout (the core's schema, plus connections; see README). A command's stdout "
                   "goes to stderr.")
@click.option("--record", type=click.Path(dir_okay=False, writable=True),
              help="Also save the raw events to FILE, for `trace-halfclose watch --replay FILE`.")
@click.option("--replay", "replay_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Annotate a watch saved with --record (no root, no BPF needed).")
@click.option("--backend", type=click.Choice(["auto", "kprobe", "fentry", "tracepoint"]), default="auto",
              show_default=True, help="How to trace, as for the reproduction.")
@ladder_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def watch(pids, comm, port, duration, as_json, record, replay_file, backend, ladder, svg, command) -> None:
    """Annotate the writes of any program: every write, send, sendto, sendmsg
    and writev on a watched TCP socket, with the kernel path of its result, and
    the socket's FIN, RST, sk_err and close, connection by connection.

    The filters are applied in the kernel; they combine (all must match). With
    a COMMAND (after --) the probes are attached first, then the command starts;
    it and its new processes are watched, and the watch ends when it exits.
    Otherwise it runs until Ctrl-C or --duration.

    \b
      sudo trace-halfclose watch --port 9999            e.g. the article's ./a.out against ncat -l 9999
      sudo trace-halfclose watch -- ./a.out
      sudo trace-halfclose watch --comm a.out --json
      sudo trace-halfclose vm -- watch --port 9999 -- sh tests/live/watch_clients.sh ./a.out 9999 1
    """
    import os

    from tracer.display import console
    from tracer.process.connections import WatchRecording, show

    check_outputs(as_json, ladder, svg)
    if as_json:
        from tracer.display.ndjson import WatchJson

        sink = WatchJson(sys.stdout)
    else:
        sink = console.WatchConsole(as_ladder=ladder)
    if svg:
        sink = AlsoSvg(sink, svg)
    if replay_file:
        if pids or comm or port or command or duration or record:
            fail(UserError("--replay takes no filter, command, --duration or --record",
                            "trace-halfclose watch --replay FILE [--json]"))
        try:
            wrec = WatchRecording.load(replay_file)
        except (OSError, ValueError) as exc:
            fail(UserError(f"cannot read {replay_file}: {exc}", "give a file written by `trace-halfclose watch --record`"))
        try:
            show(wrec, sink)
        except BrokenPipeError:
            stdout_gone()
        return
    from tracer.collect.watch import WatchOptions, run

    opts = WatchOptions(tuple(pids), comm, port, tuple(command), duration, backend, command_to_stderr=as_json)
    try:
        out = open(record, "w", encoding="utf-8") if record else None
    except OSError as exc:
        fail(UserError(f"cannot write {record}: {exc.strerror}", "give a writable path"))
    spinner = console.Spinner("checking the kernel, then bcc compiles the BPF programs")

    def ready(msg: str) -> None:
        spinner.stop()
        console.note(f"trace-halfclose watch: {msg}")

    try:
        wrec = run(opts, sink, note=console.note, ready=ready)
    except (UserError, KeyboardInterrupt, BrokenPipeError) as exc:
        spinner.stop()
        if out:
            out.close()
            os.unlink(record)
        if isinstance(exc, UserError):
            fail(exc)
        if isinstance(exc, BrokenPipeError):
            stdout_gone()
        console.note("interrupted: probes detached")
        sys.exit(130)
    if out:
        with out:
            wrec.dump(out)
