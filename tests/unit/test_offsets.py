"""The struct offsets the BPF texts read (tracer/kernel/offsets.py), from the running
kernel's BTF (skipped without it): which tables each text gets, and the clear error
when a field is missing -- the raw_syscalls programs read x86-64's registers."""
from __future__ import annotations

import pytest

from tracer.errors import UserError
from tracer.kernel.btf import BtfError
from tracer.kernel.offsets import SYSCALL_FIELDS, struct_offsets
from tests.unit.test_btf import kbtf  # noqa: F401 (fixture)


def macros(flags: list[str]) -> dict[str, int]:
    return {f[2:].split("=")[0]: int(f.split("=")[1], 0) for f in flags}


def test_the_raw_tracepoints_fields_are_in_every_text_and_the_registers_only_when_asked(kbtf):
    plain = macros(struct_offsets(kbtf))
    assert {"OFF_INET_SPORT", "OFF_SK_PROTOCOL", "OFF_TASK_PID"} <= plain.keys()
    assert not set(SYSCALL_FIELDS) & plain.keys()
    regs = macros(struct_offsets(kbtf, fd=True, syscalls=True))
    # struct pt_regs on x86-64 (arch/x86/include/asm/ptrace.h): ..., si, di, orig_ax, ip, ...
    assert regs["OFF_REGS_ARG1"] + 8 == regs["OFF_REGS_ARG0"] and regs["OFF_REGS_ARG0"] + 8 == regs["OFF_REGS_NR"]


class _NoRegisters:
    """The running kernel's BTF, but a struct pt_regs without x86-64's register names (arm64's has regs[])."""

    def __init__(self, btf):
        self.btf = btf

    def field(self, struct: str, path: str):
        if struct == "pt_regs":
            raise BtfError(f"no member '{path}' in struct pt_regs")
        return self.btf.field(struct, path)


def test_without_x86_64_registers_the_syscalls_cannot_be_read_and_it_says_so(kbtf):
    btf = _NoRegisters(kbtf)
    assert struct_offsets(btf, fd=True)  # the kprobe and fentry texts do not read them
    with pytest.raises(UserError, match="x86-64's registers") as ei:
        struct_offsets(btf, fd=True, syscalls=True)
    assert "kprobe or fentry" in ei.value.remedy


def test_a_plan_whose_fields_are_missing_is_skipped_when_another_is_left(kbtf):
    from tracer.collect.plan import function_targets, plan_for, tracepoint_targets
    from tracer.collect.prepare import _with_offsets
    from tests.unit.kernels import recorded_prototypes, view

    v = view(function_targets(), tracepoint_targets(), recorded_prototypes("6.18.44-fc-v769"))
    plans = [plan_for("repro", b, v) for b in ("kprobe", "tracepoint")]
    skipped: list[str] = []
    kept = _with_offsets(plans, skipped, _NoRegisters(kbtf))
    assert [p.backend for p in kept] == ["kprobe"] and kept[0].offsets
    assert skipped and skipped[0].startswith("tracepoint: the syscalls' arguments cannot be read")
    with pytest.raises(UserError, match="x86-64"):
        _with_offsets(plans[1:], [], _NoRegisters(kbtf))
