"""The BPF C of one (mode, backend) as the one text bcc compiles.

bcc rewrites map calls (map.lookup()) and finds programs only in its main
source text, so the files of bpf/ cannot be #included into one another: they
are joined here, in PARTS order, each opened by a `#line 1 "bpf/<path>"`
marker so that a compile error names the real file and line. Only the
headers without maps (halfclose.h, sock_read.h, args.h) are #included, through -I.

`trace-halfclose --ebpf` prints program_text(), the very text BpfSession
compiles. Pure: no bcc, no kernel.
"""
from __future__ import annotations

from pathlib import Path

# The parts of each text, in order: common first (ring buffer, submit), then
# the mode's common part (its filter and the programs all its backends share),
# the shared pieces the backend needs, the backend's own programs last.
PARTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("repro", "kprobe"): ("common.bpf.c", "shared/capture.bpf.c", "repro/common.bpf.c", "shared/stash.bpf.c",
                          "shared/kretprobes.bpf.c", "repro/kprobe.bpf.c"),
    ("repro", "fentry"): ("common.bpf.c", "shared/capture.bpf.c", "repro/common.bpf.c", "repro/fentry.bpf.c"),
    ("repro", "tracepoint"): ("common.bpf.c", "shared/capture.bpf.c", "repro/common.bpf.c", "shared/syscalls.bpf.c",
                              "shared/fd_sock.bpf.c", "shared/reset_report.bpf.c", "repro/tracepoint.bpf.c"),
    ("watch", "kprobe"): ("common.bpf.c", "watch/common.bpf.c", "shared/stash.bpf.c", "watch/entries.bpf.c",
                          "shared/kretprobes.bpf.c", "watch/kprobe.bpf.c"),
    ("watch", "fentry"): ("common.bpf.c", "watch/common.bpf.c", "shared/stash.bpf.c", "watch/entries.bpf.c",
                          "watch/fentry.bpf.c"),
    ("watch", "tracepoint"): ("common.bpf.c", "watch/common.bpf.c", "shared/syscalls.bpf.c", "shared/fd_sock.bpf.c",
                              "shared/reset_report.bpf.c", "watch/tracepoint.bpf.c"),
}
HEADERS = ("halfclose.h", "sock_read.h", "args.h")
CAPTURE_PART = "shared/capture.bpf.c"  # its texts have the `packets` ring buffer (struct hc_packet)


def bpf_dir() -> Path:
    """The BPF sources: tracer/bpf/ in an installed wheel (package data, mapped from
    bpf/ by pyproject.toml's package-dir), else bpf/ beside tracer/ in a checkout
    (and an editable install, which runs from it)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "bpf"
    return installed if installed.is_dir() else package.parent / "bpf"


def parts(mode: str, backend: str) -> tuple[str, ...]:
    try:
        return PARTS[mode, backend]
    except KeyError:
        raise ValueError(f"no BPF text for mode {mode!r} and backend {backend!r}") from None


def joined(mode: str, backend: str, directory: Path | None = None) -> str:
    """The parts of (mode, backend), each after its #line marker."""
    where = directory or bpf_dir()
    return "".join(f'#line 1 "bpf/{rel}"\n' + (where / rel).read_text() for rel in parts(mode, backend))


def compile_flags(defines: list[str], extra: list[str] | tuple[str, ...] = (), directory: Path | None = None) -> list[str]:
    """bcc's cflags: the headers' directory, then the extra flags (struct offsets,
    watch filters), then the plan's defines (-DHAVE_, and the argument slots -DARG_/-DRET_)."""
    return [f"-I{directory or bpf_dir()}", *extra, *defines]


def program_text(mode: str, backend: str, cflags: list[str], directory: Path | None = None) -> str:
    """What bcc compiles: a comment with the cflags it is compiled with, then the joined parts."""
    header = [f"/* trace-halfclose: the BPF programs of mode {mode}, {backend} backend, as bcc compiles them,",
              " * with these cflags:"]
    header += [f" *   {flag}" for flag in cflags]
    return "\n".join(header + [" */", ""]) + joined(mode, backend, directory)
