"""Collection for the reproduction: check the kernel, plan and load the
probes, run the reproduction, and return what was seen as a Recording.
"""
from __future__ import annotations

import os
from typing import Callable

from .btf import Btf, BtfError
from .errors import UserError
from .kernel_names import FALLBACK_SOURCE, TCP_STATES_FALLBACK, state_names_from_btf
from .kernel_support import (
    ensure_tracefs,
    headers_dir,
    kernel_functions,
    kprobes_available,
    require_root,
    tracepoint_exists,
)
from .offsets import cflags, field_locations
from .probe_plan import KPROBES, STATE_TRACEPOINT, Plan, kprobe_plan
from .recording import Recording
from . import repro

BTF_PATH = "/sys/kernel/btf/vmlinux"


def load_btf() -> Btf:
    try:
        return Btf.load(BTF_PATH)
    except BtfError as exc:
        raise UserError(f"cannot read the kernel's BTF: {exc}", "use a kernel built with CONFIG_DEBUG_INFO_BTF=y") from None


def prepare_kprobes() -> tuple[Plan, list[str], Btf]:
    """Every check that can fail before bcc runs, in the order a user fixes them."""
    require_root()
    tracefs = ensure_tracefs()
    if not kprobes_available(tracefs):
        raise UserError(
            f"this kernel ({os.uname().release}) has no kprobes: {tracefs}/kprobe_events is missing "
            "(CONFIG_KPROBES or CONFIG_KPROBE_EVENTS is off)",
            "run the reproduction in a VM with a distro kernel: `sudo trace-halfclose vm`",
        )
    if headers_dir() is None:
        raise UserError(
            f"no kernel headers for {os.uname().release} (bcc needs /lib/modules/{os.uname().release}/build)",
            "apt-get install linux-headers-$(uname -r)",
        )
    btf = load_btf()
    try:
        flags = cflags(field_locations(btf))
    except BtfError as exc:
        raise UserError(f"a socket field is missing from BTF: {exc}", "report this kernel version") from None
    funcs = kernel_functions(wanted={p.func for p in KPROBES})
    plan = kprobe_plan(funcs, tracepoint_exists(tracefs, *STATE_TRACEPOINT))
    return plan, flags, btf


def new_recording(backend: str, plan: Plan, btf: Btf) -> Recording:
    names = state_names_from_btf(btf)
    return Recording(
        kernel=os.uname().release,
        backend=backend,
        attached=plan.attached_names(),
        missing=plan.missing_names(),
        state_names=names or dict(TCP_STATES_FALLBACK),
        state_names_source="BTF of the running kernel" if names else FALLBACK_SOURCE,
    )


def collect(opts: repro.ReproOptions, progress: Callable[[str], None]) -> Recording:
    from .probes import KprobeSession  # imports bcc: only once the checks passed

    plan, flags, btf = prepare_kprobes()
    rec = new_recording("kprobe", plan, btf)
    session = KprobeSession(plan, flags)
    progress("compiling and loading the BPF programs (bcc)")
    session.load()
    try:
        return repro.run(session, rec, opts, progress)
    finally:
        session.close()
