"""What the running kernel offers for tracing, read once for both modes:
kprobes, BTF, the BPF ring buffer, which of the tool's functions and
tracepoints exist, the functions' prototypes (from BTF: where each argument
is) and the tracepoints' record fields (from tracefs).

The KernelView is plain data: tracer/collect/plan.py chooses backends and
probes from it, and tests write one by hand. kernel_view() reads it from
tracefs, /proc/kallsyms and BTF for the names the caller asks about (the
targets of the plan's table), so this module knows nothing of the probes.

Needs tracefs (root, on most systems: it is mode 0700); BTF from
/sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF=y).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tracer.errors import UserError
from tracer.kernel.btf import Btf, BtfError, FuncProto
from tracer.kernel.support import kernel_functions, kprobes_available, tracepoint_exists, tracepoint_fields

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
    # Of `functions`, the prototypes BTF gives (parameter names and order): the BPF
    # programs read arguments at these positions. None: BTF was not read, no position is known.
    prototypes: Mapping[str, FuncProto] | None = None
    # Why a function's prototype is not in `prototypes` (ambiguous, variadic, absent from BTF).
    prototype_errors: Mapping[str, str] = field(default_factory=dict)
    # The BPF ring buffer (BPF_MAP_TYPE_RINGBUF, 5.8+). None: not checked.
    ringbuf: bool | None = None
    # Of `tracepoints`, the fields of their records (tracefs format files).
    tracepoint_fields: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Of `tracepoints`, the arguments a raw tracepoint program gets (BTF's btf_trace_<name>, unnamed
    # parameters); why one is missing goes in prototype_errors under "category:name". None: BTF not read.
    tracepoint_protos: Mapping[str, FuncProto] | None = None


def load_btf(path: Path | None = None) -> Btf:
    """The running kernel's BTF; as root, its answers come from this boot's cache when it has them."""
    from tracer.kernel import btf_cache

    try:
        return btf_cache.load(path or BTF_PATH)
    except BtfError as exc:
        raise UserError(f"this kernel has no readable BTF, which the tool needs (in sysfs since Linux 5.4): {exc}",
                        "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (`trace-halfclose vm --kconfig` lists "
                        "what a kernel needs)") from None


# A function of the BPF ring buffer (kernel/bpf/ringbuf.c, BPF_CALL_4 since 5.8): where BTF
# does not say whether enum bpf_map_type has BPF_MAP_TYPE_RINGBUF, kallsyms does.
RINGBUF_SYMBOL = "bpf_ringbuf_output"


def has_ringbuf(btf: Btf, functions: Iterable[str] = ()) -> bool:
    """Whether the kernel has the BPF ring buffer: enum bpf_map_type in its BTF, else a symbol."""
    try:
        return "BPF_MAP_TYPE_RINGBUF" in btf.enum_values("bpf_map_type")
    except BtfError:
        return RINGBUF_SYMBOL in set(functions)


def prototypes_of(btf: Btf, functions: Iterable[str]) -> tuple[dict[str, FuncProto], dict[str, str]]:
    """The BTF prototypes of the given functions, and why each one without is without."""
    found, errors = {}, {}
    for f in functions:
        try:
            found[f] = btf.func_proto(f)
        except BtfError as exc:
            errors[f] = str(exc)
    return found, errors


def tracepoint_prototypes_of(btf: Btf, tracepoints: Iterable[str]) -> tuple[dict[str, FuncProto], dict[str, str]]:
    """The raw tracepoint prototypes of the given "category:name" tracepoints, and why each one
    without is without."""
    found, errors = {}, {}
    for tp in tracepoints:
        try:
            found[tp] = btf.tracepoint_proto(tp.split(":")[1])
        except BtfError as exc:
            errors[tp] = str(exc)
    return found, errors


def kernel_view(tracefs: Path, btf: Btf, functions: Iterable[str], tracepoints: Iterable[str],
                kallsyms: Path = Path("/proc/kallsyms")) -> KernelView:
    """The view of this kernel for the given function and tracepoint names."""
    wanted = set(functions)
    symbols = kernel_functions(kallsyms, wanted=wanted | {RINGBUF_SYMBOL})
    found = frozenset(symbols & wanted)
    protos, errors = prototypes_of(btf, sorted(found))
    tps = frozenset(tp for tp in tracepoints if tracepoint_exists(tracefs, *tp.split(":")))
    fields = {tp: tracepoint_fields(tracefs, *tp.split(":")) for tp in sorted(tps)}
    tp_protos, tp_errors = tracepoint_prototypes_of(btf, sorted(tps))
    return KernelView(
        kprobes=kprobes_available(tracefs),
        btf=BTF_PATH.exists(),
        functions=found,
        tracepoints=tps,
        btf_functions=frozenset(f for f in found if btf.func_exists(f)),
        prototypes=protos,
        prototype_errors={**errors, **tp_errors},
        ringbuf=has_ringbuf(btf, symbols),
        tracepoint_fields={tp: f for tp, f in fields.items() if f is not None},
        tracepoint_protos=tp_protos,
    )
