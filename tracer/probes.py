"""Collection: load bpf/ with bcc, attach the planned probes, stream events.

The only module that imports bcc. Everything it hands on is an Event.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile

from .errors import UserError
from .events import BPF_DIR, Event, RawEvent, decode
from .probe_plan import Plan


def import_bcc():
    try:
        import bcc  # noqa: F401  (Debian's python3-bpfcc, never the PyPI "bcc")
    except ImportError:
        raise UserError(
            "bcc's Python module is not importable by " + sys.executable,
            "apt-get install bpfcc-tools python3-bpfcc, and run from a venv made with "
            "`/usr/bin/python3 -m venv --system-site-packages` (scripts/setup.sh does both)",
        ) from None
    return bcc


@contextlib.contextmanager
def _stderr_to(box: list[str]):
    """bcc's compiler writes to fd 2: keep it, to show only when loading fails."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            box.append(tmp.read().decode(errors="replace"))


class KprobeSession:
    """One loaded BPF object: its probes are detached by close()."""

    source = BPF_DIR / "kprobe.bpf.c"

    def __init__(self, plan: Plan, cflags: list[str]):
        self.plan = plan
        self.cflags = cflags
        self.bpf = None
        self._pending: list[Event] = []

    def load(self) -> None:
        bcc = import_bcc()
        cflags = [f"-I{BPF_DIR}", *self.cflags] + (["-DHC_STATE_TRACEPOINT"] if self.plan.state_tracepoint else [])
        stderr: list[str] = []
        try:
            with _stderr_to(stderr):
                self.bpf = bcc.BPF(src_file=str(self.source).encode(), cflags=cflags)
        except Exception as exc:  # bcc raises plain Exception on compile errors
            detail = " | ".join("".join(stderr).strip().splitlines()[-3:])
            raise UserError(
                f"bcc could not compile {self.source.name}: {exc}; {detail}",
                "install kernel headers for this kernel (linux-headers-$(uname -r)); "
                "`trace-halfclose doctor` checks them",
            ) from None
        try:
            for p in self.plan.probes:
                self.bpf.attach_kprobe(event=p.func.encode(), fn_name=p.entry.encode())
                if p.ret:
                    self.bpf.attach_kretprobe(event=p.func.encode(), fn_name=p.ret.encode())
        except Exception as exc:
            self.close()
            raise UserError(
                f"attaching kprobes failed: {exc}",
                "this kernel may lack CONFIG_KPROBES; try `trace-halfclose vm`",
            ) from None
        # TRACEPOINT_PROBE programs are attached by bcc at load, when the tracepoint exists.
        self.bpf["events"].open_ring_buffer(self._on_event)

    def _on_event(self, _ctx, data, size) -> None:
        raw = ctypes.cast(data, ctypes.POINTER(RawEvent)).contents
        self._pending.append(decode(raw))

    def trace_netns(self, inum: int) -> None:
        self.bpf["target_netns"][ctypes.c_int(0)] = ctypes.c_uint32(inum)

    def poll(self, timeout_ms: int = 0) -> list[Event]:
        self.bpf.ring_buffer_poll(timeout_ms)
        out, self._pending = self._pending, []
        return out

    def lost(self) -> int:
        return sum(int(v) for v in self.bpf["dropped"][ctypes.c_int(0)])

    def close(self) -> None:
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None

    def ebpf_source(self) -> str:
        return self.source.read_text()
