"""The three backends on a distro kernel in the VM: the same facts wherever
each backend can see them, and doctor's account of the machine."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.vm

EPIPE = 32


def lines(result: dict) -> list[dict]:
    assert result["rc"] == 0, f"trace-halfclose failed in the VM:\n{result['stderr']}"
    return [json.loads(x) for x in result["stdout"].splitlines() if x.strip()]


def writes(objs):
    return {o["index"]: o for o in objs if o["type"] == "write"}


def facts(objs) -> dict:
    """What every backend observes: per write its result and the socket at entry."""
    return {i: (w["ret"], w["errno"], w["state"], w["sk_err"], w["sk_shutdown"]) for i, w in writes(objs).items()}


def test_fentry_gives_the_same_annotated_timeline_as_kprobe(vm_run):
    kp, fe = lines(vm_run["writes3_json"]), lines(vm_run["fentry_json"])
    assert fe[0]["backend"] == "fentry"
    assert "fentry:tcp_sendmsg_locked" in fe[0]["probes"] and "fexit:tcp_sendmsg_locked" in fe[0]["probes"]
    assert facts(fe) == facts(kp)
    for i in (1, 2, 3):
        assert [s["func"] for s in writes(fe)[i]["path"]] == [s["func"] for s in writes(kp)[i]["path"]]
        assert writes(fe)[i]["decision"] == writes(kp)[i]["decision"]
        assert writes(fe)[i]["inferred"] is False
    wc = next(s for s in writes(fe)[2]["path"] if s["func"] == "sk_stream_wait_connect")
    assert (wc["sk_err"], wc["sk_err_after"], wc["ret"]) == (EPIPE, 0, -EPIPE)


def test_tracepoint_backend_sees_the_same_values_and_marks_inferences(vm_run):
    kp, tp = lines(vm_run["writes3_json"]), lines(vm_run["tracepoint_json"])
    assert tp[0]["backend"] == "tracepoint"
    # Read at write(2) entry instead of tcp_sendmsg_locked entry, the values agree.
    assert facts(tp) == facts(kp)
    for w in writes(tp).values():
        assert w["observed_at"] == "write(2) entry" and w["inferred"] is True
    client = [o for o in tp if o["type"] == "kernel" and o["side"] == "client"]
    reset = next(o for o in client if o["func"] == "tcp_receive_reset")
    assert reset["state"] == "CLOSE_WAIT"
    assert any(o["func"] == "inet_sock_set_state" and (o["old_state"], o["state"]) == ("CLOSE_WAIT", "CLOSE")
               for o in client)
    # sock:sock_send_length exists from 6.3 on: present on 6.12, absent on 6.1.
    meta_missing = tp[0]["missing"]
    kernel = vm_run["_guest"]["kernel"]
    if kernel.startswith("6.1."):
        assert "sock:sock_send_length" in meta_missing


def test_doctor_in_the_vm(vm_run):
    objs = lines(vm_run["doctor_json"])
    checks = {c["name"]: c for c in objs if c["type"] == "check"}
    assert checks["kprobes"]["ok"] and checks["fentry/fexit"]["ok"] and checks["BTF"]["ok"]
    assert checks["function tcp_sendmsg_locked"]["ok"]
    assert objs[-1]["ok"] and "kprobe" in objs[-1]["summary"]
