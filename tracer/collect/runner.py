"""Collection for the reproduction: check the kernel, choose a backend, load
the probes, run the reproduction, and return what was seen as a Recording.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from tracer.kernel.btf import Btf, BtfError
from tracer.errors import UserError
from tracer.kernel.names import FALLBACK_SOURCE, TCP_STATES_FALLBACK, state_names_from_btf
from tracer.kernel.support import (
    ensure_tracefs,
    headers_dir,
    kernel_functions,
    kprobes_available,
    require_root,
    tracepoint_exists,
)
from tracer.kernel.offsets import FD_FIELDS, SOCK_FIELDS, cflags, field_locations
from tracer.collect.plan import FUNCTIONS, TRACEPOINTS, KernelView, Plan, candidates
from tracer.record.recording import Recording
from tracer.collect import repro

BTF_PATH = Path("/sys/kernel/btf/vmlinux")


def load_btf() -> Btf:
    try:
        return Btf.load(str(BTF_PATH))
    except BtfError as exc:
        raise UserError(f"cannot read the kernel's BTF: {exc}", "use a kernel built with CONFIG_DEBUG_INFO_BTF=y") from None


def kernel_view(tracefs: Path) -> KernelView:
    names = {tp for tp, _ in TRACEPOINTS}
    return KernelView(
        kprobes=kprobes_available(tracefs),
        btf=BTF_PATH.exists(),
        functions=frozenset(kernel_functions(wanted={p.func for p in FUNCTIONS})),
        tracepoints=frozenset(tp for tp in names if tracepoint_exists(tracefs, *tp.split(":"))),
    )


def offsets_for(plan: Plan, btf: Btf) -> list[str]:
    fields = dict(SOCK_FIELDS)
    if plan.backend == "tracepoint":
        fields.update(FD_FIELDS)
    try:
        return cflags(field_locations(btf, fields))
    except BtfError as exc:
        raise UserError(f"a kernel struct field is missing from BTF: {exc}", "report this kernel version") from None


def check_basics() -> Path:
    """The checks every traced command needs before bcc runs, in the order a user
    fixes them; returns tracefs."""
    require_root()
    tracefs = ensure_tracefs()
    if headers_dir() is None:
        raise UserError(
            f"no kernel headers for {os.uname().release} (bcc needs /lib/modules/{os.uname().release}/build)",
            "apt-get install linux-headers-$(uname -r) (scripts/setup.sh links Debian's headers for a "
            "kernel Debian does not package; struct layouts come from BTF)",
        )
    return tracefs


def prepare(backend: str) -> tuple[list[Plan], list[str], Btf, KernelView]:
    """Every check that can fail before bcc runs, then the backends to try."""
    tracefs = check_basics()
    btf = load_btf()
    view = kernel_view(tracefs)
    plans, skipped = candidates(backend, view)
    return plans, skipped, btf, view


def new_recording(plan: Plan, btf: Btf, notes: list[str], view: KernelView) -> Recording:
    names = state_names_from_btf(btf)
    return Recording(
        kernel_functions=sorted(view.functions),
        kernel=os.uname().release,
        backend=plan.backend,
        backend_notes=notes,
        attached=plan.attached_names(),
        missing=list(plan.missing),
        state_names=names or dict(TCP_STATES_FALLBACK),
        state_names_source="BTF of the running kernel" if names else FALLBACK_SOURCE,
    )


def load_first(plans: list, make_session: Callable, skipped: list[str], progress: Callable[[str], None]):
    """Load the first plan the kernel accepts (auto: kprobe, then fentry, then
    tracepoints); make_session(plan) builds the session to load."""
    from tracer.collect.bpf import BackendUnavailable  # imports bcc: only once the checks passed

    for i, plan in enumerate(plans):
        progress(f"compiling and loading the BPF programs ({plan.backend} backend, bcc)")
        session = make_session(plan)
        try:
            session.load()
            return session, plan
        except BackendUnavailable as exc:
            if i == len(plans) - 1:
                raise
            skipped.append(f"{plan.backend}: {exc.message}")
    raise AssertionError("no plans")  # candidates() never returns an empty list


def reproduction_session(btf: Btf) -> Callable:
    from tracer.collect.bpf import BpfSession

    return lambda plan: BpfSession(plan, offsets_for(plan, btf))


def collect(runs: list[repro.ReproOptions], backend: str, progress: Callable[[str], None]) -> list[Recording]:
    """Run each reproduction in turn under one loaded BPF object (bcc compiles once)."""
    plans, skipped, btf, view = prepare(backend)
    session, plan = load_first(plans, reproduction_session(btf), skipped, progress)
    out = []
    try:
        for opts in runs:
            progress(f"scenario {opts.scenario}")
            out.append(repro.run(session, new_recording(plan, btf, list(skipped), view), opts, progress))
    finally:
        session.close()
    return out
