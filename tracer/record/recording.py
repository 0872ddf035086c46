"""What one run collected: facts about the kernel and the probes, what the
reproduction did in user space, and the kernel events, in the order seen.

A Recording is the boundary between collection (needs root and BPF) and
annotation (pure). It saves to and loads from JSON lines, so a run can be
recorded once (`--record FILE`) and annotated again anywhere
(`trace-halfclose replay FILE`), and so tests can feed recorded streams.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Iterable

from tracer.record.event import Event, Packet, raw_json_line
from tracer.record import validate


class WatchRecordingGiven(ValueError):
    """A watch's recording where a reproduction's was expected (`watch --replay` reads it)."""


@dataclass(frozen=True)
class WriteResult:
    """One write(2) as the client saw it; times are CLOCK_MONOTONIC ns."""

    index: int
    size: int
    ret: int  # bytes written, or -1
    errno: str | None  # errno name when ret == -1
    t_start_ns: int
    t_end_ns: int
    killed_by: str | None = None  # the client died in this call (e.g. SIGPIPE)


@dataclass(frozen=True)
class QueryResult:
    """A client step that asks the socket (getsockopt SO_ERROR, poll), as the client saw it."""

    what: str  # "SO_ERROR" or "poll"
    index: int  # 1, 2, ... among the steps with this `what`
    value: str  # SO_ERROR: the errno name or "0"; poll: the bits returned, "POLLIN|POLLOUT", or "none"
    t_start_ns: int
    t_end_ns: int


@dataclass(frozen=True)
class UserMark:
    """Something the reproduction did in user space (connect, server close)."""

    what: str
    t_ns: int


@dataclass
class Recording:
    kernel: str = ""
    scenario: str = "close"
    family: str = "ipv4"
    backend: str = ""
    backend_notes: list[str] = field(default_factory=list)  # why other backends were not used
    attached: list[str] = field(default_factory=list)  # e.g. "kprobe:tcp_reset"
    missing: list[str] = field(default_factory=list)  # functions/tracepoints the backend could not use
    kernel_functions: list[str] = field(default_factory=list)  # of the tool's functions, those this kernel has
    state_names: dict[int, str] = field(default_factory=dict)
    state_names_source: str = ""
    netns: int = 0
    server_port: int = 0
    client_port: int = 0
    client_pid: int = 0
    marks: list[UserMark] = field(default_factory=list)
    writes: list[WriteResult] = field(default_factory=list)
    reads: list[WriteResult] = field(default_factory=list)  # same fields: ret is the bytes read
    queries: list[QueryResult] = field(default_factory=list)  # SO_ERROR and poll steps
    # A scenario from a user's file: the file's text, so that replay judges it as the run did
    # ("" for a built-in).
    scenario_text: str = ""
    events: list[Event] = field(default_factory=list)
    lost_events: int = 0
    # When the tool began ending the reproduction (CLOCK_MONOTONIC ns; 0: not recorded).
    # Later events belong to the client's and server's exit, not to the scenario.
    teardown_ns: int = 0
    # "target: why" for the missing targets with a reason (an unknown prototype, a backport).
    missing_notes: list[str] = field(default_factory=list)
    # Kernel facts the verdicts judge by, kept so that replay judges as the run did
    # (tracer/kernel/eras.py RECORDED_FIELDS): tracepoint -> its record's fields. Empty in
    # recordings made before they were kept: then not known.
    tracepoint_fields: dict[str, list[str]] = field(default_factory=dict)
    # The bytes of the packets (HC_PACKET events' twins, paired by ts_ns); none in recordings
    # made before the capture existed.
    packets: list[Packet] = field(default_factory=list)
    # The network namespace's sysctls that shape the client's segments (name -> value as read
    # in /proc/sys/net); {} when not recorded.
    sysctls: dict[str, str] = field(default_factory=dict)
    # CLOCK_REALTIME - CLOCK_MONOTONIC when the run began (ns), to date packets; 0: not recorded.
    wall_offset_ns: int = 0

    # -- JSON lines ---------------------------------------------------------
    def dump(self, out: IO[str]) -> None:
        """A meta line, a line per mark, write, read, event and packet, then an end line
        that counts them: a file cut short (at a line's end, too) is refused on loading."""
        out = _Counted(out)
        out.write(self.meta_line())
        for m in self.marks:
            out.write(json.dumps({"record": "mark", **asdict(m)}) + "\n")
        for w in self.writes:
            out.write(json.dumps({"record": "write", **asdict(w)}) + "\n")
        for r in self.reads:
            out.write(json.dumps({"record": "read", **asdict(r)}) + "\n")
        for q in self.queries:
            out.write(json.dumps({"record": "query", **asdict(q)}) + "\n")
        for e in self.events:
            out.write(json.dumps({"record": "event", **e.to_json()}) + "\n")
        for p in self.packets:
            out.write(json.dumps({"record": "packet", **p.to_json()}) + "\n")
        out.end()

    def meta_line(self) -> str:
        meta = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("marks", "writes", "reads", "queries", "events", "state_names", "packets")
        }
        meta["state_names"] = {str(k): v for k, v in self.state_names.items()}
        if not meta["scenario_text"]:  # a built-in: its name says it all
            del meta["scenario_text"]
        meta["end_line"] = True  # recordings written before it existed have none
        return json.dumps({"record": "meta", **meta}) + "\n"

    @classmethod
    def load_lines(cls, lines: Iterable[str | bytes]) -> "Recording":
        """Each line checked (tracer/record/validate.py); ValueError names the first bad one."""
        rec, seen_meta, end_line, after_meta, ended = cls(), False, False, 0, 0
        for n, line in enumerate(lines, 1):
            try:
                if isinstance(line, bytes):
                    line = line.decode("utf-8")
                if not line.strip():
                    continue
                d = json.loads(line)
                if not isinstance(d, dict):
                    raise ValueError("not a JSON object")
                kind = d.pop("record")
                if ended:
                    raise ValueError(f"a line after the end line (line {ended})")
                if seen_meta:
                    after_meta += 1
                elif kind not in ("meta", "watch"):
                    raise ValueError(f"a {kind!r} line before the meta line")
                if kind == "meta":
                    if seen_meta:
                        raise ValueError("a second meta line")
                    validate.check_meta(d, cls)
                    end_line = d.pop("end_line", False) is True
                    d["state_names"] = {int(k): str(v) for k, v in d.get("state_names", {}).items()}
                    for k, v in d.items():
                        if hasattr(rec, k) and k not in validate.LINES:
                            setattr(rec, k, v)
                    seen_meta = True
                elif kind == "end":
                    if d.get("lines") != after_meta - 1:
                        raise ValueError(f"the end line counts {d.get('lines')!r} lines, {after_meta - 1} came")
                    ended = n
                elif kind == "mark":
                    validate.check_fields(UserMark, d)
                    rec.marks.append(UserMark(**d))
                elif kind == "write":
                    validate.check_fields(WriteResult, d)
                    rec.writes.append(WriteResult(**d))
                elif kind == "read":
                    validate.check_fields(WriteResult, d)
                    rec.reads.append(WriteResult(**d))
                elif kind == "query":
                    validate.check_fields(QueryResult, d)
                    rec.queries.append(QueryResult(**d))
                elif kind == "event":
                    validate.check_event(d)
                    rec.events.append(Event.from_json(d))
                elif kind == "packet":
                    rec.packets.append(Packet.from_json(d))
                elif kind == "watch":
                    raise WatchRecordingGiven(f"line {n}: not a trace-halfclose recording line "
                                              f"(unknown record type {kind!r})")
                else:
                    raise ValueError(f"unknown record type {kind!r}")
            except WatchRecordingGiven:
                raise
            except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
                raise ValueError(f"line {n}: not a trace-halfclose recording line ({exc})") from None
        if not seen_meta:
            raise ValueError("no meta line: not a recording written by `trace-halfclose --record`")
        if end_line and not ended:
            raise ValueError(f"truncated: it ends after {after_meta} lines, without its end line "
                             "(the run that wrote it was stopped, or the file was cut)")
        return rec

    @classmethod
    def load(cls, path: Path) -> "Recording":
        return cls.load_all(path)[0]

    @classmethod
    def load_all(cls, path: Path) -> list["Recording"]:
        """A file may hold several recordings (`--scenario all`), each from its meta line on."""
        chunks: list[list[bytes]] = []
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(b'{"record": "meta"') or not chunks:
                    chunks.append([])
                chunks[-1].append(line)
        if not chunks:
            raise ValueError("empty file: not a recording written by `trace-halfclose --record`")
        return [cls.load_lines(c) for c in chunks]


class _Counted:
    """A text stream that counts the lines written to it, for the end line."""

    def __init__(self, out: IO[str]):
        self.out, self.lines = out, 0

    def write(self, text: str) -> None:
        self.out.write(text)
        self.lines += text.count("\n")

    def end(self) -> None:
        self.out.write(json.dumps({"record": "end", "lines": self.lines - 1}) + "\n")


@dataclass
class WatchRecording:
    """What a watch saw: rec holds the kernel facts, the marks and every event."""

    rec: Recording
    filter: dict = field(default_factory=dict)  # pids, comm, port, command
    t0_ns: int = 0  # the watch began (before the probes were loaded)
    command_pid: int | None = None
    command_status: int | None = None  # exit status; negative: killed by that signal
    stop_reason: str = ""
    stop_ns: int = 0
    stop_signal: int | None = None  # the signal that ended a live watch (not recorded: the stop_reason says it)

    def header(self) -> dict:
        return {"record": "watch", "schema": 1, "filter": self.filter, "t0_ns": self.t0_ns,
                "command_pid": self.command_pid, "command_status": self.command_status,
                "stop_reason": self.stop_reason, "stop_ns": self.stop_ns}

    def dump(self, out: IO[str]) -> None:
        """A "watch" line, then the lines of a Recording: `trace-halfclose replay` refuses
        it (unknown record type), `trace-halfclose watch --replay` reads it."""
        out.write(json.dumps(self.header()) + "\n")
        self.rec.dump(out)

    @classmethod
    def load_lines(cls, lines: Iterable[str | bytes]) -> "WatchRecording":
        it = iter(lines)
        first = next(it, b"")
        stop: dict = {}

        def without_stop(lines):
            """A streamed recording's "watch_stop" line (WatchRecordWriter) is read here, not by
            Recording: a blank line in its place keeps the other lines' numbers."""
            for line in lines:
                text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
                if text.startswith('{"record": "watch_stop"'):
                    try:
                        stop.update(json.loads(text))
                    except ValueError:
                        raise ValueError("a watch_stop line that is not JSON") from None
                    yield b""
                else:
                    yield line
        try:
            head = json.loads(first)
            if not isinstance(head, dict) or head.get("record") != "watch":
                raise ValueError
        except ValueError:
            raise ValueError("line 1: not a watch recording (`trace-halfclose watch --record FILE` writes one)") \
                from None
        keys = ("filter", "t0_ns", "command_pid", "command_status", "stop_reason", "stop_ns")
        try:
            validate.check_fields(cls, head, only=set(keys))
        except ValueError as exc:
            raise ValueError(f"line 1: not a watch recording's first line ({exc})") from None
        rec = Recording.load_lines(itertools.chain([b""], without_stop(it)))  # a blank line 1: lines keep numbers
        if stop:
            stop.pop("record")
            validate.check_fields(cls, stop, only={*keys, "lost_events"})
            lost = stop.pop("lost_events", rec.lost_events)
            if not isinstance(lost, int) or isinstance(lost, bool) or lost < 0:
                raise ValueError(f"the watch_stop line: lost_events is {lost!r}, not a count")
            rec.lost_events = lost
            head.update(stop)
        return cls(rec, **{k: head[k] for k in keys if k in head})

    @classmethod
    def load(cls, path) -> "WatchRecording":
        with open(path, "rb") as f:
            return cls.load_lines(f)


class WatchRecordWriter:
    """`watch --record FILE`, streamed: the "watch" and meta lines at the start, each event
    line as it arrives, the marks as they happen, then a "watch_stop" line (how the watch
    ended, the events lost) and the end line. Nothing is kept in memory.
    WatchRecording.load reads it as it reads one written whole."""

    def __init__(self, out: IO[str]):
        self.out, self.lines = out, 0  # lines after the meta line, for the end line

    def start(self, wrec: WatchRecording) -> None:
        self.out.write(json.dumps(wrec.header()) + "\n")
        self.out.write(wrec.rec.meta_line())
        for m in wrec.rec.marks:
            self.mark(m)

    def mark(self, m: UserMark) -> None:
        self.out.write(json.dumps({"record": "mark", **asdict(m)}) + "\n")
        self.lines += 1

    def records(self, rows: list[tuple]) -> None:
        """Rows as the ring reader gives them: the record's bytes last."""
        self.out.write("".join(raw_json_line(r[-1]) for r in rows))
        self.lines += len(rows)

    def finish(self, wrec: WatchRecording) -> None:
        stop = {k: v for k, v in wrec.header().items() if k in ("command_pid", "command_status", "stop_reason",
                                                                  "stop_ns")}
        self.out.write(json.dumps({"record": "watch_stop", **stop, "lost_events": wrec.rec.lost_events}) + "\n")
        self.out.write(json.dumps({"record": "end", "lines": self.lines}) + "\n")
        self.out.flush()
