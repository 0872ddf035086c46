"""Runs inside the VM guest: every live scenario of one test session, in one boot.

    python tests/live/guest_runner.py SPEC.json OUTDIR

SPEC maps a scenario name to {"args": [...]} (arguments of trace-halfclose; with
"noise": {...}, foreign connections on the guest's loopback while its probes are in,
see run_noisy), or {"signals": [[ARGS, SIGNAL, MOMENT], ...]} (runs stopped by
signals, all at once, then what they left behind, see run_signals), or to `trace-halfclose
watch` runs ({"watch:NAME": [...], ...}, see run_watch). For each scenario
OUTDIR/NAME.json gets {"rc", "stdout", "stderr", ...}. OUTDIR is shared writable with
the host (--rwdir).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.live import robustness as rb  # noqa: E402

KPROBE_LIST = Path("/sys/kernel/debug/kprobes/list")


def tool(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "tracer", *args]


def registered_kprobes() -> str:
    # bcc creates kprobes through the perf kprobe PMU: they are listed here, not in kprobe_events.
    try:
        return KPROBE_LIST.read_text()
    except OSError as exc:
        return f"<unreadable: {exc}>"


def run_plain(args: list[str]) -> dict:
    t = time.monotonic()
    p = subprocess.run(tool(args), cwd=ROOT, capture_output=True, text=True, timeout=600)
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr, "seconds": time.monotonic() - t}


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
        loud = rb.Noise(50_000, [9998, 9996], Path(outdir))  # the same, many times, beside the traffic
        _, port, clients = what["traffic"]
        p = subprocess.run(["sh", str(WATCH_CLIENTS_SH), res["compile"]["exe"], port, clients, "2", "0.3"],
                           capture_output=True, text=True, timeout=120)
        res["traffic"] = {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
        res["noise_loop"] = {"connections": len(loud.finish()), "ports": [9998, 9996]}
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


def run_noisy(args: list[str], noise: dict, outdir: Path) -> dict:
    """The tool, with noise["count"] connections to 127.0.0.1 on noise["ports"] (this
    guest's own namespace; noise["ports"][0] is the reproduction's port) from the moment
    its first child runs (its probes are attached then) until it ends."""
    t = time.monotonic()
    p = subprocess.Popen(tool(args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while p.poll() is None and not rb.descendants(p.pid):
        time.sleep(0.05)
    loud = rb.Noise(noise["count"], noise["ports"], outdir) if p.poll() is None else None
    out, err = p.communicate(timeout=900)
    times = loud.finish() if loud else []
    res = {"rc": p.returncode, "stdout": out, "stderr": err, "seconds": time.monotonic() - t,
           "noise": {"connections": len(times)}}
    record = noise.get("record")
    if record and Path(record).exists():
        recs = rb.load_recordings(Path(record))
        res["noise"].update(during_the_trace=sum(rb.in_window(times, r) for r in recs),
                            foreign=[e for r in recs for e in rb.foreign_events(r)][:20])
    return res


def run_signals(jobs: list, outdir: Path) -> dict:
    """Each job [ARGS, SIGNAL NAME, [EVENT, DELAY, N]] (tests/live/robustness.py Moment), all
    at once; then what was left behind. ARGS may hold {client}: the article's client."""
    client = compile_client(str(outdir))["exe"]
    before = rb.Snapshot.take()
    results = [None] * len(jobs)

    def one(i: int) -> None:
        args, name, (event, delay, n) = jobs[i]
        # settle: in software emulation a child killed with the tool (PR_SET_PDEATHSIG) or a
        # command ended by its keeper takes seconds where it takes milliseconds natively.
        results[i] = rb.run_signalled([a.replace("{client}", client) for a in args], signal.Signals[name],
                                      rb.Moment(event, delay, n), timeout=600, settle=30)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(jobs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    left = rb.left_after(before, ours={r["tool_pid"] for r in results})
    return {"rc": 0, "runs": results, "left": left,
            "problems": [[r["signal"], r["moment"], rb.problems(r)] for r in results]}


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    outdir = Path(sys.argv[2])
    info = {"kernel": os.uname().release}
    (outdir / "_guest.json").write_text(json.dumps(info))
    for name, what in spec.items():
        try:
            if any(k.startswith("watch:") for k in what):
                res = run_watch(what)
            elif "signals" in what:
                res = run_signals(what["signals"], outdir)
            elif "noise" in what:
                res = run_noisy(what["args"], what["noise"], outdir)
            else:
                res = run_plain(what["args"])
        except Exception as exc:  # report, and go on with the other scenarios
            res = {"rc": None, "stdout": "", "stderr": f"guest runner: {exc!r}"}
        (outdir / f"{name}.json").write_text(json.dumps(res))
        print(f"guest: {name}: rc={res['rc']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
