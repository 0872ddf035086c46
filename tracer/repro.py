"""The reproduction driver: run tracer/repro_child.py step by step while the
probes are attached, and record what user space did next to what the kernel
reported.

Each step waits for evidence, not for a fixed time: the writes start only
after the client's move to CLOSE_WAIT was seen in a kernel event.
"""
from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from .errors import UserError
from .events import Event, Kind
from .recording import Recording, UserMark, WriteResult

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


class EventSource(Protocol):
    def trace_netns(self, inum: int) -> None: ...
    def trace_client(self, pid: int, server_port: int) -> None: ...
    def begin_writes(self) -> None: ...
    def end_writes(self) -> None: ...
    def poll(self, timeout_ms: int = 0) -> list[Event]: ...
    def lost(self) -> int: ...


@dataclass(frozen=True)
class ReproOptions:
    writes: int = 2
    delay: float = 0.0  # extra pause after CLOSE_WAIT, as the article's sleep(5)
    gap: float = 0.1  # between writes, so the RST of write 1 can arrive
    port: int = 9999
    step_timeout: float = 5.0


class ReproChild:
    """The child process and its line protocol (see repro_child.py)."""

    def __init__(self, port: int, timeout: float):
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tracer.repro_child", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=PACKAGE_ROOT,
        )

    def expect(self, ev: str) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            code = self.proc.poll()
            raise UserError(
                f"the reproduction process stopped answering while waiting for '{ev}'"
                + (f" (exit status {code})" if code is not None else ""),
                "run again; if it repeats, report it with the output of `trace-halfclose doctor`",
            )
        msg = json.loads(line)
        if msg.get("ev") == "error":
            raise UserError(f"reproduction failed: {msg.get('message')}", "it needs root and network namespaces")
        if msg.get("ev") != ev:
            raise UserError(f"reproduction: expected '{ev}', got {msg}")
        return msg

    def send(self, cmd: str) -> None:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("exit")
                self.proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _close_wait_code(rec: Recording) -> int:
    return next(k for k, v in rec.state_names.items() if v == "CLOSE_WAIT")


def _saw_close_wait(e: Event, rec: Recording, close_wait: int) -> bool:
    if e.sport != rec.client_port or e.dport != rec.server_port:
        return False
    return e.kind in (Kind.SET_STATE, Kind.TCP_FIN_RETURN) and e.state == close_wait


def run(
    source: EventSource,
    rec: Recording,
    opts: ReproOptions,
    progress: Callable[[str], None] = lambda _: None,
) -> Recording:
    """Drive the reproduction; fills rec's marks, writes and events."""
    child = ReproChild(opts.port, opts.step_timeout)
    try:
        ready = child.expect("ready")
        source.trace_netns(ready["netns"])
        rec.netns, rec.client_pid, rec.server_port = ready["netns"], ready["pid"], ready["server_port"]
        source.trace_client(rec.client_pid, rec.server_port)

        child.send("connect")
        conn = child.expect("connected")
        rec.client_port = conn["client_port"]
        rec.marks.append(UserMark("client connected (connect(2) returned, server accepted)", conn["t_ns"]))

        child.send("close")
        closed = child.expect("server_closed")
        rec.marks.append(UserMark("server called close(2) on its connection", closed["t_ns"]))

        progress("waiting for the FIN to reach the client (CLOSE_WAIT)")
        close_wait = _close_wait_code(rec)
        deadline = time.monotonic() + opts.step_timeout
        while not any(_saw_close_wait(e, rec, close_wait) for e in rec.events):
            if time.monotonic() > deadline:
                raise UserError(
                    "the client's move to CLOSE_WAIT was not observed within "
                    f"{opts.step_timeout:.0f} s, so the writes were not started",
                    "check that sock:inet_sock_set_state or tcp_fin can be traced (`trace-halfclose doctor`)",
                )
            rec.events += source.poll(50)

        _collect_for(source, rec, opts.delay)
        source.begin_writes()
        for i in range(1, opts.writes + 1):
            progress(f"write {i}")
            child.send(f"write {i}")
            w = child.expect("write")
            rec.writes.append(
                WriteResult(w["index"], w["size"], w["ret"], w["errno"], w["t_start_ns"], w["t_end_ns"])
            )
            _collect_for(source, rec, opts.gap)
        source.end_writes()
    finally:
        child.close()
    _collect_for(source, rec, 0.05)
    rec.lost_events = source.lost()
    return rec


def _collect_for(source: EventSource, rec: Recording, seconds: float) -> None:
    end = time.monotonic() + seconds
    while True:
        rec.events += source.poll(10)
        if time.monotonic() >= end:
            break
