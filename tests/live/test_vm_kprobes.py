"""Live kprobe tests: the real tool on a real distro kernel, in a VM.

What is asserted is what the kernel reported through the probes. The
expected kernel behaviour (Linux 6.1 and 6.12, docs/kernel-source.md):
- tcp_sendmsg_locked (net/ipv4/tcp.c) sends in CLOSE_WAIT without waiting;
- tcp_reset (net/ipv4/tcp_input.c) sets sk_err = EPIPE for a socket in
  CLOSE_WAIT and ends in tcp_done, which sets CLOSE and SHUTDOWN_MASK;
- sk_stream_wait_connect (net/core/stream.c) returns sock_error() first,
  which takes sk_err and leaves 0; then -EPIPE outside SYN_SENT/SYN_RECV.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

EPIPE = 32


def lines(result: dict) -> list[dict]:
    assert result["rc"] == 0, f"trace-halfclose failed in the VM:\n{result['stderr']}"
    return [json.loads(x) for x in result["stdout"].splitlines() if x.strip()]


def writes(objs: list[dict]) -> dict[int, dict]:
    return {o["index"]: o for o in objs if o["type"] == "write"}


def client_kernel(objs: list[dict], func: str) -> list[dict]:
    return [o for o in objs if o["type"] == "kernel" and o["side"] == "client" and o["func"] == func]


def path_step(w: dict, func: str) -> dict:
    steps = [s for s in w["path"] if s["func"] == func]
    assert steps, f"write {w['index']}: {func} not on the path {[s['func'] for s in w['path']]}"
    return steps[0]


def test_booted_the_requested_kernel(vm_run):
    objs = lines(vm_run["writes3_json"])
    assert objs[0]["type"] == "meta"
    assert objs[0]["kernel"] == vm_run["_guest"]["kernel"]
    assert objs[0]["backend"] == "kprobe"
    assert "kprobe:tcp_sendmsg_locked" in objs[0]["probes"]


def test_first_write_succeeds_in_close_wait(vm_run):
    w1 = writes(lines(vm_run["writes3_json"]))[1]
    assert (w1["ret"], w1["errno"]) == (6, None)
    assert w1["state"] == "CLOSE_WAIT"
    assert w1["sk_err"] == 0
    assert w1["sk_shutdown"] == 1  # RCV_SHUTDOWN: the FIN closed only the receive side
    assert path_step(w1, "tcp_sendmsg_locked")["ret"] == 6
    assert not any(s["func"] == "sk_stream_wait_connect" for s in w1["path"])


def test_fin_moved_client_to_close_wait_before_write_1(vm_run):
    objs = lines(vm_run["writes3_json"])
    moves = [
        o for o in objs
        if o["type"] == "kernel" and o["side"] == "client"
        and (o.get("state_after") == "CLOSE_WAIT" or (o["func"] == "inet_sock_set_state" and o["state"] == "CLOSE_WAIT"))
    ]
    assert moves, "no kernel event showed the client entering CLOSE_WAIT"
    assert moves[0]["t_ms"] < writes(objs)[1]["t_ms"]


def test_rst_in_close_wait_sets_epipe_and_tcp_done(vm_run):
    objs = lines(vm_run["writes3_json"])
    resets = client_kernel(objs, "tcp_reset")
    assert len(resets) == 1
    assert resets[0]["state"] == "CLOSE_WAIT"
    done = client_kernel(objs, "tcp_done")
    assert done and done[0]["sk_err"] == EPIPE, "sk_err must be EPIPE by the time tcp_done runs"
    assert done[0]["state_after"] == "CLOSE" and done[0]["sk_shutdown_after"] == 3
    assert resets[0]["t_ms"] <= done[0]["t_ms"]
    meta = objs[0]
    if "kprobe:tcp_done_with_error" in meta["probes"]:
        dwe = client_kernel(objs, "tcp_done_with_error")
        assert dwe and dwe[0]["err"] == EPIPE and dwe[0]["sk_err"] == 0
    # The RST answers write 1's data: it is handled after write 1 entered the kernel.
    assert resets[0]["t_ms"] > writes(objs)[1]["t_ms"]


def test_second_write_epipe_through_wait_connect_taking_sk_err(vm_run):
    w2 = writes(lines(vm_run["writes3_json"]))[2]
    assert (w2["ret"], w2["errno"]) == (-1, "EPIPE")
    assert w2["state"] == "CLOSE" and w2["sk_err"] == EPIPE
    wc = path_step(w2, "sk_stream_wait_connect")
    assert wc["sk_err"] == EPIPE and wc["sk_err_after"] == 0 and wc["ret"] == -EPIPE
    assert path_step(w2, "tcp_sendmsg_locked")["ret"] == -EPIPE
    assert "sock_error() took sk_err=EPIPE" in w2["decision"]


def test_third_write_epipe_through_wait_connect_with_sk_err_0(vm_run):
    w3 = writes(lines(vm_run["writes3_json"]))[3]
    assert (w3["ret"], w3["errno"]) == (-1, "EPIPE")
    assert w3["state"] == "CLOSE" and w3["sk_err"] == 0
    wc = path_step(w3, "sk_stream_wait_connect")
    assert wc["sk_err"] == 0 and wc["ret"] == -EPIPE
    assert "sk_err 0" in w3["decision"]


def test_human_output_carries_the_same_facts(vm_run):
    res = vm_run["default_human"]
    assert res["rc"] == 0, res["stderr"]
    out = res["stdout"]
    assert "write 1 (6 bytes) → 6" in out
    assert "write 2 (6 bytes) → -1 EPIPE" in out
    assert "write 3 (" not in out  # the default is the article's two writes
    assert "tcp_reset" in out and "CLOSE_WAIT" in out
    assert "Traceback" not in res["stderr"]


def test_recording_replays_to_the_same_json(vm_run):
    rec = vm_run["_out"] / "writes3.rec.jsonl"
    assert rec.exists()
    p = subprocess.run([sys.executable, "-m", "tracer", "replay", "--json", str(rec)],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert p.returncode == 0, p.stderr
    assert p.stdout == vm_run["writes3_json"]["stdout"]


def test_ctrl_c_detaches_probes_and_stops_the_reproduction(vm_run):
    """SIGINT while the kprobes are attached and the reproduction runs (the `signals`
    scenario, tests/live/test_vm_robustness.py checks the other signals)."""
    res = vm_run["signals"]
    r = next(x for x in res["runs"] if x["signal"] == "SIGINT")
    assert r["phase"] == "probes attached, reproducing or watching"
    assert any("tracer.collect.repro_child" in p["cmd"] for p in r["processes_seen"])
    assert r["rc"] == 130, r["stderr"]
    assert "interrupted" in r["stderr"] and "Traceback" not in r["stderr"]
    assert res["left"]["probe_files"] == {}, "kprobes left in /sys/kernel/debug/kprobes/list"
    assert r["processes_left"] == []
