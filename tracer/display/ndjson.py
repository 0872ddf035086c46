"""Display for machines: NDJSON, one object per line, each with "type".

Reproduction: "meta" (first), then "user", "kernel", "write", "read" (in time
order), "finding", "claim" (the article's claims, scenario close), "scenario"
(observed beside expected), "summary" (last). Watch: "meta", "user", then per
connection a "connection" line with its "kernel", "write" and "finding" lines,
then "user" and "summary". The README documents every field; the sentences
come from words.py, the values from the timeline.
"""
from __future__ import annotations

import json
from typing import IO, Iterator

from tracer.display import words
from tracer.kernel.names import err_name, shutdown_name
from tracer.process.timeline import IoNote, KernelNote, MarkNote, QueryNote, Timeline

SCHEMA_VERSION = 1


def _t_ms(t_ns: int, t0_ns: int = 0) -> float:
    return round((t_ns - t0_ns) / 1e6, 6)


def meta(rec, mode: str | None = None, **extra) -> dict:
    """The first line: the run's kernel and probes; the reproduction's own fields are
    null in watch mode (family, ports and pid are per connection there)."""
    repro = mode is None
    return {
        "type": "meta",
        "schema": SCHEMA_VERSION,
        "scenario": rec.scenario if repro else "watch",
        "family": rec.family if repro else None,
        **({} if repro else {"mode": mode}),
        "kernel": rec.kernel,
        "backend": rec.backend,
        "backend_notes": rec.backend_notes,
        "probes": rec.attached,
        "missing": rec.missing,
        "netns": rec.netns if repro else None,
        "server_port": rec.server_port if repro else None,
        "client_port": rec.client_port if repro else None,
        "client_pid": rec.client_pid if repro else None,
        "state_names_source": rec.state_names_source,
        **extra,
    }


def write_json(w: IoNote) -> dict:
    """The `"type": "write"` (or "read") line."""
    return {
        "type": w.op,
        "index": w.index,
        "t_ms": _t_ms(w.t_ns),
        "size": w.size,
        "ret": w.ret,
        "errno": w.errno,
        "observed": w.observed,
        "observed_at": words.observed_at(w.observed_at),
        "state": w.state,
        "sk_err": w.sk_err,
        "sk_err_name": err_name(w.sk_err) if w.sk_err is not None else None,
        "sk_shutdown": w.sk_shutdown,
        "sk_shutdown_name": shutdown_name(w.sk_shutdown) if w.sk_shutdown is not None else None,
        "path": [words.step_json(s) for s in w.path],
        "decision": words.decision(w),
        "inferred": w.inferred,
        "killed_by": w.killed_by,
    }


def kernel_json(n: KernelNote, tl: Timeline) -> dict:
    e = n.event
    return {
        "type": "kernel",
        "t_ms": _t_ms(n.t_ns),
        "func": n.func,
        "event": e.kind.name,
        "side": n.side,
        "summary": n.summary,
        "where": words.where(tl, n.where) or None,
        "teardown": n.teardown,
        **n.values,
        "sk": f"{e.sk:#x}",
        "pid": e.pid,
        "comm": e.comm,
    }


def items(tl: Timeline, write_extra=lambda w: {}, extra: dict | None = None, marks: bool = True) -> Iterator[dict]:
    """The timeline's lines in time order, then its findings; write_extra(w) adds to a
    write line, extra to every line (watch: the connection)."""
    extra = extra or {}
    for item in tl.items:
        if isinstance(item, IoNote):
            yield {**write_json(item), **extra, **write_extra(item)}
        elif isinstance(item, KernelNote):
            yield {**kernel_json(item, tl), **extra}
        elif isinstance(item, QueryNote):
            yield {"type": "query", "t_ms": _t_ms(item.t_ns), "what": item.what, "index": item.index,
                   "value": item.value, "decision": words.query_decision(item), "inferred": item.inferred,
                   "facts": item.facts, **extra}
        elif isinstance(item, MarkNote) and marks:
            yield {"type": "user", "t_ms": _t_ms(item.t_ns), "what": item.what}
    for f in words.findings(tl):
        yield {"type": "finding", **extra, "text": f}


def claim_json(r) -> dict:
    c = r.claim
    return {"type": "claim", "id": c.id, "statement": c.statement, "source": c.source, "how": c.how,
            "verdict": r.verdict.verdict, "evidence": [words.evidence(e) for e in r.verdict.evidence],
            "expected": r.expected, "as_expected": r.as_expected}


def lines(tl: Timeline, claims=(), verdict=None) -> Iterator[dict]:
    rec = tl.recording
    yield meta(rec)
    yield from items(tl)
    for c in claims:
        yield claim_json(c)
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


def watch_start_lines(wrec) -> Iterator[dict]:
    """The meta line and the start marks."""
    rec = wrec.rec
    # t0_ns: the origin of every t_ms (CLOCK_MONOTONIC), so a reader on the same machine can
    # time a line against the kernel's events (scripts/bench_watch.py: destruction to print).
    yield meta(rec, "watch", filter=wrec.filter, command_pid=wrec.command_pid, t0_ns=wrec.t0_ns)
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
        "incident": [r.value for r in ct.rules],
        "shown_at": ct.end.value if ct.end is not None else "destroyed",
        "unfinished_calls": [{"call": k.name, "pid": k.pid, "fd": k.fd, "t_ms": _t_ms(k.t_start_ns, tl.t0_ns)}
                             for k in ct.calls if k.ret is None],
    }

    def call(w: IoNote) -> dict:
        k = ct.call_of(w)
        return {"call": k.name, "pid": k.pid, "tid": k.tid, "comm": k.comm, "fd": k.fd}

    yield from items(tl, call, {"conn": c.conn}, marks=False)


def watch_end_lines(wrec, sel) -> Iterator[dict]:
    """How it ended, then the counts: every connection seen, shown or not. "writes" lists
    the shown connections' calls (the first SUMMARY_ROWS connections')."""
    t = sel.tally
    if wrec.command_status is not None:
        yield {"type": "user", "t_ms": _t_ms(wrec.stop_ns, wrec.t0_ns),
               "what": words.command_end(wrec.command_status)}
    yield {"type": "user", "t_ms": _t_ms(wrec.stop_ns, wrec.t0_ns), "what": f"stopped: {wrec.stop_reason}"}
    yield {
        "type": "summary",
        "connections": t.connections,
        "healthy": t.healthy,
        "incidents": t.incidents,
        "incident_rules": {r.value: n for r, n in sorted(t.by_rule.items(), key=lambda x: x[0].value)},
        "shown": t.shown,
        "unshown_at_stop": t.unshown_at_stop,
        "unshown_incidents": t.unshown_incidents,
        "shed_healthy": t.shed,
        "writes": [{"conn": r.conn, "index": i, "call": name, "ret": ret, "errno": errno}
                   for r in sel.rows for i, name, _size, ret, errno in r.writes if ret is not None],
        "writes_left_off_connections": sel.rows_left_off,
        "events": t.events,
        "lost_events": t.lost,
    }


class WatchJson:
    """A watch's NDJSON, line by line as the connections end (a tracer.collect.watch.Sink)."""

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

    def status(self, tally, live: int) -> None:
        """No status line in JSON: the summary line has the counts."""

    def end(self, wrec, sel) -> None:
        self._put(watch_end_lines(wrec, sel))


# --- compare (trace-halfclose compare) ------------------------------------------------


def compare_lines(c) -> Iterator[dict]:
    """A "meta" line with the runs, a "row" line per aligned row (all of them), a "summary"."""
    yield {"type": "meta", "schema": SCHEMA_VERSION, "mode": "compare",
           "runs": [{"label": r.label, "kernel": r.kernel, "backend": r.backend,
                     "scenarios": list(r.recordings)} for r in c.runs]}
    for r in c.rows:
        yield {"type": "row", "scenario": r.scenario, "group": r.group, "what": r.what,
               "values": {run.label: v for run, v in zip(c.runs, r.values)}, "same": r.same,
               "user_visible": r.user_visible, "reasons": [words.compare_reason(x, c.runs) for x in r.reasons]}
    yield {"type": "summary", "kernels": len(c.runs), "scenarios": len(c.scenarios), "rows": len(c.rows),
           "differences": len(c.differences), "user_visible_differences": len(c.user_visible_differences),
           "text": words.compare_summary(c)}


def write_compare(c, out: IO[str]) -> None:
    for obj in compare_lines(c):
        out.write(json.dumps(obj) + "\n")
