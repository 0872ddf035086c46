"""Display for machines: the timeline as NDJSON, one object per line, each with "type".

Types: "meta" (first), "user", "kernel", "write", "read" (in time order), "finding",
"claim" (the article's claims, scenario close), "scenario" (observed beside expected), "summary" (last).
The README documents every field.
"""
from __future__ import annotations

import json
from typing import IO, Iterator

from tracer.process.annotate import KernelNote, MarkNote, Timeline, WriteNote, kernel_json, write_json

SCHEMA_VERSION = 1


def lines(tl: Timeline, claims=(), verdict=None) -> Iterator[dict]:
    rec = tl.recording
    yield {
        "type": "meta",
        "schema": SCHEMA_VERSION,
        "scenario": rec.scenario,
        "family": rec.family,
        "kernel": rec.kernel,
        "backend": rec.backend,
        "backend_notes": rec.backend_notes,
        "probes": rec.attached,
        "missing": rec.missing,
        "netns": rec.netns,
        "server_port": rec.server_port,
        "client_port": rec.client_port,
        "client_pid": rec.client_pid,
        "state_names_source": rec.state_names_source,
    }
    for item in tl.items:
        if isinstance(item, WriteNote):
            yield write_json(item)
        elif isinstance(item, KernelNote):
            yield kernel_json(item)
        elif isinstance(item, MarkNote):
            yield {"type": "user", "t_ms": round(item.t_ns / 1e6, 6), "what": item.what}
    for f in tl.findings:
        yield {"type": "finding", "text": f}
    for c in claims:
        yield c.to_json()
    if verdict is not None:
        yield {"type": "scenario", "name": verdict.scenario.name, "title": verdict.scenario.title,
               "verdict": verdict.status, "ok": verdict.ok, "rows": [r.to_json() for r in verdict.rows],
               "source": list(verdict.scenario.expected.why)}
    yield {
        "type": "summary",
        "writes": [{"index": w.index, "ret": w.ret, "errno": w.errno, "killed_by": w.killed_by} for w in tl.writes],
        "reads": [{"index": r.index, "ret": r.ret, "errno": r.errno} for r in tl.reads],
        "events": len(rec.events),
        "lost_events": rec.lost_events,
    }


def write(tl: Timeline, out: IO[str], claims=(), verdict=None, tag_scenario: bool = False) -> None:
    """NDJSON of one run; with tag_scenario (a matrix) every line also names its scenario."""
    for obj in lines(tl, claims, verdict):
        if tag_scenario:
            obj = {**obj, "scenario": tl.recording.scenario}
        out.write(json.dumps(obj) + "\n")


# --- watch (trace-halfclose watch) ----------------------------------------------------


def _t_ms(t_ns: int, t0_ns: int) -> float:
    return round((t_ns - t0_ns) / 1e6, 6)


def watch_start_lines(wrec) -> Iterator[dict]:
    """The meta line (the core's fields; the reproduction's own are null) and the start marks."""
    rec = wrec.rec
    yield {
        "type": "meta",
        "schema": SCHEMA_VERSION,
        "scenario": "watch",
        "family": None,  # per connection, in its "connection" line
        "mode": "watch",
        "kernel": rec.kernel,
        "backend": rec.backend,
        "backend_notes": rec.backend_notes,
        "probes": rec.attached,
        "missing": rec.missing,
        "netns": None,
        "server_port": None,
        "client_port": None,
        "client_pid": None,
        "state_names_source": rec.state_names_source,
        "filter": wrec.filter,
        "command_pid": wrec.command_pid,
    }
    for m in rec.marks:
        yield {"type": "user", "t_ms": _t_ms(m.t_ns, wrec.t0_ns), "what": m.what}


def watch_connection_lines(ct) -> Iterator[dict]:
    """A "connection" line, then the connection's kernel and write lines (the core's,
    with "conn" and, for writes, the call, process and fd), then its findings."""
    c, tl = ct.conn, ct.timeline
    pid, comm, fd = ct.writers[0] if ct.writers else (None, None, None)
    yield {
        "type": "connection",
        "conn": c.conn,
        "sk": f"{c.sk:#x}",
        "family": ct.family,
        "laddr": ct.laddr,
        "lport": ct.lport,
        "raddr": ct.raddr,
        "rport": ct.rport,
        "pid": pid,
        "comm": comm,
        "fd": fd,
        "writers": [{"pid": p, "comm": n, "fd": f} for p, n, f in ct.writers],
        "connected_by": {"pid": ct.connected_by[0], "comm": ct.connected_by[1]} if ct.connected_by else None,
        "peer": ct.peer,
        "t_ms": _t_ms(c.first_ns, tl.t0_ns),
        "end_t_ms": _t_ms(c.ended_ns, tl.t0_ns) if c.ended_ns is not None else None,
        "destroyed": c.destroyed,
        "unfinished_calls": [{"call": k.call, "pid": k.pid, "fd": k.fd, "t_ms": _t_ms(k.t_start_ns, tl.t0_ns)}
                             for k in ct.calls if k.ret is None],
    }
    for item in ct.items:
        if isinstance(item, WriteNote):
            k = ct.call_of(item)
            yield {**write_json(item), "conn": c.conn, "call": k.call, "pid": k.pid, "tid": k.tid,
                   "comm": k.comm, "fd": k.fd}
        elif isinstance(item, KernelNote):
            yield {**kernel_json(item), "conn": c.conn}
    for f in tl.findings:
        yield {"type": "finding", "conn": c.conn, "text": f}


def watch_end_lines(wrec, cts) -> Iterator[dict]:
    from tracer.process.connections import command_end

    if wrec.command_status is not None:
        yield {"type": "user", "t_ms": _t_ms(wrec.stop_ns, wrec.t0_ns),
               "what": command_end(wrec.command_status)}
    yield {"type": "user", "t_ms": _t_ms(wrec.stop_ns, wrec.t0_ns), "what": f"stopped: {wrec.stop_reason}"}
    yield {
        "type": "summary",
        "connections": len(cts),
        "writes": [{"conn": ct.conn.conn, "index": w.index, "call": ct.call_of(w).call, "ret": w.ret,
                    "errno": w.errno} for ct in cts for w in ct.timeline.writes],
        "events": len(wrec.rec.events),
        "lost_events": wrec.rec.lost_events,
    }


class WatchJson:
    """A watch's NDJSON, line by line as the connections end (a tracer.watch.Sink)."""

    def __init__(self, out: IO[str]):
        self.out = out

    def _put(self, objs: Iterator[dict]) -> None:
        for obj in objs:
            self.out.write(json.dumps(obj) + "\n")
        self.out.flush()

    def start(self, wrec) -> None:
        self._put(watch_start_lines(wrec))

    def connection(self, ct) -> None:
        self._put(watch_connection_lines(ct))

    def end(self, wrec, cts) -> None:
        self._put(watch_end_lines(wrec, cts))
