"""`trace-halfclose doctor`: what this machine can trace, each check with its remedy.

Checks are plain data (Check), so the CLI renders them as a table or JSON.
The fentry check loads a one-line fentry program, because only the kernel
can say whether it accepts one (the 6.18 microVMs refuse with EPERM).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from tracer.errors import UserError
from tracer.kernel.btf import FuncProto
from tracer.kernel.eras import ERAS
from tracer.kernel.support import find_tracefs, headers_dir, kernel_functions, kprobes_available, tracepoint_exists
from tracer.kernel.view import BTF_PATH, KernelView, kernel_view, load_btf, prototypes_of
from tracer.collect.bpf import bcc_status, fentry_trial
from tracer.collect.plan import (BACKEND, OPTIONAL, by_target, function_targets, functions_of, rows,
                                 tracepoint_shape_problem, tracepoint_targets)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    remedy: str = ""
    required: bool = True  # False: the tool works without it, with less detail
    source: str = ""  # where a kernel fact was read (the era checks)

    def to_json(self) -> dict:
        return {"type": "check", **asdict(self)}


def run_checks(boot: Path = Path("/boot")) -> list[Check]:
    from tracer.collect import vm

    checks: list[Check] = []
    root = os.geteuid() == 0
    checks.append(Check("root", root, "running as root" if root else f"uid {os.geteuid()}",
                        "run with sudo"))
    bcc_ok, bcc_detail = bcc_status()
    checks.append(Check("bcc", bcc_ok, bcc_detail,
                        "apt-get install bpfcc-tools python3-bpfcc; venv with --system-site-packages"))
    hdr = headers_dir()
    checks.append(Check("kernel headers", hdr is not None, str(hdr) if hdr else f"none for {os.uname().release}",
                        "apt-get install linux-headers-$(uname -r) (scripts/setup.sh links Debian's for other kernels)"))
    tracefs = find_tracefs()
    checks.append(Check("tracefs", tracefs is not None, str(tracefs) if tracefs else "not mounted",
                        "mount -t tracefs nodev /sys/kernel/tracing (the tool does it as root)"))
    btf = BTF_PATH
    checks.append(Check("BTF", btf.exists(), str(btf) if btf.exists() else "missing",
                        "a kernel built with CONFIG_DEBUG_INFO_BTF=y"))
    kp = bool(tracefs) and kprobes_available(tracefs)
    checks.append(Check("kprobes", kp, "kprobe_events present" if kp else "no kprobe_events (CONFIG_KPROBES off?)",
                        "trace-halfclose vm boots a distro kernel that has them", required=False))
    if root and bcc_ok and btf.exists():
        ok, detail = fentry_trial()
    else:
        ok, detail = False, "not tried (needs root, bcc and BTF)"
    checks.append(Check("fentry/fexit", ok, detail, "kprobe or tracepoint backends work without it", required=False))

    # The reproduction's functions (kprobe and fentry) and its tracepoint backend's tracepoints.
    functions = functions_of("repro")
    try:
        funcs = kernel_functions(wanted=set(functions))
    except OSError as exc:
        funcs = set()
        checks.append(Check("/proc/kallsyms", False, f"unreadable: {exc.strerror or exc}", "", required=False))
    protos = _prototypes()
    for name, p in functions.items():
        where = "in /proc/kallsyms" + (f"; {prototype_text(protos[name])}" if name in protos else "")
        checks.append(Check(f"function {name}", name in funcs,
                            where if name in funcs else (p.note or "not in /proc/kallsyms"),
                            "" if p.need == OPTIONAL else "another kernel (trace-halfclose vm --kernel)",
                            required=False))
    view = _view(tracefs)
    for tp, p in by_target(rows("repro", "tracepoint")).items():
        have = bool(tracefs) and tracepoint_exists(tracefs, *tp.split(":"))
        # Attached raw: its program reads the tracepoint's arguments, which BTF gives.
        proto = (view.tracepoint_protos or {}).get(tp) if view is not None else None
        problem = tracepoint_shape_problem(p, view) if have and view is not None else None
        detail = ("present" + (f"; BTF: {proto.name}({', '.join(x.type for x in proto.params)})" if proto else "")
                  if have else "missing")
        checks.append(Check(f"tracepoint {tp}", have and not problem, problem or detail,
                            "a newer kernel" if p.need == BACKEND else "", required=False))

    checks += era_checks(view)

    vng_ok, vng_detail = True, ""
    try:
        vng_detail = vm.find_vng()
    except Exception as exc:  # UserError with the remedy in it
        vng_ok, vng_detail = False, str(exc)
    checks.append(Check("virtme-ng + qemu (for vm)", vng_ok, vng_detail, "scripts/setup.sh --vm", required=False))
    kernels = [k for k in vm.find_kernels(boot) if (Path("/lib/modules") / str(vm.release_of(k)) / "build").exists()]
    checks.append(Check("bootable kernel with headers (for vm)", bool(kernels),
                        ", ".join(k.name for k in kernels) or f"none under {boot}",
                        "apt-get install linux-image-amd64 linux-headers-amd64", required=False))
    kvm_on, why = vm.use_kvm(None)
    checks.append(Check("vm acceleration", kvm_on, why, "", required=False))
    return checks


def verdict(checks: list[Check]) -> tuple[bool, str]:
    """Can the tool run here, and with which backend would auto start?"""
    by = {c.name: c for c in checks}
    basics = all(c.ok for c in checks if c.required)
    if not basics:
        missing = ", ".join(c.name for c in checks if c.required and not c.ok)
        return False, f"trace-halfclose cannot run here: {missing} missing; `trace-halfclose vm` may still work"
    if by["kprobes"].ok:
        return True, "auto backend: kprobe (full detail)"
    if by["fentry/fexit"].ok:
        return True, "auto backend: fentry (full detail)"
    return True, ("auto backend: tracepoint (writes, FIN, RST and sk_err observed; the branch inside "
                  "tcp_sendmsg_locked is inferred). For kprobes: trace-halfclose vm")


# --- the kernel's era (tracer/kernel/eras.py) ---------------------------------------------------


def _prototypes() -> dict[str, FuncProto]:
    """The BTF prototypes of the tool's functions (BTF is readable without root); {} without BTF."""
    try:
        return prototypes_of(load_btf(), function_targets())[0]
    except UserError:
        return {}


def _view(tracefs: Path | None) -> KernelView | None:
    """This kernel as the plan sees it (needs tracefs, i.e. root, and BTF); None when it cannot be read."""
    if tracefs is None:
        return None
    try:
        return kernel_view(tracefs, load_btf(), function_targets(), tracepoint_targets())
    except (UserError, OSError):
        return None


def prototype_text(proto: FuncProto) -> str:
    """BTF: tcp_recvmsg(sk, msg, len, flags) -> int, fexit return value in slot 4."""
    return (f"BTF: {proto.name}({', '.join(proto.names)}) -> {proto.returns}, fexit return value in slot "
            f"{proto.ret_slot}")


def era_checks(view: KernelView | None) -> list[Check]:
    """One row per era fact (tracer/kernel/eras.py): whether this kernel has it, the oldest kernel
    that does, what it changes, where that was read. A floor fact missing is a failed check."""
    out = []
    for era in ERAS:
        have = era.present(view) if view is not None else None
        if have is None:
            state = "not known here (needs root for tracefs, and BTF)" if view is None else "not known here"
        else:
            state = "yes" if have else "no"
        out.append(Check(f"era: {era.title}", bool(have), f"{state} ({era.when}): {era.feature}; {era.effect}",
                         f"a kernel with it ({era.when})" if era.floor else "",
                         required=era.floor and have is not None, source=f"{era.source}; asked: {era.asked}"))
    return out
