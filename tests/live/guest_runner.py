"""Runs inside the VM guest: every live scenario of one test session, in one boot.

    python tests/live/guest_runner.py SPEC.json OUTDIR

SPEC maps a scenario name to {"args": [...]} (arguments of trace-halfclose)
or {"sigint": [...]} (start it, interrupt it once its kprobes are registered,
then report what was left behind). For each scenario OUTDIR/NAME.json gets
{"rc", "stdout", "stderr", ...}. OUTDIR is shared writable with the host (--rwdir).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KPROBE_LIST = Path("/sys/kernel/debug/kprobes/list")


def tool(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "tracer", *args]


def registered_kprobes() -> str:
    # bcc creates kprobes through the perf kprobe PMU: they are listed here, not in kprobe_events.
    try:
        return KPROBE_LIST.read_text()
    except OSError as exc:
        return f"<unreadable: {exc}>"


def children_of(pid: int) -> list[str]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append((d / "cmdline").read_text().replace("\0", " "))
            except (OSError, ValueError, IndexError):
                pass
    return out


def run_plain(args: list[str]) -> dict:
    t = time.monotonic()
    p = subprocess.run(tool(args), cwd=ROOT, capture_output=True, text=True, timeout=600)
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr, "seconds": time.monotonic() - t}


def run_sigint(args: list[str]) -> dict:
    """Ctrl-C while the probes are attached and the reproduction runs."""
    p = subprocess.Popen(tool(args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while "tcp_sendmsg_locked" not in registered_kprobes() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    attached = "tcp_sendmsg_locked" in registered_kprobes()
    time.sleep(1.0)  # inside the reproduction (it waits --delay seconds)
    kids_before = children_of(p.pid)
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    time.sleep(0.5)
    leftover = [line for line in registered_kprobes().splitlines() if "tcp_" in line or "sk_stream" in line]
    repro_left = subprocess.run(["pgrep", "-f", "tracer.repro_child"], capture_output=True, text=True).stdout.split()
    return {
        "rc": p.returncode,
        "stdout": out,
        "stderr": err,
        "attached_before": attached,
        "children_before": kids_before,
        "kprobes_after": leftover,
        "repro_processes_after": repro_left,
    }


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    outdir = Path(sys.argv[2])
    info = {"kernel": os.uname().release}
    (outdir / "_guest.json").write_text(json.dumps(info))
    for name, what in spec.items():
        try:
            res = run_sigint(what["sigint"]) if "sigint" in what else run_plain(what["args"])
        except Exception as exc:  # report, and go on with the other scenarios
            res = {"rc": None, "stdout": "", "stderr": f"guest runner: {exc!r}"}
        (outdir / f"{name}.json").write_text(json.dumps(res))
        print(f"guest: {name}: rc={res['rc']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
