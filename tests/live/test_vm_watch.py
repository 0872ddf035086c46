"""`trace-halfclose watch` on Debian's 6.1 and 6.12 kernels in the VM, with real
kprobes, fentry and tracepoints, against programs that are not the tool's:
the article's C client (tests/live/watch_client.c, its includes restored,
compiled by gcc in the guest) and Debian's `ncat -l 9999`.

Scenarios (tests/live/scenarios.py, run by tests/live/guest_runner.py):
- watch_article: `watch --port 9999` through kprobe (JSON and human) and
  tracepoint at once; the client connects, ncat goes away, the client writes
  twice; a noise connection on port 9998 runs beside it; Ctrl-C.
- watch_multi: `watch --backend fentry --comm watch_client -- sh
  watch_clients.sh ...`: two clients at once, started by watch.

Expected from the source (Linux 6.1.192 and 6.12.117, docs/kernel-source.md):
write 1 in CLOSE_WAIT is sent by tcp_sendmsg_locked (net/ipv4/tcp.c); the RST
makes tcp_reset pick EPIPE and tcp_done_with_error store it and call tcp_done
(net/ipv4/tcp_input.c, net/ipv4/tcp.c); write 2 in CLOSE fails in
sk_stream_wait_connect (net/core/stream.c), whose sock_error() takes sk_err.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

ROOT = Path(__file__).resolve().parents[2]
EPIPE = 32
PORT, NOISE_PORT = 9999, 9998


def watcher(vm_run, scenario: str, name: str) -> dict:
    res = vm_run[scenario]
    assert res["compile"]["rc"] == 0, res["compile"]
    w = res["watchers"][name]
    assert w["rc"] == 0, f"{name} failed in the VM:\n{w['stderr']}"
    assert "Traceback" not in w["stderr"]
    return w


def lines(vm_run, scenario: str, name: str) -> list[dict]:
    return [json.loads(x) for x in watcher(vm_run, scenario, name)["stdout"].splitlines() if x.strip()]


def of_type(objs, t):
    return [o for o in objs if o["type"] == t]


def the_client(objs) -> dict:
    conns = [c for c in of_type(objs, "connection") if c["comm"] == "watch_client"]
    assert len(conns) == 1, conns
    return conns[0]


def step(w: dict, func: str) -> dict:
    return next(s for s in w["path"] if s["func"] == func)


def test_the_articles_program_against_ncat(vm_run):
    """The issue's done-when: first write 6, second EPIPE, each with its kernel path, nothing else."""
    objs = lines(vm_run, "watch_article", "kprobe_json")
    meta = objs[0]
    assert (meta["type"], meta["mode"], meta["backend"]) == ("meta", "watch", "kprobe")
    assert meta["kernel"] == vm_run["_guest"]["kernel"]
    assert "kprobe:ksys_write" in meta["probes"], "the write-like calls' fds come from ksys_write"
    traffic = vm_run["watch_article"]["traffic"]
    assert "first write succeeded!" in traffic["stdout"] and "second write failed: Broken pipe" in traffic["stderr"]
    c = the_client(objs)
    writes = of_type(objs, "write")
    assert [(w["conn"], w["index"], w["call"], w["ret"], w["errno"]) for w in writes] == [
        (c["conn"], 1, "write", 6, None), (c["conn"], 2, "write", -1, "EPIPE")]
    w1, w2 = writes
    assert all(w["fd"] == c["fd"] == 3 and w["pid"] == c["pid"] and not w["inferred"] for w in writes)
    assert (w1["state"], w1["sk_err"], w1["sk_shutdown"]) == ("CLOSE_WAIT", 0, 1)
    assert [s["func"] for s in w1["path"]] == ["tcp_sendmsg_locked"] and step(w1, "tcp_sendmsg_locked")["ret"] == 6
    assert (w2["state"], w2["sk_err"]) == ("CLOSE", EPIPE)
    wc = step(w2, "sk_stream_wait_connect")
    assert (wc["sk_err"], wc["sk_err_after"], wc["ret"]) == (EPIPE, 0, -EPIPE)
    assert step(w2, "tcp_sendmsg_locked")["ret"] == -EPIPE
    assert "sock_error() took sk_err=EPIPE" in w2["decision"]


def test_nothing_else_appears(vm_run):
    """Only connections on port 9999: the client's and ncat's end of it (peers); no
    listener, nothing of the noise connection on 9998, no other write."""
    assert vm_run["watch_article"]["noise"]["rc"] == 0
    for name in ("kprobe_json", "tracepoint_json"):
        objs = lines(vm_run, "watch_article", name)
        conns = of_type(objs, "connection")
        assert len(conns) == 2, (name, conns)
        assert all(PORT in (c["lport"], c["rport"]) and 0 not in (c["lport"], c["rport"]) for c in conns)
        a, b = conns
        assert (a["peer"], b["peer"]) == (b["conn"], a["conn"])
        assert [c["writers"] for c in conns if c["lport"] == PORT] == [[]]
        assert len(of_type(objs, "write")) == 2
    rec = vm_run["_out"] / "watch-kprobe.rec.jsonl"
    events = [json.loads(x) for x in rec.read_text().splitlines()[1:] if '"record": "event"' in x]
    assert events and not any(NOISE_PORT in (e["sport"], e["dport"]) for e in events)


def test_socket_events_reach_the_connection_from_other_tasks(vm_run):
    """FIN, RST, sk_err and tcp_done of the client's socket are in its connection,
    whoever the CPU was running: the FIN arrives while the client sleeps."""
    objs = lines(vm_run, "watch_article", "kprobe_json")
    c = the_client(objs)
    mine = [k for k in of_type(objs, "kernel") if k["conn"] == c["conn"]]
    assert {k["sk"] for k in mine} == {c["sk"]}
    fin = next(k for k in mine if k["func"] == "tcp_fin")
    assert fin["state_after"] == "CLOSE_WAIT" and fin["pid"] != c["pid"]
    reset = next(k for k in mine if k["func"] == "tcp_reset")
    assert reset["state"] == "CLOSE_WAIT" and reset["sk_err"] == 0
    assert reset["where"].startswith("during write 1")
    if "kprobe:tcp_done_with_error" in objs[0]["probes"]:
        assert next(k for k in mine if k["func"] == "tcp_done_with_error")["err"] == EPIPE
    done = next(k for k in mine if k["func"] == "tcp_done")
    assert (done["sk_err"], done["state_after"], done["sk_shutdown_after"]) == (EPIPE, "CLOSE", 3)
    findings = [f["text"] for f in of_type(objs, "finding") if f["conn"] == c["conn"]]
    assert any(f.startswith("write 2 = -1 EPIPE") for f in findings)


def test_tracepoint_backend_sees_the_same_values(vm_run):
    kp, tp = lines(vm_run, "watch_article", "kprobe_json"), lines(vm_run, "watch_article", "tracepoint_json")
    assert tp[0]["backend"] == "tracepoint"
    assert "tracepoint:raw_syscalls:sys_enter" in tp[0]["probes"]

    def facts(objs):
        return [(w["index"], w["ret"], w["errno"], w["state"], w["sk_err"], w["sk_shutdown"], w["fd"])
                for w in of_type(objs, "write")]
    assert facts(tp) == facts(kp)
    assert all(w["inferred"] and w["observed_at"] == "write(2) entry" for w in of_type(tp, "write"))
    c = the_client(tp)
    report = [k for k in of_type(tp, "kernel") if k["conn"] == c["conn"] and k["func"] == "inet_sk_error_report"]
    assert report and report[0]["error"] == EPIPE


def test_human_output(vm_run):
    out = watcher(vm_run, "watch_article", "kprobe_human")["stdout"]
    assert "write 1 (6 bytes) → 6" in out
    assert "write 2 (6 bytes) → -1 EPIPE" in out
    assert "sk_stream_wait_connect → -EPIPE" in out
    assert out.count("write(2) on fd 3 by watch_client") == 2
    # The console shows the incidents (issue 18): the client's connection; ncat's healthy
    # end is counted, not shown (JSON above has both). Unless ncat's close raced the FIN's
    # ACK: then its end stays a full FIN_WAIT2 socket that the client's data resets
    # (tcp_rcv_state_process, net/ipv4/tcp_input.c 6.1.192:6828, 6.12.117:7029; README
    # "Scenarios", `close`), an incident of its own (seen once in CI on 6.12).
    assert ":9998" not in out
    assert "incident: a write after the peer's FIN" in out
    if out.count("connection #") == 1:
        assert "2 connections: 1 healthy, 1 incidents" in out
    else:
        assert out.count("connection #") == 2 and "2 connections: 0 healthy, 2 incidents" in out
    assert "stopped: interrupted (Ctrl-C)" in out


def test_ctrl_c_detaches_every_probe(vm_run):
    res = vm_run["watch_article"]
    assert res["kprobes_after"] == []
    for name in ("kprobe_json", "tracepoint_json"):
        users = [u["what"] for u in of_type(lines(vm_run, "watch_article", name), "user")]
        assert "stopped: interrupted (Ctrl-C)" in users


def test_two_clients_at_once_stay_apart(vm_run):
    objs = lines(vm_run, "watch_multi", "fentry_multi")
    assert objs[0]["backend"] == "fentry"
    assert "fentry:ksys_write" in objs[0]["probes"] and "tracepoint:task:task_newtask" in objs[0]["probes"]
    conns = of_type(objs, "connection")
    assert len(conns) == 2
    assert len({c["pid"] for c in conns}) == 2 and len({c["lport"] for c in conns}) == 2
    for c in conns:
        assert c["rport"] == PORT and c["comm"] == "watch_client"
        writes = [w for w in of_type(objs, "write") if w["conn"] == c["conn"]]
        assert [(w["ret"], w["errno"], w["pid"]) for w in writes] == [(6, None, c["pid"]), (-1, "EPIPE", c["pid"])]
        assert [s["func"] for s in writes[1]["path"]][:2] == ["tcp_sendmsg_locked", "sk_stream_wait_connect"]
        assert {k["sk"] for k in of_type(objs, "kernel") if k["conn"] == c["conn"]} == {c["sk"]}
    users = [u["what"] for u in of_type(objs, "user")]
    assert "the command exited with status 255" in users and "stopped: the command exited" in users
    assert vm_run["watch_multi"]["kprobes_after"] == []


@pytest.mark.parametrize("scenario,name,rec", [
    ("watch_article", "kprobe_json", "watch-kprobe.rec.jsonl"),
    ("watch_article", "tracepoint_json", "watch-tracepoint.rec.jsonl"),
    ("watch_multi", "fentry_multi", "watch-fentry-multi.rec.jsonl"),
])
def test_recordings_replay_to_the_same_output(vm_run, scenario, name, rec):
    p = subprocess.run([sys.executable, "-m", "tracer", "watch", "--replay", str(vm_run["_out"] / rec), "--json"],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout == watcher(vm_run, scenario, name)["stdout"]
