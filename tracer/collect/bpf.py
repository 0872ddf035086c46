"""Collection: load bpf/halfclose.bpf.c with bcc, attach the planned probes, stream events.

The only module that imports bcc. Everything it hands on is an Event.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile

from tracer.errors import UserError
from tracer.record.event import BPF_DIR, Event, RawEvent, decode
from tracer.collect.plan import CLIENT_IO_TPS, Plan

SOURCE = BPF_DIR / "halfclose.bpf.c"


class BackendUnavailable(UserError):
    """The kernel refused this backend's programs (fentry on some kernels): try the next one."""


def import_bcc():
    try:
        import bcc  # Debian's python3-bpfcc, never the PyPI "bcc"
    except ImportError:
        raise UserError(
            "bcc's Python module is not importable by " + sys.executable,
            "apt-get install bpfcc-tools python3-bpfcc, and run from a venv made with "
            "`/usr/bin/python3 -m venv --system-site-packages` (scripts/setup.sh does both)",
        ) from None
    return bcc


@contextlib.contextmanager
def _stderr_to(box: list[str]):
    """bcc's compiler and verifier write to fd 2: keep it, to show only when loading fails."""
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


def compile_flags(plan: Plan, offsets: list[str]) -> list[str]:
    return [f"-I{BPF_DIR}", *offsets, *plan.defines()]


class BpfSession:
    """One loaded BPF object; close() detaches everything it attached."""

    def __init__(self, plan: Plan, offsets: list[str]):
        self.plan = plan
        self.cflags = compile_flags(plan, offsets)
        self.bpf = None
        self._pending: list[Event] = []
        self._io_tps: list[str] = []

    def load(self) -> None:
        bcc = import_bcc()
        stderr: list[str] = []
        try:
            with _stderr_to(stderr):
                # fentry programs and TRACEPOINT_PROBEs are attached by bcc here, at load.
                self.bpf = bcc.BPF(src_file=str(SOURCE).encode(), cflags=self.cflags)
        except Exception as exc:  # bcc raises plain Exception
            detail = " | ".join(line for line in "".join(stderr).strip().splitlines()[-3:] if line)
            msg = f"{exc}; {detail}" if detail else str(exc)
            if "compile" in str(exc):
                raise UserError(
                    f"bcc could not compile {SOURCE.name}: {msg}",
                    "install kernel headers for this kernel (linux-headers-$(uname -r)); "
                    "`trace-halfclose doctor` checks them",
                ) from None
            if self.plan.backend == "fentry":  # e.g. EPERM where trampolines are not allowed
                raise BackendUnavailable(f"the kernel refused the fentry/fexit programs: {msg}") from None
            raise UserError(f"the kernel refused the BPF programs: {msg}", "run `trace-halfclose doctor`") from None
        try:
            if "tcp:tcp_send_reset" in self.plan.tracepoints and self.plan.backend == "tracepoint":
                self.bpf.attach_tracepoint(tp=b"tcp:tcp_send_reset", fn_name=b"send_reset_tp")
            if self.plan.backend == "kprobe":
                for p in self.plan.functions:
                    self.bpf.attach_kprobe(event=p.func.encode(), fn_name=p.entry.encode())
                    if p.ret:
                        self.bpf.attach_kretprobe(event=p.func.encode(), fn_name=p.ret.encode())
        except Exception as exc:
            self.close()
            raise BackendUnavailable(f"attaching kprobes failed: {exc}") from None
        self.bpf["events"].open_ring_buffer(self._on_event)

    def _on_event(self, _ctx, data, _size) -> None:
        self._pending.append(decode(ctypes.cast(data, ctypes.POINTER(RawEvent)).contents))

    def _set(self, table: str, value: int) -> None:
        self.bpf[table][ctypes.c_int(0)] = ctypes.c_uint32(value)

    def trace_netns(self, inum: int) -> None:
        self._set("target_netns", inum)

    def trace_client(self, pid: int, server_port: int) -> None:
        self._set("target_pid", pid)
        self._set("target_port", server_port)

    def begin_client_io(self) -> None:
        """The read/write syscall tracepoints, only while the client does I/O (tracepoint backend)."""
        if self.plan.backend == "tracepoint" and not self._io_tps:
            for tp, fn in CLIENT_IO_TPS:
                if tp in self.plan.tracepoints:
                    self.bpf.attach_tracepoint(tp=tp.encode(), fn_name=fn.encode())
                    self._io_tps.append(tp)

    def end_client_io(self) -> None:
        for tp in self._io_tps:
            self.bpf.detach_tracepoint(tp=tp.encode())
        self._io_tps = []

    def poll(self, timeout_ms: int = 0) -> list[Event]:
        self.bpf.ring_buffer_poll(timeout_ms)
        out, self._pending = self._pending, []
        return out

    def lost(self) -> int:
        return sum(int(v) for v in self.bpf["dropped"][ctypes.c_int(0)])

    def close(self) -> None:
        if self.bpf is not None:
            self.end_client_io()
            self.bpf.cleanup()
            self.bpf = None
