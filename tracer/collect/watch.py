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
/proc/kallsyms); with tracepoints, syscalls:sys_{enter,exit}_{write,sendto,
sendmsg,writev}, attached for the whole watch -- an enabled syscall tracepoint
sends every syscall of every task through the slow path (syscall_regfunc,
kernel/tracepoint.c), so the kprobe backend is preferred where there is one.

Needs root, bcc, the kernel's headers and BTF, like the reproduction.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Protocol

from tracer.collect.bpf import BpfSession
from tracer.collect.prepare import load_first, new_recording, prepare
from tracer.errors import UserError
from tracer.kernel.names import TASK_COMM_LEN, TCP_STATES_FALLBACK, state_names_from_btf
from tracer.record.recording import UserMark
from tracer.process.connections import START_MARK, ConnTimeline, Grouper, WatchRecording, annotate_connection, peer_of

POLL_MS = 100
DRAIN_S = 0.3  # after the command or the watched processes are gone: their sockets' last events


@dataclass(frozen=True)
class WatchOptions:
    pids: tuple[int, ...] = ()
    comm: str | None = None
    port: int | None = None
    command: tuple[str, ...] = ()
    duration: float | None = None
    backend: str = "auto"
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
    """Bad input as a UserError before anything is loaded; the options to use, and notes."""
    notes = []
    if not (opts.pids or opts.comm is not None or opts.port or opts.command):
        raise UserError("watch needs a filter: --pid, --comm, --port, or a command to start after --",
                        "e.g. trace-halfclose watch --port 9999, or trace-halfclose watch -- ./client")
    if opts.pids and opts.command:
        raise UserError("--pid cannot be combined with a command to start",
                        "watch the running process with --pid, or start one after --, not both")
    for pid in opts.pids:
        if pid <= 0 or not (proc / str(pid)).is_dir():
            raise UserError(f"no process with pid {pid}", "give the pid of a running process (ps -e lists them)")
    if opts.comm is not None:
        if not opts.comm:
            raise UserError("--comm is empty", "give a process name, as ps -o comm shows it")
        raw = opts.comm.encode()
        if len(raw) > TASK_COMM_LEN - 1:
            cut = raw[:TASK_COMM_LEN - 1].decode(errors="ignore")
            notes.append(f"--comm: the kernel keeps the first {TASK_COMM_LEN - 1} bytes of a task's name "
                         f"(TASK_COMM_LEN, include/linux/sched.h, v6.1): matching {cut!r}")
            opts = replace(opts, comm=cut)
    if opts.command and shutil.which(opts.command[0]) is None:
        raise UserError(f"command not found: {opts.command[0]}", "give a program on PATH, or its path")
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
        parts.append(f"tasks named {opts.comm!r}")
    if opts.port:
        parts.append(f"connections on port {opts.port} (local or remote)")
    return " and ".join(parts)


# --- the watch ------------------------------------------------------------------------


class Sink(Protocol):
    """Where a watch's output goes (render.WatchConsole, jsonout.WatchJson)."""

    def start(self, wrec: WatchRecording) -> None: ...
    def connection(self, ct: ConnTimeline) -> None: ...
    def end(self, wrec: WatchRecording, cts: list[ConnTimeline]) -> None: ...


class _Command:
    """The command after --: started once the probes are attached, by a launcher
    whose next child the kernel adds to the watched pids (task:task_newtask)."""

    def __init__(self, session: BpfSession, argv: tuple[str, ...], to_stderr: bool):
        session.set_launcher(os.getpid())
        try:
            self.proc = subprocess.Popen(list(argv), stdout=sys.stderr if to_stderr else None)
        except OSError as exc:
            raise UserError(f"cannot start {argv[0]}: {exc.strerror or exc}", "check the command") from None
        finally:
            session.set_launcher(0)
        session.watch_pid(self.proc.pid)
        self.session = session

    def stop(self) -> None:
        """Terminate the command and the processes the watch followed from it."""
        if self.proc.poll() is not None:
            return
        pids = {self.proc.pid, *self.session.watched_pids()}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    continue  # already exited: nothing to stop
            try:
                self.proc.wait(timeout=2)
                return
            except subprocess.TimeoutExpired:
                continue


def run(opts: WatchOptions, sink: Sink, progress: Callable[[str], None] = lambda _: None,
        ready: Callable[[str], None] = lambda _: None, note: Callable[[str], None] = lambda _: None) -> WatchRecording:
    """Watch until Ctrl-C, --duration, or the end of the command (or of the --pid processes).
    Connections go to the sink as they end (their socket destroyed), the others at the end.
    progress: what is being done; ready: the probes are attached; note: for the user."""
    opts, notes = check_options(opts)
    for n in notes:
        note(n)
    t0 = time.monotonic_ns()
    plans, skipped, btf, view = prepare("watch", opts.backend, follow=opts.follow, by_pid=opts.by_pid)
    names = state_names_from_btf(btf) or dict(TCP_STATES_FALLBACK)
    try:
        session, plan = load_first(plans, skipped, btf, progress, filter_defines(opts, names))
    except KeyboardInterrupt:
        raise UserError("interrupted before the watch began", exit_code=130) from None
    marks = [UserMark(START_MARK, t0), UserMark("probes attached", time.monotonic_ns())]
    rec = replace(new_recording(plan, btf, skipped, view), scenario="watch", marks=marks)
    wrec = WatchRecording(rec, opts.filter_json(), t0)
    grouper, shown, command = Grouper(), [], None

    def show(conns) -> None:
        for c in conns:
            ct = annotate_connection(wrec, c, peer_of(c, grouper.all))
            shown.append(ct)
            sink.connection(ct)

    def take(timeout_ms: int) -> None:
        new = session.poll(timeout_ms)
        rec.events += new
        grouper.add(new)
        rec.lost_events = session.lost()

    def collect(timeout_ms: int) -> None:
        take(timeout_ms)
        show(grouper.complete(time.monotonic_ns()))

    try:
        for pid in opts.pids:
            session.watch_pid(pid)
        if opts.comm is not None:
            session.watch_comm(opts.comm)
        ready(f"probes attached ({plan.backend} backend); watching {describe_filter(opts)}; Ctrl-C to stop")
        if opts.command:
            command = _Command(session, opts.command, opts.command_to_stderr)
            wrec.command_pid = command.proc.pid
            rec.marks.append(UserMark(f"command started: pid {command.proc.pid}: {' '.join(opts.command)}",
                                      time.monotonic_ns()))
        sink.start(wrec)
        end = time.monotonic() + opts.duration if opts.duration else None
        while True:
            collect(POLL_MS)
            if command and command.proc.poll() is not None:
                wrec.command_status = command.proc.returncode
                wrec.stop_reason = "the command exited"
            elif opts.pids and not any((Path("/proc") / str(p)).is_dir() for p in opts.pids):
                wrec.stop_reason = "the watched processes exited"
            elif end is not None and time.monotonic() >= end:
                wrec.stop_reason = "--duration elapsed"
            if wrec.stop_reason:
                break
        if wrec.stop_reason != "--duration elapsed":
            drain = time.monotonic() + DRAIN_S
            while time.monotonic() < drain:
                collect(POLL_MS)
    except KeyboardInterrupt:
        wrec.stop_reason = "interrupted (Ctrl-C)"
    finally:
        wrec.stop_ns = time.monotonic_ns()
        if command:
            command.stop()
            if wrec.command_status is None:
                wrec.command_status = command.proc.returncode
        try:
            take(0)
        finally:
            session.close()
    show(grouper.rest())
    sink.end(wrec, shown)
    return wrec
