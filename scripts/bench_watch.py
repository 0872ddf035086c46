#!/usr/bin/env python3
"""bench_watch.py: `trace-halfclose watch` on a busy server -- does it keep up?

Starts `trace-halfclose watch --port P --duration T+MARGIN --json --incidents-only`
(add --all-json to have every connection annotated and written instead), then
drives RATE connections a second for T seconds on 127.0.0.1:P with
scripts/bench_load.c (compiled here with cc): a server thread answers each
request and closes; INCIDENTS of the connections, evenly spread, are the
half-close (the server closes without answering, the client writes twice:
the first succeeds, the second fails with EPIPE). Reports, per run:

  rate        connections a second the load generator reached (it is paced, and
              falls behind when the machine cannot keep up)
  conns/s     connection sides the tool handed out a second (both ends are watched)
  events/s    kernel events the tool read a second
  lost        events the kernel dropped (ring buffer reserve failed), as the tool counted
  peak RSS    the tool's VmHWM (/proc/PID/status)
  exit after  seconds from --duration's end to the tool's exit
  print delay from a socket's destruction (the kernel's timestamp) to the tool's
              line for it on stdout: median and max (includes the 0.2 s grace a
              connection waits for late events from other CPUs)
  incidents   incidents shown / incidents made (matched by the client's port)

Several runs (--runs) print each and the medians: the machine is shared and noisy.

    sudo .venv/bin/python scripts/bench_watch.py [--rate 10000] [--seconds 30] [--incidents 100] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOAD_C = Path(__file__).resolve().with_name("bench_load.c")
MARGIN_S = 3.0  # --duration is the load's length plus this: the last connections end and print
ATTACH_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compile_load(folder: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("bench_watch: no C compiler (cc or gcc): apt-get install gcc")
    exe = folder / "bench_load"
    subprocess.run([cc, "-O2", "-pthread", "-o", str(exe), str(LOAD_C)], check=True)
    return exe


def tool_argv() -> list[str]:
    exe = Path(sys.executable).with_name("trace-halfclose")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tracer"]


def peak_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def one_run(load: Path, rate: int, seconds: float, incidents: int, every: bool) -> dict:
    port = free_port()
    duration = seconds + MARGIN_S
    argv = tool_argv() + ["watch", "--port", str(port), "--duration", str(duration), "--json"]
    argv += [] if every else ["--incidents-only"]
    tool = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    lines: list[tuple[int, str]] = []  # (monotonic ns when read, line)
    attached = threading.Event()
    errors: list[str] = []
    peak = [0]

    def read_out() -> None:
        for line in tool.stdout:
            lines.append((time.monotonic_ns(), line))

    def read_err() -> None:
        for line in tool.stderr:
            if "probes attached" in line:
                attached.set()
            else:
                errors.append(line.rstrip())

    def sample_rss() -> None:
        while tool.poll() is None:
            got = peak_rss_kib(tool.pid)
            if got:
                peak[0] = max(peak[0], got)
            time.sleep(0.2)

    threads = [threading.Thread(target=f, daemon=True) for f in (read_out, read_err, sample_rss)]
    for t in threads:
        t.start()
    if not attached.wait(ATTACH_TIMEOUT_S):
        tool.kill()
        sys.exit("bench_watch: the watch never attached its probes:\n" + "\n".join(errors))
    t_attached = time.monotonic()
    gen = subprocess.run([str(load), str(port), str(rate), str(seconds), str(incidents)], capture_output=True,
                         text=True)
    if gen.returncode != 0:
        tool.kill()
        sys.exit(f"bench_watch: the load generator failed: {gen.stderr}")
    tool.wait()
    t_exit = time.monotonic()
    for t in threads[:2]:
        t.join(5)
    made = [int(x.split()[1]) for x in gen.stdout.splitlines() if x.startswith("incident ")]
    done = next(x for x in gen.stdout.splitlines() if x.startswith("done ")).split()
    load_s = float(done[2])
    objs = [(t, json.loads(x)) for t, x in lines if x.strip()]
    meta = next(o for _, o in objs if o["type"] == "meta")
    summary = next(o for _, o in objs if o["type"] == "summary")
    conns = [(t, o) for t, o in objs if o["type"] == "connection"]
    delays = [(t - (meta["t0_ns"] + o["end_t_ms"] * 1e6)) / 1e9 for t, o in conns if o.get("end_t_ms") is not None]
    shown_ports = {o["lport"] for _, o in conns if o["incident"]}
    return {
        "rate": int(done[1]) / load_s,
        "conns_s": summary["connections"] / load_s,
        "events_s": summary["events"] / load_s,
        "events": summary["events"],
        "lost": summary["lost_events"],
        "peak_rss_mb": peak[0] / 1024,
        "exit_after_s": t_exit - (t_attached + duration),
        "delay_median_s": statistics.median(delays) if delays else None,
        "delay_max_s": max(delays) if delays else None,
        "incidents_made": len(made),
        "incidents_shown": len(shown_ports & set(made)),
        "missing": sorted(set(made) - shown_ports),
        "rc": tool.returncode,
        "failures": int(done[3]),
    }


def fmt(r: dict) -> str:
    d = (f"{r['delay_median_s']:.2f} / {r['delay_max_s']:.2f}" if r["delay_median_s"] is not None else "-")
    return (f"{r['rate']:>9,.0f} {r['conns_s']:>9,.0f} {r['events_s']:>10,.0f} {r['lost']:>8,} "
            f"{r['peak_rss_mb']:>8.0f} {r['exit_after_s']:>10.2f} {d:>13} {r['incidents_shown']:>4}/{r['incidents_made']}")


HEADER = (f"{'rate':>9} {'conns/s':>9} {'events/s':>10} {'lost':>8} {'RSS MB':>8} {'exit after':>10} "
          f"{'delay med/max':>13} {'incidents':>9}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=10_000, help="connections a second (default 10000)")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long the load runs (default 30)")
    ap.add_argument("--incidents", type=int, default=100, help="half-close incidents mixed in (default 100)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--all-json", action="store_true", help="JSON of every connection, not only the incidents")
    ap.add_argument("--json", action="store_true", help="print each run's numbers as a JSON line")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_watch: needs root (the tool loads BPF programs)")
    with tempfile.TemporaryDirectory() as tmp:
        load = compile_load(Path(tmp))
        print(f"trace-halfclose watch, {args.rate:,} connections/s for {args.seconds:g} s, "
              f"{args.incidents} incidents, {'every connection' if args.all_json else '--incidents-only'} in JSON; "
              f"Linux {os.uname().release}, {os.cpu_count()} CPUs")
        print(HEADER)
        results = []
        for _ in range(args.runs):
            r = one_run(load, args.rate, args.seconds, args.incidents, args.all_json)
            results.append(r)
            print(json.dumps(r) if args.json else fmt(r), flush=True)
        if args.runs > 1:
            med = {k: statistics.median(r[k] for r in results) for k in
                   ("rate", "conns_s", "events_s", "lost", "peak_rss_mb", "exit_after_s", "incidents_shown",
                    "incidents_made")}
            delays = [r for r in results if r["delay_median_s"] is not None]
            med["delay_median_s"] = statistics.median(r["delay_median_s"] for r in delays) if delays else None
            med["delay_max_s"] = statistics.median(r["delay_max_s"] for r in delays) if delays else None
            med["lost"] = int(med["lost"])
            med["incidents_shown"], med["incidents_made"] = int(med["incidents_shown"]), int(med["incidents_made"])
            print("median:")
            print(fmt(med))
        bad = [r for r in results if r["missing"] or r["rc"] != 0 or r["failures"]]
        for r in bad:
            print(f"run problem: exit status {r['rc']}, load failures {r['failures']}, incidents not shown "
                  f"(client ports): {r['missing'][:20]}", file=sys.stderr)
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
