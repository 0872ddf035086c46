"""Display for machines: the timeline as NDJSON, one object per line, each with "type".

Types: "meta" (first), "user", "kernel", "write", "read" (in time order), "finding",
"claim" (the article's claims, scenario close), "scenario" (observed beside expected), "summary" (last).
The README documents every field.
"""
from __future__ import annotations

import json
from typing import IO, Iterator

from .annotate import KernelNote, MarkNote, Timeline, WriteNote, kernel_json, write_json

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
