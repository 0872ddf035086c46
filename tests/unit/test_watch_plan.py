"""Watch mode's probe plan (tracer/collect/plan.py, the rows that serve watch) against
hand-written kernels, and its program names against the watch's BPF texts (bpf/watch/).

Kernel facts used: write(2) reaches ksys_write, send/sendto(2) __sys_sendto,
sendmsg(2) __sys_sendmsg (net/socket.c) and writev(2) do_writev
(fs/read_write.c) -- all four in /proc/kallsyms of Debian's 6.1.0-56 and
6.12.117 and of the 6.18.44 microVM. With tracepoints, every syscall's entry and
exit: raw_syscalls:sys_enter and sys_exit (include/trace/events/syscalls.h), the
events syscalls:sys_{enter,exit}_<call> are built on (kernel/trace/trace_syscalls.c).
"""
import re

import pytest

from tracer.errors import UserError
from tracer.collect import sources
from tracer.collect.plan import (BACKENDS, CALLS, DESTROY_TP, EXIT_TP, EXPLICIT, NEWTASK_TP, STATE_TP, SYS_ENTER_TP,
                                 SYS_EXIT_TP, candidates, function_targets, plan_for, tracepoint_targets)
from tracer.kernel.view import KernelView
from tests.unit.kernels import recorded_prototypes

# The write path's functions watch probes (kprobe, fentry), and where each write-like call has its fd.
WATCH_FUNCS = ("tcp_sendmsg_locked", "sk_stream_wait_connect", "sk_stream_error", "tcp_reset",
               "tcp_done_with_error", "tcp_done", "tcp_fin")
CALL_FUNCS = frozenset(func for func, _ in CALLS)
SYSCALL_TPS = (SYS_ENTER_TP, SYS_EXIT_TP)
ALL_FUNCS = frozenset(function_targets())
ALL_TPS = frozenset(tracepoint_targets())


def view(functions=ALL_FUNCS, tracepoints=ALL_TPS, kprobes=True, btf=True, btf_functions=None) -> KernelView:
    # Where each function's arguments are: the BTF of Debian's 6.1.0-57 (tests/unit/kernels.py).
    return KernelView(kprobes=kprobes, btf=btf, functions=frozenset(functions), tracepoints=frozenset(tracepoints),
                      btf_functions=btf_functions, prototypes=recorded_prototypes("6.1.0-57-amd64"))


def plan(backend, v=None, follow=False, by_pid=False):
    return plan_for("watch", backend, v or view(), follow=follow, by_pid=by_pid)


@pytest.mark.parametrize("backend", BACKENDS)
def test_watch_texts_join_the_watch_parts_only(backend):
    parts = sources.parts("watch", backend)
    # The reproduction's parts define programs on the same hooks (TRACEPOINT_PROBE, KFUNC_PROBE): never together.
    assert not [p for p in parts if p.startswith("repro/")]
    assert f"watch/{backend}.bpf.c" in parts and "watch/common.bpf.c" in parts
    # kprobe and fentry report returns through the stash of the socket their entry saw.
    assert ("shared/stash.bpf.c" in parts) == (backend != "tracepoint")


def test_kprobe_programs_exist_in_the_bpf_source():
    """attach_kprobe(fn_name=...) fails at run time if a program is missing."""
    p = plan("kprobe")
    defined = set(re.findall(r"^int\s+(\w+)\s*\(\s*struct\s+pt_regs\s*\*", sources.joined("watch", "kprobe"), re.M))
    assert set(p.functions) == set(WATCH_FUNCS) | CALL_FUNCS
    for probe in p.probes:
        if probe.is_function:
            assert probe.hook in ("kprobe", "kretprobe") and probe.program in defined, probe


def test_fentry_programs_exist_for_each_call_under_its_have_macro():
    body = (sources.bpf_dir() / "watch/fentry.bpf.c").read_text()
    for func in CALL_FUNCS:
        m = re.search(r"#ifdef HAVE_%s\n(.*?)#endif" % re.escape(func), body, re.S)
        assert m, func
        assert f"KFUNC_PROBE({func})" in m.group(1) and f"KRETFUNC_PROBE({func})" in m.group(1)
    assert all(f"-DHAVE_{func}" in plan("fentry").defines() for func in CALL_FUNCS)


def test_tracepoint_programs_exist():
    """Every tracepoint is attached raw by user space, its program taking the raw arguments."""
    body = sources.joined("watch", "tracepoint")
    defined = set(re.findall(r"^int\s+(\w+)\s*\(\s*struct\s+bpf_raw_tracepoint_args\s*\*ctx", body, re.M))
    p = plan("tracepoint", follow=True, by_pid=True)
    attached = p.attached_at(EXPLICIT)
    assert attached == p.probes and set(SYSCALL_TPS) <= {x.target for x in attached}
    for probe in attached:
        assert probe.program in defined, probe


def test_the_syscall_programs_keep_each_write_like_call_by_its_number():
    """raw_syscalls fires for every syscall: the programs pick the four calls by number (__NR_<call>)."""
    body = sources.joined("watch", "tracepoint")
    for program in ("watch_sys_enter", "watch_sys_exit"):
        text = re.search(rf"^int {program}\(.*?^}}", body, re.M | re.S).group(0)
        assert all(f"__NR_{call}" in text for _, call in CALLS), program


def test_all_present_attaches_calls_and_misses_nothing():
    for backend in ("kprobe", "fentry"):
        p = plan(backend, follow=True, by_pid=True)
        names = p.attached_names()
        on, off = ("kprobe", "kretprobe") if backend == "kprobe" else ("fentry", "fexit")
        for func in CALL_FUNCS:
            assert f"{on}:{func}" in names and f"{off}:{func}" in names
        assert f"tracepoint:{STATE_TP}" in names and f"tracepoint:{NEWTASK_TP}" in names
        assert p.missing == ()


def test_tracepoint_backend_uses_the_syscall_tracepoints():
    p = plan("tracepoint")
    names = p.attached_names()
    assert all(f"tracepoint:{tp}" in names for tp in SYSCALL_TPS)
    assert "tracepoint:tcp:tcp_receive_reset" in names and p.functions == ()


def test_missing_call_functions_are_listed_not_fatal():
    p = plan("kprobe", view(functions=ALL_FUNCS - {"do_writev"}))
    assert "do_writev" in p.missing and [f for f in p.functions if f in CALL_FUNCS] == [
        "ksys_write", "__sys_sendto", "__sys_sendmsg"]
    # With tracepoints the calls come from raw_syscalls' entry and exit together: without either,
    # the backend cannot follow a write.
    with pytest.raises(UserError, match="raw_syscalls:sys_exit"):
        plan("tracepoint", view(tracepoints=ALL_TPS - {SYS_EXIT_TP}))


def test_fentry_needs_btf_for_a_call_function():
    funcs = frozenset(ALL_FUNCS - {"do_writev"})
    assert "do_writev" not in plan("fentry", view(btf_functions=funcs)).functions
    assert "do_writev" in plan("kprobe", view(btf_functions=funcs)).functions


def test_filter_decides_the_process_tracepoints():
    assert f"tracepoint:{NEWTASK_TP}" not in plan("kprobe").attached_names()
    assert f"tracepoint:{EXIT_TP}" in plan("kprobe", by_pid=True).attached_names()
    assert f"-DHAVE_{NEWTASK_TP.split(':')[1]}" in plan("kprobe", follow=True).defines()
    assert f"tracepoint:{DESTROY_TP}" in plan("tracepoint").attached_names()


def test_errors():
    with pytest.raises(UserError, match="inet_sock_set_state"):
        plan("kprobe", view(tracepoints=ALL_TPS - {STATE_TP}))
    with pytest.raises(UserError, match="task_newtask") as ei:
        plan("kprobe", view(tracepoints=ALL_TPS - {NEWTASK_TP}), follow=True)
    assert "--comm or --port" in ei.value.remedy


def test_auto_chooses_as_the_reproduction_does():
    plans, skipped = candidates("watch", "auto", view(kprobes=False))
    assert [p.backend for p in plans] == ["fentry", "tracepoint"]
    assert skipped[0].startswith("kprobe: this kernel has no kprobes")
