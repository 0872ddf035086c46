"""trace-halfclose: the command line (click). Thin: parse, call, render.

Runs the article's reproduction (the server closes, the client writes twice)
in a private network namespace and shows, write by write, the kernel path that
produced each result, from kprobes on tcp_sendmsg_locked, sk_stream_wait_connect,
sk_stream_error, tcp_reset, tcp_done_with_error, tcp_done and tcp_fin.
"""
from __future__ import annotations

import sys

import click

from tracer.errors import UserError

EPILOG = """\b
Examples:
  sudo trace-halfclose                     the article: two writes after the server closed
  sudo trace-halfclose --writes 3          a third write shows the other EPIPE path
  sudo trace-halfclose --scenario all      every variant, observed beside the source's prediction
  sudo trace-halfclose --check             exit 1 unless the kernel did what its source says
  sudo trace-halfclose --json | jq .       NDJSON for machines (see README)
  sudo trace-halfclose --record r.jsonl    then `trace-halfclose replay r.jsonl` anywhere
  sudo trace-halfclose vm                  boot a distro kernel with kprobes and run it there
  trace-halfclose scenarios                the scenarios and what the source predicts
  sudo trace-halfclose doctor              what this machine can trace, with remedies

Needs root, bcc (python3-bpfcc) and headers of the running kernel. kprobes or
fentry show every function on the path; with tracepoints only, the branch
inside tcp_sendmsg_locked is inferred and marked so.
"""


class DefaultGroup(click.Group):
    """`trace-halfclose ARGS` means `trace-halfclose run ARGS`, as a bcc tool would behave."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Show why a write after the peer's close succeeds once, then fails with EPIPE.

    With no command, runs `run`: the reproduction, traced.
    """


def _fail(exc: UserError) -> None:
    from tracer.display import console as render

    render.error(exc)
    sys.exit(exc.exit_code)


def _show(recs, as_json: bool, check: bool) -> None:
    """Annotate, judge and display one run (with the article's claims for `close`)
    or a matrix of runs; with check, exit 1 unless everything is as the source predicts."""
    from tracer.process.annotate import annotate
    from tracer.process.claims import check_all
    from tracer.process.verdicts import check as check_scenario

    judged = []
    for rec in recs:
        tl = annotate(rec)
        judged.append((tl, check_all(tl) if rec.scenario == "close" and len(recs) == 1 else [], check_scenario(tl)))
    if as_json:
        from tracer.display import ndjson as jsonout

        for tl, claims, verdict in judged:
            jsonout.write(tl, sys.stdout, claims, verdict, tag_scenario=len(recs) > 1)
    else:
        from tracer.display import console as render

        console = render.out_console()
        if len(judged) == 1:
            tl, claims, verdict = judged[0]
            render.timeline(tl, console)
            if claims:
                render.claims(claims, console)
            render.scenario_verdict(verdict, console)
        else:
            render.matrix([(tl, verdict) for tl, _, verdict in judged], console)
    ok = all(v.ok and all(c.as_expected for c in claims) for _, claims, v in judged)
    if check and not ok:
        sys.exit(1)


@main.command(epilog=EPILOG)
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
def run(scenario, ipv6, writes, delay, gap, port, as_json, record, backend, check, ebpf) -> None:
    """Run the reproduction and annotate each write with its kernel path.

    A server and a client (SIGPIPE ignored) in a private network namespace:
    the client connects, the server closes, and once the client's socket is
    seen in CLOSE_WAIT the client writes WRITES times.
    """
    from tracer.display import console as render
    from tracer.collect.repro import ReproOptions

    if ebpf:
        from tracer.record.event import BPF_DIR

        for name in ("halfclose.h", "sock_read.h", "halfclose.bpf.c"):
            click.echo(f"/* ---- bpf/{name} ---- */\n" + (BPF_DIR / name).read_text())
        return
    from tracer.collect.runner import collect

    from tracer.process.scenarios import ORDER

    if scenario != "all" and scenario not in ORDER:
        _fail(UserError(f"unknown scenario {scenario!r}", f"choose one of {', '.join(ORDER)}, or all"))
    names = ORDER if scenario == "all" else (scenario,)
    runs = [ReproOptions(scenario=n, ipv6=ipv6, writes=writes or (3 if scenario == "all" else 2), delay=delay,
                         gap=gap, port=port) for n in names]
    try:
        with render.status("checking the kernel") as progress:
            recs = collect(runs, backend, progress)
    except UserError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        render.note("interrupted: probes detached, reproduction stopped")
        sys.exit(130)
    if record:
        with open(record, "w", encoding="utf-8") as f:
            for rec in recs:
                rec.dump(f)
    _show(recs, as_json, check)


@main.command()
@click.argument("recording", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="NDJSON on stdout.")
@click.option("--check", is_flag=True, help="Exit status 1 unless everything is as the source reading expects.")
def replay(recording, as_json, check) -> None:
    """Annotate a recording saved with --record (no root, no BPF needed)."""
    from tracer.record.recording import Recording

    try:
        recs = Recording.load_all(recording)
    except (OSError, ValueError) as exc:
        hint = ("a watch recording is replayed with `trace-halfclose watch --replay FILE`"
                if "'watch'" in str(exc) else "give a file written by `trace-halfclose --record`")
        _fail(UserError(f"cannot read {recording}: {exc}", hint))
    _show(recs, as_json, check)


@main.command()
def scenarios() -> None:
    """List the scenarios: what each does and what the kernel source predicts."""
    from tracer.process.scenarios import SCENARIOS

    for sc in SCENARIOS.values():
        exp = sc.expected
        writes = ", ".join("success" if w is None else w for w in exp.writes)
        click.echo(f"{sc.name}: {sc.title}")
        click.echo(f"    writes: {writes}" + (f"; read: {exp.read}" if exp.read else "")
                   + f"; RST from: {' or '.join(exp.rst_from) or 'none'}; SIGPIPE: {exp.sigpipe}")
        for why in exp.why:
            click.echo(f"    - {why}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per check, then a verdict line.")
def doctor(as_json) -> None:
    """Check what this machine can trace: root, bcc, headers, tracefs, BTF,
    kprobes, fentry, each function and tracepoint the tool uses, and what
    `vm` needs. Exit status 0 when the tool can run here."""
    import json

    from tracer.collect import doctor as doc

    items = doc.run_checks()
    ok, summary = doc.verdict(items)
    if as_json:
        for c in items:
            click.echo(json.dumps(c.to_json()))
        click.echo(json.dumps({"type": "verdict", "ok": ok, "summary": summary}))
    else:
        from tracer.display import console as render

        render.checks(items, summary, ok)
    sys.exit(0 if ok else 1)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--kernel", metavar="PATH",
              help="A vmlinuz to boot, or a kernel build tree. Default: the newest kernel under /boot "
                   "that is not the running one.")
@click.option("--kvm/--no-kvm", default=None,
              help="Force KVM on or off. Default: KVM, except on a machine that is itself a VM "
                   "(nested guests hang there), which uses software emulation.")
@click.option("--cpus", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--memory", default="2G", show_default=True)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def vm(kernel, kvm, cpus, memory, args) -> None:
    """Boot another kernel with virtme-ng and run `trace-halfclose ARGS` in it.

    The guest shares this machine's files, so it runs this install against a
    distro kernel with kprobes. Output and exit status are the inner tool's.

    \b
      sudo trace-halfclose vm                      the reproduction on the newest /boot kernel
      sudo trace-halfclose vm -- --writes 3 --json
      sudo trace-halfclose vm --kernel /boot/vmlinuz-6.12.57+deb12-amd64
    """
    from tracer.display import console as render
    from tracer.collect import vm as vmmod

    try:
        chosen = vmmod.pick_kernel(kernel)
        use, why = vmmod.use_kvm(kvm)
        vmmod.find_vng()
    except UserError as exc:
        _fail(exc)
    inner, shared = vmmod.absolute_records(list(args))
    spec = vmmod.VmSpec(chosen, use, cpus, memory, shared)
    render.note(f"trace-halfclose vm: booting {chosen} ({why}); inside: trace-halfclose {' '.join(inner)}")
    spinner = render.Spinner(f"booting {chosen.name}, then bcc compiles inside the guest")
    try:
        code = vmmod.stream(spec, vmmod.inner_command(inner), started=spinner.stop)
    except KeyboardInterrupt:
        spinner.stop()
        render.note("interrupted: the VM was stopped")
        sys.exit(130)
    spinner.stop()
    sys.exit(code)


@main.command(context_settings={"allow_interspersed_args": False})
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
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def watch(pids, comm, port, duration, as_json, record, replay_file, backend, command) -> None:
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

    from tracer.display import console as render
    from tracer.process.connections import WatchRecording, show

    if as_json:
        from tracer.display.ndjson import WatchJson

        sink = WatchJson(sys.stdout)
    else:
        sink = render.WatchConsole()
    if replay_file:
        if pids or comm or port or command or duration or record:
            _fail(UserError("--replay takes no filter, command, --duration or --record",
                            "trace-halfclose watch --replay FILE [--json]"))
        try:
            wrec = WatchRecording.load(replay_file)
        except (OSError, ValueError) as exc:
            _fail(UserError(f"cannot read {replay_file}: {exc}", "give a file written by `trace-halfclose watch --record`"))
        try:
            show(wrec, sink)
        except BrokenPipeError:
            _stdout_gone()
        return
    from tracer.collect.watch import WatchOptions, run

    opts = WatchOptions(tuple(pids), comm, port, tuple(command), duration, backend, command_to_stderr=as_json)
    try:
        out = open(record, "w", encoding="utf-8") if record else None
    except OSError as exc:
        _fail(UserError(f"cannot write {record}: {exc.strerror}", "give a writable path"))
    spinner = render.Spinner("checking the kernel, then bcc compiles the BPF programs")

    def ready(msg: str) -> None:
        spinner.stop()
        render.note(f"trace-halfclose watch: {msg}")

    try:
        wrec = run(opts, sink, note=render.note, ready=ready)
    except (UserError, KeyboardInterrupt, BrokenPipeError) as exc:
        spinner.stop()
        if out:
            out.close()
            os.unlink(record)
        if isinstance(exc, UserError):
            _fail(exc)
        if isinstance(exc, BrokenPipeError):
            _stdout_gone()
        render.note("interrupted: probes detached")
        sys.exit(130)
    if out:
        with out:
            wrec.dump(out)


def _stdout_gone() -> None:
    """The reader of stdout went away (| head): stop quietly, as a pipeline expects."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(141)  # 128 + SIGPIPE, as a shell reports a command killed by it


if __name__ == "__main__":
    main()
