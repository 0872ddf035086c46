"""What the running kernel offers: tracefs, kprobes, functions, tracepoints,
BTF and headers. Every path is a parameter, so tests feed recorded files.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tracer.errors import UserError

TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
# A kallsyms text symbol may carry a compiler suffix (tcp_fin.isra.0): that
# clone may take other arguments than the source says, so it is not used.
_CLONE = re.compile(r"\.(isra|constprop|part|cold|llvm)(\.|$)")


def find_tracefs(candidates=TRACEFS_CANDIDATES) -> Path | None:
    """Where tracefs is mounted and readable by this user (it is mode 0700, for root
    only, on most systems; os.access answers where Path.exists() would raise EACCES)."""
    for c in candidates:
        if os.access(c / "available_events", os.R_OK):
            return c
    return None


def ensure_tracefs(candidates=TRACEFS_CANDIDATES) -> Path:
    """tracefs, mounted on demand (microVMs often boot without it)."""
    found = find_tracefs(candidates)
    if found:
        return found
    target = candidates[0]
    subprocess.run(["mount", "-t", "tracefs", "nodev", str(target)], capture_output=True)
    found = find_tracefs(candidates)
    if not found:
        raise UserError(
            "tracefs is not mounted and could not be mounted",
            f"mount -t tracefs nodev {target}",
        )
    return found


def kprobes_available(tracefs: Path) -> bool:
    # kprobe_events exists only with CONFIG_KPROBE_EVENTS (and so CONFIG_KPROBES).
    return (tracefs / "kprobe_events").exists()


def kernel_functions(kallsyms: Path = Path("/proc/kallsyms"), wanted: set[str] | None = None) -> set[str]:
    """Text symbols of the kernel (exact names; compiler clones are left out)."""
    found = set()
    with open(kallsyms, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3 or parts[1] not in ("T", "t"):
                continue
            name = parts[2]
            if _CLONE.search(name):
                continue
            if wanted is None or name in wanted:
                found.add(name)
    return found


def tracepoint_exists(tracefs: Path, category: str, name: str) -> bool:
    return (tracefs / "events" / category / name / "format").exists()


_FIELD = re.compile(r"^\s+field:([^;]*);", re.M)
_ARRAY = re.compile(r"\[[^\]]*\]\s*$")


def format_fields(text: str) -> frozenset[str]:
    """The fields of a tracepoint's record, from its format file
    (events/<category>/<name>/format): `field:<C declaration>;` lines, the common_*
    header left out. `__u8 saddr[sizeof(struct sockaddr_in6)]` is the field saddr."""
    names = set()
    for decl in _FIELD.findall(text):
        words = re.findall(r"[A-Za-z_]\w*", _ARRAY.sub("", decl.strip()))
        if words and not words[-1].startswith("common_"):
            names.add(words[-1])
    return frozenset(names)


def tracepoint_fields(tracefs: Path, category: str, name: str) -> frozenset[str] | None:
    """A tracepoint's record fields on this kernel, or None when it has no readable format."""
    try:
        return format_fields((tracefs / "events" / category / name / "format").read_text())
    except OSError:
        return None


def headers_dir(release: str | None = None, modules: Path = Path("/lib/modules")) -> Path | None:
    """Where bcc will look for kernel headers, if they are there."""
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env and Path(env).is_dir():
        return Path(env)
    release = release or os.uname().release
    build = modules / release / "build"
    return build if (build / "include").is_dir() or (build / "Makefile").exists() else None


def require_root() -> None:
    if os.geteuid() != 0:
        raise UserError(
            "trace-halfclose needs root: loading BPF programs and entering a network namespace need "
            "CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN and CAP_NET_ADMIN",
            "run it with sudo (sudo trace-halfclose ...)",
        )
