"""Tracepoints attached raw (tracer/collect/plan.py, bpf/): each program reads the
tracepoint's C arguments, ctx->args[n], so the plan checks the argument types a row
declares against the tracepoint's prototype in BTF (btf_trace_<name>) before
anything is attached, on recorded kernels of every era.

Prototypes used: the btf_trace_ typedefs of Debian's 6.1.0-57 and 6.12.117 and of
this machine's 6.18.44 (tests/unit/data/btf-prototypes.json, "tracepoints"); they
match TP_PROTO in include/trace/events/{sock,tcp,net,signal,task,sched,syscalls}.h
of those trees (6.1: no sock_send_length, a 6.3 tracepoint; 6.10+: tcp_send_reset
gained a third argument, the reason; 6.18: task_newtask's clone_flags is a u64,
sched_process_exit gained group_dead).
"""
from __future__ import annotations

import re

import pytest

from tracer.errors import UserError
from tracer.collect import sources
from tracer.collect.plan import BACKENDS, MODES, PROBES, candidates, function_targets, plan_for
from tracer.kernel.btf import FuncProto, Param
from tests.unit.kernels import RECORDED, recorded_prototypes, recorded_tracepoint_protos, view
from tests.unit.test_bpf_sources import WATCH_FILTER, preprocess, stub_includes  # noqa: F401 (fixture)


def kernel(name: str, tracepoint_protos=None, drop=()):
    """A recorded kernel: the tracepoints its BTF has, with their prototypes."""
    tps = tracepoint_protos if tracepoint_protos is not None else recorded_tracepoint_protos(name)
    return view(function_targets(), [tp for tp in tps if tp not in drop], recorded_prototypes(name),
                tracepoint_protos=tps)


def plan(mode, backend, v):
    return plan_for(mode, backend, v, follow=mode == "watch", by_pid=mode == "watch")


@pytest.mark.parametrize("name", RECORDED)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_tracepoint_of_a_recorded_kernel_has_the_arguments_its_program_reads(name, mode, backend):
    v = kernel(name)
    p = plan(mode, backend, v)
    wanted = {x.target for x in PROBES if not x.is_function and x.serves(mode, backend)}
    assert set(p.tracepoints) == wanted & set(v.tracepoints)
    assert not [n for n in p.notes if "prototype" in n], p.notes


def test_6_1_lacks_sock_send_length_and_plans_without_it():
    p = plan("repro", "tracepoint", kernel("6.1.0-57-amd64"))
    assert "sock:sock_send_length" in p.missing and "-DHAVE_sock_send_length" not in p.defines()


def test_const_is_not_compared_and_each_spelling_of_a_slot_counts():
    """inet_sock_set_state's (const struct sock *, const int, const int) is the row's (struct sock *, int, int);
    task_newtask's clone_flags is `long unsigned int` on 6.1 and 6.12, `u64` on 6.18."""
    for name in RECORDED:
        p = plan("watch", "tracepoint", kernel(name))
        assert "sock:inet_sock_set_state" in p.tracepoints and "task:task_newtask" in p.tracepoints


def _with(name: str, tp: str, *types: str) -> dict[str, FuncProto]:
    protos = dict(recorded_tracepoint_protos(name))
    protos[tp] = FuncProto(tp.split(":")[1], tuple(Param("", t) for t in types), "void")
    return protos


def test_an_optional_tracepoint_of_another_shape_is_left_out_with_the_reason():
    v = kernel("6.18.44-fc-v769", _with("6.18.44-fc-v769", "signal:signal_generate", "int", "struct task_struct *"))
    for backend in BACKENDS:
        p = plan_for("repro", backend, v)
        assert "signal:signal_generate" in p.missing and "-DHAVE_signal_generate" not in p.defines()
        note = next(n for n in p.notes if n.startswith("signal:signal_generate:"))
        assert "(int, struct task_struct *)" in note and "does not begin with" in note


def test_a_required_tracepoint_of_another_shape_refuses_the_backend_in_one_line():
    v = kernel("6.18.44-fc-v769", _with("6.18.44-fc-v769", "tcp:tcp_receive_reset", "struct sk_buff *"))
    with pytest.raises(UserError) as ei:
        plan_for("repro", "tracepoint", v)
    assert "tracepoint tcp:tcp_receive_reset" in ei.value.message and "(struct sk_buff *)" in ei.value.message
    assert "\n" not in ei.value.message and "btf_trace_tcp_receive_reset" in ei.value.remedy
    plans, skipped = candidates("repro", "auto", v)  # kprobe and fentry do not use it
    assert [x.backend for x in plans] == ["kprobe", "fentry"]


def test_a_tracepoint_the_mode_needs_of_another_shape_refuses_the_mode():
    v = kernel("6.18.44-fc-v769", _with("6.18.44-fc-v769", "sock:inet_sock_set_state", "struct sock *"))
    with pytest.raises(UserError, match="inet_sock_set_state"):
        plan_for("watch", "kprobe", v)


def test_a_tracepoint_without_its_btf_trace_typedef_is_not_attached():
    """In tracefs but not in BTF: where its arguments are is unknown, so its program stays out."""
    protos = dict(recorded_tracepoint_protos("6.12.117+deb12-amd64"))
    del protos["net:net_dev_start_xmit"]
    v = view(function_targets(), [*protos, "net:net_dev_start_xmit"], recorded_prototypes("6.12.117+deb12-amd64"),
             tracepoint_protos=protos)
    p = plan_for("repro", "kprobe", v)
    assert "net:net_dev_start_xmit" in p.missing
    assert any(n.startswith("net:net_dev_start_xmit:") and "prototype is unknown" in n for n in p.notes)


def test_a_view_that_read_no_btf_does_not_check_tracepoints():
    v = view(function_targets(), recorded_tracepoint_protos("6.1.0-57-amd64"), recorded_prototypes("6.1.0-57-amd64"))
    assert v.tracepoint_protos is None
    assert "tcp:tcp_receive_reset" in plan_for("repro", "tracepoint", v).tracepoints


@pytest.mark.parametrize("name", RECORDED)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_each_program_reads_only_the_arguments_its_row_declares(name, mode, backend, stub_includes):
    """Preprocessed as bcc would compile it here: a tracepoint program reads ctx->args[n] only for
    the n its row checked in BTF (the kernel also refuses, at attach, a program reading past the
    tracepoint's last argument: bpf_raw_tp_link_attach's max_ctx_offset check, kernel/bpf/syscall.c)."""
    p = plan(mode, backend, kernel(name))
    cflags = sources.compile_flags(p.defines(), WATCH_FILTER if mode == "watch" else [])
    c = preprocess(sources.program_text(mode, backend, cflags), cflags, stub_includes)
    bodies = dict(re.findall(r"^int (\w+)\(struct bpf_raw_tracepoint_args \*ctx\)\s*(\{.*?^\})", c, re.M | re.S))
    for probe in p.probes:
        if probe.is_function:
            continue
        body = bodies[probe.program]
        slots = {int(s) for s in re.findall(r"ctx->args\[(\d+)\]", body)}
        if "hc_sys_" in body:  # bpf/shared/syscalls.bpf.c's helpers read args[0] (regs) and args[1] (id, ret)
            slots |= {0, 1}
        assert not slots or max(slots) < len(probe.args), (probe.name, slots, probe.args)
