"""The joined BPF texts (tracer/collect/sources.py) against the plan table, for every
mode and backend, without root, bcc or a kernel: each text is preprocessed with cpp
and the plan's -D flags, with bcc's program macros spelled out as bcc defines them
(TRACEPOINT_PROBE(c, e) is tracepoint__c__e, KFUNC_PROBE(f) kfunc__f and
KRETFUNC_PROBE(f) kretfunc__f, with `unsigned long long *ctx`: BPF_PROG in
src/cc/export/helpers.h of bcc 0.26).

What bcc would otherwise only say at load: a program the plan attaches is not in
the text; a program bcc attaches at load (kfunc__, kretfunc__, or bcc's
tracepoint__ and raw_tracepoint__, which the tool no longer uses) is compiled for
a probe the plan left out; a hook is defined twice; a tracepoint's program is not
a raw tracepoint program.
"""
from __future__ import annotations

import collections
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require
from tracer.collect import sources
from tracer.collect.plan import BACKENDS, LOAD, MODES, PROBES, function_targets, plan_for, tracepoint_targets
from tracer.kernel.view import KernelView
from tests.unit.kernels import PROTOTYPES_5_15, RECORDED, recorded_prototypes

CPP = shutil.which("cpp")
BCC_MACROS = [
    "-DTRACEPOINT_PROBE(category,event)=int tracepoint__##category##__##event(void *args)",
    # BPF_PROG gives every program `unsigned long long *ctx`, the arguments' slots (helpers.h)
    "-DKFUNC_PROBE(event,args...)=int kfunc__##event(unsigned long long *ctx, ##args)",
    "-DKRETFUNC_PROBE(event,args...)=int kretfunc__##event(unsigned long long *ctx, ##args)",
]
# What watch.filter_defines() gives for --port 9999 (one filter is required: #error otherwise).
WATCH_FILTER = ["-DHC_WATCH_PORT=9999", "-DHC_TCP_SYN_SENT=2", "-DHC_TCP_SYN_RECV=3", "-DHC_TCP_LISTEN=10"]
AUTOLOADED = re.compile(r"^(?:tracepoint|raw_tracepoint|kfunc|kretfunc)__")
PROTOS_6_1 = recorded_prototypes("6.1.0-57-amd64")  # where the arguments are (tests/unit/kernels.py)
REQUIRED_ONLY = KernelView(  # a kernel with nothing optional: every HAVE_ guard is off
    kprobes=True, btf=True,
    functions=frozenset({"tcp_sendmsg_locked", "tcp_reset", "tcp_done"}),
    tracepoints=frozenset({"sock:inet_sock_set_state", "tcp:tcp_receive_reset", "raw_syscalls:sys_enter",
                           "raw_syscalls:sys_exit", "task:task_newtask"}),  # the last: watch following a command
    prototypes=PROTOS_6_1)
EVERYTHING = KernelView(kprobes=True, btf=True, functions=frozenset(function_targets()),
                        tracepoints=frozenset(tracepoint_targets()), prototypes=PROTOS_6_1)


@pytest.fixture(scope="module")
def stub_includes(tmp_path_factory) -> Path:
    """<uapi/linux/ptrace.h> and <asm/unistd_64.h> come from the kernel headers bcc uses:
    empty ones will do for cpp."""
    root = tmp_path_factory.mktemp("include")
    (root / "uapi" / "linux").mkdir(parents=True)
    (root / "uapi" / "linux" / "ptrace.h").write_text("")
    (root / "asm").mkdir()
    (root / "asm" / "unistd_64.h").write_text("")
    return root


def preprocess(text: str, flags: list[str], includes: Path) -> str:
    require(CPP is not None, "cpp (gcc) is needed to preprocess the BPF text")
    p = subprocess.run([CPP, "-P", "-nostdinc", f"-I{includes}", *BCC_MACROS, *flags, "-"],
                       input=text, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def definitions(c: str) -> collections.Counter:
    """Functions defined at file scope (programs and static helpers), counted."""
    return collections.Counter(re.findall(r"^[A-Za-z_][\w ]*?[ *](\w+)\s*\([^;{]*\)\s*\{", c, re.M))


CASES = [(mode, backend, kernel, follow, by_pid)
         for mode in MODES for backend in BACKENDS
         for kernel in ("everything", "required only")
         for follow, by_pid in (((False, False), (True, True)) if mode == "watch" else ((False, False),))]


@pytest.mark.parametrize("mode,backend,kernel,follow,by_pid", CASES)
def test_every_planned_program_is_compiled_once_and_nothing_else_autoloads(mode, backend, kernel, follow, by_pid,
                                                                          stub_includes):
    view = EVERYTHING if kernel == "everything" else REQUIRED_ONLY
    plan = plan_for(mode, backend, view, follow=follow, by_pid=by_pid)
    extra = WATCH_FILTER if mode == "watch" else []
    flags = sources.compile_flags(plan.defines(), extra)
    c = preprocess(sources.program_text(mode, backend, flags), flags, stub_includes)
    defined = definitions(c)
    twice = [name for name, n in defined.items() if n > 1]
    assert not twice, f"defined more than once: {twice}"
    for p in plan.probes:
        assert p.program in defined, f"{p.name}: program {p.program} not in the {mode} {backend} text"
    loaded_by_bcc = {name for name in defined if AUTOLOADED.match(name)}
    assert loaded_by_bcc == {p.program for p in plan.attached_at(LOAD)}, "bcc would attach what the plan left out"
    # The programs attached by hand must not carry bcc's autoload prefixes (bcc would attach them twice).
    assert not [p for p in plan.probes if p.attach != LOAD and AUTOLOADED.match(p.program)]
    # Tracepoints are attached raw (bpf.py): their programs take the raw tracepoint's arguments.
    for p in plan.probes:
        if not p.is_function:
            assert re.search(rf"^int {p.program}\(struct bpf_raw_tracepoint_args \*ctx\)", c, re.M), p.name


@pytest.mark.parametrize("mode,backend", [(m, b) for m in MODES for b in BACKENDS])
def test_each_part_opens_with_a_line_marker_naming_its_file(mode, backend):
    text = sources.joined(mode, backend)
    markers = re.findall(r'^#line 1 "bpf/(.+)"$', text, re.M)
    assert markers == list(sources.parts(mode, backend))
    for rel in markers:
        assert (sources.bpf_dir() / rel).is_file(), rel
    assert markers[0] == "common.bpf.c"


def test_a_compile_error_names_the_part_and_its_line(stub_includes, tmp_path):
    """The #line markers make the compiler name bpf/<part>:<line>, not the joined text's line."""
    copy = tmp_path / "bpf"
    shutil.copytree(sources.bpf_dir(), copy)
    part = copy / "repro" / "kprobe.bpf.c"
    lines = part.read_text().splitlines()
    lines.insert(19, '#error "deliberate"')  # becomes line 20 of the part
    part.write_text("\n".join(lines) + "\n")
    require(CPP is not None, "cpp (gcc) is needed to preprocess the BPF text")
    p = subprocess.run([CPP, "-P", "-nostdinc", f"-I{stub_includes}", f"-I{copy}", "-"],
                       input=sources.joined("repro", "kprobe", copy), capture_output=True, text=True)
    assert p.returncode != 0
    assert 'bpf/repro/kprobe.bpf.c:20:' in p.stderr, p.stderr


def test_program_text_is_the_cflags_comment_then_the_joined_parts():
    text = sources.program_text("repro", "tracepoint", ["-I/x", "-DOFF_SK_ERR=284"])
    head, body = text.split(" */\n", 1)
    assert "-DOFF_SK_ERR=284" in head and "-I/x" in head
    assert body == sources.joined("repro", "tracepoint")


def test_every_bpf_file_is_joined_somewhere_or_included():
    """A file in bpf/ that no text uses would be dead code that --ebpf never shows."""
    used = {rel for parts in sources.PARTS.values() for rel in parts} | set(sources.HEADERS)
    present = {str(p.relative_to(sources.bpf_dir())) for p in sources.bpf_dir().rglob("*") if p.is_file()}
    assert present == used


def test_every_explicit_or_load_program_name_is_unique_per_hook():
    """Two rows of one mode and backend never attach the same hook (bcc would refuse the second)."""
    for mode in MODES:
        for backend in BACKENDS:
            plan = plan_for(mode, backend, EVERYTHING, follow=mode == "watch", by_pid=mode == "watch")
            names = plan.attached_names()
            assert len(names) == len(set(names)), (mode, backend)
    assert all(p.program for p in PROBES)
