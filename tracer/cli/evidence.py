"""--pcap FILE and --packetdrill FILE: evidence files of a reproduction, for `run` and `replay`.

Both paths are checked before anything is traced, as --svg's are (a directory, a
missing directory or one that cannot be written: one line, exit status 2); the
files are written after the run, before the results are shown (so `--check`
failing still leaves them).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import click

from tracer.errors import UserError


# Why `watch --pcap` is refused (README, "Evidence files").
WATCH_PCAP = ("watch --pcap is not supported yet: watch's BPF programs (bpf/watch/) capture no packets; "
              "it needs a net:net_dev_start_xmit program that keeps the packets of watched sockets "
              "(skb->sk in the watch's socket map). Packets of the reproduction: trace-halfclose --pcap FILE")


def evidence_options(command):
    """--pcap FILE and --packetdrill FILE, the same on `run` and `replay`."""
    command = click.option(
        "--packetdrill", "packetdrill_file", metavar="FILE",
        help="Also write a packetdrill script of the run, from the client's side (its calls and results, "
             "the server's packets to inject); with --scenario all, one per scenario beside FILE "
             "(FILE-SCENARIO.pkt).")(command)
    return click.option(
        "--pcap", "pcap_file", metavar="FILE",
        help="Also write the run's packets as a pcapng file (tcpdump, tshark, Wireshark), each with a comment "
             "of the kernel events around it.")(command)


def check_path(option: str, path: str, example: str) -> None:
    """A file option's path, before anything runs: not a directory, in a directory that exists
    and can be written. A problem is a UserError (exit status 2)."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise UserError(f"{option} {path}: is a directory; give a file name, such as {example}")
    if not parent.is_dir():
        raise UserError(f"{option} {path}: no directory {parent}")
    if not os.access(p if p.exists() else parent, os.W_OK):
        raise UserError(f"{option} {path}: not writable")


def check_evidence(pcap_file: str | None, packetdrill_file: str | None) -> None:
    """Before anything is traced: both paths, and dpkt (which writes them) found, not imported."""
    from tracer.cli.common import fail

    try:
        if pcap_file is not None:
            check_path("--pcap", pcap_file, "run.pcapng")
        if packetdrill_file is not None:
            check_path("--packetdrill", packetdrill_file, "run.pkt")
        if pcap_file and packetdrill_file and os.path.abspath(pcap_file) == os.path.abspath(packetdrill_file):
            raise UserError(f"--pcap {pcap_file} and --packetdrill {packetdrill_file} name the same file: give two")
        if (pcap_file or packetdrill_file) and importlib.util.find_spec("dpkt") is None:
            raise UserError("--pcap and --packetdrill read and write packets with dpkt, which is not installed",
                            "run scripts/setup.sh again (or pip install dpkt in the tool's venv)")
    except UserError as exc:
        fail(exc)


def script_paths(path: str, scenarios: list[str]) -> list[str]:
    """Where each run's script goes: FILE itself for one run; FILE-SCENARIO.pkt beside it for several."""
    if len(scenarios) == 1:
        return [path]
    p = Path(path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return [str(p.with_name(f"{stem}-{name}{p.suffix or '.pkt'}")) for name in scenarios]


def write_evidence(recs, pcap_file: str | None, packetdrill_file: str | None) -> None:
    """The files asked for, from the recordings (annotated again: annotation is pure)."""
    if not pcap_file and not packetdrill_file:
        return
    from importlib.metadata import PackageNotFoundError, version

    from tracer.cli.common import fail
    from tracer.display import console
    from tracer.process.annotate import annotate

    timelines = [annotate(rec) for rec in recs]
    if pcap_file:
        from tracer.display import pcap

        try:
            release = version("trace-halfclose")
        except PackageNotFoundError:
            release = ""
        try:
            pcap.check(timelines)  # before the file is opened: an existing one stays as it was
        except pcap.NoPacketBytes as exc:
            fail(UserError(f"--pcap {pcap_file}: {exc}", "record the run again with this version "
                                                         "(`trace-halfclose --record FILE`)"))
        try:
            with open(pcap_file, "wb") as f:
                notes = pcap.write(timelines, f, release)
        except OSError as exc:
            fail(UserError(f"--pcap {pcap_file}: cannot write it: {exc.strerror or exc}"))
        for note in notes:
            console.note(note)
        console.note(f"packets written to {pcap_file}")
    if packetdrill_file:
        from tracer.display import packetdrill

        paths = script_paths(packetdrill_file, [tl.recording.scenario for tl in timelines])
        for tl, path in zip(timelines, paths):
            s = packetdrill.script(tl)
            try:
                Path(path).write_text(s.text, encoding="utf-8")
            except OSError as exc:
                fail(UserError(f"--packetdrill {path}: cannot write it: {exc.strerror or exc}"))
            console.note(f"packetdrill script written to {path}" if s.replayable
                         else f"{path}: {s.text.strip().removeprefix('// ')}")
