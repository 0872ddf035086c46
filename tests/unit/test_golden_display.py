"""Golden display tests: the tool's exact user-visible output, pinned.

Each case runs the public command line (click's CliRunner on `tracer.cli.main`)
on a recording in tests/unit/data/ and compares the whole output (stdout, then
stderr after a `--- stderr ---` line if any), byte for byte, with its golden file
tests/unit/golden/<case>.txt (rich text) or <case>.jsonl (NDJSON), and the exit
status with CASES. Internal changes must not alter them unnoticed. (rich pads
table rows with spaces: an editor or hook that strips trailing spaces breaks them.)

The output is made independent of the machine: rich wraps at COLUMNS (set per
case; 160 for the wide matrix, 100 otherwise), never sees a terminal (CliRunner's
streams), and FORCE_COLOR / TTY_COMPATIBLE, which make rich emit ANSI codes even
into a pipe, are removed for the call. The CLI's stderr console is made once per
process and keeps the colour system it detected then, so this module makes that
first use happen at collection, under the same environment (see _first_use).
Recordings are named relative to tests/unit/data/ (the working directory during
the call), so no path of this checkout appears in an error message.

An intended change of the output: regenerate the goldens (the tests then write
them instead of comparing; exit statuses are still checked), review the diff:

    GOLDEN_UPDATE=1 python -m pytest -q tests/unit/test_golden_display.py
    git diff tests/unit/golden/
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tracer.cli import main

DATA = Path(__file__).resolve().parent / "data"
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("GOLDEN_UPDATE") == "1"
ESC = "\x1b"

K61 = "debian-6.1.0-56-writes3.jsonl"
TP618 = "native-6.18-tracepoint-writes3.jsonl"
K61_ALL = "debian-6.1.0-56-kprobe-all.jsonl"
TP618_ALL = "native-6.18-tracepoint-all.jsonl"
W612 = "watch-6.12-fentry-multi.jsonl"
W618 = "watch-6.18-tracepoint-calls.jsonl"
W61 = "watch-6.1-kprobe-article.jsonl"


def env(width: int) -> dict:
    return {"COLUMNS": str(width), "FORCE_COLOR": None, "TTY_COMPATIBLE": None}


def _first_use() -> None:
    """The stderr console (errors, notes) is created when the CLI first needs it and
    keeps the colour system rich detected then: created inside another module's
    CliRunner call under FORCE_COLOR=1, every later error would carry ANSI codes.
    Collection runs before any test, so make that first use here, pinned."""
    CliRunner(env=env(100)).invoke(main, ["replay", "no-such-recording.jsonl"])


_first_use()

# (golden file = test id, arguments, COLUMNS, exit status)
CASES = [
    ("scenarios.txt", ["scenarios"], 100, 0),
    ("replay-6.1-kprobe-close.txt", ["replay", K61], 100, 0),
    ("replay-6.1-kprobe-close.jsonl", ["replay", "--json", K61], 100, 0),
    ("replay-6.18-tracepoint-close-check.txt", ["replay", "--check", TP618], 100, 0),
    ("replay-6.18-tracepoint-close.jsonl", ["replay", "--json", TP618], 100, 0),
    ("replay-6.1-kprobe-all-check-w160.txt", ["replay", "--check", K61_ALL], 160, 0),
    ("replay-6.1-kprobe-all.jsonl", ["replay", "--json", K61_ALL], 100, 0),
    ("replay-6.18-tracepoint-all.txt", ["replay", TP618_ALL], 100, 0),
    ("watch-6.12-fentry-multi.txt", ["watch", "--replay", W612], 100, 0),
    ("watch-6.12-fentry-multi.jsonl", ["watch", "--replay", W612, "--json"], 100, 0),
    ("watch-6.18-tracepoint-calls.txt", ["watch", "--replay", W618], 100, 0),
    ("watch-6.18-tracepoint-calls.jsonl", ["watch", "--replay", W618, "--json"], 100, 0),
    ("watch-6.1-kprobe-article.txt", ["watch", "--replay", W61], 100, 0),
    ("watch-6.1-kprobe-article.jsonl", ["watch", "--replay", W61, "--json"], 100, 0),
    ("error-replay-of-a-watch-recording.txt", ["replay", W61], 100, 2),
]


def run_and_compare(name: str, args: list[str], width: int, exit_code: int) -> None:
    """Run the command line at `width` columns; compare its output with golden/<name> and its exit status."""
    result = CliRunner(env=env(width)).invoke(main, args, catch_exceptions=False)
    out = result.stdout + (f"--- stderr ---\n{result.stderr}" if result.stderr else "")
    assert ESC not in out, f"ANSI escape codes in the output of {args}:\n{out[:2000]!r}"
    if name.endswith(".txt") and args[0] != "scenarios":  # rich's stdout (not click.echo) wraps at COLUMNS
        assert max(map(len, result.stdout.splitlines()), default=0) <= width, f"wider than COLUMNS={width}"
    golden = GOLDEN / name
    if UPDATE:
        golden.parent.mkdir(exist_ok=True)
        golden.write_bytes(out.encode("utf-8"))
    else:
        assert golden.exists(), f"no golden/{name}: run with GOLDEN_UPDATE=1 to create it"
        expected = golden.read_bytes().decode("utf-8")
        if out != expected:
            diff = difflib.unified_diff(expected.splitlines(), out.splitlines(), f"golden/{golden.name}",
                                        "actual", lineterm="")
            pytest.fail(f"{args} differs from golden/{golden.name} (GOLDEN_UPDATE=1 regenerates):\n"
                        + "\n".join(list(diff)[:60]), pytrace=False)
    assert result.exit_code == exit_code, f"exit status {result.exit_code}, expected {exit_code}\n{out[-2000:]}"


@pytest.mark.parametrize(("name", "args", "width", "exit_code"), CASES, ids=[c[0] for c in CASES])
def test_golden(name, args, width, exit_code, monkeypatch):
    monkeypatch.chdir(DATA)
    run_and_compare(name, args, width, exit_code)


def test_golden_check_fails_on_a_mismatch(tmp_path, monkeypatch):
    """`replay --check` exits 1 when the observed results are not the source's prediction:
    the 6.1 `close` recording relabelled as scenario shutdown-wr (whose writes should all succeed)."""
    lines = (DATA / K61).read_text(encoding="utf-8").splitlines(keepends=True)
    assert '"scenario": "close"' in lines[0]
    lines[0] = lines[0].replace('"scenario": "close"', '"scenario": "shutdown-wr"')
    (tmp_path / "relabelled.jsonl").write_text("".join(lines), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    run_and_compare("replay-6.1-close-as-shutdown-wr-check.txt", ["replay", "--check", "relabelled.jsonl"], 100, 1)
