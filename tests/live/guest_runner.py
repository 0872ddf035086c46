"""Runs inside the VM guest: every live scenario of one test session, in one boot.

    python tests/live/guest_runner.py SPEC.json OUTDIR

SPEC maps a scenario name to {"args": [...]} (arguments of trace-halfclose)
or {"sigint": [...]} (start it, interrupt it once its kprobes are registered,
then report what was left behind), or to `trace-halfclose watch` runs
({"watch:NAME": [...], ...}, see run_watch). For each scenario OUTDIR/NAME.json gets
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
    repro_left = subprocess.run(["pgrep", "-f", "tracer.collect.repro_child"], capture_output=True, text=True).stdout.split()
    return {
        "rc": p.returncode,
        "stdout": out,
        "stderr": err,
        "attached_before": attached,
        "children_before": kids_before,
        "kprobes_after": leftover,
        "repro_processes_after": repro_left,
    }


WATCH_CLIENT_C = ROOT / "tests" / "live" / "watch_client.c"
WATCH_CLIENTS_SH = ROOT / "tests" / "live" / "watch_clients.sh"


def compile_client(outdir: str) -> dict:
    """The article's C client, compiled in the guest into the shared directory (once)."""
    exe = Path(outdir) / "watch_client"
    if exe.exists():
        return {"rc": 0, "exe": str(exe)}
    p = subprocess.run(["gcc", "-Wall", "-o", str(exe), str(WATCH_CLIENT_C)], capture_output=True, text=True)
    return {"rc": p.returncode, "exe": str(exe), "stderr": p.stderr}


def noise(port: int) -> dict:
    """A TCP connection that no watch may show: data both ways on another port."""
    server = subprocess.Popen(["ncat", "-l", str(port)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if f":{port} " in subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout:
                break
            time.sleep(0.1)
        server.stdin.write(b"from the server\n")
        server.stdin.flush()
        p = subprocess.run(["ncat", "--send-only", "127.0.0.1", str(port)], input=b"noise\n", capture_output=True,
                           timeout=30)
        return {"rc": p.returncode}
    finally:
        server.kill()
        server.wait()


def run_watch(what: dict) -> dict:
    """Watchers (`watch:NAME`: arguments of trace-halfclose) started together; once
    all have attached their probes, the article's traffic (`traffic`: OUTDIR PORT
    CLIENTS) with a noise connection beside it, then Ctrl-C to each. A watcher that
    starts its own command (after --) ends by itself."""
    outdir = (what.get("traffic") or what.get("client"))[0]
    res = {"compile": compile_client(outdir), "watchers": {}}
    env = {**os.environ, "COLUMNS": "200"}
    procs = {}
    for key, args in what.items():
        if key.startswith("watch:"):
            name = key.split(":", 1)[1]
            out, err = (open(Path(outdir) / f"{name}.{s}", "w+") for s in ("stdout", "stderr"))
            procs[name] = (subprocess.Popen(tool(args), cwd=ROOT, stdout=out, stderr=err, text=True, env=env), out, err)
    t = time.monotonic()
    if "traffic" in what:
        deadline = time.monotonic() + 500
        while time.monotonic() < deadline and not all(
                "probes attached" in Path(err.name).read_text() or p.poll() is not None for p, _, err in procs.values()):
            time.sleep(0.5)
        res["attach_seconds"] = time.monotonic() - t
        res["noise"] = noise(9998)
        _, port, clients = what["traffic"]
        p = subprocess.run(["sh", str(WATCH_CLIENTS_SH), res["compile"]["exe"], port, clients, "2", "0.3"],
                           capture_output=True, text=True, timeout=120)
        res["traffic"] = {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
        time.sleep(1.0)
        for p, _, _ in procs.values():
            p.send_signal(signal.SIGINT)
    for name, (p, out, err) in procs.items():
        try:
            p.wait(timeout=500)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        out.seek(0)
        err.seek(0)
        res["watchers"][name] = {"rc": p.returncode, "stdout": out.read(), "stderr": err.read()}
    time.sleep(0.5)
    res["kprobes_after"] = [line for line in registered_kprobes().splitlines()
                            if "tcp_" in line or "sk_stream" in line or "sys_" in line or "writev" in line]
    res["rc"] = 0 if all(w["rc"] == 0 for w in res["watchers"].values()) else 1
    res["seconds"] = time.monotonic() - t
    return res


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    outdir = Path(sys.argv[2])
    info = {"kernel": os.uname().release}
    (outdir / "_guest.json").write_text(json.dumps(info))
    for name, what in spec.items():
        try:
            if any(k.startswith("watch:") for k in what):
                res = run_watch(what)
            else:
                res = run_sigint(what["sigint"]) if "sigint" in what else run_plain(what["args"])
        except Exception as exc:  # report, and go on with the other scenarios
            res = {"rc": None, "stdout": "", "stderr": f"guest runner: {exc!r}"}
        (outdir / f"{name}.json").write_text(json.dumps(res))
        print(f"guest: {name}: rc={res['rc']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
