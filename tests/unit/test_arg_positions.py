"""Where each probed function's arguments are: the plan's -DARG_/-DRET_ slots come from
the kernel's BTF prototype (tracer/collect/plan.py), on recorded kernels of every era.

Prototypes used (tests/unit/kernels.py): Debian's 6.1.0-57 and 6.12.117 and this
machine's 6.18.44 from their BTF; 5.15 from the source of 5.15.100 (tcp_recvmsg
with `nonblock`, net/ipv4/tcp.c). The BPF texts, preprocessed as in
test_bpf_sources.py, must read exactly those slots.
"""
from __future__ import annotations

import dataclasses
import re

import pytest

from tracer.errors import UserError
from tracer.collect import sources
from tracer.collect.plan import BACKENDS, MODES, function_targets, plan_for, tracepoint_targets
from tracer.kernel.btf import FuncProto, Param
from tests.unit.kernels import PROTOTYPES_5_15, RECORDED, recorded_prototypes, view
from tests.unit.test_bpf_sources import WATCH_FILTER, preprocess, stub_includes  # noqa: F401 (fixture)

ALL_FUNCS = function_targets()
ALL_TPS = tracepoint_targets()
KERNELS = {"5.15.100 (source)": PROTOTYPES_5_15, **{k: recorded_prototypes(k) for k in RECORDED}}
# The fexit return slot of tcp_recvmsg = its number of parameters, per kernel (the refusal on 5.15).
RECVMSG_RET = {"5.15.100 (source)": 6, "6.1.0-57-amd64": 5, "6.12.117+deb12-amd64": 5, "6.18.44-fc-v769": 4}


def kernel(name: str, functions=ALL_FUNCS, **kw):
    return view(functions, ALL_TPS, KERNELS[name], **kw)


def flags(plan) -> dict[str, int]:
    return {m[1]: int(m[2]) for f in plan.defines() if (m := re.match(r"-D((?:ARG|RET)_\w+)=(\d+)$", f))}


@pytest.mark.parametrize("name", KERNELS)
def test_fexit_return_slot_follows_every_parameter(name):
    d = flags(plan_for("repro", "fentry", kernel(name)))
    assert d["RET_tcp_recvmsg"] == RECVMSG_RET[name]
    assert (d["ARG_tcp_recvmsg_sk"], d["ARG_tcp_recvmsg_len"]) == (0, 2)
    assert (d["ARG_tcp_sendmsg_locked_sk"], d["ARG_tcp_sendmsg_locked_size"], d["RET_tcp_sendmsg_locked"]) == (0, 2, 3)
    assert (d["ARG_sk_stream_error_err"], d["RET_sk_stream_error"]) == (2, 3)
    assert d["ARG_tcp_v4_send_reset_skb"] == 1


def test_5_15_has_no_tcp_done_with_error_and_plans_without_it():
    functions = [f for f in ALL_FUNCS if f != "tcp_done_with_error"]
    plan = plan_for("repro", "fentry", kernel("5.15.100 (source)", functions))
    assert "tcp_done_with_error" in plan.missing
    assert not [f for f in plan.defines() if "tcp_done_with_error" in f]


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("mode", MODES)
def test_the_fentry_text_reads_the_slots_of_this_kernel(name, mode, stub_includes):
    """Preprocessed with this kernel's plan: kretfunc__tcp_recvmsg reads ctx[RET], every
    program reads only planned slots, and no ctx slot is past the function's last (+1 for fexit)."""
    plan = plan_for(mode, "fentry", kernel(name))
    extra = WATCH_FILTER if mode == "watch" else []
    cflags = sources.compile_flags(plan.defines(), extra)
    c = preprocess(sources.program_text(mode, "fentry", cflags), cflags, stub_includes)
    bodies = dict(re.findall(r"^int (k(?:ret)?func__\w+)\(unsigned long long \*ctx\)\s*(\{.*?^\})", c, re.M | re.S))
    assert bodies, "no fentry programs"
    protos = KERNELS[name]
    for prog, body in bodies.items():
        func = prog.split("__", 1)[1]
        last = len(protos[func].params) - (0 if prog.startswith("kretfunc") else 1)
        slots = [int(s) for s in re.findall(r"ctx\[(\d+)\]", body)]
        assert all(s <= last for s in slots), (prog, slots, last)
    if mode == "repro":
        assert f"ctx[{RECVMSG_RET[name]}]" in bodies["kretfunc__tcp_recvmsg"]


def test_a_prototype_without_a_read_parameter_leaves_the_probe_out_with_the_reason():
    """A kernel whose tcp_recvmsg has no `len`: its probes are missing, said why; the rest runs."""
    protos = dict(KERNELS["6.1.0-57-amd64"])
    protos["tcp_recvmsg"] = FuncProto("tcp_recvmsg", (Param("sk", "struct sock *"), Param("msg", "struct msghdr *"),
                                                      Param("size", "size_t")), "int")
    v = view(ALL_FUNCS, ALL_TPS, protos)
    for backend in ("kprobe", "fentry"):
        plan = plan_for("repro", backend, v)
        assert "tcp_recvmsg" in plan.missing
        assert not [p for p in plan.probes if p.target == "tcp_recvmsg"]  # the kretprobe goes with its entry
        note = next(n for n in plan.notes if n.startswith("tcp_recvmsg:"))
        assert "(sk, msg, size)" in note and "'len'" in note
        assert not [f for f in plan.defines() if "tcp_recvmsg" in f]


def test_an_unknown_shape_of_a_required_function_refuses_the_backend_in_one_line():
    protos = dict(KERNELS["6.1.0-57-amd64"])
    protos["tcp_sendmsg_locked"] = FuncProto("tcp_sendmsg_locked", (Param("sk", "struct sock *"),), "int")
    v = view(ALL_FUNCS, ALL_TPS, protos)
    for backend in ("kprobe", "fentry"):
        with pytest.raises(UserError) as ei:
            plan_for("repro", backend, v)
        assert "tcp_sendmsg_locked" in ei.value.message and "'size'" in ei.value.message
        assert "\n" not in ei.value.message
    # auto: the tracepoint backend reads no function argument and still runs
    from tracer.collect.plan import candidates
    plans, skipped = candidates("repro", "auto", v)
    assert [p.backend for p in plans] == ["tracepoint"] and len(skipped) == 2


def test_a_function_absent_from_btf_is_probed_by_kprobe_only_when_it_reads_its_first_argument():
    """tcp_fin in kallsyms but not in BTF: its kprobe reads sk, the first argument (slot 0); its
    fentry cannot attach; a function whose kprobe reads further (tcp_recvmsg) is left out."""
    protos = {f: p for f, p in KERNELS["6.1.0-57-amd64"].items() if f not in ("tcp_fin", "tcp_recvmsg")}
    v = dataclasses.replace(view(ALL_FUNCS, ALL_TPS, protos), prototype_errors={"tcp_fin": "no function named "
                                                                                "'tcp_fin' in BTF"})
    kp = plan_for("repro", "kprobe", v)
    assert "kprobe:tcp_fin" in kp.attached_names() and "-DARG_tcp_fin_sk=0" in kp.defines()
    assert "tcp_recvmsg" in kp.missing
    fe = plan_for("repro", "fentry", v)
    assert "tcp_fin" in fe.missing
    assert any(n.startswith("tcp_fin:") and "no function named 'tcp_fin'" in n for n in fe.notes)


def test_no_btf_read_means_no_position_is_known():
    v = dataclasses.replace(view(ALL_FUNCS, ALL_TPS, {}), prototypes=None)
    with pytest.raises(UserError, match="BTF was not read"):
        plan_for("repro", "fentry", v)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_planned_reader_has_its_slots_defined(mode, backend):
    """Each row that reads an argument gets ARG_ for every parameter it reads (RET_ for fexit)."""
    plan = plan_for(mode, backend, kernel("6.18.44-fc-v769"))
    d = flags(plan)
    for p in plan.probes:
        for param in p.reads:
            assert f"ARG_{p.target}_{param}" in d, p
        if p.hook == "fexit":
            assert f"RET_{p.target}" in d, p
