"""The reproduction driver: run tracer/collect/repro_child.py step by step while the
probes are attached, and record what user space did next to what the kernel
reported.

Each step waits for evidence, not for a fixed time: the writes start only
after the client's move to CLOSE_WAIT was seen in a kernel event.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from tracer import interrupt
from tracer.errors import UserError
from tracer.record.event import Event, Kind, Packet
from tracer.kernel.names import TCP_ACK, TCP_RST
from tracer.process.scenarios import ClientStep
from tracer.record.recording import QueryResult, Recording, UserMark, WriteResult
from tracer.process import scenarios
from tracer.collect import netns

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # holds the tracer package: the checkout, or site-packages


class EventSource(Protocol):
    def trace_netns(self, inum: int) -> None: ...
    def trace_client(self, pid: int) -> None: ...
    def begin_client_io(self) -> None: ...
    def end_client_io(self) -> None: ...
    def poll(self, timeout_ms: int = 0) -> list[Event]: ...
    def lost(self) -> int: ...
    def take_packets(self) -> list[Packet]: ...


@dataclass(frozen=True)
class ReproOptions:
    scenario: str = "close"  # a built-in's name, or the name of a user's file (then `file` is its path)
    ipv6: bool = False
    writes: int | None = 2  # how many writes once the peer closed; None: the scenario's own
    delay: float = 0.0  # extra pause after CLOSE_WAIT, as the article's sleep(5)
    gap: float = 0.1  # between writes, so the RST of write 1 can arrive
    port: int = 9999
    step_timeout: float = 5.0
    file: str | None = None  # a user's scenario file (checked already: tracer/process/scenario_file.py)


class ReproChild:
    """The child process and its line protocol (see repro_child.py).

    start() and close() run whole, whatever signal comes (tracer/interrupt.py): the
    child is known from the moment it exists, and always ends. It is started with
    SIGINT, SIGTERM and SIGHUP blocked (a terminal's Ctrl-C reaches the whole process
    group: the child leaves it to the tool), and dies with the tool (PR_SET_PDEATHSIG).
    """

    # How long the child may take to answer: Python starting in a software-emulated VM
    # under load can take seconds (kernel events keep the shorter step_timeout).
    ANSWER_TIMEOUT = 60.0
    EXIT_TIMEOUT = 2.0  # after "exit" (or the end of its input), before it is killed

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.timeout = self.ANSWER_TIMEOUT

    def start(self, opts: "ReproOptions") -> None:
        self.timeout = max(opts.step_timeout, self.ANSWER_TIMEOUT)
        with interrupt.shielded(), interrupt.immune():
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tracer.collect.repro_child", str(opts.port), opts.scenario,
                 "--parent", str(os.getpid())] + (["--ipv6"] if opts.ipv6 else [])
                + (["--file", str(Path(opts.file).resolve())] if opts.file else []),
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
        try:
            msg = json.loads(line)
        except ValueError:
            raise UserError(f"the reproduction process answered {line.strip()!r} while waiting for '{ev}'",
                            "report it with the output of `trace-halfclose doctor`") from None
        if msg.get("ev") == "error":
            raise UserError(f"reproduction failed: {msg.get('message')}", "it needs root and network namespaces")
        if msg.get("ev") != ev:
            raise UserError(f"reproduction: expected '{ev}', got {msg}")
        return msg

    def send(self, cmd: str) -> None:
        try:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            code = self.proc.poll()
            raise UserError(f"the reproduction process is gone (exit status {code}) before '{cmd}'",
                            "run again; if it repeats, report it with the output of `trace-halfclose doctor`") from None

    def close(self) -> None:
        """Tell the child to exit and close its input; kill it if it has not ended within
        EXIT_TIMEOUT. Its namespace goes with it and its client. Idempotent."""
        with interrupt.shielded():
            proc = self.proc
            if proc is None:
                return
            if proc.poll() is None:
                try:
                    proc.stdin.write("exit\n")
                    proc.stdin.close()
                except BrokenPipeError:  # it is exiting already, nobody reads its input: waited for below
                    pass
                try:
                    proc.wait(timeout=self.EXIT_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None and not pipe.closed:
                    try:
                        pipe.close()
                    except BrokenPipeError:
                        continue  # "exit" could not be flushed to a dead child: nothing to tell it
            self.proc = None


def late_steps(sc: scenarios.Scenario, writes: int | None) -> list[tuple[int, ClientStep]]:
    """The client's steps once the peer closed, as (index in the scenario's list, step), with
    `writes` writes: the scenario's own when None; later write steps dropped when fewer; the last
    write repeated (unjudged) when more."""
    steps = [(i, s) for i, s in enumerate(sc.client_steps) if s.when != "connected"]
    if writes is None:
        return steps
    out, n = [], 0
    for i, s in steps:
        if s.do == "write":
            n += 1
            if n > writes:
                continue
        out.append((i, s))
    last = next((x for x in reversed(steps) if x[1].do == "write"), None)
    out += [last] * (writes - n) if last else []
    return out


def _server_mark(sc: scenarios.Scenario, k: int, msg: dict) -> str | None:
    """The mark for server step k (None: a SO_LINGER setting, told with the close)."""
    s = sc.server_steps[k]
    linger = next((x.value for x in sc.server_steps[:k] if x.do == "setsockopt" and x.option == "SO_LINGER"), None)
    if s.do == "close":
        how = "close(2)" + (f" with SO_LINGER {{{'on' if linger[0] else 'off'}, {linger[1]}}}" if linger else "")
    elif s.do == "shutdown":
        how = f"shutdown(SHUT_{s.how.upper()})"
    elif s.do == "exit":
        return "the server exited: its sockets closed as by exit(2)"
    elif s.do == "setsockopt":
        return None if s.option == "SO_LINGER" else f"the server set {s.option} to {s.value}"
    elif s.do == "read":
        return f"the server read {msg.get('ret')} bytes (recv of {s.bytes or 1}, MSG_WAITALL)"
    elif s.do == "sleep":
        return f"the server slept {s.seconds:g} s"
    else:
        return None
    return f"server called {how} on its connection"


def _query(msg: dict) -> QueryResult:
    return QueryResult(msg["what"], msg["index"], msg["value"], msg["t_start_ns"], msg["t_end_ns"])


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
    rec.scenario_text = sc.source_text or ""
    child = ReproChild()
    try:
        child.start(opts)
        ready = child.expect("ready")
        source.trace_netns(ready["netns"])
        rec.netns, rec.client_pid, rec.server_port = ready["netns"], ready["pid"], ready["server_port"]
        rec.sysctls, rec.wall_offset_ns = netns.sysctls(rec.client_pid), netns.wall_offset_ns()  # --packetdrill, --pcap
        source.trace_client(rec.client_pid)

        child.send("connect")
        conn = child.expect("connected")
        rec.client_port = conn["client_port"]
        rec.marks.append(UserMark("client connected (connect(2) returned, server accepted)", conn["t_ns"]))
        early = [(i, s) for i, s in enumerate(sc.client_steps) if s.when == "connected"]
        if early:
            source.begin_client_io()
            for i, _ in early:
                child.send(f"client {i} 0")  # numbered 0: before the peer's close, not judged
                msg = child.expect("client")
                if msg["op"] == "write":
                    rec.writes.append(_result(msg))
            source.end_client_io()
            if not any(s.do == "read" for s in sc.server_steps) and rec.writes:
                rec.marks.append(UserMark("the server does not read these bytes", rec.writes[-1].t_end_ns))

        for k in range(1, len(sc.server_steps)):
            child.send(f"server {k}")
            msg = child.expect("server")
            mark = _server_mark(sc, k, msg)
            if mark:
                rec.marks.append(UserMark(mark, msg["t_ns"]))

        steps = late_steps(sc, opts.writes)
        if steps:
            states = " or ".join(sc.wait_for)
            progress(f"waiting for the client's socket to reach {states}")
            want = {_state_code(rec, name) for name in sc.wait_for}
            deadline = time.monotonic() + opts.step_timeout
            while not any(_client_reached(e, rec, w) for e in rec.events for w in want):
                if time.monotonic() > deadline:
                    raise UserError(
                        f"the client's move to {states} was not observed within "
                        f"{opts.step_timeout:.0f} s, so its steps were not started",
                        "check that sock:inet_sock_set_state can be traced (`trace-halfclose doctor`)",
                    )
                rec.events += source.poll(50)

        _collect_for(source, rec, opts.delay)
        source.begin_client_io()
        counts: dict[str, int] = {}
        for i, step in steps:
            kind = step.label
            counts[kind] = n = counts.get(kind, 0) + 1
            progress(f"{kind} {n}" if step.do in ("write", "getsockopt", "poll") or n > 1 else kind)
            child.send(f"client {i} {n}")
            msg = child.expect("client")
            if msg["op"] == "write":
                rec.writes.append(_result(msg))
                _collect_for(source, rec, opts.gap)
                _await_answer(source, rec, rec.writes[-1], opts.step_timeout)
            elif msg["op"] == "read":
                rec.reads.append(_result(msg))
                _collect_for(source, rec, opts.gap)
            elif msg["op"] == "query":
                rec.queries.append(_query(msg))
            if msg.get("killed_by"):
                if msg["op"] not in ("write", "read"):
                    rec.writes.append(_result({**msg, "size": 0}))
                rec.marks.append(UserMark(f"the client was killed by {msg['killed_by']}", msg["t_end_ns"]))
                break
        source.end_client_io()
        # From here on the client and the server exit: their sockets may still send a FIN or
        # an RST, which are not the scenario's. Claims and verdicts judge what came before.
        rec.teardown_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        rec.marks.append(UserMark("the reproduction is over: the client exits, then the server "
                                  "(later kernel events are their exit, not judged)", rec.teardown_ns))
    finally:
        child.close()
    _collect_for(source, rec, 0.05)
    rec.lost_events = source.lost()
    # The packets' bytes; a previous run's late packets (its namespace) are not this run's.
    rec.packets = [p for p in source.take_packets() if p.netns == rec.netns]
    return rec


def answer_pending(rec: Recording, w: WriteResult) -> str | None:
    """What the next step must still wait for after write `w`, from the packets seen; None: nothing.

    The gap between writes is usually enough, but on a slow machine (a software-emulated VM
    under load) the softirq that delivers the data to the server, or its RST back to the
    client, can run later than the gap (ksoftirqd). Then write 2 would run before the RST
    and succeed. So: once the client's data went out, wait until the server answered it (an
    ACK covering the bytes, or an RST) and an RST was handled on the client (its socket
    left for CLOSE, tcp_done → tcp_set_state, net/ipv4/tcp.c). Without packet events
    (nothing seen), nothing is waited for.
    """
    if w.ret <= 0:
        return None
    c, s = (rec.client_port, rec.server_port), (rec.server_port, rec.client_port)
    data = [e for e in rec.events if e.kind == Kind.PACKET and (e.sport, e.dport) == c and e.value > 0
            and w.t_start_ns <= e.ts_ns <= w.t_end_ns]
    if not data:
        return None
    end = (data[-1].seq + data[-1].value) % 2**32
    answers = [e for e in rec.events if e.kind == Kind.PACKET and (e.sport, e.dport) == s and e.ts_ns >= data[-1].ts_ns
               and (e.tcp_flags & TCP_RST or (e.tcp_flags & TCP_ACK and (e.ack_seq - end) % 2**32 < 2**31))]
    if not answers:
        return "the server's answer to the data"
    rst = next((e for e in answers if e.tcp_flags & TCP_RST), None)
    if rst:
        close = _state_code(rec, "CLOSE")
        if not any(e.ts_ns >= rst.ts_ns and _client_reached(e, rec, close) for e in rec.events):
            return "the client's handling of the RST"
    return None


def _await_answer(source: EventSource, rec: Recording, w: WriteResult, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (pending := answer_pending(rec, w)) is not None:
        if time.monotonic() > deadline:
            rec.marks.append(UserMark(f"{pending} (write {w.index}) was not seen within {timeout:.0f} s; "
                                      "went on", time.clock_gettime_ns(time.CLOCK_MONOTONIC)))
            return
        rec.events += source.poll(20)


def _collect_for(source: EventSource, rec: Recording, seconds: float) -> None:
    end = time.monotonic() + seconds
    while True:
        rec.events += source.poll(10)
        if time.monotonic() >= end:
            break
