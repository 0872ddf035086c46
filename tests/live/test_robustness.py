"""Reliability on this machine's kernel (issue 12): signals at any moment, bad input,
foreign traffic on the reproduction's port, two runs at once -- and nothing left behind.

- Signals: SIGINT, SIGTERM, SIGHUP and SIGKILL, each at POINTS moments of a run, found
  from outside (tests/live/robustness.py Moment): start-up, bcc compiling, the first
  probe attached, the reproduction's child (each scenario's) or the watched command
  running, its end (detaching), the first output (printing); in three modes: the
  reproduction, `--scenario all`, and `watch -- CMD` (the article's client against
  `ncat -l`, started by tests/live/watch_clients.sh, whose `sleep 600 | ncat` shows
  any process left). After each: exit status 128 + the signal and one last line
  `interrupted by SIG...` (SIGKILL: killed, nothing to say), no traceback from any
  process, no process of the tool or the command left, no network namespace left;
  after each mode: no BPF program, kprobe or uprobe left (tests/live/robustness.py).
- Bad input (tests/unit/bad_inputs.py) through the installed program: exit 2, one
  error line (and its remedy), and bcc never imported: nothing was loaded.
- Foreign traffic: NOISE connections on 127.0.0.1 to the reproduction's port (9999,
  in this host's namespace) and another port while the probes are attached: no event
  of theirs in the recording, no event lost. The same around `watch -- CMD`.
- Two reproductions at once on the same default port: each in its own namespace.

Each test writes what it saw to robustness-<name>.json in pytest's temporary
directory; the README's "Reliability" figures come from those files.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require
from tests.live import robustness as rb
from tests.unit import bad_inputs

pytestmark = pytest.mark.live

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL)
POINTS = 10
WORKERS = 2  # runs at once: a run compiles with bcc for a CPU-second or more
NOISE = 50_000
CLIENTS_SH = rb.LIVE / "watch_clients.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prerequisites():
    require(os.geteuid() == 0, "live BPF tests need root")
    require(shutil.which("bpftool") is not None, "bpftool is missing (scripts/setup.sh --test installs it)")
    require(shutil.which("gcc") is not None, "gcc is missing (scripts/setup.sh --test installs it)")
    require(shutil.which("ncat") is not None, "ncat is missing (scripts/setup.sh --test installs it)")


@pytest.fixture(scope="module")
def client(prerequisites, tmp_path_factory) -> Path:
    exe = tmp_path_factory.mktemp("robust") / "watch_client"
    subprocess.run(["gcc", "-Wall", "-o", str(exe), str(rb.LIVE / "watch_client.c")], check=True)
    return exe


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Where each test leaves its figures (robustness-<name>.json)."""
    base = tmp_path_factory.getbasetemp()

    def write(name: str, data) -> None:
        (base / f"robustness-{name}.json").write_text(json.dumps(data, indent=1))

    return write


M = rb.Moment
# Per mode, POINTS moments over a run: start-up and checks, bcc compiling, attaching, the
# reproduction (each scenario's child) or the watched command, printing, and detaching
# (after the output: the probes stay attached while it is printed, tracer/collect/runner.py;
# raw tracepoints detach in milliseconds, so the process ends some 0.05 s after its output).
MODES = {
    "reproduction": (lambda client: [], [
        M("start", 0.15), M("bcc"), M("bcc", 0.4), M("attached"), M("child"), M("child", 0.1), M("child", 0.2),
        M("gone"), M("output"), M("output", 0.02)]),  # the child runs some 0.35 s; the exit 0.04 s after the output
    "scenario-all": (lambda client: ["--scenario", "all"], [
        M("start", 0.15), M("bcc", 0.3), M("attached"), M("child"), M("gone", 0, 3), M("child", 0.2, 5),
        M("child", 0.4, 8), M("gone", 0, 8), M("output"), M("output", 0.02)]),
    "watch-command": (lambda client: ["watch", "--json", "--", "sh", str(CLIENTS_SH), str(client), str(free_port()),
                                      "1", "1", "0.3"], [
        M("start", 0.15), M("bcc"), M("bcc", 0.4), M("attached"), M("child"), M("child", 0.7), M("child", 1.2),
        M("child", 1.6), M("output"), M("gone")]),  # the end: the tool exits some 0.05 s after its command
}


def _parallel(jobs, fn):
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(fn, jobs))


@pytest.mark.parametrize("mode", list(MODES))
def test_a_signal_at_any_moment_leaves_nothing_behind(mode, client, report):
    args, moments = MODES[mode]
    assert len(moments) == POINTS
    before = rb.Snapshot.take()
    t = time.monotonic()
    plain = rb.run_signalled(args(client), None)
    assert rb.problems(plain) == [], (rb.problems(plain), plain["stderr"][-2000:])
    jobs = [(s, m) for s in SIGNALS for m in moments]
    runs = _parallel(jobs, lambda job: rb.run_signalled(args(client), job[0], job[1]))
    left = rb.left_after(before, ours={r["tool_pid"] for r in runs + [plain]})
    failed = [(r["signal"], r["moment"], r["phase"], rb.problems(r), r["stderr"][-800:]) for r in runs
              if rb.problems(r)]
    report(f"signals-{mode}", {
        "mode": mode, "run_seconds": plain["seconds"], "runs": len(runs), "signalled": sum(r["signalled"] for r in runs),
        "seconds": round(time.monotonic() - t, 1), "left": left,
        "points": [{k: r[k] for k in ("signal", "moment", "at", "phase", "rc", "signalled")} for r in runs],
        "failed": failed,
    })
    assert failed == []
    assert left == {"bpf_programs": [], "probe_files": {}, "named_netns": []}
    # The moments are events of a run: the tool runs at each of them (a moment that came
    # too late, as the run ended, is not counted as tried).
    assert sum(r["signalled"] and not rb.too_late(r) for r in runs) >= len(runs) - len(SIGNALS)


def test_bad_input_is_refused_before_anything_is_loaded(prerequisites, tmp_path, report):
    """Every bad invocation of the table, through the program a user runs: exit 2, one
    error line and its remedy, and bcc was never imported."""
    values = bad_inputs.files(tmp_path)
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: sys.stderr.write('bcc was imported\\n') if 'bcc' in sys.modules else None)\n"
             "sys.argv[0] = 'trace-halfclose'\n"
             "from tracer.launch import main\n"
             "main()\n")

    def one(case):
        name, args, text = case
        p = subprocess.run([sys.executable, "-c", probe, *bad_inputs.filled(args, values)], cwd=rb.ROOT,
                           capture_output=True, text=True, timeout=60)
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        ok = (p.returncode == 2 and p.stdout == "" and 1 <= len(lines) <= 2 and lines[0].startswith("error: ")
              and (len(lines) == 1 or lines[1].startswith("  remedy: ")) and text in " ".join(p.stderr.split()))
        return name, ok, p.returncode, p.stderr

    t = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, bad_inputs.BAD))
    report("bad-input", {"cases": len(results), "refused": sum(ok for _, ok, _, _ in results),
                         "seconds": round(time.monotonic() - t, 1)})
    assert [r for r in results if not r[1]] == []


def _record_under_noise(args: list[str], rec: Path, ports: list[int], attached: str, tmp: Path):
    """The tool (args, recording into rec) with NOISE foreign connections to ports, started
    once the tool's program on `attached` is in the kernel."""
    p = subprocess.Popen(rb.tool(args), cwd=rb.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert rb.wait_attached(p.pid, attached, timeout=120), "the probes were never attached"
        noise = rb.Noise(NOISE, ports, tmp)
        out, err = p.communicate(timeout=300)
        times = noise.finish()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, out, err, times


def test_foreign_connections_on_the_reproductions_port_are_not_traced(prerequisites, tmp_path, report):
    """50,000 connections in this host's namespace, to 127.0.0.1:9999 (the reproduction's
    port, in its own namespace) and another port, each ended by an RST (an error report
    whose record has the port and no socket), while the reproduction runs: none of their
    events may reach the recording, none may be lost."""
    rec = tmp_path / "noise.jsonl"
    # --delay: the writes begin after most of the noise, which starts once the probes are in.
    rc, out, err, times = _record_under_noise(
        ["--writes", "3", "--delay", "1", "--gap", "0.2", "--json", "--record", str(rec)], rec,
        [9999, free_port()], "inet_sk_error_report", tmp_path)
    assert rc == 0, err
    assert "Traceback" not in err
    (recording,) = rb.load_recordings(rec)
    foreign = rb.foreign_events(recording)
    summary = json.loads(out.splitlines()[-1])
    writes = [(w["ret"], w["errno"]) for w in summary["writes"]]
    report("noise-reproduction", {"connections": len(times), "during_the_trace": rb.in_window(times, recording),
                                  "events": len(recording["events"]), "foreign": len(foreign),
                                  "lost": summary["lost_events"], "backend": recording["meta"]["backend"]})
    assert len(times) == NOISE
    assert rb.in_window(times, recording) >= NOISE // 4, "the noise did not overlap the trace"
    assert foreign == [], foreign[:5]
    assert summary["lost_events"] == 0
    assert writes == [(6, None), (-1, "EPIPE"), (-1, "EPIPE")]
    reports = [e for e in recording["events"] if e["kind"] == "ERROR_REPORT"]
    if "tracepoint:sock:inet_sk_error_report" in recording["meta"]["attached"]:
        assert len(reports) == 1, reports  # the client's, attributed to its socket


def test_foreign_connections_do_not_reach_a_watched_command(client, tmp_path, report):
    """The same noise around `watch -- CMD`: only the command's connection -- the client's
    end (ncat's end never writes nor connects, so it does not join a watch by pid)."""
    port = free_port()
    rec = tmp_path / "watch-noise.jsonl"
    rc, out, err, times = _record_under_noise(
        ["watch", "--json", "--record", str(rec), "--", "sh", str(CLIENTS_SH), str(client), str(port), "1", "2", "0.3"],
        rec, [free_port(), free_port()], "inet_sock_set_state", tmp_path)
    assert rc == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    conns = [o for o in lines if o["type"] == "connection"]
    summary = lines[-1]
    report("noise-watch", {"connections": len(times), "shown": len(conns), "lost": summary["lost_events"]})
    assert len(times) == NOISE
    assert [(c["comm"], c["rport"]) for c in conns] == [("watch_client", port)], conns
    assert summary["lost_events"] == 0


def test_two_reproductions_at_once_on_the_same_port(prerequisites, tmp_path, report):
    """Two terminals, the default port 9999: each run has its own network namespace."""
    recs = [tmp_path / f"twin{i}.jsonl" for i in (1, 2)]
    procs = [subprocess.Popen(rb.tool(["--writes", "3", "--json", "--record", str(r)]), cwd=rb.ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in recs]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    loaded = [rb.load_recordings(r)[0] for r in recs]
    metas = [r["meta"] for r in loaded]
    report("two-at-once", {"netns": [m["netns"] for m in metas], "ports": [m["server_port"] for m in metas]})
    assert metas[0]["server_port"] == metas[1]["server_port"] == 9999
    assert metas[0]["netns"] != metas[1]["netns"]
    for r, (out, _) in zip(loaded, outs):
        assert rb.foreign_events(r) == []
        summary = json.loads(out.splitlines()[-1])
        assert [(w["ret"], w["errno"]) for w in summary["writes"]] == [(6, None), (-1, "EPIPE"), (-1, "EPIPE")]
        assert summary["lost_events"] == 0
