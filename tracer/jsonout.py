"""Display for machines: the timeline as NDJSON, one object per line, each with "type".

Types: "meta" (first), "user", "kernel", "write" (in time order), "finding", "summary" (last).
The README documents every field.
"""
from __future__ import annotations

import json
from typing import IO, Iterator

from .annotate import KernelNote, MarkNote, Timeline, WriteNote, kernel_json, write_json

SCHEMA_VERSION = 1


def lines(tl: Timeline) -> Iterator[dict]:
    rec = tl.recording
    yield {
        "type": "meta",
        "schema": SCHEMA_VERSION,
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
    yield {
        "type": "summary",
        "writes": [{"index": w.index, "ret": w.ret, "errno": w.errno} for w in tl.writes],
        "events": len(rec.events),
        "lost_events": rec.lost_events,
    }


def write(tl: Timeline, out: IO[str]) -> None:
    for obj in lines(tl):
        out.write(json.dumps(obj) + "\n")
