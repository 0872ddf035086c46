"""One VM boot per kernel per test session, running every scenario inside it.

The kernels are the bootable distro kernels under /boot (not the running one)
that have headers; scripts/setup.sh --test installs Debian's 6.1 and 6.12.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

from tests.conftest import require
from tests.live.scenarios import SCENARIOS, USER_SCENARIO
from tracer.collect import vm

ROOT = Path(__file__).resolve().parents[2]
GUEST_LIMIT_S = 1200  # one kernel's scenarios: 4-6 min in software emulation on a quiet host, 15+ on a busy one


def _kernels() -> list[Path]:
    return [k for k in vm.find_kernels() if (Path("/lib/modules") / vm.release_of(k) / "build").exists()]


KERNELS = _kernels()


def _filled(value, out: str):
    """A scenario with {out} (the directory shared with the guest) filled in, at any depth."""
    if isinstance(value, str):
        return value.replace("{out}", out)
    if isinstance(value, list):
        return [_filled(v, out) for v in value]
    if isinstance(value, dict):
        return {k: _filled(v, out) for k, v in value.items()}
    return value


@pytest.fixture(scope="session", params=KERNELS or [None], ids=lambda k: vm.release_of(k) if k else "no-kernel")
def vm_run(request):
    """{scenario name: result dict} from one boot of one kernel."""
    kernel = request.param
    require(os.geteuid() == 0, "live VM tests need root")
    require(kernel is not None, "no distro kernel with headers under /boot (scripts/setup.sh --test installs them)")
    require(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86_64 missing")
    try:
        vm.find_vng()
    except Exception as exc:
        require(False, f"virtme-ng missing: {exc}")

    out = Path(tempfile.mkdtemp(prefix="thc-vm-"))
    (out / "mine.toml").write_text(USER_SCENARIO)
    spec = {name: _filled(what, str(out)) for name, what in SCENARIOS.items()}
    (out / "spec.json").write_text(json.dumps(spec))
    use_kvm, _ = vm.use_kvm(None)
    guest = f"cd {ROOT} && {sys.executable} tests/live/guest_runner.py {out}/spec.json {out}"
    # A guest that did not boot, whose kernel failed (a panic, or a CPU stuck for a minute: both
    # seen in CI's software emulation, README "Tests"), or whose VM ended without the runner's
    # status (vng's 255) runs once more; the first failure and its console are a warning in the
    # test summary. A guest still running at GUEST_LIMIT_S fails with the console's last lines.
    def retried(first: vm.Boot) -> None:
        warnings.warn(f"{vm.release_of(kernel)}: {first.failure()}; booted again. Its console, last lines:\n"
                      f"{first.console_tail(40)}")

    proc = vm.boot_retrying(vm.VmSpec(kernel, use_kvm, rwdirs=(out,)), guest, retried,
                            again=lambda b: not b.booted or bool(b.kernel_failed) or b.returncode == vm.VNG_NO_STATUS,
                            limit=GUEST_LIMIT_S)
    assert proc.returncode == 0, (f"{proc.failure()}\nguest stdout:\n{proc.stdout}\n"
                                  f"console and guest stderr, last lines:\n{proc.console_tail(60)}")
    results = {"_out": out, "_guest": json.loads((out / "_guest.json").read_text())}
    for name in SCENARIOS:
        f = out / f"{name}.json"
        assert f.exists(), f"scenario {name} left no result; guest said:\n{proc.stdout}\n{proc.console_tail(60)}"
        results[name] = json.loads(f.read_text())
    yield results
    shutil.rmtree(out, ignore_errors=True)
