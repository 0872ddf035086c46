"""Collection for the reproduction: check the kernel, choose a backend, load
the probes, run the reproduction, and hand on what was seen as Recordings
while the probes are still attached: the results are shown first, and the
probes detached after (detaching takes longer than showing).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from tracer.collect import repro
from tracer.collect.prepare import load_first, new_recording, prepare
from tracer.collect.timings import Timings
from tracer.record.recording import Recording


@contextlib.contextmanager
def collected(runs: list[repro.ReproOptions], backend: str, progress: Callable[[str], None],
              timings: Timings | None = None) -> Iterator[list[Recording]]:
    """Run each reproduction in turn under one loaded BPF object (bcc compiles once);
    yield the recordings, and detach the probes when the caller's block ends."""
    timings = timings or Timings()
    with timings.phase("checks, BTF, plan"):
        plans, skipped, btf, view = prepare("repro", backend)
    with timings.phase("compile and attach"):
        session, plan = load_first(plans, skipped, progress)
    try:
        out = []
        with timings.phase("reproduce"):
            for opts in runs:
                progress(f"scenario {opts.scenario}")
                out.append(repro.run(session, new_recording(plan, btf, list(skipped), view), opts, progress))
        yield out
    finally:
        with timings.phase("detach"):
            session.close()


def collect(runs: list[repro.ReproOptions], backend: str, progress: Callable[[str], None]) -> list[Recording]:
    """The recordings, with the probes already detached."""
    with collected(runs, backend, progress) as recs:
        return recs
