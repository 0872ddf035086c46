"""What the commands share: the examples, errors as one line and a remedy, showing runs."""
from __future__ import annotations

import importlib.util
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, IO, NoReturn

import click

from tracer import interrupt
from tracer.errors import UserError

EPILOG = """\b
Examples:
  sudo trace-halfclose                     the article: two writes after the server closed
  sudo trace-halfclose --writes 3          a third write shows the other EPIPE path
  sudo trace-halfclose --scenario all      every variant, observed beside the source's prediction
  sudo trace-halfclose --check             exit 1 unless the kernel did what its source says
  sudo trace-halfclose --json | jq .       NDJSON for machines (see README)
  sudo trace-halfclose --ladder            the exchange as a ladder diagram (--svg FILE: as a picture)
  sudo trace-halfclose --record r.jsonl    then `trace-halfclose replay r.jsonl` anywhere
  sudo trace-halfclose vm                  boot a distro kernel with kprobes and run it there
  trace-halfclose scenarios                the scenarios and what the source predicts
  sudo trace-halfclose doctor              what this machine can trace, with remedies

Needs root, bcc (python3-bpfcc) and headers of the running kernel. kprobes or
fentry show every function on the path; with tracepoints only, the branch
inside tcp_sendmsg_locked is inferred and marked so.
"""



def ladder_options(command):
    """--ladder and --svg FILE, the same on every command that shows a timeline."""
    command = click.option("--svg", metavar="FILE",
                           help="Also draw the ladder diagram into FILE, an SVG picture (a browser opens it).")(command)
    return click.option("--ladder", is_flag=True,
                        help="Show the exchange as a ladder diagram: client and server lines, each side's "
                             "kernel state beside its line, the packets as arrows between them.")(command)


def fail(exc: UserError) -> NoReturn:
    """The error line (and its remedy line), exit status exc.exit_code (2 for bad input).
    A signal held while the error happened wins: the user asked to stop."""
    from tracer.display import console

    held = interrupt.take_held()
    if held is not None:
        interrupted(interrupt.Interrupted(held))
    console.error(exc)
    sys.exit(exc.exit_code)


def interrupted(exc: BaseException, what: str = "") -> NoReturn:
    """A signal stopped the command: one line on stderr, exit status 128 + its number."""
    interrupt.say_interrupted(exc, what)
    sys.exit(128 + interrupt.signum_of(exc))


def abandon(out, exc: BaseException, stopped: str) -> NoReturn:
    """A traced run that did not finish: its --record file (a RecordFile, or None) is not
    left half-written, then one line: the error, or the signal and what was stopped."""
    if out:
        out.discard()
    if isinstance(exc, KeyboardInterrupt):
        interrupted(exc, stopped)
    fail(exc)


def usage_error(exc: click.ClickException) -> NoReturn:
    """click's usage errors in the tool's format: what is wrong and what is allowed on the
    error line (click says both), where to read more on the remedy line."""
    from tracer.display import console

    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "trace-halfclose"
    console.error(UserError(exc.format_message(), f"`{where} --help` lists the options and their values"))
    sys.exit(exc.exit_code)


class Seconds(click.FloatRange):
    """A time in seconds: a finite number in the range (click's FloatRange lets nan through:
    every comparison with nan is false)."""

    name = "number of seconds"

    def get_metavar(self, *args, **kwargs) -> str:
        return "SECONDS"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number of seconds ({self._describe_range()})", param, ctx)
        return rv


class RecordFile:
    """--record FILE: opened (created) before anything is loaded or traced, so a path that
    cannot be written is refused first; written whole at the end. An interrupted or failed
    run leaves no file it created, and an existing file untouched."""

    def __init__(self, path: str, others: dict[str, str | None]):
        self.path = path
        for option, other in others.items():
            if other is not None and os.path.abspath(other) == os.path.abspath(path):
                fail(UserError(f"--record {path} and {option} {other} name the same file: give two files"))
        if os.path.exists(path) and not os.path.isfile(path):
            fail(UserError(f"--record {path}: not a regular file; give a file name, such as run.jsonl"))
        self.existed = os.path.lexists(path)
        try:
            with interrupt.shielded():
                self.file: IO[str] | None = open(path, "a", encoding="utf-8")  # "a": nothing is lost yet
        except OSError as exc:
            fail(UserError(f"--record {path}: cannot write it ({exc.strerror or exc}); "
                           "give a file in a directory that exists and is writable"))

    def commit(self, dump: Callable[[IO[str]], None]) -> None:
        with interrupt.shielded():
            f, self.file = self.file, None
            try:
                with f:
                    f.seek(0)
                    f.truncate()
                    dump(f)
            except OSError as exc:
                fail(UserError(f"--record {self.path}: writing it failed ({exc.strerror or exc})"))

    def stream(self) -> IO[str]:
        """A file to write the recording into as it happens (a watch): a hidden file beside
        FILE, which becomes FILE at finish(); discard() removes it, an existing FILE untouched."""
        with interrupt.shielded():
            folder, name = os.path.split(os.path.abspath(self.path))
            fd, self.partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder)
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)  # as open() would create FILE (mkstemp makes it 0600)
            return os.fdopen(fd, "w", encoding="utf-8")

    def finish(self, streamed: IO[str]) -> None:
        with interrupt.shielded():
            try:
                streamed.close()
                os.replace(self.partial, self.path)
                self.partial = None
            except OSError as exc:
                fail(UserError(f"--record {self.path}: writing it failed ({exc.strerror or exc})"))
            if self.file is not None:
                self.file.close()
                self.file = None

    def discard(self) -> None:
        """Nothing to record: close it, and remove it if this run created it."""
        with interrupt.shielded():
            if getattr(self, "partial", None):
                try:
                    os.unlink(self.partial)
                except FileNotFoundError:
                    pass  # never written: nothing to remove
                self.partial = None
            if self.file is None:
                return
            self.file.close()
            self.file = None
            if not self.existed:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    return  # removed meanwhile by someone else: nothing left to remove


def check_outputs(as_json: bool, ladder: bool, svg: str | None) -> None:
    """Before anything is traced: --ladder is for people (not with --json), and --svg FILE
    must be a file that can be written. A problem is one line, exit status 2."""
    if as_json and ladder:
        fail(UserError("--ladder draws for people and --json writes for machines: give one of them "
                       "(--svg FILE writes the ladder with either)"))
    if svg is None:
        return
    if importlib.util.find_spec("matplotlib") is None:  # found, not imported: that waits for the drawing
        fail(UserError("--svg draws with matplotlib, which is not installed: run scripts/setup.sh again "
                       "(or pip install matplotlib in the tool's venv)"))
    path = Path(svg)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        fail(UserError(f"--svg {svg}: is a directory; give a file name, such as ladder.svg"))
    if not parent.is_dir():
        fail(UserError(f"--svg {svg}: no directory {parent}"))
    if not os.access(path if path.exists() else parent, os.W_OK):
        fail(UserError(f"--svg {svg}: not writable"))


def write_svg(ladders, svg: str) -> None:
    """The ladders into the SVG file (matplotlib is imported only now)."""
    from tracer.display import console, svg as drawing

    try:
        drawing.write(ladders, svg)
    except OSError as exc:
        fail(UserError(f"--svg {svg}: cannot write it: {exc.strerror or exc}"))
    console.note(f"ladder diagram written to {svg}")


def show(recs, as_json: bool, check: bool, ladder: bool = False, svg: str | None = None,
         exit_on_check: bool = True) -> bool:
    """Annotate, judge and display one run (with the article's claims for `close`)
    or a matrix of runs; with check, exit 1 unless everything is as the source predicts
    (exit_on_check=False: return whether it is, for a caller that has more to do first).
    ladder: the timeline as a ladder diagram (one per scenario before the matrix);
    svg: also draw the ladders into that file."""
    from tracer.process.annotate import annotate
    from tracer.process.claims import check_all
    from tracer.process.verdicts import check as check_scenario

    judged = []
    for rec in recs:
        tl = annotate(rec)
        judged.append((tl, check_all(tl) if rec.scenario == "close" and len(recs) == 1 else [], check_scenario(tl)))
    if as_json:
        from tracer.display import ndjson

        for tl, claims, verdict in judged:
            ndjson.write(tl, sys.stdout, claims, verdict, tag_scenario=len(recs) > 1)
    else:
        from tracer.display import console

        out = console.out_console()
        if len(judged) == 1:
            tl, claims, verdict = judged[0]
            console.timeline(tl, out, as_ladder=ladder)
            if claims:
                console.claims(claims, out)
            console.scenario_verdict(verdict, out)
        else:
            if ladder:
                from tracer.display.ladder import of_timeline

                for tl, _, _ in judged:
                    console.ladder(of_timeline(tl), out)
                    out.print()
            console.matrix([(tl, verdict) for tl, _, verdict in judged], out)
    if svg:
        from tracer.display.ladder import of_timeline

        write_svg([of_timeline(tl) for tl, _, _ in judged], svg)
    ok = all(v.ok and all(c.as_expected for c in claims) for _, claims, v in judged)
    if check and not ok and exit_on_check:
        sys.exit(1)
    return ok


def stdout_gone() -> None:
    """The reader of stdout went away (| head): stop quietly, as a pipeline expects."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(141)  # 128 + SIGPIPE, as a shell reports a command killed by it




def chosen_scenarios(scenario: str, ipv6: bool) -> list[tuple[str, str | None]]:
    """--scenario NAME|PATH|all as (name, file) pairs, file None for a built-in. A path (an
    existing file, or anything with a '/' or ending in .toml) is read and checked here, before
    anything is loaded: a bad file is one line (file:line: key: ...) and exit status 2."""
    from tracer.process import scenarios
    from tracer.process.scenario_file import ScenarioFileError, load

    if scenario == "all":
        return [(n, None) for n in scenarios.ORDER]
    if scenario in scenarios.SCENARIOS and not os.path.isfile(scenario):
        return [(scenario, None)]
    if not (os.path.isfile(scenario) or "/" in scenario or scenario.endswith(".toml")):
        fail(UserError(f"unknown scenario {scenario!r}: choose one of {', '.join(scenarios.ORDER)}, all, "
                       "or the path of a scenario file",
                       "`trace-halfclose scenarios` says what each one does; "
                       "`trace-halfclose scenarios --show NAME` prints one to copy"))
    try:
        sc = load(scenario)
    except ScenarioFileError as exc:
        fail(UserError(str(exc)))
    if sc.family != "any" and (sc.family == "ipv6") != ipv6:
        fail(UserError(f"{scenario}: family: the file says {sc.family}, the run is "
                       f"{'ipv6 (--ipv6)' if ipv6 else 'ipv4'}",
                       "drop or add --ipv6, or set family = \"any\" in the file"))
    scenarios.register(sc)
    return [(sc.name, scenario)]
