"""Collection: compile a plan's BPF text with bcc, attach its probes, stream events.

The only module that imports bcc (Debian's python3-bpfcc, never the PyPI
"bcc"), and only inside its functions, so importing this module needs no bcc.
Everything it hands on is an Event. One BpfSession serves both modes: what
differs (the text, the programs, when each is attached) comes from the Plan's
rows (tracer/collect/plan.py).
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import sys
import tempfile
from pathlib import Path

from tracer import interrupt
from tracer.errors import UserError
from tracer.kernel.names import TASK_COMM_LEN
from tracer.record.event import RAW_SIZE, Event, rows_of, Packet, RawEvent, RawPacket, decode, decode_packet
from tracer.collect import ringbuf
from tracer.collect.plan import CLIENT_IO, EXPLICIT, Plan, Probe
from tracer.collect.sources import CAPTURE_PART, compile_flags, parts, program_text


MAX_BATCH = 50_000  # records per poll() in raw mode (some 0.1 s of work)


def _said(text: str) -> None:
    """A problem while detaching: the run's result stands, so it is told, not raised."""
    print(f"trace-halfclose: {text}", file=sys.stderr)


class BackendUnavailable(UserError):
    """The kernel refused this backend's programs (fentry on some kernels): try the next one."""

    refused = False  # the verifier or the kernel said no at load: it will say no again this boot


class BackendRefused(BackendUnavailable):
    refused = True


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


def bcc_status() -> tuple[bool, str]:
    """Whether bcc imports here, and its version and place (or the import error), for the doctor."""
    try:
        import bcc
    except ImportError as exc:
        return False, str(exc)
    return True, f"bcc {getattr(bcc, '__version__', '?')} from {Path(bcc.__file__).parent}"


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


def _last_lines(box: list[str], n: int) -> list[str]:
    return [line for line in "".join(box).strip().splitlines() if line.strip()][-n:]


FENTRY_TRIAL = "KFUNC_PROBE(tcp_done, void *sk) { return 0; }"


def fentry_trial() -> tuple[bool, str]:
    """Load and attach a minimal fentry program on tcp_done: only the kernel can say
    whether it accepts one (the 6.18 microVMs refuse with EPERM). Needs root and bcc."""
    bcc = import_bcc()
    box: list[str] = []
    try:
        with _stderr_to(box):
            b = bcc.BPF(text=FENTRY_TRIAL)
    except Exception as exc:  # bcc raises plain Exception
        last = _last_lines(box, 1)
        return False, f"refused: {exc}" + (f" ({last[0]})" if last else "")
    b.cleanup()
    return True, "a test fentry program on tcp_done loaded and attached"


class BpfSession:
    """One loaded BPF text for a plan; close() detaches everything it attached.
    extra_cflags: the struct offsets, and the watch's filter constants.

    Loading, attaching and detaching run whole (tracer/interrupt.py shielded()): a
    signal then waits until they are done, so bcc's tables always say what is
    attached. close() can be called any number of times; it leaves bcc's atexit
    cleanup nothing to do, and unregisters it."""

    def __init__(self, plan: Plan, extra_cflags: list[str] | tuple[str, ...] = (), raw: bool = False):
        self.plan = plan
        self.raw = raw  # poll() hands out each record's bytes (the watch decodes what it needs)
        self.cflags = compile_flags(plan.defines(), extra_cflags)
        self.text = program_text(plan.mode, plan.backend, self.cflags)
        self.bpf = None
        self._pending: list[Event] = []
        self._packets: list[Packet] = []
        self._io: list[Probe] = []
        self._reader: ringbuf.RingReader | None = None  # raw: the events' pages read directly

    def load(self) -> None:
        """Compile (bcc attaches the KFUNC_PROBE programs here), attach the plan's
        EXPLICIT rows (kprobes, raw tracepoints), open the ring buffer. On any failure, or a
        signal that came meanwhile, what was attached is detached again."""
        try:
            with interrupt.shielded():
                self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        bcc = import_bcc()
        stderr: list[str] = []
        what = f"the {self.plan.mode} programs ({self.plan.backend} backend)"
        try:
            with _stderr_to(stderr):
                self.bpf = bcc.BPF(text=self.text.encode(), cflags=self.cflags)
        except Exception as exc:  # bcc raises plain Exception
            errors = [line for line in "".join(stderr).splitlines() if ": error:" in line]
            detail = " | ".join(errors[:3] or _last_lines(stderr, 3))  # errors name bpf/<file>:<line> (#line)
            msg = f"{exc}; {detail}" if detail else str(exc)
            if "compile" in str(exc):
                raise UserError(
                    f"bcc could not compile {what}: {msg}",
                    "install kernel headers for this kernel (linux-headers-$(uname -r)); "
                    "`trace-halfclose doctor` checks them",
                ) from None
            if self.plan.backend == "fentry":  # e.g. EPERM where trampolines are not allowed
                raise BackendRefused(f"the kernel refused the fentry/fexit programs: {msg}") from None
            raise UserError(f"the kernel refused the BPF programs: {msg}", "run `trace-halfclose doctor`") from None
        for probe in self.plan.attached_at(EXPLICIT):
            try:
                self._attach(probe)
            except Exception as exc:  # bcc raises plain Exception
                raise BackendUnavailable(f"attaching {probe.name} failed: {exc}") from None
        if self.raw and ringbuf.available():
            self._reader = ringbuf.RingReader(self.bpf["events"].map_fd, RAW_SIZE)
        else:
            self.bpf["events"].open_ring_buffer(self._on_raw if self.raw else self._on_event)
        if CAPTURE_PART in parts(self.plan.mode, self.plan.backend):  # the packets' bytes, a second ring buffer
            self.bpf["packets"].open_ring_buffer(self._on_packet)

    def _attach(self, probe: Probe) -> None:
        target, program = probe.target.encode(), probe.program.encode()
        if probe.hook == "kprobe":
            self.bpf.attach_kprobe(event=target, fn_name=program)
        elif probe.hook == "kretprobe":
            self.bpf.attach_kretprobe(event=target, fn_name=program)
        elif probe.hook == "tracepoint":
            # Raw: no perf event to close at detach, so no RCU grace period to wait for (plan.py).
            self.bpf.attach_raw_tracepoint(tp=probe.tracepoint_name.encode(), fn_name=program)
        else:
            raise ValueError(f"{probe.name}: bcc attaches {probe.hook} programs at load, not after")

    def _on_event(self, _ctx, data, _size) -> None:
        self._pending.append(decode(ctypes.cast(data, ctypes.POINTER(RawEvent)).contents))

    def _on_raw(self, _ctx, data, _size) -> None:
        self._pending.append(ctypes.string_at(data, RAW_SIZE))

    def _on_packet(self, _ctx, data, _size) -> None:
        self._packets.append(decode_packet(ctypes.cast(data, ctypes.POINTER(RawPacket)).contents))

    def take_packets(self) -> list[Packet]:
        """The packet bytes received since the last call (ring_buffer_poll fills both buffers)."""
        out, self._packets = self._packets, []
        return out

    def begin_client_io(self) -> None:
        """The raw_syscalls programs of the plan's CLIENT_IO rows, only while the client does
        I/O: while they are attached every syscall of the machine takes the slow path that
        runs them (syscall_regfunc, kernel/tracepoint.c, sets SYSCALL_WORK_SYSCALL_TRACEPOINT
        on every task), and a raw tracepoint attaches and detaches in well under a millisecond."""
        with interrupt.shielded():
            if not self._io:
                for probe in self.plan.attached_at(CLIENT_IO):
                    self._attach(probe)
                    self._io.append(probe)

    def end_client_io(self) -> None:
        with interrupt.shielded():
            probes, self._io = self._io, []
            for probe in probes:
                try:
                    self.bpf.detach_raw_tracepoint(tp=probe.tracepoint_name.encode())
                except Exception as exc:  # bcc raises plain Exception
                    _said(f"detaching {probe.name} failed ({exc}); the kernel detaches it at this process's exit")

    def poll(self, timeout_ms: int = 0) -> list:
        """The events that came since the last call: Events, or their records' bytes (raw;
        at most MAX_BATCH of them: the caller checks its clock between batches)."""
        if self._reader is not None:
            self._reader.wait(timeout_ms)  # a signal interrupts it: no ctypes callback runs here
            return self._reader.read(MAX_BATCH)
        # Shielded: bcc calls _on_event from C, and an exception raised in a ctypes callback
        # is printed and dropped ("Exception ignored on calling ctypes callback function"), so
        # a signal must not be raised there; it is raised once the poll returns (epoll_wait
        # returns at once on a signal).
        with interrupt.shielded():
            self.bpf.ring_buffer_poll(timeout_ms)
        out, self._pending = self._pending, []
        return rows_of(out) if self.raw else out

    def backlog(self) -> float:
        """How full the events' ring buffer is (0..1; 0 when bcc reads it)."""
        return self._reader.backlog() if self._reader is not None else 0.0

    def lost(self) -> int:
        return sum(int(v) for v in self.bpf["dropped"][ctypes.c_int(0)])

    def close(self) -> None:
        with interrupt.shielded():
            if self.bpf is None:
                return
            self.end_client_io()
            bpf, self.bpf = self.bpf, None
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            try:
                bpf.cleanup()  # detaches each probe bcc lists, closes the programs and ring buffers
            except Exception as exc:  # bcc raises plain Exception
                _said(f"detaching the BPF programs failed ({exc}); the kernel detaches them when this "
                      "process exits")
            atexit.unregister(bpf.cleanup)  # done, or said: bcc's exit handler must not try again

    # --- the reproduction's filter (bpf/repro/common.bpf.c) ---

    def _set(self, table: str, value: int) -> None:
        self.bpf[table][ctypes.c_int(0)] = ctypes.c_uint32(value)

    def trace_netns(self, inum: int) -> None:
        self._set("target_netns", inum)

    def trace_client(self, pid: int) -> None:
        self._set("target_pid", pid)

    # --- the watch's filter (bpf/watch/common.bpf.c) ---

    def watch_pid(self, pid: int) -> None:
        self.bpf["watch_pids"][ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def watched_pids(self) -> list[int]:
        return [k.value for k in self.bpf["watch_pids"].keys()]

    def watch_comm(self, comm: str) -> None:
        table = self.bpf["watch_comm"]
        leaf = table.Leaf()
        leaf.c = comm.encode(errors="surrogateescape")[:TASK_COMM_LEN - 1]  # the bytes the kernel keeps
        table[ctypes.c_int(0)] = leaf

    def set_launcher(self, tgid: int) -> None:
        self._set("watch_launcher", tgid)
