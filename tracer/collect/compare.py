"""Collection for `trace-halfclose compare`: the same scenarios recorded on several kernels.

The running kernel runs them in this process (when it can trace: root, bcc,
headers); every other kernel boots with virtme-ng (tracer/collect/vm.py) and
runs `trace-halfclose --scenario S --record FILE` inside, FILE in a directory
shared writable with the guest. A kernel that cannot run them gives one line
saying why; the others still run. Boots run in parallel only when there are
cores and memory for each guest (a guest in software emulation takes its CPUs
fully): on a 2-core machine, one after the other.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tracer.errors import UserError
from tracer.record.recording import Recording

RUNNING = "running"  # --kernel running: this machine's kernel, natively


@dataclass(frozen=True)
class KernelRun:
    """What one kernel gave: its recordings, or why it gave none."""

    kernel: str  # "running" or the vmlinuz/tree path as given
    recordings: tuple[Recording, ...] = ()
    error: str = ""
    seconds: float = 0.0


def default_kernels(boot: Path = Path("/boot")) -> list[str]:
    """The running kernel and the newest under /boot that is not the running one."""
    from tracer.collect import vm

    kernels = [RUNNING]
    others = vm.find_kernels(boot)
    if others:
        kernels.append(str(others[-1]))
    return kernels


def parallel_boots(n: int, cpus: int, memory_gb: float) -> int:
    """How many guests at once: each takes `cpus` cores and `memory_gb` of memory."""
    try:
        with open("/proc/meminfo") as f:
            avail_kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError) as exc:
        raise UserError(f"cannot read the available memory from /proc/meminfo: {exc}") from None
    by_cpu = (os.cpu_count() or 1) // max(cpus, 1)
    by_mem = int(avail_kb / 1024 / 1024 // max(memory_gb, 0.25))
    return max(1, min(n, by_cpu, by_mem))


@dataclass(frozen=True)
class Asked:
    """The scenarios each kernel runs: (name, file) pairs (file None for a built-in), as
    tracer/cli/common.py chosen_scenarios() gives them; every: all the built-ins."""

    chosen: tuple[tuple[str, str | None], ...]
    ipv6: bool = False
    every: bool = False

    def inner_args(self, backend: str, record: Path) -> list[str]:
        """The guest's command line. A file by its absolute path: the guest sees this
        machine's files, read-only, from the checkout's directory."""
        name, file = self.chosen[0]
        which = "all" if self.every else str(Path(file).resolve()) if file else name
        return (["--scenario", which, "--backend", backend, "--record", str(record), "--json"]
                + (["--ipv6"] if self.ipv6 else []))


def _run_running(asked: Asked, backend: str, progress: Callable[[str, str], None]) -> KernelRun:
    from tracer.collect.repro import ReproOptions
    from tracer.collect.runner import collect
    from tracer.process.scenarios import writes_alone

    t0 = time.monotonic()
    # As `trace-halfclose --scenario`: the article's built-ins alone write twice.
    runs = [ReproOptions(scenario=n, file=f, ipv6=asked.ipv6,
                         writes=writes_alone(n, f, asked.every))
            for n, f in asked.chosen]
    try:
        recs = collect(runs, backend, lambda msg: progress(RUNNING, msg))
    except UserError as exc:
        return KernelRun(RUNNING, error=exc.message, seconds=time.monotonic() - t0)
    return KernelRun(RUNNING, tuple(recs), seconds=time.monotonic() - t0)


def _run_vm(kernel: str, asked: Asked, backend: str, cpus: int, memory: str, kvm: bool | None,
            progress: Callable[[str, str], None]) -> KernelRun:
    from tracer.collect import vm

    t0 = time.monotonic()
    try:
        path = vm.pick_kernel(kernel)
        use, _why = vm.use_kvm(kvm)
    except UserError as exc:
        return KernelRun(kernel, error=exc.message)
    with tempfile.TemporaryDirectory(prefix="thc-compare-") as tmp:
        record = Path(tmp) / "run.jsonl"
        os.chmod(tmp, 0o777)  # the guest's root writes through 9p
        spec = vm.VmSpec(path, use, cpus, memory, (Path(tmp),))
        guest = vm.inner_command(asked.inner_args(backend, record))
        progress(kernel, f"booting {path.name} (then bcc compiles and the scenarios run inside)")

        def retried(first) -> None:
            progress(kernel, f"{first.failure()}: trying once more")

        try:
            done = vm.boot_retrying(spec, guest, retried)
        except (OSError, UserError) as exc:
            return KernelRun(kernel, error=f"could not start the VM: {exc}", seconds=time.monotonic() - t0)
        seconds = time.monotonic() - t0
        if not record.exists():
            if not done.booted:
                return KernelRun(kernel, error=f"{done.failure()}; its console ended: "
                                               f"{done.console_tail(1).strip() or 'nothing'}", seconds=seconds)
            said = [line.strip() for line in f"{done.stdout}\n{done.stderr}".splitlines() if line.strip()]
            errors = [line.removeprefix("error: ") for line in said if line.startswith("error:")]
            return KernelRun(kernel, error=errors[-1] if errors else
                             f"{done.failure()} and wrote no recording", seconds=seconds)
        try:
            recs = Recording.load_all(record)
        except (OSError, ValueError) as exc:
            return KernelRun(kernel, error=f"its recording could not be read: {exc}", seconds=seconds)
    return KernelRun(kernel, tuple(recs), seconds=seconds)


def record_kernels(kernels: list[str], chosen: list[tuple[str, str | None]], ipv6: bool, backend: str,
                   progress: Callable[[str, str], None], cpus: int = 2, memory: str = "2G", kvm: bool | None = None,
                   every: bool = False) -> list[KernelRun]:
    """Each kernel's recordings of the chosen scenarios (in the order of kernels)."""
    asked = Asked(tuple(chosen), ipv6, every)
    results: dict[str, KernelRun] = {}
    vms = [k for k in kernels if k != RUNNING]
    if RUNNING in kernels:
        results[RUNNING] = _run_running(asked, backend, progress)
        progress(RUNNING, _done(results[RUNNING]))
    memory_gb = float(memory.rstrip("GgMm")) / (1024 if memory[-1:] in "Mm" else 1)
    width = parallel_boots(len(vms), cpus, memory_gb) if vms else 1
    pending, lock = list(vms), threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                kernel = pending.pop(0)
            results[kernel] = _run_vm(kernel, asked, backend, cpus, memory, kvm, progress)
            progress(kernel, _done(results[kernel]))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(width)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:
        from tracer.collect import vm

        vm.stop_all()  # interrupted: the workers' VMs go with the tool
        raise
    return [results[k] for k in kernels]


def _done(run: KernelRun) -> str:
    if run.error:
        return f"failed after {run.seconds:.0f} s: {run.error}"
    return f"done: {len(run.recordings)} scenario(s) recorded in {run.seconds:.0f} s"
