"""Collection for `trace-halfclose watch`: the writes of any program on TCP
sockets, annotated as in the reproduction, connection by connection.

Filters (--pid, --comm, --port, or a command started after the probes are
attached) are applied in the kernel, first thing in every BPF program of
bpf/watch/ (the filter is in bpf/watch/common.bpf.c): only the watched
sockets' events reach user space. The backend is chosen as for the
reproduction (kprobe, then fentry, then tracepoints only), from the rows of
tracer/collect/plan.py's table that serve watch.

Where each write-like call gets its fd: with kprobe and fentry, probes on
ksys_write, __sys_sendto, __sys_sendmsg and do_writev (those in
/proc/kallsyms); with tracepoints, raw_syscalls:sys_enter and sys_exit, which
keep write, sendto, sendmsg and writev by number, attached for the whole watch
-- while they are attached every syscall of every task takes the slow path
(syscall_regfunc, kernel/tracepoint.c), so the kprobe backend is preferred
where there is one.

Needs root, bcc, the kernel's headers and BTF, like the reproduction.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Callable, Protocol

from tracer import interrupt
from tracer.collect.bpf import BpfSession
from tracer.collect.prepare import load_first, new_recording, prepare
from tracer.errors import UserError
from tracer.kernel.names import TASK_COMM_LEN, TCP_STATES_FALLBACK, state_names_from_btf
from tracer.record.recording import UserMark, WatchRecordWriter
from tracer.process.connections import START_MARK, ConnTimeline, WatchRecording
from tracer.process.selection import Selection
from tracer.process.stream import Stream, Tally

POLL_MS = 50  # the longest wait for events: the clock and the signals are checked between polls
DRAIN_S = 0.3  # after the command or the watched processes are gone: their sockets' last events
STOP_BUDGET_S = 0.5  # at the stop, what is left is shown for this long; the rest is counted
STOP_DRAIN_S = 0.25  # at the stop, the ring buffer is read for at most this long
STATUS_S = 0.5  # the live status line's period
SHED_FROM, SHED_UNTIL = 0.10, 0.02  # ring buffer fill: healthy connections only counted from/until
# The ring buffer's pages (8 MiB: about 100,000 records, a second of a busy server), so a
# slow moment in user space loses nothing.
RINGBUF_PAGES = 2048


@dataclass(frozen=True)
class WatchOptions:
    pids: tuple[int, ...] = ()
    comm: str | None = None
    port: int | None = None
    command: tuple[str, ...] = ()
    duration: float | None = None
    backend: str = "auto"
    show_all: bool = False  # every connection, not only the incidents
    command_to_stderr: bool = False  # the command's stdout goes to stderr (--json keeps stdout NDJSON)

    @property
    def follow(self) -> bool:
        return bool(self.command)

    @property
    def by_pid(self) -> bool:
        return bool(self.pids or self.command)

    def filter_json(self) -> dict:
        return {"pids": list(self.pids), "comm": self.comm, "port": self.port, "command": list(self.command)}


def check_options(opts: WatchOptions, proc: Path = Path("/proc")) -> tuple[WatchOptions, list[str]]:
    """Bad input as a UserError (exit status 2) before anything is loaded: one line, what is
    wrong and what is allowed. Returns the options to use, and notes for the user."""
    notes = []
    if not (opts.pids or opts.comm is not None or opts.port or opts.command):
        raise UserError("watch needs a filter: --pid, --comm, --port, or a command to start after --",
                        "e.g. trace-halfclose watch --port 9999, or trace-halfclose watch -- ./client")
    if opts.pids and opts.command:
        raise UserError("--pid cannot be combined with a command to start: watch the running process "
                        "with --pid, or start one after --, not both")
    for pid in opts.pids:
        if pid <= 0 or not (proc / str(pid)).is_dir():
            raise UserError(f"--pid {pid}: no process with pid {pid}; give the pid of a running process "
                            "(ps -e lists them)")
    if opts.comm is not None:
        if not opts.comm:
            raise UserError("--comm is empty: give a process name, as ps -o comm shows it")
        if "/" in opts.comm and os.path.exists(opts.comm):
            base = os.path.basename(opts.comm.rstrip("/")) or opts.comm
            raise UserError(f"--comm {opts.comm}: that is a path; the kernel names a task after the last part "
                            f"of its program's path: --comm {base[:TASK_COMM_LEN - 1]}")
        raw = opts.comm.encode(errors="surrogateescape")
        if len(raw) > TASK_COMM_LEN - 1:
            # The kernel keeps the first 15 bytes, even when they cut a character in two: so do we.
            cut = raw[:TASK_COMM_LEN - 1].decode(errors="surrogateescape")
            shown = raw[:TASK_COMM_LEN - 1].decode(errors="replace")
            notes.append(f"--comm: the kernel keeps the first {TASK_COMM_LEN - 1} bytes of a task's name "
                         f"(TASK_COMM_LEN, include/linux/sched.h, v6.1): matching {shown!r}")
            opts = replace(opts, comm=cut)
    if opts.command and shutil.which(opts.command[0]) is None:
        what = "not an executable file" if os.path.exists(opts.command[0]) else "not found"
        raise UserError(f"command {what}: {opts.command[0]}; give a program on PATH, or the path of an "
                        "executable file")
    return opts, notes


def filter_defines(opts: WatchOptions, state_names: dict[int, str]) -> list[str]:
    """The filter as -D constants for bpf/watch/ (sets of pids and the comm go
    into maps after load)."""
    code = {name: num for num, name in state_names.items()}
    flags = [f"-DHC_WATCH_PORT={opts.port or 0}"]
    flags += ["-DHC_WATCH_BY_PID"] if opts.by_pid else []
    flags += ["-DHC_WATCH_BY_COMM"] if opts.comm is not None else []
    flags += ["-DHC_WATCH_FOLLOW"] if opts.follow else []
    return flags + [f"-DHC_TCP_{s}={code[s]}" for s in ("SYN_SENT", "SYN_RECV", "LISTEN")]


def describe_filter(opts: WatchOptions) -> str:
    parts = []
    if opts.command:
        parts.append(f"the command {' '.join(opts.command)!r} and its new processes")
    if opts.pids:
        parts.append("pid " + ", ".join(map(str, opts.pids)))
    if opts.comm is not None:
        parts.append(f"tasks named {opts.comm.encode(errors='surrogateescape').decode(errors='replace')!r}")
    if opts.port:
        parts.append(f"connections on port {opts.port} (local or remote)")
    return " and ".join(parts)


# --- the watch ------------------------------------------------------------------------


class Sink(Protocol):
    """Where a watch's output goes (console.WatchConsole, ndjson.WatchJson)."""

    def start(self, wrec: WatchRecording) -> None: ...
    def connection(self, ct: ConnTimeline) -> None: ...
    def status(self, tally: Tally, live: int) -> None: ...  # the counts so far (a live status line)
    def end(self, wrec: WatchRecording, sel: Selection) -> None: ...


KEEPER = Path(__file__).resolve().with_name("keeper.py")


class _Command:
    """The command after --: started once the probes are attached, by its keeper
    (tracer/collect/keeper.py), a child of the tool that the kernel adds to the
    watched pids as the launcher's next child (task:task_newtask), and with it
    everything it starts. The keeper passes on the signal the tool got, and ends
    whatever the command left when the watch ends -- or when the tool dies."""

    START_TIMEOUT = 60.0  # Python starting the keeper (a software-emulated VM is slow)
    SIGNAL_GRACE = 2.0  # after passing a signal on, before the rest is ended

    def __init__(self) -> None:
        self.keeper: subprocess.Popen | None = None
        self.pid: int | None = None
        self.returncode: int | None = None  # the command's, as subprocess's (negative: a signal)
        self._control: int | None = None
        self._report: int | None = None
        self._buf = b""

    def start(self, session: BpfSession, argv: tuple[str, ...], to_stderr: bool) -> None:
        report_r, report_w = os.pipe()
        control_r, control_w = os.pipe()
        os.set_blocking(report_r, False)  # read when there is something: _line() never waits
        ignored = ",".join(str(int(s)) for s in sorted(interrupt.ignored_at_start()))
        with interrupt.shielded():
            session.set_launcher(os.getpid())
            try:
                with interrupt.immune():
                    self.keeper = subprocess.Popen(
                        [sys.executable, "-I", "-S", str(KEEPER), str(report_w), str(control_r), ignored, "--", *argv],
                        pass_fds=(report_w, control_r), stdout=sys.stderr if to_stderr else None)
            finally:
                session.set_launcher(0)
                os.close(report_w)
                os.close(control_r)
                self._control, self._report = control_w, report_r
        session.watch_pid(self.keeper.pid)
        deadline = time.monotonic() + self.START_TIMEOUT
        while (line := self._line()) is None:
            if self.keeper.poll() is not None or time.monotonic() > deadline:
                line = f"error the command's keeper ended (status {self.keeper.poll()})"
                break
            select.select([report_r], [], [], 0.1)
        if line.startswith("error "):
            self.stop()
            raise UserError(f"cannot start {argv[0]}: {line[len('error '):]}", "check the command")
        self.pid = int(line.split()[1])
        session.watch_pid(self.pid)

    def _line(self) -> str | None:
        """The keeper's next report line, if one is there; `exit S` lines are taken in."""
        while True:
            if b"\n" not in self._buf and self._report is not None:
                try:
                    data = os.read(self._report, 4096)
                except BlockingIOError:
                    data = None
                if data:
                    self._buf += data
                    continue
            if b"\n" not in self._buf:
                return None
            raw, self._buf = self._buf.split(b"\n", 1)
            line = raw.decode(errors="replace")
            if line.startswith("exit "):
                self.returncode = int(line.split()[1])
                continue
            return line

    def poll(self) -> int | None:
        """The command's status once it ended, else None."""
        self._line()
        return self.returncode

    def stop(self, signum: int | None = None) -> None:
        """Pass signum on to the command and what it started (the tool got it) and give them
        SIGNAL_GRACE to end; then the keeper ends whatever is left (SIGTERM, then SIGKILL)
        and exits. Runs whole; idempotent."""
        with interrupt.shielded():
            if self.keeper is None:
                return
            if signum is not None and self.returncode is None and self._control is not None:
                try:
                    os.write(self._control, f"signal {signum}\n".encode())
                except BrokenPipeError:  # the keeper is gone already: nothing left to pass it to
                    pass
                deadline = time.monotonic() + self.SIGNAL_GRACE
                while self.poll() is None and time.monotonic() < deadline and self.keeper.poll() is None:
                    time.sleep(0.02)
            if self._control is not None:
                os.close(self._control)  # the keeper's cue to end the rest and exit
                self._control = None
            try:
                self.keeper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.keeper.kill()  # the command dies with it (PR_SET_PDEATHSIG)
                self.keeper.wait()
            self._line()
            if self._report is not None:
                os.close(self._report)
                self._report = None


def run(opts: WatchOptions, sink: Sink, progress: Callable[[str], None] = lambda _: None,
        ready: Callable[[str], None] = lambda _: None, record: IO[str] | None = None) -> WatchRecording:
    """Watch until Ctrl-C, --duration, or the end of the command (or of the --pid processes).
    Connections are handed out as they end (their socket destroyed), go quiet, or grow too
    long (tracer/process/stream.py); the incidents, or all with opts.show_all, go to the
    sink, the rest are counted. progress: what is being done; ready: the probes are
    attached; record: a file the raw events stream to (--record). opts: as check_options()
    returned them (the CLI checks them before anything else).

    The loop polls with a short timeout and checks the clock and the signals between
    batches and between the connections it shows: --duration and Ctrl-C are honoured at
    every moment. What is left at the stop is shown for at most STOP_BUDGET_S; the rest is
    counted in the summary (Tally.unshown_at_stop).

    A signal (SIGINT, SIGTERM, SIGHUP; tracer/interrupt.py) once the probes are attached
    ends the watch: the command gets the same signal, the probes are detached, and what
    was seen is shown; wrec.stop_signal says which. Before that, it propagates."""
    t0 = time.monotonic_ns()
    try:
        plans, skipped, btf, view = prepare("watch", opts.backend, follow=opts.follow, by_pid=opts.by_pid)
        names = state_names_from_btf(btf) or dict(TCP_STATES_FALLBACK)
        session, plan = load_first(plans, skipped, progress,
                                   [*filter_defines(opts, names), f"-DHC_RINGBUF_PAGES={RINGBUF_PAGES}"], raw=True)
    except KeyboardInterrupt as exc:
        exc.before_watch = True  # nothing attached is left, no command was started
        raise
    marks = [UserMark(START_MARK, t0), UserMark("probes attached", time.monotonic_ns())]
    rec = replace(new_recording(plan, btf, skipped, view), scenario="watch", marks=marks)
    wrec = WatchRecording(rec, opts.filter_json(), t0)
    stream = Stream(rec.state_names)

    def behind(shedding: bool) -> bool:
        """Behind (the ring buffer filling up): the healthy connections are only counted until
        the reader has caught up, so that the incidents are still shown (--all, --json)."""
        return session.backlog() > (SHED_UNTIL if shedding else SHED_FROM)

    sel = Selection(wrec, stream, sink, opts.show_all, behind)
    tally = sel.tally
    writer = WatchRecordWriter(record) if record is not None else None
    command = None
    end = None  # monotonic seconds of --duration's end
    next_status = 0.0

    def past_end() -> bool:
        return end is not None and time.monotonic() >= end

    def take(timeout_ms: int) -> int:
        raw = session.poll(timeout_ms)
        if raw:
            stream.add(raw)
            tally.events += len(raw)
            if writer:
                writer.records(raw)
        return len(raw)

    def count_lost() -> None:
        """The kernel's drop counter (a map lookup): read for the status line and at the end,
        not after every batch."""
        tally.lost = rec.lost_events = session.lost()

    def collect(timeout_ms: int) -> None:
        nonlocal next_status
        take(timeout_ms)
        sel.hand_out(stream.ready(time.monotonic_ns()), past_end)
        if time.monotonic() >= next_status:
            next_status = time.monotonic() + STATUS_S
            count_lost()
            sink.status(tally, len(stream.live))

    try:
        for pid in opts.pids:
            session.watch_pid(pid)
        if opts.comm is not None:
            session.watch_comm(opts.comm)
        ready(f"probes attached ({plan.backend} backend); watching {describe_filter(opts)}; Ctrl-C to stop")
        if opts.command:
            command = _Command()
            command.start(session, opts.command, opts.command_to_stderr)
            wrec.command_pid = command.pid
            rec.marks.append(UserMark(f"command started: pid {command.pid}: {' '.join(opts.command)}",
                                      time.monotonic_ns()))
        if writer:
            writer.start(wrec)
        sink.start(wrec)
        end = time.monotonic() + opts.duration if opts.duration else None
        while True:
            collect(POLL_MS)
            if command and command.poll() is not None:
                wrec.command_status = command.returncode
                wrec.stop_reason = "the command exited"
            elif opts.pids and not any((Path("/proc") / str(p)).is_dir() for p in opts.pids):
                wrec.stop_reason = "the watched processes exited"
            elif past_end():
                wrec.stop_reason = "--duration elapsed"
            if wrec.stop_reason:
                break
        if wrec.stop_reason != "--duration elapsed":
            drain = time.monotonic() + DRAIN_S
            while time.monotonic() < drain:
                collect(POLL_MS)
    except KeyboardInterrupt as exc:
        wrec.stop_signal = interrupt.signum_of(exc)
        name = interrupt.name_of(wrec.stop_signal)
        wrec.stop_reason = "interrupted (Ctrl-C)" if wrec.stop_signal == signal.SIGINT else f"interrupted ({name})"
    finally:
        with interrupt.shielded():
            wrec.stop_ns = time.monotonic_ns()
            if command:
                command.stop(wrec.stop_signal)  # the command gets the signal the tool got
                if wrec.command_status is None:
                    wrec.command_status = command.returncode
            try:
                drain = time.monotonic() + STOP_DRAIN_S
                while take(0) and time.monotonic() < drain:
                    pass  # what the ring buffer still holds, for at most STOP_DRAIN_S
                count_lost()
            finally:
                session.close()
    interrupt.rearm()  # the probes are detached and the command ended: a signal may cut what follows
    budget = time.monotonic() + STOP_BUDGET_S
    sink.status(tally, len(stream.live))
    sel.hand_out(stream.rest(), lambda: time.monotonic() >= budget)
    if writer:
        writer.finish(wrec)
    sink.end(wrec, sel)
    return wrec
