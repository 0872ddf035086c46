"""Which backend and probes are used on a kernel, from what it offers (a KernelView).

Kernel facts used (Linux source):
- tcp_sendmsg_locked (net/ipv4/tcp.c, since 4.18), tcp_reset (net/ipv4/tcp_input.c) and
  tcp_done (net/ipv4/tcp.c) exist on every kernel the tool supports;
- tcp_done_with_error (net/ipv4/tcp_input.c) exists only from 6.11 and in stable
  backports (6.1.103+, 6.6.44+); older kernels set sk_err inside tcp_reset;
- tcp_fin can be inlined by GCC into its callers in tcp_input.c.
"""
import re

import pytest

from tracer.errors import UserError
from tracer.record.event import KIND_FUNC, RETURN_KINDS
from tracer.collect import sources
from tracer.collect.plan import BACKEND, STATE_TP, by_target, candidates, functions_of, plan_for, rows
from tracer.kernel.view import KernelView
from tests.unit.kernels import recorded_prototypes

# Where each function's arguments are: the BTF of Debian's 6.1.0-57 (tests/unit/kernels.py).
PROTOS_6_1 = recorded_prototypes("6.1.0-57-amd64")

# The reproduction's functions (kprobe/fentry) and its tracepoint backend's tracepoints, from the plan table.
ALL = frozenset(functions_of("repro"))
TRACEPOINTS = tuple((tp, p.need == BACKEND) for tp, p in by_target(rows("repro", "tracepoint")).items())
ALL_TPS = frozenset(tp for tp, _ in TRACEPOINTS)
REQUIRED = {"tcp_sendmsg_locked", "tcp_reset", "tcp_done"}  # see the module docstring


def view(functions=ALL, tracepoints=ALL_TPS, kprobes=True, btf=True) -> KernelView:
    return KernelView(kprobes=kprobes, btf=btf, functions=frozenset(functions), tracepoints=frozenset(tracepoints),
                      prototypes=PROTOS_6_1)


def plan_for_repro(backend, v):
    return plan_for("repro", backend, v)


def backend_text(backend: str) -> str:
    """The BPF text the reproduction compiles for one backend (bpf/ joined by tracer/collect/sources.py)."""
    return sources.joined("repro", backend)


# --- kprobe backend --------------------------------------------------------------


def test_all_functions_present_attaches_everything_and_misses_nothing():
    plan = plan_for_repro("kprobe", view())
    assert plan.backend == "kprobe"
    assert plan.missing == ()
    names = plan.attached_names()
    for f in ALL:
        assert f"kprobe:{f}" in names
    assert f"tracepoint:{STATE_TP}" in names


def test_full_kprobe_plan_matches_what_the_6_1_run_attached(rec):
    # Debian 6.1.0-56 (6.1.192) has every function, tcp_done_with_error included (6.1.103 backport).
    assert rec.backend == "kprobe" and rec.missing == []
    # ... plus what was planned after that recording: sk_getsockopt (the SO_ERROR steps, issue 13).
    assert sorted(plan_for_repro("kprobe", view()).attached_names()) == sorted(rec.attached + ["kprobe:sk_getsockopt"])


@pytest.mark.parametrize("backend", ["kprobe", "fentry"])
@pytest.mark.parametrize("gone", [{"tcp_sendmsg_locked"}, {"tcp_reset"}, {"tcp_done"}, {"tcp_reset", "tcp_done"}])
def test_missing_required_function_is_a_user_error_naming_it(backend, gone):
    with pytest.raises(UserError) as ei:
        plan_for_repro(backend, view(functions=ALL - gone))
    msg = ei.value.message
    named = set(re.findall(r"\b(?:tcp|sk)_\w+", msg.split(" not found")[0]))
    assert named == gone  # exactly the missing required ones
    assert ei.value.remedy


def test_no_functions_at_all_names_every_required_one():
    with pytest.raises(UserError) as ei:
        plan_for_repro("kprobe", view(functions=()))
    for f in REQUIRED:
        assert f in ei.value.message


def test_kernel_without_tcp_done_with_error_is_traced_without_it():
    plan = plan_for_repro("kprobe", view(functions=ALL - {"tcp_done_with_error"}))
    assert "tcp_done_with_error" in plan.missing
    assert not [n for n in plan.attached_names() if n.endswith(":tcp_done_with_error")]
    assert "kprobe:tcp_reset" in plan.attached_names()  # where sk_err is set on those kernels
    assert "-DHAVE_tcp_done_with_error" not in plan.defines()


def test_inlined_tcp_fin_is_left_out_not_fatal():
    plan = plan_for_repro("kprobe", view(functions=ALL - {"tcp_fin"}))
    assert "tcp_fin" in plan.missing
    assert "kprobe:tcp_fin" not in plan.attached_names()
    assert "kretprobe:tcp_fin" not in plan.attached_names()


def test_missing_state_tracepoint_is_listed_as_missing():
    plan = plan_for_repro("kprobe", view(tracepoints=ALL_TPS - {STATE_TP}))
    assert STATE_TP in plan.missing
    assert f"tracepoint:{STATE_TP}" not in plan.attached_names()
    assert "-DHAVE_inet_sock_set_state" not in plan.defines()


def test_kretprobes_for_every_function_whose_return_is_an_event():
    """The annotation needs return values (tcp_sendmsg_locked's ret, sk_stream_wait_connect's
    ret, sk_err after tcp_done...): each kind that is a return needs a kretprobe."""
    names = plan_for_repro("kprobe", view()).attached_names()
    ret_funcs = {KIND_FUNC[k] for k in RETURN_KINDS}
    assert ret_funcs
    for f in ret_funcs:
        assert f"kretprobe:{f}" in names, f
    for n in names:
        if n.startswith("kretprobe:"):
            assert n.split(":", 1)[1] in ret_funcs, f"{n} attached but no return event is defined"


def test_no_kprobes_points_to_the_vm_command():
    with pytest.raises(UserError) as ei:
        plan_for_repro("kprobe", view(kprobes=False))
    assert "no kprobes" in ei.value.message
    assert "trace-halfclose vm" in ei.value.remedy


def test_every_kprobe_program_exists_in_the_bpf_source():
    """attach_kprobe(fn_name=...) fails at run time if the program is not in the kprobe text."""
    defined = set(re.findall(r"^int\s+(\w+)\s*\(\s*struct\s+pt_regs\s*\*", backend_text("kprobe"), re.M))
    for p in plan_for_repro("kprobe", view()).probes:
        if p.is_function:
            assert p.program in defined, p.program


# --- fentry backend --------------------------------------------------------------


def test_fentry_needs_btf():
    with pytest.raises(UserError) as ei:
        plan_for_repro("fentry", view(btf=False))
    assert "BTF" in ei.value.message


def test_fentry_fexit_names_match_the_bpf_source():
    src = backend_text("fentry")
    kfunc = set(re.findall(r"^KFUNC_PROBE\((\w+)", src, re.M))
    kret = set(re.findall(r"^KRETFUNC_PROBE\((\w+)", src, re.M))
    names = plan_for_repro("fentry", view()).attached_names()
    assert {n.split(":", 1)[1] for n in names if n.startswith("fentry:")} == kfunc
    assert {n.split(":", 1)[1] for n in names if n.startswith("fexit:")} == kret


def test_fentry_optional_functions_are_compiled_only_when_present():
    # The optional fentry programs sit under #ifdef HAVE_<func>: a missing function must
    # not get its -DHAVE_ flag (bcc would fail to attach to a function that is not there).
    src = (sources.bpf_dir() / "repro/fentry.bpf.c").read_text()
    guarded = set(re.findall(r"#ifdef HAVE_(\w+)", src))
    assert guarded
    for f in guarded:
        plan = plan_for_repro("fentry", view(functions=ALL - {f}))
        assert f"-DHAVE_{f}" not in plan.defines()
        assert f in plan.missing
    assert {f"-DHAVE_{f}" for f in guarded} <= set(plan_for_repro("fentry", view()).defines())


# --- tracepoint backend and auto ---------------------------------------------------


def test_tracepoint_backend_names_missing_required_tracepoints():
    required = {tp for tp, req in TRACEPOINTS if req}
    gone = sorted(required)[0]
    with pytest.raises(UserError) as ei:
        plan_for_repro("tracepoint", view(tracepoints=ALL_TPS - {gone}))
    assert gone in ei.value.message


def test_tracepoint_backend_lists_optional_ones_as_missing():
    optional = {tp for tp, req in TRACEPOINTS if not req}
    plan = plan_for_repro("tracepoint", view(tracepoints=ALL_TPS - optional))
    assert set(plan.missing) == optional
    assert not plan.functions


def test_auto_tries_kprobe_then_fentry_then_tracepoints():
    plans, skipped = candidates("repro", "auto", view())
    assert [p.backend for p in plans] == ["kprobe", "fentry", "tracepoint"]
    assert skipped == []


def test_auto_without_kprobes_says_why_kprobe_was_skipped():
    plans, skipped = candidates("repro", "auto", view(kprobes=False))
    assert [p.backend for p in plans] == ["fentry", "tracepoint"]
    assert len(skipped) == 1 and skipped[0].startswith("kprobe:") and "no kprobes" in skipped[0]


def test_explicit_backend_does_not_fall_back():
    with pytest.raises(UserError, match="no kprobes"):
        candidates("repro", "kprobe", view(kprobes=False))


def test_auto_with_nothing_usable_is_a_user_error():
    with pytest.raises(UserError) as ei:
        candidates("repro", "auto", view(functions=(), tracepoints=(), kprobes=False, btf=False))
    assert "no backend" in ei.value.message
    for backend in ("kprobe", "fentry", "tracepoint"):
        assert f"{backend}:" in ei.value.message


def test_unknown_backend():
    with pytest.raises(UserError):
        plan_for_repro("uprobe", view())
