#!/usr/bin/env python3
"""bench.py: what trace-halfclose's probes cost the rest of the machine, beside bpftrace.

While the tool traces its reproduction, its hooks fire for every socket of
the machine and filter in the kernel (first thing: the socket's network
namespace, or the client's pid). This measures a loop of 64-byte writes on an
unrelated loopback TCP connection (the host namespace, this process), under:

  baseline      no BPF loaded
  tool          the tool's programs loaded and armed for another namespace (raw
                tracepoints with the tracepoint backend, as the tool attaches them)
  tool+io       also raw_syscalls sys_enter/sys_exit, which the tracepoint backend
                attaches while its client does I/O (pid-filtered)
  bpftrace      bpftrace on the same tracepoints as `tool`, each filtered by a pid
                that never matches (bpftrace cannot read a socket's netns there);
                as perf tracepoints: bpftrace 0.17 (Debian 12's) has no raw
                tracepoint probes ("Invalid probe type" for rawtracepoint:)
  bpftrace+io   also raw_syscalls sys_enter/sys_exit, pid-filtered

Rounds are interleaved (baseline, tool, tool+io, bpftrace, bpftrace+io,
baseline, ...): each case loads its probes, measures, and unloads them, so a
noisy neighbour hits every case alike. Printed per case: the median µs per
write over the rounds, min–max, and the ratio to the baseline's median.
Loading takes its time too: the tool compiles with bcc, bpftrace with LLVM.

    sudo .venv/bin/python scripts/bench.py [--rounds 5] [--writes 100000]
    apt-get install bpftrace            (the bpftrace cases are skipped without it)

The tool's cases use the backend auto chooses here (the tracepoint backend
on the 6.18 microVM); the bpftrace cases mirror that backend's hooks.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tracer.collect.plan import CLIENT_IO  # noqa: E402
from tracer.collect.prepare import load_first, prepare  # noqa: E402

PAYLOAD = b"x" * 64
NO_PID = 1  # init: never the writer, so every filter says no
ATTACH_S = 1.0  # bpftrace prints "Attaching N probes..." before attaching them


def connection() -> socket.socket:
    """A loopback TCP connection whose reader drains everything in a thread."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    peer, _ = srv.accept()
    srv.close()

    def drain():
        while peer.recv(1 << 16):
            pass

    threading.Thread(target=drain, daemon=True).start()
    return cli


def per_write_us(cli: socket.socket, n: int) -> float:
    fd = cli.fileno()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        os.write(fd, PAYLOAD)
    return (time.perf_counter_ns() - t0) / n / 1000


class Tool:
    """The tool's programs, loaded as the reproduction loads them, armed for no namespace."""

    def __init__(self, backend: str, io: bool):
        self.backend, self.io = backend, io
        self.session = None

    def start(self) -> None:
        plans, skipped, btf, _ = prepare("repro", self.backend)
        self.session, self.plan = load_first(plans, skipped, lambda _msg: None)
        self.session.trace_netns(1)  # no namespace has inode 1: every hook fires and filters out
        self.session.trace_client(NO_PID)
        if self.io:
            self.session.begin_client_io()

    def stop(self) -> None:
        self.session.close()


class Bpftrace:
    """bpftrace on the same tracepoints, each with a pid filter that never matches."""

    def __init__(self, tracepoints: list[str]):
        body = "".join(f"tracepoint:{tp} /pid == {NO_PID}/ {{ @n = count(); }}\n" for tp in tracepoints)
        self.program, self.proc = body, None

    def start(self) -> None:
        self.proc = subprocess.Popen(["bpftrace", "-e", self.program], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        said = []
        for line in self.proc.stdout:  # "Attaching N probes..." once they are in
            if line.startswith("Attaching"):
                time.sleep(ATTACH_S)  # it says so before it attaches; it has no "attached" line
                return
            said.append(line.strip())  # warnings (e.g. RLIMIT_MEMLOCK on kernels that account memcg)
        raise RuntimeError(f"bpftrace did not attach (exit {self.proc.wait()}): {' | '.join(said)}")

    def stop(self) -> None:
        """SIGINT, as a user stops it; a SIGINT that comes while it still attaches can go unseen."""
        for _ in range(5):
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=2)
                return
            except subprocess.TimeoutExpired:
                continue
        self.proc.kill()  # its probes go with its file descriptors
        self.proc.wait()


def chosen_backend(requested: str) -> str:
    """The backend the tool loads here: auto tries kprobe, fentry, tracepoint (the kernel may refuse one)."""
    plans, skipped, btf, _ = prepare("repro", requested)
    session, plan = load_first(plans, skipped, lambda _msg: None)
    session.close()
    return plan.backend


def tracepoints_of(backend: str) -> tuple[list[str], list[str]]:
    """The tracepoints the tool's plan attaches with the programs, and those during the client's I/O."""
    plans, _, _, _ = prepare("repro", backend)
    plan = plans[0]
    at_load = [p.target for p in plan.probes if p.hook == "tracepoint" and p.attach != CLIENT_IO]
    io = [p.target for p in plan.attached_at(CLIENT_IO)]
    return at_load, io


def startup(runs: int, tracepoints: list[str]) -> None:
    """From process start to probes attached: the tool (its --timings line) beside bpftrace
    (to its "Attaching N probes..." line) on the same tracepoints; medians of `runs`."""
    tool, bt = [], []
    for _ in range(runs):
        p = subprocess.run([sys.executable, "-m", "tracer", "--timings", "--json"], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parent.parent)
        line = next((x for x in p.stderr.splitlines() if "start to attached" in x), "")
        if not line:
            raise RuntimeError(f"no --timings line from the tool (exit {p.returncode}): {p.stderr.strip()[-300:]}")
        tool.append(float(line.split("start to attached ")[1].split(",")[0]))
        if tracepoints:
            t0 = time.monotonic()
            b = Bpftrace(tracepoints)
            proc = subprocess.Popen(["bpftrace", "-e", b.program], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
            for out in proc.stdout:
                if out.startswith("Attaching"):
                    bt.append(time.monotonic() - t0)
                    break
            b.proc = proc
            time.sleep(ATTACH_S)
            b.stop()
    print(f"\nstart to attached, median of {runs}: trace-halfclose {statistics.median(tool):.2f} s "
          f"(min {min(tool):.2f}, max {max(tool):.2f})"
          + (f"; bpftrace {statistics.median(bt):.2f} s (min {min(bt):.2f}, max {max(bt):.2f}), to its "
             "\"Attaching\" line" if bt else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="auto", help="the tool's backend (default: what auto chooses)")
    ap.add_argument("--writes", type=int, default=100_000, help="writes per measurement")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--startup-runs", type=int, default=5, help="runs for the start-to-attached comparison (0: none)")
    args = ap.parse_args()

    backend = chosen_backend(args.backend)
    cases: dict[str, Callable[[], object] | None] = {
        "baseline": None,
        "tool": lambda: Tool(backend, io=False),
        "tool+io": (lambda: Tool(backend, io=True)) if backend == "tracepoint" else None,
    }
    if backend != "tracepoint":
        del cases["tool+io"]
    if shutil.which("bpftrace") and backend == "tracepoint":
        at_load, io = tracepoints_of(backend)
        cases["bpftrace"] = lambda: Bpftrace(at_load)
        cases["bpftrace+io"] = lambda: Bpftrace(at_load + io)
    else:
        print("bpftrace cases skipped: " + ("bpftrace is not installed (apt-get install bpftrace)"
                                            if not shutil.which("bpftrace") else
                                            f"they mirror the tracepoint backend, not {backend}"))

    print(f"kernel {os.uname().release}, tool backend {backend}, {args.writes} writes of {len(PAYLOAD)} bytes, "
          f"{args.rounds} interleaved rounds")
    cli = connection()
    per_write_us(cli, args.writes // 10)  # warm up: the connection, the caches, the CPU's clock
    results: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(args.rounds):
        for name, make in cases.items():
            probes = make() if make else None
            if probes:
                probes.start()
            try:
                results[name].append(per_write_us(cli, args.writes))
            finally:
                if probes:
                    probes.stop()
        print(f"  round {r + 1}: " + ", ".join(f"{n} {v[-1]:.2f}" for n, v in results.items()), flush=True)
    cli.close()

    base = statistics.median(results["baseline"])
    print(f"\n{'case':<12} {'µs/write (median)':>18} {'min–max':>14} {'ratio':>7}")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name:<12} {med:18.3f} {min(values):6.3f}–{max(values):<7.3f} {med / base:7.2f}")
    if args.startup_runs:
        startup(args.startup_runs, tracepoints_of(backend)[0] if "bpftrace" in cases else [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
