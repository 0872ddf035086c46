"""Bad invocations of trace-halfclose, each refused before anything is loaded: exit
status 2, an `error:` line that says what is wrong and what is allowed, at most a
`remedy:` line after it, nothing else, no traceback.

Used by tests/unit/test_cli.py (click's CliRunner, no root needed) and
tests/live/test_robustness.py (the installed program, with a check that bcc was
never imported). Placeholders in the arguments, filled by files():
{tmp} a directory; {rec} a reproduction's recording, {watchrec} a watch's (both in
the current format, with an end line); {nopid} a pid that no process has, {deadpid}
one that a process had a moment ago; other {name}s are files below.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"

# (id, arguments, what the error line must contain)
BAD: list[tuple[str, list[str], str]] = [
    # -- the reproduction: times, counts, ports, names
    ("delay-nan", ["--delay", "nan"], "not a finite number of seconds"),
    ("delay-inf", ["--delay", "inf"], "not in the range 0<=x<=60"),
    ("delay-minus-inf", ["--delay", "-inf"], "not in the range"),
    ("delay-negative", ["--delay", "-1"], "not in the range 0<=x<=60"),
    ("delay-too-long", ["--delay", "61"], "not in the range 0<=x<=60"),
    ("delay-word", ["--delay", "abc"], "not a valid number of seconds"),
    ("gap-nan", ["--gap", "NaN"], "not a finite number of seconds"),
    ("gap-inf", ["--gap", "Infinity"], "not in the range"),
    ("gap-negative", ["--gap", "-0.5"], "not in the range 0.0<=x<=10"),
    ("gap-too-long", ["--gap", "11"], "not in the range 0.0<=x<=10"),
    ("writes-0", ["--writes", "0"], "not in the range 1<=x<=10"),
    ("writes-11", ["run", "--writes", "11"], "not in the range 1<=x<=10"),
    ("writes-fraction", ["--writes", "2.5"], "not a valid integer"),
    ("writes-word", ["--writes", "abc"], "not a valid integer"),
    ("writes-missing-value", ["--writes"], "requires an argument"),
    ("port-0", ["--port", "0"], "not in the range 1<=x<=65535"),
    ("port-65536", ["--port", "65536"], "not in the range 1<=x<=65535"),
    ("port-negative", ["--port", "-1"], "not in the range 1<=x<=65535"),
    ("port-name", ["--port", "http"], "not a valid integer"),
    ("scenario-unknown", ["--scenario", "nope"], "unknown scenario 'nope': choose one of close"),
    ("scenario-empty", ["--scenario", ""], "unknown scenario '': choose one of"),
    # -- scenario files: one line with the file, the line and the key
    ("scenario-file-missing", ["--scenario", "{tmp}/missing.toml"], "missing.toml:0: file: no such file"),
    ("scenario-file-sysctl-outside-net", ["--scenario", "{scenario_sysctl}"], ":3: kernel.panic: only net.* sysctls"),
    ("scenario-file-unknown-step", ["--scenario", "{scenario_step}"], ":3: server[1].do: unknown step 'listen'"),
    ("scenario-file-not-toml", ["--scenario", "{scenario_not_toml}"], ":1: TOML: not valid TOML"),
    ("scenarios-show-bad-file", ["scenarios", "--show", "{scenario_step}"], "server[1].do: unknown step"),
    ("backend-unknown", ["--backend", "bpftrace"], "is not one of 'auto', 'kprobe', 'fentry', 'tracepoint'"),
    ("flag-with-value", ["--ipv6=yes"], "does not take a value"),
    ("unknown-option", ["--bogus"], "No such option"),
    ("extra-argument", ["frobnicate"], "unexpected extra argument (frobnicate)"),
    # -- the reproduction: outputs
    ("record-no-directory", ["--record", "/nonexistent/dir/r.jsonl"], "--record /nonexistent/dir/r.jsonl: cannot write"),
    ("record-unwritable", ["--record", "/proc/version"], "--record /proc/version: cannot write"),
    ("record-directory", ["--record", "{tmp}"], "is a directory"),
    ("record-not-a-file", ["--record", "/dev/null"], "not a regular file"),
    ("record-is-svg", ["--record", "{tmp}/same.svg", "--svg", "{tmp}/same.svg"], "name the same file"),
    ("svg-no-directory", ["--svg", "/nonexistent/dir/l.svg"], "no directory /nonexistent/dir"),
    ("svg-directory", ["--svg", "{tmp}"], "is a directory"),
    ("json-and-ladder", ["--json", "--ladder"], "give one of them"),
    ("ebpf-and-record", ["--ebpf", "--record", "{tmp}/e.jsonl"], "--ebpf prints the BPF program and exits"),
    ("ebpf-and-json", ["--ebpf", "--json"], "--ebpf prints the BPF program and exits"),
    ("ebpf-and-check", ["--ebpf", "--check"], "--ebpf prints the BPF program and exits"),
    # -- replay: missing, corrupt, truncated and foreign recordings
    ("replay-no-file-given", ["replay"], "Missing argument 'RECORDING'"),
    ("replay-missing", ["replay", "{tmp}/missing.jsonl"], "No such file or directory"),
    ("replay-directory", ["replay", "{tmp}"], "is a directory"),
    ("replay-empty", ["replay", "{empty}"], "empty file"),
    ("replay-text", ["replay", "{text}"], "line 1: not a trace-halfclose recording line"),
    ("replay-binary", ["replay", "{binary}"], "line 1: not a trace-halfclose recording line"),
    ("replay-json-null", ["replay", "{null}"], "line 1: not a trace-halfclose recording line (not a JSON object)"),
    ("replay-json-array", ["replay", "{array}"], "not a JSON object"),
    ("replay-cut-mid-line", ["replay", "{cut_mid_line}"], "not a trace-halfclose recording line"),
    ("replay-cut-at-line-end", ["replay", "{cut_at_line_end}"], "truncated: it ends after"),
    ("replay-meta-only", ["replay", "{meta_only}"], "truncated"),
    ("replay-end-count-wrong", ["replay", "{end_count_wrong}"], "the end line counts"),
    ("replay-line-after-end", ["replay", "{line_after_end}"], "a line after the end line"),
    ("replay-event-before-meta", ["replay", "{event_first}"], "before the meta line"),
    ("replay-event-unknown-kind", ["replay", "{unknown_kind}"], "kind is 'NOT_A_KIND'"),
    ("replay-event-port-as-text", ["replay", "{port_text}"], "sport is '9999'"),
    ("replay-event-port-too-big", ["replay", "{port_big}"], "dport is 70000, not an integer from 0 to 65535"),
    ("replay-write-ret-as-list", ["replay", "{write_list}"], "ret is [6]"),
    ("replay-meta-unknown-scenario", ["replay", "{unknown_scenario}"], "scenario 'teleport' is not one"),
    ("replay-meta-unknown-family", ["replay", "{unknown_family}"], "family is 'ipx'"),
    ("replay-ndjson-output", ["replay", "{ndjson}"], "not a trace-halfclose recording line"),
    ("replay-watch-recording", ["replay", "{watchrec}"], "unknown record type 'watch'"),
    ("replay-json-and-ladder", ["replay", "--json", "--ladder", "{rec}"], "give one of them"),
    # -- watch: filters, commands, times
    ("watch-no-filter", ["watch"], "watch needs a filter"),
    ("watch-pid-none", ["watch", "--pid", "{nopid}"], "no process with pid"),
    ("watch-pid-ended", ["watch", "--pid", "{deadpid}"], "no process with pid"),
    ("watch-pid-0", ["watch", "--pid", "0"], "--pid 0: no process with pid 0"),
    ("watch-pid-negative", ["watch", "--pid", "-5"], "--pid -5: no process"),
    ("watch-pid-word", ["watch", "--pid", "init"], "not a valid integer"),
    ("watch-pid-and-command", ["watch", "--pid", "1", "--", "true"], "--pid cannot be combined with a command"),
    ("watch-comm-empty", ["watch", "--comm", ""], "--comm is empty"),
    ("watch-comm-path", ["watch", "--comm", "/bin/sh"], "that is a path"),
    ("watch-port-0", ["watch", "--port", "0"], "not in the range 1<=x<=65535"),
    ("watch-port-70000", ["watch", "--port", "70000"], "not in the range 1<=x<=65535"),
    ("watch-duration-nan", ["watch", "--port", "1", "--duration", "nan"], "not a finite number of seconds"),
    ("watch-duration-inf", ["watch", "--port", "1", "--duration", "inf"], "not a finite number of seconds"),
    ("watch-duration-0", ["watch", "--port", "1", "--duration", "0"], "not in the range x>0"),
    ("watch-duration-negative", ["watch", "--port", "1", "--duration", "-3"], "not in the range x>0"),
    ("watch-command-missing", ["watch", "--", "/nonexistent/program"], "command not found: /nonexistent/program"),
    ("watch-command-not-executable", ["watch", "--", "{not_executable}"], "command not an executable file"),
    ("watch-backend-unknown", ["watch", "--port", "1", "--backend", "dtrace"], "is not one of"),
    ("watch-record-no-directory", ["watch", "--port", "1", "--record", "/nonexistent/dir/w.jsonl"], "cannot write"),
    ("watch-record-is-svg", ["watch", "--port", "1", "--record", "{tmp}/w.svg", "--svg", "{tmp}/w.svg"], "same file"),
    ("watch-json-and-ladder", ["watch", "--port", "1", "--json", "--ladder"], "give one of them"),
    ("watch-replay-and-filter", ["watch", "--replay", "{watchrec}", "--port", "1"], "--replay takes no filter"),
    ("watch-replay-and-backend", ["watch", "--replay", "{watchrec}", "--backend", "kprobe"], "(given: --backend)"),
    ("watch-replay-and-record", ["watch", "--replay", "{watchrec}", "--record", "{tmp}/x.jsonl"], "(given: --record)"),
    ("watch-replay-and-command", ["watch", "--replay", "{watchrec}", "--", "true"], "(given: a command)"),
    ("watch-replay-missing", ["watch", "--replay", "{tmp}/missing.jsonl"], "No such file or directory"),
    ("watch-replay-empty", ["watch", "--replay", "{empty}"], "line 1: not a watch recording"),
    ("watch-replay-reproduction", ["watch", "--replay", "{rec}"], "line 1: not a watch recording"),
    ("watch-replay-cut", ["watch", "--replay", "{watch_cut}"], "truncated"),
    ("watch-replay-bad-header", ["watch", "--replay", "{watch_bad_header}"], "command_pid is 'x'"),
    # -- the other commands
    ("scenarios-extra-argument", ["scenarios", "all"], "unexpected extra argument (all)"),
    ("doctor-unknown-option", ["doctor", "--verbose"], "No such option"),
]


def _current(path: Path) -> str:
    """A data file rewritten by this version's dump (with its end line)."""
    from tracer.record.recording import Recording, WatchRecording

    buf = io.StringIO()
    if path.name.startswith("watch-"):
        WatchRecording.load(path).dump(buf)
    else:
        for rec in Recording.load_all(path):
            rec.dump(buf)
    return buf.getvalue()


def _with_line(text: str, index: int, change) -> str:
    lines = text.splitlines()
    lines[index] = json.dumps(change(json.loads(lines[index])))
    return "\n".join(lines) + "\n"


def _first_event(text: str) -> int:
    return next(i for i, line in enumerate(text.splitlines()) if '"record": "event"' in line)


def _gone_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def files(tmp: Path) -> dict[str, str]:
    """The placeholders' values: files written into tmp."""
    rec = _current(DATA / "debian-6.1.0-56-writes3.jsonl")
    watch = _current(DATA / "watch-6.1-kprobe-article.jsonl")
    lines = rec.splitlines(keepends=True)
    ev = _first_event(rec)
    made = {
        "rec": rec,
        "watchrec": watch,
        "empty": "",
        "text": "this is not a recording\n",
        "binary": b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00\x01 binary\n",
        "null": "null\n",
        "array": "[1, 2, 3]\n",
        "cut_mid_line": rec[: len(rec) // 2],
        "cut_at_line_end": "".join(lines[: len(lines) // 2]),
        "meta_only": lines[0],
        "end_count_wrong": "".join(lines[:-1]) + json.dumps({"record": "end", "lines": 3}) + "\n",
        "line_after_end": rec + lines[ev],
        "event_first": lines[ev] + rec,
        "unknown_kind": _with_line(rec, ev, lambda d: {**d, "kind": "NOT_A_KIND"}),
        "port_text": _with_line(rec, ev, lambda d: {**d, "sport": "9999"}),
        "port_big": _with_line(rec, ev, lambda d: {**d, "dport": 70000}),
        "write_list": _with_line(rec, next(i for i, x in enumerate(lines) if '"record": "write"' in x),
                                 lambda d: {**d, "ret": [6]}),
        "unknown_scenario": _with_line(rec, 0, lambda d: {**d, "scenario": "teleport"}),
        "unknown_family": _with_line(rec, 0, lambda d: {**d, "family": "ipx"}),
        "ndjson": '{"type": "meta", "schema": 1}\n{"type": "summary", "writes": []}\n',
        "watch_cut": "".join(watch.splitlines(keepends=True)[:10]),
        "watch_bad_header": _with_line(watch, 0, lambda d: {**d, "command_pid": "x"}),
        "not_executable": "#!/bin/sh\nexit 0\n",
        "scenario_sysctl": 'title = "t"\n[sysctl]\nkernel.panic = 1\n',
        "scenario_step": 'title = "t"\n[[server]]\ndo = "listen"\n',
        "scenario_not_toml": "title = \n",
    }
    out = {"tmp": str(tmp), "nopid": str(int(Path("/proc/sys/kernel/pid_max").read_text()) + 1),
           "deadpid": str(_gone_pid())}
    for name, content in made.items():
        path = tmp / f"{name}.jsonl"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        out[name] = str(path)
    os.chmod(out["not_executable"], 0o644)
    return out


def filled(args: list[str], values: dict[str, str]) -> list[str]:
    return [a.format(**values) for a in args]
