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
from . import scenarios

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


class EventSource(Protocol):
    def trace_netns(self, inum: int) -> None: ...
    def trace_client(self, pid: int, server_port: int) -> None: ...
    def begin_client_io(self) -> None: ...
    def end_client_io(self) -> None: ...
    def poll(self, timeout_ms: int = 0) -> list[Event]: ...
    def lost(self) -> int: ...


@dataclass(frozen=True)
class ReproOptions:
    scenario: str = "close"
    ipv6: bool = False
    writes: int = 2
    delay: float = 0.0  # extra pause after CLOSE_WAIT, as the article's sleep(5)
    gap: float = 0.1  # between writes, so the RST of write 1 can arrive
    port: int = 9999
    step_timeout: float = 5.0


class ReproChild:
    """The child process and its line protocol (see repro_child.py)."""

    # How long the child may take to answer: Python starting in a software-emulated VM
    # under load can take seconds (kernel events keep the shorter step_timeout).
    ANSWER_TIMEOUT = 60.0

    def __init__(self, opts: "ReproOptions"):
        self.timeout = max(opts.step_timeout, self.ANSWER_TIMEOUT)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tracer.repro_child", str(opts.port), opts.scenario]
            + (["--ipv6"] if opts.ipv6 else []),
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


def _state_code(rec: Recording, name: str) -> int:
    return next(k for k, v in rec.state_names.items() if v == name)


def _client_reached(e: Event, rec: Recording, state: int) -> bool:
    """The client's socket entered `state` (a transition seen on its ports)."""
    if e.sport != rec.client_port or e.dport != rec.server_port:
        return False
    return e.kind == Kind.SET_STATE and e.state == state


def _result(msg: dict) -> WriteResult:
    return WriteResult(msg["index"], msg["size"], msg["ret"], msg["errno"], msg["t_start_ns"], msg["t_end_ns"],
                       msg.get("killed_by"))


def run(
    source: EventSource,
    rec: Recording,
    opts: ReproOptions,
    progress: Callable[[str], None] = lambda _: None,
) -> Recording:
    """Drive the reproduction; fills rec's marks, writes and events."""
    sc = scenarios.get(opts.scenario)
    rec.scenario, rec.family = sc.name, "ipv6" if opts.ipv6 else "ipv4"
    child = ReproChild(opts)
    try:
        ready = child.expect("ready")
        source.trace_netns(ready["netns"])
        rec.netns, rec.client_pid, rec.server_port = ready["netns"], ready["pid"], ready["server_port"]
        source.trace_client(rec.client_pid, rec.server_port)

        child.send("connect")
        conn = child.expect("connected")
        rec.client_port = conn["client_port"]
        rec.marks.append(UserMark("client connected (connect(2) returned, server accepted)", conn["t_ns"]))
        if sc.unread:
            source.begin_client_io()
            child.send("presend")
            rec.writes.append(_result(child.expect("write")))
            source.end_client_io()
            rec.marks.append(UserMark("the server does not read these bytes", rec.writes[-1].t_end_ns))

        child.send("close")
        closed = child.expect("server_closed")
        how = {"close": "close(2)", "linger0": "close(2) with SO_LINGER {on, 0}",
               "shutdown-wr": "shutdown(SHUT_WR)", "shutdown-rdwr": "shutdown(SHUT_RDWR)"}[closed["how"]]
        rec.marks.append(UserMark(f"server called {how} on its connection", closed["t_ns"]))

        progress(f"waiting for the client's socket to reach {sc.wait_for}")
        want = _state_code(rec, sc.wait_for)
        deadline = time.monotonic() + opts.step_timeout
        while not any(_client_reached(e, rec, want) for e in rec.events):
            if time.monotonic() > deadline:
                raise UserError(
                    f"the client's move to {sc.wait_for} was not observed within "
                    f"{opts.step_timeout:.0f} s, so the writes were not started",
                    "check that sock:inet_sock_set_state can be traced (`trace-halfclose doctor`)",
                )
            rec.events += source.poll(50)

        _collect_for(source, rec, opts.delay)
        source.begin_client_io()
        if sc.read_first:
            progress("read")
            child.send("read")
            rec.reads.append(_result(child.expect("read")))
            _collect_for(source, rec, opts.gap)
        for i in range(1, opts.writes + 1):
            progress(f"write {i}")
            child.send(f"write {i}")
            rec.writes.append(_result(child.expect("write")))
            _collect_for(source, rec, opts.gap)
            if rec.writes[-1].killed_by:
                rec.marks.append(UserMark(f"the client was killed by {rec.writes[-1].killed_by}",
                                          rec.writes[-1].t_end_ns))
                break
        source.end_client_io()
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
