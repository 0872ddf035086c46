"""What the running kernel offers for tracing, read once for both modes:
kprobes, BTF, which of the tool's functions and tracepoints exist.

The KernelView is plain data: tracer/collect/plan.py chooses backends and
probes from it, and tests write one by hand. kernel_view() reads it from
tracefs, /proc/kallsyms and BTF for the names the caller asks about (the
targets of the plan's table), so this module knows nothing of the probes.

Needs tracefs (root, on most systems: it is mode 0700); BTF from
/sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF=y).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tracer.errors import UserError
from tracer.kernel.btf import Btf, BtfError
from tracer.kernel.support import kernel_functions, kprobes_available, tracepoint_exists

BTF_PATH = Path("/sys/kernel/btf/vmlinux")


@dataclass(frozen=True)
class KernelView:
    """What the running kernel offers, as far as choosing probes goes."""

    kprobes: bool
    btf: bool
    functions: frozenset[str]  # in /proc/kallsyms
    tracepoints: frozenset[str]  # "category:name", in tracefs
    # Of `functions`, those with BTF: an fentry program attaches only to those.
    # None: not checked (every function in kallsyms counts).
    btf_functions: frozenset[str] | None = None


def load_btf(path: Path | None = None) -> Btf:
    try:
        return Btf.load(str(path or BTF_PATH))
    except BtfError as exc:
        raise UserError(f"cannot read the kernel's BTF: {exc}", "use a kernel built with CONFIG_DEBUG_INFO_BTF=y") from None


def kernel_view(tracefs: Path, btf: Btf, functions: Iterable[str], tracepoints: Iterable[str],
                kallsyms: Path = Path("/proc/kallsyms")) -> KernelView:
    """The view of this kernel for the given function and tracepoint names."""
    found = frozenset(kernel_functions(kallsyms, wanted=set(functions)))
    return KernelView(
        kprobes=kprobes_available(tracefs),
        btf=BTF_PATH.exists(),
        functions=found,
        tracepoints=frozenset(tp for tp in tracepoints if tracepoint_exists(tracefs, *tp.split(":"))),
        btf_functions=frozenset(f for f in found if btf.func_exists(f)),
    )
