"""Run trace-halfclose inside a VM booted with virtme-ng (vng).

The guest shares this machine's filesystem (read-only), so it runs this very
checkout and venv against another kernel: a distro kernel under /boot (with
kprobes and matching headers under /lib/modules) or a kernel build tree.
Output comes back on stdout/stderr and the exit status is the inner tool's
(vng passes it through).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tracer.errors import UserError

ROOT = Path(__file__).resolve().parents[2]  # the directory that holds the tracer package
# The kernel options a self-built kernel needs (`trace-halfclose vm --kconfig`): package data,
# beside this module in a checkout and in the wheel (pyproject.toml's package-data).
KCONFIG = Path(__file__).resolve().parent / "vm-kernel.config"


def kconfig_fragment() -> str:
    """The config fragment for a kernel tree (vng --kconfig --config FILE, then make)."""
    return KCONFIG.read_text()


def _version_key(path: Path) -> list:
    """Sort vmlinuz-6.12.57+deb12-amd64 after vmlinuz-6.1.0-56-amd64; numbers
    before words at each position, so any two names compare."""
    rel = path.name.removeprefix("vmlinuz-")
    return [(0, int(x), "") if x.isdigit() else (1, 0, x) for x in re.split(r"[.+-]", rel)]


def release_of(kernel: Path) -> str | None:
    return kernel.name.removeprefix("vmlinuz-") if kernel.name.startswith("vmlinuz-") else None


def find_kernels(boot: Path = Path("/boot"), running: str | None = None) -> list[Path]:
    """Bootable distro kernels under /boot other than the running one, newest first."""
    running = running or os.uname().release
    found = [p for p in boot.glob("vmlinuz-*") if p.is_file() and release_of(p) != running]
    return sorted(found, key=_version_key, reverse=True)


def pick_kernel(kernel: str | None, boot: Path = Path("/boot"), modules: Path = Path("/lib/modules")) -> Path:
    """The kernel to boot: --kernel (an image or a build tree), else the newest under /boot.
    A distro image must come with its headers, which bcc needs inside the guest."""
    if kernel:
        p = Path(kernel)
        if p.is_dir():  # a kernel build tree: vng boots it and bcc finds headers in it
            if not (p / "arch/x86/boot/bzImage").exists():
                raise UserError(f"{p} is a directory but holds no built kernel (arch/x86/boot/bzImage)",
                                "build it first (make -j$(nproc)), or give a vmlinuz file")
            return p
        if not p.is_file():
            raise UserError(f"kernel {kernel} not found", "give a vmlinuz file or a kernel build tree")
        candidates = [p]
    else:
        candidates = find_kernels(boot)
        if not candidates:
            raise UserError(
                f"no bootable kernel under {boot} besides the running one",
                "apt-get install linux-image-amd64 linux-headers-amd64 (scripts/setup.sh does it)",
            )
    # bcc inside the guest needs the kernel's headers: take the newest that has them.
    for k in candidates:
        rel = release_of(k)
        if not rel or (modules / rel / "build").exists():
            return k
    rel = release_of(candidates[0])
    raise UserError(
        f"no headers for {rel}: bcc inside the guest needs {modules / rel / 'build'}",
        f"apt-get install linux-headers-{rel}",
    )


def find_vng() -> str:
    """vng, from PATH or from this venv's bin (it is a pip dependency: virtme-ng)."""
    here = Path(sys.executable).parent
    found = shutil.which("vng") or shutil.which("vng", path=str(here))
    if not found:
        raise UserError("virtme-ng (vng) is not installed", "pip install virtme-ng (scripts/setup.sh does it)")
    if not shutil.which("qemu-system-x86_64"):
        raise UserError("qemu-system-x86_64 is not installed", "apt-get install qemu-system-x86")
    return found


def use_kvm(force: bool | None, cpuinfo: Path = Path("/proc/cpuinfo"), kvm: Path = Path("/dev/kvm")) -> tuple[bool, str]:
    """KVM unless told otherwise, or unless this machine is itself a guest:
    nested KVM exists on microVMs but the guest hangs at boot, so there the
    VM runs in software emulation (slower: ~15-25 s to boot, ~30 s for bcc)."""
    if force is not None:
        return force, "as asked (--kvm/--no-kvm)"
    if not kvm.exists():
        return False, "/dev/kvm is missing: software emulation"
    try:
        nested = " hypervisor" in cpuinfo.read_text()
    except OSError:
        nested = False
    if nested:
        return False, "this machine is itself a VM (nested KVM hangs guests here): software emulation; --kvm forces KVM"
    return True, "KVM"


@dataclass(frozen=True)
class VmSpec:
    kernel: Path
    kvm: bool
    cpus: int = 2
    memory: str = "2G"
    rwdirs: tuple[Path, ...] = ()


def vng_command(vng: str, spec: VmSpec, guest_cmd: str) -> list[str]:
    cmd = [vng, "--run", str(spec.kernel), "--cpus", str(spec.cpus), "--memory", spec.memory]
    if not spec.kvm:
        cmd.append("--disable-kvm")
    for d in spec.rwdirs:
        cmd += ["--rwdir", str(d)]
    return cmd + ["--exec", guest_cmd]


def inner_command(args: list[str], env: dict[str, str] | None = None) -> str:
    """trace-halfclose ARGS inside the guest, from this checkout and interpreter; env: variables
    the guest's tool gets (host_terminal())."""
    run = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
    return f"cd {shlex.quote(str(ROOT))} && exec " + shlex.join([*run, sys.executable, "-m", "tracer", *args])


def host_terminal(stdout=None, environ=None) -> dict[str, str]:
    """What rich inside the guest cannot see through virtme-ng, which pipes its output: the
    host terminal's width (COLUMNS) and that it is a terminal (FORCE_COLOR: colours, and
    no wrapping at 80 columns). A COLUMNS the user set wins; NO_COLOR is respected."""
    stdout = stdout or sys.stdout
    environ = os.environ if environ is None else environ
    tty = stdout.isatty()
    env = {}
    if environ.get("COLUMNS", "").isdigit():
        env["COLUMNS"] = environ["COLUMNS"]
    elif tty:
        env["COLUMNS"] = str(shutil.get_terminal_size().columns)
    if tty and "NO_COLOR" not in environ:
        env["FORCE_COLOR"] = "1"
    return env


def absolute_records(args: list[str]) -> tuple[list[str], tuple[Path, ...]]:
    """The guest runs in the checkout and sees the filesystem read-only: a
    --record FILE becomes an absolute path, and its directory is shared writable."""
    out, dirs = list(args), []
    for i, a in enumerate(out):
        if a == "--record" and i + 1 < len(out):
            out[i + 1] = str(Path(out[i + 1]).resolve())
            dirs.append(Path(out[i + 1]).parent)
        elif a.startswith("--record="):
            path = Path(a.removeprefix("--record=")).resolve()
            out[i] = f"--record={path}"
            dirs.append(path.parent)
    return out, tuple(dirs)


def env_for_vng(vng: str) -> dict:
    """vng runs virtme-run by name: the venv's bin must be on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(vng).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


VNG_NO_STATUS = 255  # virtme-run: qemu ended and the guest command never reported its status
# virtme-ng's init prints this on the console when it starts the --exec command: the guest booted.
BOOTED = "virtme-ng-init: starting script"
BOOT_LIMIT_S = 300  # a boot in software emulation takes 15-25 s, ~100 s with the host's CPUs busy
# A guest kernel that will not recover: a panic (the VM ends anyway), or a CPU stuck for a minute
# (one soft-lockup warning of some 20 s can be the host starving the guest; a minute is a hang).
# Both seen in software emulation while code was patched under a running CPU (README, Tests).
KERNEL_FAILED = re.compile(r"Kernel panic - not syncing.*|BUG: soft lockup - CPU#\d+ stuck for (\d+)s!.*")
STUCK_S = 60


@dataclass(frozen=True)
class Boot:
    """One boot, its output captured. stderr holds the guest's stderr and the kernel's
    console (vng --verbose): what to show when a boot goes wrong."""
    returncode: int | None  # None: stopped by the watchdog (see why)
    stdout: str
    stderr: str
    booted: bool
    seconds: float
    why: str = ""
    kernel_failed: str = ""  # the console's line that said the guest kernel failed

    def console_tail(self, lines: int = 30) -> str:
        return "\n".join(self.stderr.splitlines()[-lines:])

    def failure(self) -> str:
        """What went wrong, in a line: for messages."""
        if self.kernel_failed:
            return f"the guest kernel failed after {self.seconds:.0f} s: {self.kernel_failed}"
        if self.why:
            return self.why
        if not self.booted:
            return f"the VM ended with status {self.returncode} after {self.seconds:.0f} s, before it booted"
        if self.returncode == VNG_NO_STATUS:  # a panic (virtme-ng boots with panic=-1: it reboots, qemu ends)
            return f"the VM ended without the guest command's status after {self.seconds:.0f} s"
        return f"the guest command ended with status {self.returncode} after {self.seconds:.0f} s"


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL vng and everything under it (qemu first, so no guest outlives it)."""
    from tracer.collect.keeper import descendants  # stdlib only: the keeper's own /proc walk

    for pid in reversed(descendants(proc.pid)):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass  # already ended
    proc.kill()


_booting: set[subprocess.Popen] = set()  # boot()'s VMs now running, in any thread
_stopped: list[bool] = []  # stop_all() was called: no new boot starts


def stop_all() -> None:
    """Kill every VM boot() started that still runs, and start no more: the caller was
    interrupted while other threads waited on them (compare boots in worker threads)."""
    _stopped.append(True)
    for proc in list(_booting):
        _kill_tree(proc)


def boot(spec: VmSpec, guest_cmd: str, boot_limit: float = BOOT_LIMIT_S, limit: float | None = None,
         vng: str | None = None) -> Boot:
    """Run guest_cmd in a VM with its output captured and a watchdog: a guest that has not
    booted after boot_limit seconds, or not ended after limit, is killed."""
    import threading
    import time

    vng = vng or find_vng()
    cmd = vng_command(vng, spec, guest_cmd)
    cmd.insert(1, "--verbose")  # the kernel's console on stderr: it tells why a boot failed
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env_for_vng(vng), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    _booting.add(proc)
    if _stopped:  # stop_all() ran while this one started
        _kill_tree(proc)
        proc.wait()
        _booting.discard(proc)
        raise UserError("the VMs were stopped")
    out: list[str] = []
    err: list[str] = []
    booted = threading.Event()
    failed: list[str] = []

    def pump(src, into: list[str], watch: bool) -> None:
        for line in src:
            into.append(line)
            if watch and BOOTED in line:
                booted.set()
            if watch and not failed and (m := KERNEL_FAILED.search(line)):
                if m.group(1) is None or int(m.group(1)) >= STUCK_S:
                    failed.append(m.group(0).strip())

    pumps = [threading.Thread(target=pump, args=(proc.stdout, out, False), daemon=True),
             threading.Thread(target=pump, args=(proc.stderr, err, True), daemon=True)]
    for t in pumps:
        t.start()
    why = ""
    try:
        while proc.poll() is None:
            took = time.monotonic() - started
            if not booted.is_set() and took > boot_limit:
                why = f"the VM had not booted after {boot_limit:.0f} s: stopped"
            elif limit is not None and took > limit:
                why = f"the guest had not ended after {limit:.0f} s: stopped"
            elif failed:
                why = f"the guest kernel failed ({failed[0]}): stopped"
            if why:
                _kill_tree(proc)
                proc.wait()
                break
            try:
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass  # look at the clocks again
    except BaseException:
        _kill_tree(proc)  # interrupted: no VM is left running
        raise
    finally:
        _booting.discard(proc)
    for t in pumps:
        t.join(timeout=5)
    return Boot(None if why else proc.returncode, "".join(out), "".join(err), booted.is_set(),
                time.monotonic() - started, why, failed[0] if failed else "")


def did_not_boot(b: Boot) -> bool:
    return not b.booted


def boot_retrying(spec: VmSpec, guest_cmd: str, retried=lambda first: None, again=did_not_boot,
                  **limits) -> Boot:
    """boot(), once more if again(first): by default when the guest did not boot, seen rarely
    in software emulation on a busy host (vng's 255 after 17 s, nothing printed). A kernel
    that cannot boot fails twice. retried(first) is told before the second try."""
    first = boot(spec, guest_cmd, **limits)
    if not again(first):
        return first
    retried(first)
    return boot(spec, guest_cmd, **limits)


def stream(spec: VmSpec, guest_cmd: str, started=lambda: None) -> int:
    """Run the guest, passing its stdout and stderr through line by line;
    started() is called at its first line of output (to stop a spinner)."""
    import threading

    vng = find_vng()
    proc = subprocess.Popen(
        vng_command(vng, spec, guest_cmd),
        env=env_for_vng(vng),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    first = threading.Event()

    def pump(src, dst):
        for line in src:
            if not first.is_set():
                first.set()
                started()
            dst.write(line)
            dst.flush()

    threads = [
        threading.Thread(target=pump, args=(proc.stdout, sys.stdout), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, sys.stderr), daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()  # vng stops qemu, and the guest with it
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    for t in threads:
        t.join(timeout=5)
    return code
