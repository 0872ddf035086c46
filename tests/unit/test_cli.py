"""The command line: help, replay (text and --json), errors without tracebacks,
the root and kprobes checks, and the vm command's hand-off to virtme-ng
(mocked: no VM is booted here)."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tracer.collect import sources
from tracer.kernel import support as kernel_support
from tracer.kernel.btf import BtfError
from tracer.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).parent / "trace-halfclose"
if not EXE.exists():
    EXE = ROOT / ".venv" / "bin" / "trace-halfclose"
WIDE = {"COLUMNS": "400"}  # rich wraps at the terminal width; keep each printed line whole


def invoke(args, **kw):
    kw.setdefault("env", WIDE)
    return CliRunner().invoke(main, args, **kw)


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def assert_clean_failure(result, code=None):
    """Non-zero exit, an 'error' line, and no Python exception escaping."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert any(line.lower().startswith("error:") for line in result.output.splitlines()), result.output


def run_exe(args, user=None, **kw):
    cmd = [str(EXE), *args]
    if user == "nobody" and os.geteuid() == 0:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    kw.setdefault("cwd", "/")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)


# --- help ---------------------------------------------------------------------


def test_help_lists_commands_and_examples():
    r = invoke(["--help"])
    assert r.exit_code == 0
    commands = r.output.split("Commands:")[1]
    for name in ("run", "replay", "vm"):
        assert re.search(rf"^\s+{name}\s", commands, re.M), name
    assert "Examples:" in r.output
    assert "trace-halfclose replay" in r.output and "trace-halfclose vm" in r.output
    assert invoke(["-h"]).output == r.output


def test_run_help_shows_options_and_examples():
    r = invoke(["run", "--help"])
    assert r.exit_code == 0
    for opt in ("--writes", "--json", "--record", "--ebpf"):
        assert opt in r.output
    assert "Examples:" in r.output


def test_every_command_named_in_the_examples_exists():
    r = invoke(["--help"])
    examples = r.output.split("Examples:")[1]
    named = set(re.findall(r"trace-halfclose ([a-z][\w-]*)", examples))
    assert named, examples
    for name in named:
        assert name in main.commands, f"`trace-halfclose {name}` is in --help but is not a command"
        assert invoke([name, "--help"]).exit_code == 0


# --- replay -------------------------------------------------------------------


def test_replay_renders_the_timeline(rec_path, rec):
    r = invoke(["replay", str(rec_path)])
    assert r.exit_code == 0, r.output
    out = flat(r.stdout)
    assert f"Linux {rec.kernel}" in out
    w1, w2 = rec.writes[0], rec.writes[1]
    assert f"write 1 ({w1.size} bytes) → {w1.ret}" in out
    assert f"write 2 ({w2.size} bytes) → -1 {w2.errno}" in out
    assert w2.errno == "EPIPE"
    assert "sock_error() took sk_err=EPIPE" in out
    assert "tcp_reset" in out and "during write 1" in out
    assert "Traceback" not in r.output


def test_replay_json_is_ndjson(rec_path, rec):
    r = invoke(["replay", "--json", str(rec_path)])
    assert r.exit_code == 0, r.output
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    assert objs[0]["type"] == "meta" and objs[-1]["type"] == "summary"
    writes = [o for o in objs if o["type"] == "write"]
    assert [(w["index"], w["ret"], w["errno"]) for w in writes] == [(w.index, w.ret, w.errno) for w in rec.writes]
    assert r.stderr == ""


def test_replay_missing_file_fails_cleanly(tmp_path):
    r = invoke(["replay", str(tmp_path / "missing.jsonl")])
    assert_clean_failure(r, code=2)
    assert "missing.jsonl" in r.output


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a recording\n",
        b'{"record": "event", "kind": "TCP_RESET"}\n',
        b"\x7fELF\x02\x01\x01\x00\xff\xfe binary\n",
    ],
    ids=["text", "incomplete-event", "binary"],
)
def test_replay_garbage_file_fails_cleanly(tmp_path, content):
    bad = tmp_path / "garbage.jsonl"
    bad.write_bytes(content)
    r = invoke(["replay", str(bad)])
    assert_clean_failure(r, code=2)
    assert "garbage.jsonl" in r.output
    assert r.stdout == ""  # nothing rendered from a file that is not a recording


def test_replay_garbage_file_subprocess_has_no_traceback(tmp_path):
    bad = tmp_path / "garbage.jsonl"
    bad.write_text("hello\n")
    p = run_exe(["replay", str(bad)])
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    assert p.stderr.startswith("error:") and "line 1" in p.stderr


def test_replay_json_null_line_fails_cleanly(tmp_path):
    bad = tmp_path / "null.jsonl"
    bad.write_text("null\n")
    p = run_exe(["replay", str(bad)])
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    assert p.stderr.startswith("error:")


# --- run: argument errors -------------------------------------------------------


@pytest.mark.parametrize("args", [["--writes", "0"], ["--writes", "abc"], ["run", "--writes", "0"],
                                  ["run", "--writes", "11"], ["--gap", "-1"]])
def test_bad_option_values_exit_2_without_traceback(args):
    r = invoke(args)
    assert r.exit_code == 2, r.output
    assert isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output
    assert "Invalid value" in r.output
    assert args[-2] in r.output  # names the option


def test_bad_option_value_subprocess_has_no_traceback():
    p = run_exe(["--writes", "abc"])
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and "--writes" in p.stderr


def _assert_prints_the_joined_text(out: str) -> None:
    m = re.search(r"BPF programs of mode repro, (\w+) backend", out)
    assert m, out[:500]
    for part in sources.parts("repro", m.group(1)):  # the BPF C that would be loaded, verbatim, file by file
        assert f'#line 1 "bpf/{part}"\n' + (ROOT / "bpf" / part).read_text() in out, part
    assert '#include "sock_read.h"' in out  # which includes bpf/halfclose.h, the event layout


def test_ebpf_prints_the_bpf_program_without_root():
    # bcc tools' --ebpf convention: print the program and exit, no privileges needed.
    r = invoke(["--ebpf"])
    assert r.exit_code == 0, r.output
    assert r.exception is None, repr(r.exception)
    _assert_prints_the_joined_text(r.stdout)


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="needs setpriv to drop root")
def test_ebpf_as_a_normal_user_says_which_backend_it_shows():
    p = run_exe(["--ebpf"], user="nobody")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    _assert_prints_the_joined_text(p.stdout)
    if os.geteuid() == 0:  # dropped to nobody: tracefs (mode 0700) cannot be read
        assert "could not be inspected" in p.stdout and "shown: the kprobe backend" in p.stdout


# --- run: privilege and kernel checks -------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="needs setpriv to drop root")
def test_run_as_non_root_says_root_is_needed():
    p = run_exe(["run"], user="nobody")
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    assert p.stdout == ""
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and "root" in lines[0]
    assert "sudo" in p.stderr
    assert len(lines) <= 2  # the error and its remedy, nothing else


@pytest.fixture
def kernel_without_kprobes(monkeypatch, tmp_path):
    """Root, tracefs, headers and BTF as on a good machine, but kprobes_available() False
    (tracefs has no kprobe_events: CONFIG_KPROBES or CONFIG_KPROBE_EVENTS off)."""
    import types

    import tracer.collect.bpf as probes
    import tracer.collect.prepare as prepare
    import tracer.kernel.view as kernel_view

    monkeypatch.setattr(prepare, "require_root", lambda: None)  # pass the root check as root would
    monkeypatch.setattr(prepare, "ensure_tracefs", lambda *a, **k: tmp_path)
    monkeypatch.setattr(prepare, "headers_dir", lambda *a, **k: tmp_path)
    def not_in_btf(name):  # no prototypes, no enums: the view says positions unknown
        raise BtfError(f"no {name} in this stand-in BTF")

    monkeypatch.setattr(prepare, "load_btf", lambda: types.SimpleNamespace(func_exists=lambda name: True,
                                                                           func_proto=not_in_btf,
                                                                           enum_values=not_in_btf))
    monkeypatch.setattr(kernel_view, "kprobes_available", lambda tracefs: False)

    def no_bcc(*a, **k):
        raise AssertionError("bcc must not be reached when the kernel cannot be traced")

    monkeypatch.setattr(probes, "BpfSession", no_bcc)


def test_run_kprobe_backend_without_kprobes_names_the_vm_remedy(kernel_without_kprobes):
    """`run --backend kprobe` on a kernel without kprobes stops before bcc with a clear
    error that points to `trace-halfclose vm`."""
    r = invoke(["run", "--backend", "kprobe"])
    assert_clean_failure(r, code=2)
    err = flat(r.stderr)
    assert "no kprobes" in err
    assert "trace-halfclose vm" in err
    assert r.stdout == ""


def test_run_auto_with_no_usable_backend_fails_cleanly(kernel_without_kprobes, monkeypatch):
    # No kprobes, no BTF file, no tracepoints (tracefs is an empty tmp dir): nothing can trace.
    import tracer.kernel.view as kernel_view

    monkeypatch.setattr(kernel_view, "BTF_PATH", Path("/nonexistent/btf/vmlinux"))
    r = invoke(["run"])
    assert_clean_failure(r, code=2)
    err = flat(r.stderr)
    assert "no kprobes" in err
    assert "trace-halfclose doctor" in err or "trace-halfclose vm" in err
    assert r.stdout == ""


def test_kprobes_available_follows_kprobe_events(tmp_path):
    assert kernel_support.kprobes_available(tmp_path) is False
    (tmp_path / "kprobe_events").write_text("")
    assert kernel_support.kprobes_available(tmp_path) is True


_TRACEFS = kernel_support.find_tracefs()


@pytest.mark.skipif(
    os.geteuid() != 0 or _TRACEFS is None or kernel_support.kprobes_available(_TRACEFS),
    reason="only on a root machine whose kernel has tracefs but no kprobes (e.g. the 6.18 microVM)",
)
def test_run_kprobe_backend_on_this_kprobe_less_kernel_fails_clearly():
    # Real end-to-end check of the same path; it stops at the backend choice, before bcc.
    p = run_exe(["run", "--backend", "kprobe"])
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    assert p.stderr.startswith("error:")
    assert "no kprobes" in p.stderr and "trace-halfclose vm" in p.stderr


# --- vm (virtme-ng mocked) --------------------------------------------------------


@pytest.fixture
def fake_vng(monkeypatch):
    """Replace the VM start: capture what would be booted and run, return a chosen status."""
    import tracer.collect.vm as vm

    calls = {"code": 0}

    def stream(spec, guest_cmd, started=lambda: None):
        calls["spec"], calls["cmd"] = spec, guest_cmd
        started()
        return calls["code"]

    monkeypatch.setattr(vm, "find_vng", lambda: "/usr/bin/vng")
    monkeypatch.setattr(vm, "stream", stream)
    return calls


@pytest.fixture
def kernel_tree(tmp_path):
    tree = tmp_path / "linux"
    (tree / "arch/x86/boot").mkdir(parents=True)
    (tree / "arch/x86/boot/bzImage").write_bytes(b"")
    return tree


def test_vm_passes_args_and_returns_the_inner_exit_status(fake_vng, kernel_tree):
    fake_vng["code"] = 3
    r = invoke(["vm", "--kernel", str(kernel_tree), "--no-kvm", "--cpus", "4", "--", "--writes", "3", "--json"])
    assert r.exit_code == 3
    spec = fake_vng["spec"]
    assert spec.kernel == kernel_tree and spec.kvm is False and spec.cpus == 4
    assert shlex.split(fake_vng["cmd"])[-3:] == ["--writes", "3", "--json"]
    assert "booting" in r.stderr


def test_vm_says_when_the_guest_never_reported_a_status(fake_vng, kernel_tree):
    """vng's 255: qemu ended without the guest command's status (no boot, or a panic)."""
    fake_vng["code"] = 255
    r = invoke(["vm", "--kernel", str(kernel_tree), "--no-kvm"])
    assert r.exit_code == 255
    assert "without the guest command's exit status" in r.stderr and "--verbose" in r.stderr
    fake_vng["code"] = 3
    assert "exit status" not in invoke(["vm", "--kernel", str(kernel_tree), "--no-kvm"]).stderr


def test_vm_unknown_options_go_to_the_inner_tool(fake_vng, kernel_tree):
    r = invoke(["vm", "--kernel", str(kernel_tree), "--kvm", "--writes", "3"])
    assert r.exit_code == 0, r.output
    assert fake_vng["spec"].kvm is True
    assert shlex.split(fake_vng["cmd"])[-2:] == ["--writes", "3"]


def test_vm_absolute_record_path_is_shared_writable(fake_vng, kernel_tree, tmp_path):
    target = tmp_path / "out" / "r.jsonl"
    r = invoke(["vm", "--kernel", str(kernel_tree), "--no-kvm", "--", "--record", str(target)])
    assert r.exit_code == 0, r.output
    assert target.parent in fake_vng["spec"].rwdirs


def test_vm_relative_record_path_lands_in_the_shared_dir(fake_vng, kernel_tree, tmp_path, monkeypatch):
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    r = invoke(["vm", "--kernel", str(kernel_tree), "--no-kvm", "--", "--record", "out/r.jsonl"])
    assert r.exit_code == 0, r.output
    tokens = shlex.split(fake_vng["cmd"])
    guest_cwd = Path(tokens[1]) if tokens[0] == "cd" else work
    guest_file = guest_cwd / tokens[tokens.index("--record") + 1]
    assert guest_file == work / "out" / "r.jsonl"  # where the user asked for it
    assert guest_file.parent in fake_vng["spec"].rwdirs


def test_vm_missing_kernel_fails_cleanly(fake_vng, tmp_path):
    r = invoke(["vm", "--kernel", str(tmp_path / "vmlinuz-nope")])
    assert_clean_failure(r, code=2)
    assert "vmlinuz-nope" in r.output
    assert "spec" not in fake_vng  # nothing was booted


# --- bad input: one table, each refused before anything is loaded ------------------------

from tests.unit import bad_inputs  # noqa: E402


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return bad_inputs.files(tmp_path_factory.mktemp("bad"))


def assert_one_error(output: str) -> None:
    """The tool's error format: an `error:` line, at most a `  remedy:` line, nothing else."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, lines
    assert lines[0].startswith("error: "), lines
    assert len(lines) == 1 or lines[1].startswith("  remedy: "), lines


def test_the_table_has_at_least_50_bad_invocations():
    assert len(bad_inputs.BAD) >= 50
    assert len({case[0] for case in bad_inputs.BAD}) == len(bad_inputs.BAD)


@pytest.mark.parametrize("args,text", [case[1:] for case in bad_inputs.BAD], ids=[case[0] for case in bad_inputs.BAD])
def test_bad_input_is_one_error_line_and_exit_2(bad_files, args, text, monkeypatch):
    import tracer.collect.prepare as prepare

    def never(*a, **k):
        raise AssertionError("bad input reached the kernel checks")

    monkeypatch.setattr(prepare, "check_basics", never)  # refused before anything is checked or loaded
    r = invoke(bad_inputs.filled(args, bad_files))
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.stdout == ""
    assert_one_error(r.stderr)
    assert text in flat(r.stderr), r.stderr
    assert "Traceback" not in r.output


def test_a_long_comm_is_said_before_anything_is_loaded(monkeypatch):
    """The kernel keeps 15 bytes of a task's name (TASK_COMM_LEN): a longer --comm is matched
    on its first 15, and the user is told so before the probes are loaded."""
    from tracer.errors import UserError
    import tracer.collect.watch as watch

    seen = {}

    def run(opts, *a, **k):
        seen["comm"] = opts.comm
        raise UserError("stopped here by the test")

    monkeypatch.setattr(watch, "run", run)
    r = invoke(["watch", "--comm", "a-program-with-a-34-character-name"])
    assert seen["comm"] == "a-program-with-"
    assert "the kernel keeps the first 15 bytes of a task's name (TASK_COMM_LEN" in flat(r.stderr)
    assert "matching 'a-program-with-'" in r.stderr


def test_a_comm_cut_inside_a_character_keeps_the_kernels_bytes():
    from tracer.collect.watch import WatchOptions, check_options

    name = "ééééééé€x"  # 14 bytes of é, then a 3-byte character the kernel cuts after its first byte
    opts, notes = check_options(WatchOptions(comm=name))
    assert opts.comm.encode(errors="surrogateescape") == name.encode()[:15]
    assert "matching" in notes[0]
