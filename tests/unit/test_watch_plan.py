"""Watch mode's probe plan (tracer/probe_plan.py watch_plan) against hand-written
kernels, and its program names against bpf/halfclose.bpf.c's HC_WATCH section.

Kernel facts used: write(2) reaches ksys_write, send/sendto(2) __sys_sendto,
sendmsg(2) __sys_sendmsg (net/socket.c) and writev(2) do_writev
(fs/read_write.c) -- all four in /proc/kallsyms of Debian's 6.1.0-56 and
6.12.117 and of the 6.18.44 microVM; their syscall tracepoints are
syscalls:sys_{enter,exit}_<call> (SYSCALL_DEFINE).
"""
import re
from pathlib import Path

import pytest

from tracer.errors import UserError
from tracer.collect.plan import (DESTROY_TP, EXIT_TP, FUNCTIONS, NEWTASK_TP, STATE_TP, TRACEPOINTS, WATCH_CALLS,
                               WATCH_FUNCS, WATCH_SYS_EXIT, WATCH_TP_EVENTS, KernelView, watch_candidates, watch_plan,
                               plan_for)

BPF_SOURCE = Path(__file__).resolve().parents[2] / "bpf" / "halfclose.bpf.c"
CALL_FUNCS = frozenset(c.func for c in WATCH_CALLS)
ALL_FUNCS = frozenset(p.func for p in FUNCTIONS) | CALL_FUNCS
ALL_TPS = (frozenset(tp for tp, _ in TRACEPOINTS) | frozenset(tp for tp, _ in WATCH_TP_EVENTS)
           | {DESTROY_TP, NEWTASK_TP, EXIT_TP} | {tp for c in WATCH_CALLS for tp in c.tracepoints})


def view(functions=ALL_FUNCS, tracepoints=ALL_TPS, kprobes=True, btf=True) -> KernelView:
    return KernelView(kprobes=kprobes, btf=btf, functions=frozenset(functions), tracepoints=frozenset(tracepoints))


def plan(backend, v=None, follow=False, by_pid=False, btf_funcs=None):
    v = v or view()
    return watch_plan(plan_for(backend, v), v, follow, by_pid, btf_funcs)


def section(macro: str) -> str:
    text = BPF_SOURCE.read_text()
    m = re.search(r"#if defined\(%s\)(.*?)#endif /\* %s \*/" % (macro, macro), text, re.S)
    assert m, macro
    return m.group(1)


@pytest.mark.parametrize("backend", ["kprobe", "fentry", "tracepoint"])
def test_defines_select_the_watch_section_only(backend):
    flags = plan(backend).defines()
    assert "-DHC_WATCH" in flags
    # These sections define programs on the same hooks (TRACEPOINT_PROBE, KFUNC_PROBE): never together.
    assert not {"-DHC_FENTRY", "-DHC_TRACEPOINTS", "-DHC_STATE_TRACEPOINT"} & set(flags)
    expected = {"kprobe": "-DHC_WATCH_KPROBE", "fentry": "-DHC_WATCH_FENTRY", "tracepoint": "-DHC_WATCH_TRACEPOINTS"}
    assert expected[backend] in flags
    # kprobe and fentry report returns through the kprobe section's `entered` map.
    assert ("-DHC_KPROBE" in flags) == (backend != "tracepoint")


def test_kprobe_programs_exist_in_the_bpf_source():
    """attach_kprobe(fn_name=...) fails at run time if a program is missing."""
    p = plan("kprobe")
    watch = set(re.findall(r"^int\s+(watch_\w+)\s*\(\s*struct\s+pt_regs\s*\*", section("HC_WATCH_KPROBE"), re.M))
    kprobe = set(re.findall(r"^int\s+(\w+)\s*\(\s*struct\s+pt_regs\s*\*", section("HC_KPROBE"), re.M))
    assert {f.func for f in p.functions} == set(WATCH_FUNCS)
    for f in p.functions:
        assert f.entry in watch, f.entry
        assert f.ret is None or f.ret in kprobe, f.ret
    for c in p.calls:
        assert c.entry in watch and c.ret in watch, c


def test_fentry_programs_exist_for_each_call_under_its_have_macro():
    body = section("HC_WATCH_FENTRY")
    for c in WATCH_CALLS:
        m = re.search(r"#ifdef HAVE_%s\n(.*?)#endif" % re.escape(c.func), body, re.S)
        assert m, c.func
        assert f"KFUNC_PROBE({c.func}," in m.group(1) and f"KRETFUNC_PROBE({c.func}," in m.group(1)
    assert all(f"-DHAVE_{c.func}" in plan("fentry").defines() for c in WATCH_CALLS)


def test_tracepoint_programs_exist():
    body = section("HC_WATCH_TRACEPOINTS")
    defined = set(re.findall(r"^int\s+(\w+)\s*\(\s*struct\s+hc_sys_(?:enter|exit)_args\s*\*", body, re.M))
    for c in plan("tracepoint").calls:
        assert c.tp_entry in defined
    assert WATCH_SYS_EXIT in defined


def test_all_present_attaches_calls_and_misses_nothing():
    for backend in ("kprobe", "fentry"):
        p = plan(backend, follow=True, by_pid=True)
        names = p.attached_names()
        on, off = ("kprobe", "kretprobe") if backend == "kprobe" else ("fentry", "fexit")
        for c in WATCH_CALLS:
            assert f"{on}:{c.func}" in names and f"{off}:{c.func}" in names
        assert f"tracepoint:{STATE_TP}" in names and f"tracepoint:{NEWTASK_TP}" in names
        assert p.missing == ()


def test_tracepoint_backend_uses_the_syscall_tracepoints():
    p = plan("tracepoint")
    names = p.attached_names()
    for c in WATCH_CALLS:
        assert all(f"tracepoint:{tp}" in names for tp in c.tracepoints)
    assert "tracepoint:tcp:tcp_receive_reset" in names and p.functions == ()


def test_missing_call_functions_are_listed_not_fatal():
    p = plan("kprobe", view(functions=ALL_FUNCS - {"do_writev"}))
    assert "do_writev" in p.missing and [c.call for c in p.calls] == ["write", "sendto", "sendmsg"]
    t = plan("tracepoint", view(tracepoints=ALL_TPS - {"syscalls:sys_exit_writev"}))
    assert "writev" not in [c.call for c in t.calls] and "syscalls:sys_enter_writev" in t.missing


def test_fentry_needs_btf_for_a_call_function():
    funcs = frozenset(ALL_FUNCS - {"do_writev"})
    assert "do_writev" not in [c.func for c in plan("fentry", btf_funcs=funcs).calls]
    assert "do_writev" in [c.func for c in plan("kprobe", btf_funcs=funcs).calls]


def test_filter_decides_the_process_tracepoints():
    assert f"tracepoint:{NEWTASK_TP}" not in plan("kprobe").attached_names()
    assert f"tracepoint:{EXIT_TP}" in plan("kprobe", by_pid=True).attached_names()
    assert f"-DHAVE_{NEWTASK_TP.split(':')[1]}" in plan("kprobe", follow=True).defines()


def test_errors():
    with pytest.raises(UserError, match="inet_sock_set_state"):
        plan("kprobe", view(tracepoints=ALL_TPS - {STATE_TP}))
    with pytest.raises(UserError, match="task_newtask") as ei:
        plan("kprobe", view(tracepoints=ALL_TPS - {NEWTASK_TP}), follow=True)
    assert "--comm or --port" in ei.value.remedy


def test_auto_chooses_as_the_reproduction_does():
    plans, skipped = watch_candidates("auto", view(kprobes=False), follow=False, by_pid=False)
    assert [p.backend for p in plans] == ["fentry", "tracepoint"]
    assert skipped[0].startswith("kprobe: this kernel has no kprobes")
