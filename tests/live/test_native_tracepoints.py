"""Live BPF on this machine's own kernel, without a VM.

On the 6.18 microVMs (no kprobes, fentry refused) `auto` must fall back to
the tracepoint backend and still show the writes, the FIN, the RST, sk_err
and the close with the kernel's values. Facts from the kernel source
(Linux 6.1/6.12, docs/kernel-source.md): tcp_reset (net/ipv4/tcp_input.c)
stores EPIPE for a CLOSE_WAIT socket and tcp_done (net/ipv4/tcp.c) moves it
to CLOSE with SHUTDOWN_MASK; sock_error() in sk_stream_wait_connect
(net/core/stream.c) clears sk_err.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require
from tracer.process.scenarios import ORDER

ROOT = Path(__file__).resolve().parents[2]
EPIPE = 32
pytestmark = pytest.mark.live


def tool(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracer", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def native():
    require(os.geteuid() == 0, "live BPF tests need root")
    p = tool("--writes", "3", "--json")
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    return [json.loads(x) for x in p.stdout.splitlines()]


def by_type(objs, t):
    return [o for o in objs if o["type"] == t]


def test_auto_reports_its_backend_and_why(native):
    meta = native[0]
    assert meta["kernel"] == os.uname().release
    if meta["backend"] != "kprobe":
        # It must say why the backends before it were not used.
        assert any(n.startswith("kprobe:") for n in meta["backend_notes"])
    if meta["backend"] == "tracepoint":
        assert "tracepoint:raw_syscalls:sys_enter" in meta["probes"]


def test_writes_observed_with_kernel_values(native):
    w = {o["index"]: o for o in by_type(native, "write")}
    assert (w[1]["ret"], w[1]["errno"]) == (6, None)
    assert (w[2]["ret"], w[2]["errno"]) == (-1, "EPIPE")
    assert (w[3]["ret"], w[3]["errno"]) == (-1, "EPIPE")
    assert all(x["observed"] for x in w.values())
    assert (w[1]["state"], w[1]["sk_err"], w[1]["sk_shutdown"]) == ("CLOSE_WAIT", 0, 1)
    assert (w[2]["state"], w[2]["sk_err"], w[2]["sk_shutdown"]) == ("CLOSE", EPIPE, 3)
    assert (w[3]["state"], w[3]["sk_err"]) == ("CLOSE", 0)


def test_tracepoint_backend_marks_inferences(native):
    if native[0]["backend"] != "tracepoint":
        pytest.skip("this kernel has kprobes or fentry: the tracepoint backend is tested in the VM")
    w = {o["index"]: o for o in by_type(native, "write")}
    for x in w.values():
        assert x["observed_at"] == "write(2) entry"
        assert x["inferred"] is True and x["decision"].startswith("inferred")
    # What tracepoints do see of write 2: sk_err EPIPE before, 0 after (sock_error() took it).
    exit2 = next(s for s in w[2]["path"] if s["func"] == "sys_exit_write")
    assert exit2["ret"] == -EPIPE and exit2["sk_err_after"] == 0


def test_fin_rst_sk_err_and_close_observed(native):
    kernel = [o for o in by_type(native, "kernel") if o["side"] == "client"]
    states = [(o.get("old_state"), o["state"]) for o in kernel if o["func"] == "inet_sock_set_state"]
    funcs = [o["func"] for o in kernel]
    assert ("ESTABLISHED", "CLOSE_WAIT") in states or "tcp_fin" in funcs
    reset = next(o for o in kernel if o["func"] in ("tcp_receive_reset", "tcp_reset"))
    assert reset["state"] == "CLOSE_WAIT" and reset["sk_err"] == 0
    assert ("CLOSE_WAIT", "CLOSE") in states or "tcp_done" in funcs
    if native[0]["backend"] == "tracepoint" and "tracepoint:sock:inet_sk_error_report" in native[0]["probes"]:
        report = next(o for o in kernel if o["func"] == "inet_sk_error_report")
        assert report["error"] == EPIPE


def test_doctor_explains_this_machine():
    require(os.geteuid() == 0, "doctor's fentry trial needs root")
    p = tool("doctor", "--json")
    assert "Traceback" not in p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    checks = {c["name"]: c for c in lines if c["type"] == "check"}
    verdict = lines[-1]
    tracefs = Path("/sys/kernel/tracing")
    assert checks["kprobes"]["ok"] == (tracefs / "kprobe_events").exists()
    assert checks["BTF"]["ok"] == Path("/sys/kernel/btf/vmlinux").exists()
    if not checks["kprobes"]["ok"] and not checks["fentry/fexit"]["ok"]:
        assert "tracepoint" in verdict["summary"] and "trace-halfclose vm" in verdict["summary"]
    assert p.returncode == (0 if verdict["ok"] else 1)


def test_explicit_kprobe_backend_fails_clearly_without_kprobes():
    require(os.geteuid() == 0, "needs root")
    if Path("/sys/kernel/tracing/kprobe_events").exists():
        pytest.skip("this kernel has kprobes")
    p = tool("--backend", "kprobe")
    assert p.returncode == 2
    assert "no kprobes" in p.stderr and "trace-halfclose vm" in p.stderr
    assert "Traceback" not in p.stderr


def test_ctrl_c_detaches_and_stops_the_reproduction():
    """SIGINT while the reproduction waits (--delay): exit 130 with a message, and
    no reproduction process left behind. (That the probes go away is checked in
    the VM, where kprobes are listed in debugfs.)"""
    require(os.geteuid() == 0, "needs root")
    import signal
    import time

    p = subprocess.Popen([sys.executable, "-m", "tracer", "--delay", "30"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kids = subprocess.run(["pgrep", "-P", str(p.pid), "-f", "tracer.collect.repro_child"], capture_output=True, text=True)
        if kids.stdout.strip():
            break
        time.sleep(0.1)
    assert kids.stdout.strip(), "the reproduction never started"
    time.sleep(1.0)  # it is now waiting in --delay with the probes attached
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    left = subprocess.run(["pgrep", "-f", "tracer.collect.repro_child"], capture_output=True, text=True)
    assert left.stdout.strip() == ""


@pytest.mark.parametrize("family", [[], ["--ipv6"]], ids=["ipv4", "ipv6"])
def test_every_scenario_matches_natively(family):
    """All scenarios on this kernel with whatever backend auto picks, judged by --check."""
    require(os.geteuid() == 0, "needs root")
    p = tool("--scenario", "all", "--check", "--json", *family, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr
    objs = [json.loads(x) for x in p.stdout.splitlines()]
    verdicts = [o for o in objs if o["type"] == "scenario"]
    assert [v["name"] for v in verdicts] == list(ORDER) and all(v["ok"] for v in verdicts), verdicts
    # The built-ins from scenario files (tracer/scenarios/*.toml), as their sources predict.
    rows = {v["name"]: {r["what"]: r["observed"] for r in v["rows"]} for v in verdicts}
    assert rows["no-timewait"]["RST sent by"] in ("no socket", "full socket")
    assert rows["orphan-finwait2"]["RST sent by"] == "full socket"
    assert (rows["so-error"]["SO_ERROR 1"], rows["so-error"]["SO_ERROR 2"]) == ("EPIPE", "0")
    assert rows["poll"]["poll 1"] == "POLLIN|POLLOUT|POLLRDHUP"
    assert rows["poll"]["poll 2"] == "POLLIN|POLLOUT|POLLERR|POLLHUP|POLLRDHUP"
    assert rows["read-after-rst"]["read"] == "0" and rows["read-after-rst"]["write 2"] == "EPIPE"
    assert rows["reset-read"]["read"] == "ECONNRESET" and rows["reset-read"]["write 1"] == "EPIPE"
    reads = {o["scenario"]: o for o in objs if o["type"] == "read"}
    assert reads["reset-read"]["sk_err_name"] == "ECONNRESET" and "sock_error()" in reads["reset-read"]["decision"]
    assert "SOCK_DONE" in reads["read-after-rst"]["decision"]


def test_claims_natively(native):
    """On the tracepoint backend the path claims cannot be observed and must say so."""
    c = {o["id"]: o for o in native if o["type"] == "claim"}
    assert c["sendmsg-file"]["verdict"] == "refuted"
    assert c["close-wait-no-error"]["verdict"] == "verified"
    assert c["packet-sequence"]["verdict"] == "verified"
    if native[0]["backend"] == "tracepoint":
        assert c["second-write-error-path"]["verdict"] == "not-observed"
        assert c["epipe-condition"]["verdict"] == "not-observed"
    assert all(x["as_expected"] for x in c.values())
