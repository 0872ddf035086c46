"""Kernel eras on Debian's kernels in the VM: fentry reads each argument at the slot the
kernel's BTF gives, and the tracepoint backend judges the RST's sender by what the
kernel's tcp:tcp_send_reset can see.

Kernel facts (tracer/kernel/eras.py): tcp:tcp_send_reset fires for a timewait socket's
RST only from 6.10 (its record gained `reason`; until 6.9 tcp_v4_send_reset fires it only
`if (sk_fullsock(sk))`, net/ipv4/tcp_ipv4.c 6.1.192:823): Debian's 6.1 has the old record
(tests/unit/data/tracefs-formats-6.1.0-57-amd64.txt), its 6.12 the new one.
"""
from __future__ import annotations

import json

import pytest

from tracer.process.scenarios import SCENARIOS
from tests.live.test_vm_claims_scenarios import lines

pytestmark = pytest.mark.vm


def scenarios(objs) -> dict[str, dict]:
    return {o["name"]: o for o in objs if o["type"] == "scenario"}


def test_fentry_runs_every_scenario_with_btf_slots(vm_run):
    objs = lines(vm_run["fentry_all_json"])  # rc 0 under --check: loaded, and everything matched
    meta = next(o for o in objs if o["type"] == "meta")
    assert meta["backend"] == "fentry"
    assert "fexit:tcp_recvmsg" in meta["probes"]  # its return slot differs by era: read-first reads through it
    v = scenarios(objs)
    assert set(v) == set(SCENARIOS) and all(x["verdict"] == "match" for x in v.values()), v
    read = next(o for o in objs if o["type"] == "read" and o.get("scenario") == "read-first")
    assert read["ret"] == 0 and read["observed"]


def test_tracepoints_judge_the_rst_sender_by_what_this_kernel_has(vm_run):
    objs = lines(vm_run["tracepoint_all_json"])  # rc 0 under --check on every era
    kernel = vm_run["_guest"]["kernel"]
    v = scenarios(objs)
    assert set(v) == set(SCENARIOS) and all(x["ok"] for x in v.values())
    row = next(r for r in v["close"]["rows"] if r["what"] == "RST sent by")
    if kernel.startswith("6.1."):  # tcp:tcp_send_reset without `reason`: the timewait RST is not traced
        assert row["ok"] is None or row["observed"] == "full socket", row
        if row["ok"] is None:
            assert row["observed"].startswith("not observable with the tracepoint backend on this kernel")
            assert v["close"]["verdict"] == "match (partly observable)"
    else:  # 6.10+: every RST
        assert row["ok"] is True and row["observed"] in ("timewait", "full socket"), row
    assert json.dumps(v["linger0"]["rows"]).count('"ok": true') >= 1
