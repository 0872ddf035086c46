"""The pure parts of `trace-halfclose vm`: which kernel to boot, KVM or not,
the vng command line, writable dirs for --record, and the guest command."""
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tracer.collect import vm
from tracer.errors import UserError

DEB_6_1 = "6.1.0-56-amd64"  # Debian 12 (bookworm) kernel ABI, 6.1.192
DEB_6_12 = "6.12.57+deb12-amd64"  # bookworm-backports 6.12


def boot_with(tmp_path, *releases, extra=()):
    boot = tmp_path / "boot"
    boot.mkdir(parents=True)
    for rel in releases:
        (boot / f"vmlinuz-{rel}").write_bytes(b"")
    for name in extra:
        (boot / name).write_bytes(b"")
    return boot


def modules_with(tmp_path, *releases):
    mods = tmp_path / "lib/modules"
    mods.mkdir(parents=True)
    for rel in releases:
        (mods / rel / "build").mkdir(parents=True)
    return mods


# --- find_kernels --------------------------------------------------------------


def test_find_kernels_newest_first(tmp_path):
    boot = boot_with(tmp_path, DEB_6_1, DEB_6_12, "6.1.0-9-amd64",
                     extra=("config-6.1.0-56-amd64", "initrd.img-6.1.0-56-amd64", "System.map-6.1.0-56-amd64"))
    names = [p.name for p in vm.find_kernels(boot, running="6.18.44-fc-v769")]
    # 6.12 > 6.1, and ABI 56 > ABI 9 (numerically, not as text)
    assert names == [f"vmlinuz-{DEB_6_12}", f"vmlinuz-{DEB_6_1}", "vmlinuz-6.1.0-9-amd64"]


def test_find_kernels_excludes_the_running_release(tmp_path):
    boot = boot_with(tmp_path, DEB_6_1, DEB_6_12)
    assert [p.name for p in vm.find_kernels(boot, running=DEB_6_12)] == [f"vmlinuz-{DEB_6_1}"]
    assert vm.find_kernels(boot_with(tmp_path / "b", DEB_6_1), running=DEB_6_1) == []


def test_find_kernels_ignores_directories(tmp_path):
    boot = boot_with(tmp_path, DEB_6_1)
    (boot / "vmlinuz-not-a-file").mkdir()
    assert [p.name for p in vm.find_kernels(boot, running="x")] == [f"vmlinuz-{DEB_6_1}"]


def test_find_kernels_never_crashes_on_mixed_release_names(tmp_path):
    boot = boot_with(tmp_path, "6.8.0-45-generic", "6.8.0-rc4+")
    found = vm.find_kernels(boot, running="x")
    assert {p.name for p in found} == {"vmlinuz-6.8.0-45-generic", "vmlinuz-6.8.0-rc4+"}


# --- pick_kernel ---------------------------------------------------------------


def test_pick_kernel_newest_with_headers(tmp_path, monkeypatch):
    boot = boot_with(tmp_path, DEB_6_1, DEB_6_12)
    mods = modules_with(tmp_path, DEB_6_1, DEB_6_12)
    assert vm.pick_kernel(None, boot=boot, modules=mods) == boot / f"vmlinuz-{DEB_6_12}"


def test_pick_kernel_refuses_a_kernel_without_headers(tmp_path):
    boot = boot_with(tmp_path, DEB_6_12)
    mods = modules_with(tmp_path)  # no /lib/modules/<rel>/build: bcc in the guest cannot compile
    with pytest.raises(UserError) as ei:
        vm.pick_kernel(None, boot=boot, modules=mods)
    assert DEB_6_12 in ei.value.message
    assert f"linux-headers-{DEB_6_12}" in ei.value.remedy


def test_pick_kernel_explicit_image_without_headers(tmp_path):
    boot = boot_with(tmp_path, DEB_6_1)
    with pytest.raises(UserError) as ei:
        vm.pick_kernel(str(boot / f"vmlinuz-{DEB_6_1}"), boot=boot, modules=modules_with(tmp_path))
    assert f"linux-headers-{DEB_6_1}" in ei.value.remedy


def test_pick_kernel_explicit_image_with_headers(tmp_path):
    boot = boot_with(tmp_path, DEB_6_1, DEB_6_12)
    mods = modules_with(tmp_path, DEB_6_1)
    # --kernel wins over "newest"
    assert vm.pick_kernel(str(boot / f"vmlinuz-{DEB_6_1}"), boot=boot, modules=mods) == boot / f"vmlinuz-{DEB_6_1}"


def test_pick_kernel_no_kernels(tmp_path):
    with pytest.raises(UserError) as ei:
        vm.pick_kernel(None, boot=boot_with(tmp_path), modules=modules_with(tmp_path))
    assert "linux-image" in ei.value.remedy


def test_pick_kernel_missing_path(tmp_path):
    with pytest.raises(UserError) as ei:
        vm.pick_kernel(str(tmp_path / "nope"), boot=tmp_path, modules=tmp_path)
    assert "not found" in ei.value.message


def test_pick_kernel_build_tree(tmp_path):
    tree = tmp_path / "linux"
    tree.mkdir()
    with pytest.raises(UserError) as ei:
        vm.pick_kernel(str(tree), boot=tmp_path, modules=tmp_path)
    assert "bzImage" in ei.value.message
    (tree / "arch/x86/boot").mkdir(parents=True)
    (tree / "arch/x86/boot/bzImage").write_bytes(b"")
    assert vm.pick_kernel(str(tree), boot=tmp_path, modules=tmp_path) == tree


# --- use_kvm -------------------------------------------------------------------

CPUINFO_HOST = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 vmx lahf_lm\n\n"
CPUINFO_GUEST = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae hypervisor lahf_lm\n\n"


@pytest.fixture
def dev_kvm(tmp_path):
    p = tmp_path / "kvm"
    p.write_bytes(b"")
    return p


def _cpuinfo(tmp_path, text):
    p = tmp_path / "cpuinfo"
    p.write_text(text)
    return p


def test_use_kvm_on_bare_metal(tmp_path, dev_kvm):
    use, why = vm.use_kvm(None, cpuinfo=_cpuinfo(tmp_path, CPUINFO_HOST), kvm=dev_kvm)
    assert use is True and why


def test_use_kvm_not_in_a_guest(tmp_path, dev_kvm):
    # The CPUID "hypervisor" bit shows up as a cpuinfo flag inside a VM.
    use, why = vm.use_kvm(None, cpuinfo=_cpuinfo(tmp_path, CPUINFO_GUEST), kvm=dev_kvm)
    assert use is False
    assert "--kvm" in why  # tells how to force it


def test_use_kvm_without_dev_kvm(tmp_path):
    use, why = vm.use_kvm(None, cpuinfo=_cpuinfo(tmp_path, CPUINFO_HOST), kvm=tmp_path / "no-kvm")
    assert use is False and "/dev/kvm" in why


def test_use_kvm_forced_either_way(tmp_path, dev_kvm):
    assert vm.use_kvm(True, cpuinfo=_cpuinfo(tmp_path, CPUINFO_GUEST), kvm=dev_kvm)[0] is True
    assert vm.use_kvm(False, cpuinfo=_cpuinfo(tmp_path, CPUINFO_HOST), kvm=dev_kvm)[0] is False


def test_use_kvm_unreadable_cpuinfo_is_not_a_guest(tmp_path, dev_kvm):
    assert vm.use_kvm(None, cpuinfo=tmp_path / "missing", kvm=dev_kvm)[0] is True


# --- vng_command ----------------------------------------------------------------


def test_vng_command_disables_kvm_only_without_kvm(tmp_path):
    k = tmp_path / f"vmlinuz-{DEB_6_1}"
    with_kvm = vm.vng_command("vng", vm.VmSpec(k, True), "true")
    without = vm.vng_command("vng", vm.VmSpec(k, False), "true")
    assert "--disable-kvm" not in with_kvm
    assert "--disable-kvm" in without


def test_vng_command_shape(tmp_path):
    k = tmp_path / f"vmlinuz-{DEB_6_1}"
    spec = vm.VmSpec(k, True, cpus=4, memory="3G", rwdirs=(tmp_path / "a", tmp_path / "b"))
    cmd = vm.vng_command("/venv/bin/vng", spec, "echo hi")
    assert cmd[0] == "/venv/bin/vng"
    assert cmd[cmd.index("--run") + 1] == str(k)
    assert cmd[cmd.index("--cpus") + 1] == "4"
    assert cmd[cmd.index("--memory") + 1] == "3G"
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--rwdir"] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert cmd[-2:] == ["--exec", "echo hi"]  # the guest command is one argument


# --- absolute_records -------------------------------------------------------------


def test_record_separate_argument_becomes_absolute_and_shared(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, dirs = vm.absolute_records(["--writes", "3", "--record", "x/y.jsonl"])
    assert args == ["--writes", "3", "--record", str(tmp_path / "x/y.jsonl")]
    assert dirs == (tmp_path / "x",)


def test_record_equals_form(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, dirs = vm.absolute_records(["--record=x/y.jsonl", "--json"])
    assert args == [f"--record={tmp_path / 'x/y.jsonl'}", "--json"]
    assert dirs == (tmp_path / "x",)


def test_record_absolute_and_bare_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert vm.absolute_records(["--record", "/srv/out/r.jsonl"])[1] == (Path("/srv/out"),)
    assert vm.absolute_records(["--record", "r.jsonl"]) == (["--record", str(tmp_path / "r.jsonl")], (tmp_path,))


def test_record_none(tmp_path):
    assert vm.absolute_records(["--writes", "3", "--json"]) == (["--writes", "3", "--json"], ())
    assert vm.absolute_records(["--record"]) == (["--record"], ())  # no value: click will complain inside
    assert vm.absolute_records([]) == ([], ())


# --- inner_command --------------------------------------------------------------


@pytest.mark.parametrize("args", [
    [],
    ["--writes", "3", "--json"],
    ["--record", "my dir/it's.jsonl"],
    ["--record", "x; rm -rf /", "$(reboot)", "`id`", "a\"b"],
])
def test_inner_command_quotes_args(args):
    cmd = vm.inner_command(args)
    tokens = shlex.split(cmd)
    assert tokens[:3] == ["cd", str(vm.ROOT), "&&"]
    assert tokens[3:7] == ["exec", sys.executable, "-m", "tracer"]
    assert tokens[7:] == args  # each argument arrives intact, nothing is interpreted by the shell


def test_inner_command_runs_this_checkout():
    assert (vm.ROOT / "tracer" / "__main__.py").exists()


# --- vm --kconfig: the config fragment for a kernel you build ----------------------------------


def test_kconfig_prints_the_fragment_every_backend_and_virtme_ng_need():
    from click.testing import CliRunner

    from tracer.cli import main

    r = CliRunner().invoke(main, ["vm", "--kconfig"])
    assert r.exit_code == 0, r.output
    assert r.output == vm.KCONFIG.read_text()
    options = dict(line.split("=", 1) for line in r.output.splitlines() if line.startswith("CONFIG_"))
    # BPF, BTF, kprobes, ftrace (fentry), syscall tracepoints, headers for bcc, the netns, virtme-ng's 9p/virtio
    for name in ("BPF_SYSCALL", "BPF_JIT", "BPF_EVENTS", "DEBUG_INFO_BTF", "KPROBES", "KPROBE_EVENTS",
                 "FUNCTION_TRACER", "DYNAMIC_FTRACE", "FTRACE_SYSCALLS", "IKHEADERS", "NET_NS", "IPV6",
                 "NET_9P", "NET_9P_VIRTIO", "9P_FS", "VIRTIO_PCI", "VIRTIO_CONSOLE"):
        assert options.get(f"CONFIG_{name}") == "y", name
    for line in r.output.splitlines():  # a fragment make olddefconfig reads: options and comments only
        assert not line or line.startswith("#") or (line.startswith("CONFIG_") and "=" in line), line
    assert "# CONFIG_DEBUG_INFO_REDUCED is not set" in r.output  # DEBUG_INFO_BTF depends on !DEBUG_INFO_REDUCED


def test_kconfig_needs_no_root_no_vng_and_boots_nothing(monkeypatch):
    from click.testing import CliRunner

    from tracer.cli import main

    monkeypatch.setattr(vm, "find_vng", lambda: (_ for _ in ()).throw(AssertionError("vng must not be needed")))
    monkeypatch.setattr(vm, "stream", lambda *a, **k: (_ for _ in ()).throw(AssertionError("nothing boots")))
    assert CliRunner().invoke(main, ["vm", "--kconfig"]).exit_code == 0


# --- the host terminal reaches the guest -------------------------------------------------------


class _Tty:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_host_terminal_passes_its_width_and_that_it_is_a_terminal(monkeypatch):
    monkeypatch.setattr(vm.shutil, "get_terminal_size", lambda *a, **k: os.terminal_size((200, 50)))
    assert vm.host_terminal(_Tty(True), {}) == {"COLUMNS": "200", "FORCE_COLOR": "1"}
    assert vm.host_terminal(_Tty(True), {"NO_COLOR": "1"}) == {"COLUMNS": "200"}
    assert vm.host_terminal(_Tty(False), {}) == {}  # piped: the guest's tool wraps as the host's would
    assert vm.host_terminal(_Tty(False), {"COLUMNS": "120"}) == {"COLUMNS": "120"}


def test_a_200_column_host_gets_lines_longer_than_80_from_the_guest_command(monkeypatch):
    """The guest runs exactly inner_command's shell line (through virtme-ng, whose pipes hide
    the terminal): run that line here and check that rich used the host's 200 columns."""
    monkeypatch.setattr(vm.shutil, "get_terminal_size", lambda *a, **k: os.terminal_size((200, 50)))
    env = vm.host_terminal(_Tty(True), {"NO_COLOR": "1"})
    rec = vm.ROOT / "tests" / "unit" / "data" / "debian-6.1.0-56-writes3.jsonl"
    line = vm.inner_command(["replay", str(rec)], env)
    clean = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
    out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=clean, check=True).stdout
    widest = max(len(x) for x in out.splitlines())
    assert 80 < widest <= 200, widest
    narrow = subprocess.run(["bash", "-c", vm.inner_command(["replay", str(rec)])], capture_output=True,
                            text=True, env=clean, check=True).stdout
    assert max(len(x) for x in narrow.splitlines()) <= 80  # what virtme-ng's pipes gave before


# --- boot(): the watchdog and the second try ---------------------------------------
# A fake vng: a shell script that behaves as one boot of a VM would, told how by a file.


def fake_vng(tmp_path, *behaviours: str) -> str:
    """A vng whose Nth run does behaviours[N-1] (shell). Each run first starts a child that
    sleeps (the 'qemu' under vng), so a killed boot must take its tree with it."""
    script = tmp_path / "vng"
    for i, b in enumerate(behaviours, 1):
        (tmp_path / f"run{i}.sh").write_text(b)
    script.write_text(
        "#!/bin/sh\n"
        f"n=$(($(cat {tmp_path}/count 2>/dev/null || echo 0) + 1)); echo $n > {tmp_path}/count\n"
        f"sleep 600 & echo $! >> {tmp_path}/qemu.pids\n"
        f". {tmp_path}/run$n.sh\n"
    )
    script.chmod(0o755)
    return str(script)


BOOTS = f"echo '[ 14.3] {vm.BOOTED}' >&2\n"
SPEC = vm.VmSpec(Path("/boot/vmlinuz-x"), kvm=False)


def runs(tmp_path) -> int:
    return int((tmp_path / "count").read_text())


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_boot_that_runs_its_command_returns_its_output_and_status(tmp_path):
    vng = fake_vng(tmp_path, BOOTS + "echo hello; echo oops >&2; kill $!; exit 3\n")
    b = vm.boot(SPEC, "cmd", vng=vng)
    assert (b.returncode, b.booted, b.stdout) == (3, True, "hello\n")
    assert "oops" in b.stderr and vm.BOOTED in b.console_tail()
    assert b.failure() == f"the guest command ended with status 3 after {b.seconds:.0f} s"


def test_a_guest_that_never_boots_is_stopped_with_its_qemu(tmp_path):
    vng = fake_vng(tmp_path, "echo 'Probing EDD (edd=off to disable)... ok' >&2; sleep 600\n")
    b = vm.boot(SPEC, "cmd", boot_limit=1, vng=vng)
    assert (b.returncode, b.booted) == (None, False)
    assert b.why == "the VM had not booted after 1 s: stopped" == b.failure()
    assert "Probing EDD" in b.console_tail()
    qemu = int((tmp_path / "qemu.pids").read_text())
    assert not alive(qemu)


def test_a_guest_that_hangs_after_booting_is_stopped_at_the_limit(tmp_path):
    vng = fake_vng(tmp_path, BOOTS + "echo started; sleep 600\n")
    b = vm.boot(SPEC, "cmd", limit=1, vng=vng)
    assert (b.returncode, b.booted, b.stdout) == (None, True, "started\n")
    assert b.failure() == "the guest had not ended after 1 s: stopped"


def test_a_guest_that_dies_before_booting_is_tried_once_more(tmp_path):
    vng = fake_vng(tmp_path, "kill $!; exit 255\n", BOOTS + "kill $!; echo ok\n")
    told = []
    b = vm.boot_retrying(SPEC, "cmd", told.append, vng=vng)
    assert (b.returncode, b.stdout, runs(tmp_path)) == (0, "ok\n", 2)
    assert [t.failure() for t in told] == [f"the VM ended with status 255 after {told[0].seconds:.0f} s, before it booted"]


def test_a_kernel_that_cannot_boot_fails_twice_and_no_more(tmp_path):
    vng = fake_vng(tmp_path, "kill $!; exit 255\n", "kill $!; exit 255\n", BOOTS)
    b = vm.boot_retrying(SPEC, "cmd", vng=vng)
    assert (b.returncode, b.booted, runs(tmp_path)) == (255, False, 2)


def test_a_guest_command_that_fails_after_booting_is_not_run_again(tmp_path):
    vng = fake_vng(tmp_path, BOOTS + "kill $!; exit 1\n", BOOTS)
    b = vm.boot_retrying(SPEC, "cmd", vng=vng)
    assert (b.returncode, runs(tmp_path)) == (1, 1)


def test_stop_all_ends_the_boots_other_threads_wait_on_and_starts_no_more(tmp_path, monkeypatch):
    import threading

    monkeypatch.setattr(vm, "_stopped", [])
    vng = fake_vng(tmp_path, BOOTS + "sleep 600\n", BOOTS)
    got = []
    t = threading.Thread(target=lambda: got.append(vm.boot(SPEC, "cmd", vng=vng)))
    t.start()
    while not (vm._booting and (tmp_path / "qemu.pids").exists()):
        t.join(0.05)
    vm.stop_all()
    t.join(10)
    assert not t.is_alive() and got[0].returncode not in (0, None)  # killed: vng (-9) or under it (137)
    assert not alive(int((tmp_path / "qemu.pids").read_text()))
    with pytest.raises(UserError, match="stopped"):
        vm.boot(SPEC, "cmd", vng=vng)


def test_a_guest_that_died_after_booting_is_run_again_only_when_asked(tmp_path):
    """The live tests' policy: a VM that ended without the command's status (vng's 255, a
    panic) is booted again; by default (compare) only one that did not boot is."""
    died = BOOTS + "kill $!; exit 255\n"
    vng = fake_vng(tmp_path, died, died, BOOTS + "kill $!; echo ok\n")
    b = vm.boot_retrying(SPEC, "cmd", vng=vng)
    assert (b.returncode, runs(tmp_path)) == (255, 1)
    assert b.failure() == f"the VM ended without the guest command's status after {b.seconds:.0f} s"
    b = vm.boot_retrying(SPEC, "cmd", again=lambda b: b.returncode == vm.VNG_NO_STATUS, vng=vng)
    assert (b.returncode, b.stdout, runs(tmp_path)) == (0, "ok\n", 3)


@pytest.mark.parametrize("line, stops", [
    ("[ 122.79] Kernel panic - not syncing: Fatal exception in interrupt", True),
    ("[ 1176.6] watchdog: BUG: soft lockup - CPU#1 stuck for 82s! [python:261]", True),
    ("[ 300.1] watchdog: BUG: soft lockup - CPU#0 stuck for 23s! [python:99]", False),  # a starved host, maybe
])
def test_a_guest_kernel_that_failed_is_stopped_and_said(tmp_path, line, stops):
    vng = fake_vng(tmp_path, BOOTS + f"echo '{line}' >&2; sleep 600\n")
    b = vm.boot(SPEC, "cmd", limit=3, vng=vng)
    assert bool(b.kernel_failed) == stops
    if stops:
        assert b.kernel_failed in line and b.failure().startswith("the guest kernel failed after")
        assert b.seconds < 3  # stopped on the console's line, not at the limit
    else:
        assert b.why == "the guest had not ended after 3 s: stopped"
