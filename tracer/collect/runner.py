"""Collection for the reproduction: check the kernel, choose a backend, load
the probes, run the reproduction, and return what was seen as a Recording.
"""
from __future__ import annotations

from typing import Callable

from tracer.collect import repro
from tracer.collect.prepare import load_first, new_recording, prepare
from tracer.record.recording import Recording


def collect(runs: list[repro.ReproOptions], backend: str, progress: Callable[[str], None]) -> list[Recording]:
    """Run each reproduction in turn under one loaded BPF object (bcc compiles once)."""
    plans, skipped, btf, view = prepare("repro", backend)
    session, plan = load_first(plans, skipped, btf, progress)
    out = []
    try:
        for opts in runs:
            progress(f"scenario {opts.scenario}")
            out.append(repro.run(session, new_recording(plan, btf, list(skipped), view), opts, progress))
    finally:
        session.close()
    return out
