"""--pcap FILE and --packetdrill FILE on the command line: paths refused before anything
runs (exit status 2, one line), files written from a recording by `replay`, `watch --pcap`
refused with the reason. No root: `run` refuses a bad path before it checks for root.
"""
from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

pytest.importorskip("dpkt")

from tests.unit.conftest import DATA  # noqa: E402
from tracer.cli import main  # noqa: E402

WITH_BYTES = DATA / "native-6.18-tracepoint-all-packets.jsonl"
WITHOUT_BYTES = DATA / "debian-6.1.0-56-writes3.jsonl"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("command", [["run"], ["replay", WITH_BYTES]], ids=["run", "replay"])
@pytest.mark.parametrize("option", ["--pcap", "--packetdrill"])
def test_a_directory_is_refused_before_anything_runs(command, option, tmp_path):
    r = invoke(*command, option, tmp_path)
    assert r.exit_code == 2, r.output
    assert f"{option} {tmp_path}: is a directory" in r.stderr
    assert r.stdout == ""  # nothing was run, nothing shown


@pytest.mark.parametrize("option", ["--pcap", "--packetdrill"])
def test_a_missing_directory_is_refused(option, tmp_path):
    r = invoke("run", option, tmp_path / "nowhere" / "x")
    assert r.exit_code == 2 and "no directory" in r.stderr


def test_an_unwritable_directory_is_refused(tmp_path, monkeypatch):
    """The check is os.access's answer (which says yes to root): make it say no for the directory."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    r = invoke("replay", WITH_BYTES, "--packetdrill", tmp_path / "x.pkt")
    assert r.exit_code == 2 and "not writable" in r.stderr


def test_the_same_file_twice_is_refused(tmp_path):
    r = invoke("run", "--pcap", tmp_path / "x", "--packetdrill", tmp_path / "x")
    assert r.exit_code == 2 and "name the same file" in r.stderr


def test_replay_writes_a_pcapng_and_a_script_per_scenario(tmp_path):
    r = invoke("replay", WITH_BYTES, "--pcap", tmp_path / "all.pcapng", "--packetdrill", tmp_path / "all.pkt")
    assert r.exit_code == 0, r.stderr
    raw = (tmp_path / "all.pcapng").read_bytes()
    assert raw[:4] == b"\x0a\x0d\x0d\x0a"  # a pcapng section header
    names = sorted(p.name for p in tmp_path.glob("all-*.pkt"))
    assert names == sorted(f"all-{s}.pkt" for s in ("close", "shutdown-wr", "shutdown-rdwr", "linger0",
                                                    "unread-data", "read-first", "nosignal", "sigpipe-default"))
    assert "not expressible in packetdrill" in (tmp_path / "all-sigpipe-default.pkt").read_text()
    assert "packetdrill script written to" in r.stderr and "packets written to" in r.stderr


def test_replay_of_one_run_writes_the_file_named(tmp_path):
    one = tmp_path / "close.jsonl"
    lines = WITH_BYTES.read_text().splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith('{"record": "meta"')]
    one.write_text("".join(lines[starts[0]:starts[1]]))
    r = invoke("replay", one, "--packetdrill", tmp_path / "close.pkt")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "close.pkt").read_text().startswith("// trace-halfclose: scenario close")


def test_pcap_of_a_recording_without_bytes_says_so_in_one_line(tmp_path):
    out = tmp_path / "old.pcapng"
    out.write_bytes(b"kept")
    r = invoke("replay", WITHOUT_BYTES, "--pcap", out)
    assert r.exit_code == 2
    assert "no packet bytes" in r.stderr.splitlines()[0]
    assert out.read_bytes() == b"kept"  # refused before the file was opened


def test_watch_pcap_is_refused_with_the_reason(tmp_path):
    r = invoke("watch", "--port", "9999", "--pcap", tmp_path / "w.pcapng")
    assert r.exit_code == 2
    assert "watch --pcap is not supported yet" in r.stderr
