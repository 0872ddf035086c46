"""`trace-halfclose watch`: Annotate the writes of any program."""
from __future__ import annotations

import signal
import sys

import click

from tracer.errors import UserError
from tracer.cli.common import (RecordFile, Seconds, abandon, check_outputs, fail, interrupted, ladder_options,
                               stdout_gone, write_svg)


class AlsoSvg:
    """A watch's sink that passes everything on, then draws the shown connections' ladders
    into --svg FILE (it keeps them until the end: a drawing of a long watch is large)."""

    def __init__(self, sink, path: str):
        self.sink, self.path, self.cts = sink, path, []

    def start(self, wrec) -> None:
        self.sink.start(wrec)

    def connection(self, ct) -> None:
        self.cts.append(ct)
        self.sink.connection(ct)

    def status(self, tally, live: int) -> None:
        self.sink.status(tally, live)

    def end(self, wrec, sel) -> None:
        from tracer.display.ladder import of_watch

        self.sink.end(wrec, sel)
        write_svg(of_watch(self.cts), self.path)


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--pid", "pids", type=int, multiple=True, metavar="PID",
              help="Watch this process (repeatable). The watch ends when all are gone.")
@click.option("--comm", metavar="NAME", help="Watch tasks with this name (as ps -o comm shows it).")
@click.option("--port", type=click.IntRange(1, 65535), help="Watch connections with this local or remote port.")
@click.option("--duration", type=Seconds(0, min_open=True), metavar="SECONDS", help="Stop after SECONDS.")
@click.option("--json", "as_json", is_flag=True,
              help="NDJSON on stdout (the core's schema, plus connections; see README): every connection, "
                   "unless --incidents-only. A command's stdout goes to stderr.")
@click.option("--all", "show_all", is_flag=True,
              help="Show every connection (by default the console shows the incidents: a write after the "
                   "peer's FIN or RST, a failed call, an RST sent or received, SIGPIPE; the rest are counted).")
@click.option("--incidents-only", is_flag=True, help="With --json: only the incidents' connections.")
@click.option("--record", type=click.Path(dir_okay=False, writable=True),
              help="Also save the raw events to FILE as they come, for `trace-halfclose watch --replay FILE` "
                   "(every event: this costs time on a busy server).")
@click.option("--replay", "replay_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Annotate a watch saved with --record (no root, no BPF needed).")
@click.option("--backend", type=click.Choice(["auto", "kprobe", "fentry", "tracepoint"]), default="auto",
              show_default=True, help="How to trace, as for the reproduction.")
@ladder_options
@click.option("--pcap", "pcap_file", metavar="FILE", help="Not supported by watch yet (the reproduction has it).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def watch(pids, comm, port, duration, as_json, show_all, incidents_only, record, replay_file, backend, ladder, svg,
          pcap_file, command) -> None:
    """Annotate the writes of any program: every write, send, sendto, sendmsg
    and writev on a watched TCP socket, with the kernel path of its result, and
    the socket's FIN, RST, sk_err and close, connection by connection.

    The filters are applied in the kernel; they combine (all must match). With
    a COMMAND (after --) the probes are attached first, then the command starts;
    it and its new processes are watched, and the watch ends when it exits.
    Otherwise it runs until Ctrl-C or --duration.

    Each connection is shown when its socket is destroyed (or it goes quiet),
    then forgotten: memory stays bounded on a busy server. The console shows
    the incidents, with alike consecutive calls folded into one line, and
    counts the rest in a status line; --all shows every connection.

    SIGINT, SIGTERM or SIGHUP stop it: the command gets the same signal, the probes
    are detached, what was seen is shown, and the exit status is 128 + the signal
    (SIGINT without a command is the normal end: 0).

    \b
      sudo trace-halfclose watch --port 9999            e.g. the article's ./a.out against ncat -l 9999
      sudo trace-halfclose watch -- ./a.out
      sudo trace-halfclose watch --comm a.out --json
      sudo trace-halfclose vm -- watch --port 9999 -- sh tests/live/watch_clients.sh ./a.out 9999 1
    """
    from tracer.display import console
    from tracer.process.connections import WatchRecording
    from tracer.process.selection import replay

    check_outputs(as_json, ladder, svg)
    if show_all and incidents_only:
        fail(UserError("--all shows every connection and --incidents-only only the incidents: give one of them"))
    if incidents_only and not as_json:
        fail(UserError("--incidents-only is for --json (the console shows the incidents by default; "
                       "--all shows every connection)"))
    every = show_all or (as_json and not incidents_only)
    if pcap_file is not None:
        from tracer.cli.evidence import WATCH_PCAP

        fail(UserError(WATCH_PCAP))
    if replay_file:
        explicit_backend = click.get_current_context().get_parameter_source("backend").name != "DEFAULT"
        given = [name for name, value in (("--pid", pids), ("--comm", comm), ("--port", port),
                                          ("--duration", duration), ("--record", record),
                                          ("--backend", explicit_backend), ("a command", command)) if value]
        if given:
            fail(UserError(f"--replay takes no filter, command, --duration, --record or --backend (given: "
                           f"{', '.join(given)}): trace-halfclose watch --replay FILE [--json] [--ladder] [--svg FILE]"))
        try:
            wrec = WatchRecording.load(replay_file)
        except (OSError, ValueError) as exc:
            fail(UserError(f"cannot read {replay_file}: {exc}", "give a file written by `trace-halfclose watch --record`"))
        sink = _sink(as_json, ladder, svg)
        try:
            replay(wrec, sink, every)
        except BrokenPipeError:
            stdout_gone()
        return
    from tracer.collect.watch import WatchOptions, check_options, run

    opts = WatchOptions(tuple(pids), comm, port, tuple(command), duration, backend, show_all=every,
                        command_to_stderr=as_json)
    try:
        opts, notes = check_options(opts)
    except UserError as exc:
        fail(exc)
    for n in notes:
        console.note(n)
    out = RecordFile(record, {"--svg": svg}) if record else None
    sink = _sink(as_json, ladder, svg)
    spinner = console.Spinner("checking the kernel, then bcc compiles the BPF programs")

    def ready(msg: str) -> None:
        spinner.stop()
        console.note(f"trace-halfclose watch: {msg}")

    streamed = out.stream() if out else None
    try:
        try:
            wrec = run(opts, sink, ready=ready, record=streamed)
        finally:
            spinner.stop()
        if out:
            out.finish(streamed)
    except (UserError, KeyboardInterrupt) as exc:
        abandon(out, exc, "before the watch began; nothing is left attached" if getattr(exc, "before_watch", False)
                else "probes detached" + (", the command stopped" if command else ""))
    except BrokenPipeError:
        if out:
            out.discard()
        stdout_gone()
    if wrec.stop_signal is not None and not (wrec.stop_signal == signal.SIGINT and not command):
        # Ctrl-C is the end of a watch without a command; any other signal, or one that cut a
        # command short, is an interruption.
        from tracer import interrupt

        what = "probes detached" + (f", the command got {signal.Signals(wrec.stop_signal).name}" if command else "")
        interrupted(interrupt.Interrupted(wrec.stop_signal), what)


def _sink(as_json: bool, ladder: bool, svg: str | None):
    from tracer.display import console

    if as_json:
        from tracer.display.ndjson import WatchJson

        sink = WatchJson(sys.stdout)
    else:
        sink = console.WatchConsole(as_ladder=ladder)
    return AlsoSvg(sink, svg) if svg else sink
