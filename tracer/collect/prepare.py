"""Before bcc, for both modes: the checks a traced command needs, the kernel
view, the backends to try; then the first plan the kernel accepts, loaded.
Also the text `--ebpf` prints, which needs no root.

The reproduction (runner.py) and watch (watch.py) differ here only in their
mode and, for watch, its filter: the filter's options choose rows of the plan
table (follow, by_pid) and add -D constants (extra_cflags).
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

from tracer.errors import UserError
from tracer.kernel import btf_cache
from tracer.kernel.btf import Btf
from tracer.kernel.eras import recorded_fields
from tracer.kernel.names import FALLBACK_SOURCE, TCP_STATES_FALLBACK, state_names_from_btf
from tracer.kernel.offsets import struct_offsets
from tracer.kernel.support import ensure_tracefs, find_tracefs, headers_dir, require_root
from tracer.kernel.view import KernelView, kernel_view, load_btf, prototypes_of
from tracer.collect import sources
from tracer.collect.plan import Plan, candidates, function_targets, functions_of, plan_for, tracepoint_targets
from tracer.record.recording import Recording


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


def read_view(tracefs: Path, btf: Btf) -> KernelView:
    """This kernel, for every function and tracepoint of the plan table."""
    return kernel_view(tracefs, btf, function_targets(), tracepoint_targets())


def prepare(mode: str, backend: str, *, follow: bool = False,
            by_pid: bool = False) -> tuple[list[Plan], list[str], Btf, KernelView]:
    """Every check that can fail before bcc runs, then the plans to try in order and
    why the skipped backends were skipped."""
    tracefs = check_basics()
    btf = load_btf()
    view = read_view(tracefs, btf)
    plans, skipped = candidates(mode, backend, view, follow=follow, by_pid=by_pid)
    plans = _without_refused(plans, skipped, backend)
    # Asked once per plan, now, so that the boot's BTF cache keeps the answers.
    plans = _with_offsets(plans, skipped, btf)
    state_names_from_btf(btf)
    btf_cache.keep(btf)
    return plans, skipped, btf, view


def _with_offsets(plans: list[Plan], skipped: list[str], btf: Btf) -> list[Plan]:
    """Each plan with its struct offsets; a plan whose text reads a field this kernel lacks
    is skipped (said) when another plan is left, else its error stands."""
    kept = []
    for i, plan in enumerate(plans):
        try:
            kept.append(replace(plan, offsets=tuple(offsets_for(plan, btf))))
        except UserError as exc:
            if not kept and i == len(plans) - 1:
                raise
            skipped.append(f"{plan.backend}: {exc.message}")
    return kept


def _refusal_file(backend: str) -> Path:
    """Where a backend the kernel refused is remembered until the next boot (/run is tmpfs)."""
    return btf_cache.cache_file().with_name(f"refused-{backend}-{btf_cache.cache_file().stem.removeprefix('btf-')}")


def _without_refused(plans: list[Plan], skipped: list[str], requested: str) -> list[Plan]:
    """auto skips a backend this kernel refused earlier in this boot (fentry where trampolines
    are not allowed): compiling its programs only to be refused again costs most of a second."""
    if requested != "auto" or not btf_cache.writable():
        return plans
    kept = []
    for i, plan in enumerate(plans):
        try:
            why = _refusal_file(plan.backend).read_text().strip()
        except FileNotFoundError:
            why = ""
        if why and i < len(plans) - 1:
            skipped.append(f"{plan.backend}: {why} (refused earlier in this boot: not tried again)")
        else:
            kept.append(plan)
    return kept


def _remember_refusal(plan: Plan, why: str) -> None:
    _refusal_file(plan.backend).write_text(why + "\n")


def offsets_for(plan: Plan, btf: Btf) -> list[str]:
    """The struct offsets its text reads: the fd walk (bpf/shared/fd_sock.bpf.c) in the
    tracepoint texts and the watch's, the syscalls' registers in the tracepoint texts
    (bpf/shared/syscalls.bpf.c), the watch's address and protocol fields."""
    watch, tracepoints = plan.mode == "watch", plan.backend == "tracepoint"
    return struct_offsets(btf, fd=watch or tracepoints, watch=watch, syscalls=tracepoints)


def load_first(plans: list[Plan], skipped: list[str], progress: Callable[[str], None],
               extra_cflags: list[str] | tuple[str, ...] = (), raw: bool = False):
    """Load the first plan the kernel accepts (auto: kprobe, then fentry, then
    tracepoints); a refused backend is added to skipped. Returns (session, plan).
    The plans are prepare()'s, which carry their struct offsets. raw: the session
    hands out records' bytes (BpfSession)."""
    from tracer.collect.bpf import BackendUnavailable, BpfSession  # bcc only once the checks passed

    for i, plan in enumerate(plans):
        progress(f"compiling and loading the BPF programs ({plan.backend} backend, bcc)")
        session = BpfSession(plan, [*plan.offsets, *extra_cflags], raw=raw)
        try:
            session.load()
            return session, plan
        except BackendUnavailable as exc:
            if exc.refused and btf_cache.writable():
                _remember_refusal(plan, exc.message)
            if i == len(plans) - 1:
                raise
            skipped.append(f"{plan.backend}: {exc.message}")
    raise AssertionError("no plans")  # candidates() never returns an empty list


def new_recording(plan: Plan, btf: Btf, notes: list[str], view: KernelView) -> Recording:
    """What a recording starts with. kernel_functions: the reproduction's functions this
    kernel has (the claims look them up), with watch also its own."""
    names = state_names_from_btf(btf)
    listed = {*functions_of("repro"), *functions_of(plan.mode)}
    return Recording(
        kernel_functions=sorted(f for f in view.functions if f in listed),
        kernel=os.uname().release,
        backend=plan.backend,
        backend_notes=notes,
        attached=plan.attached_names(),
        missing=list(plan.missing),
        state_names=names or dict(TCP_STATES_FALLBACK),
        state_names_source="BTF of the running kernel" if names else FALLBACK_SOURCE,
        missing_notes=list(plan.notes),
        tracepoint_fields=recorded_fields(view),
    )


def ebpf_listing(mode: str, backend: str, extra_cflags: list[str] | tuple[str, ...] = ()) -> str:
    """What `--ebpf` prints: the text BpfSession would compile here, after a comment
    saying which plan it is. Needs no root: when tracefs cannot be read (it is root's),
    the kernel is not inspected and the table's full plan is shown (for auto, kprobe's)."""
    said = []
    try:
        btf = load_btf()
    except UserError as exc:
        btf = None
        said.append(f"without struct offsets ({exc.message})")
    tracefs = find_tracefs()
    plan = None
    if tracefs is None or btf is None:
        said.append("this kernel could not be inspected (tracefs is readable by root only, or BTF is missing)")
    else:
        try:
            plans, skipped = candidates(mode, backend, read_view(tracefs, btf))
            plan = plans[0]
            said += [f"not {s}" for s in skipped]
            if backend == "auto":
                said.append(f"{plan.backend} is auto's first choice here (the kernel may still refuse it at load; "
                            "then auto loads the next)")
            else:
                said.append(f"the {plan.backend} backend with the probes this kernel has")
        except UserError as exc:
            said.append(f"this kernel: {exc.message}")
    if plan is None:
        shown = "kprobe" if backend == "auto" else backend
        everything = KernelView(kprobes=True, btf=True, functions=frozenset(function_targets()),
                                tracepoints=frozenset(tracepoint_targets()),
                                prototypes=prototypes_of(btf, function_targets())[0] if btf is not None else None)
        plan = plan_for(mode, shown, everything)
        said.append(f"shown: the {shown} backend with every probe of the table"
                    + (" (auto's first choice where the kernel has kprobes)" if backend == "auto" else ""))
    offsets = offsets_for(plan, btf) if btf is not None else []
    text = sources.program_text(plan.mode, plan.backend, sources.compile_flags(plan.defines(), [*offsets, *extra_cflags]))
    note = "".join(f"\n * {line}" for line in said)
    return f"/* trace-halfclose --ebpf ({mode}, --backend {backend}):{note}\n */\n{text}"
