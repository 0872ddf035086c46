"""Reliability with kprobes (issue 12), in the VM boots of tests/live/conftest.py --
no boot of its own: the scenarios ride along in tests/live/scenarios.py.

- `signals`: SIGINT while the reproduction runs, SIGTERM as the first kprobe is
  attached, SIGHUP as it detaches, SIGKILL while it runs, SIGTERM to `watch -- CMD`
  while the command runs; all at once. Each: exit 128 + the signal (SIGKILL: killed),
  one last line, no traceback, no process or namespace left; then no BPF program,
  kprobe or uprobe left.
- noise: foreign connections in the guest's own namespace to the reproduction's port
  9999 (and 9997) while writes3_json (kprobe), fentry_json and tracepoint_json trace;
  50,000 at most, from the moment the probes are in until the run ends (the guest runs
  in software emulation: a few thousand fit). None of their events may be in the
  recording, and none lost. Beside watch_article's traffic, the same loop on 9998 and
  9996: no connection of theirs may appear.
"""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Where each test leaves its figures (robustness-vm-<name>-<kernel>.json)."""
    base = tmp_path_factory.getbasetemp()

    def write(name: str, vm_run, data) -> None:
        (base / f"robustness-vm-{name}-{vm_run['_guest']['kernel']}.json").write_text(json.dumps(data, indent=1))

    return write


def test_signals_with_kprobes_leave_nothing_behind(vm_run, report):
    res = vm_run["signals"]
    report("signals", vm_run, {"runs": [{k: r[k] for k in ("args", "signal", "moment", "at", "phase", "rc", "signalled",
                                                             "seconds", "outlived_by")} for r in res["runs"]],
                               "left": res["left"], "problems": res["problems"]})
    assert res["rc"] == 0, res
    assert [p for p in res["problems"] if p[2]] == []
    assert all(r["signalled"] for r in res["runs"]), [(r["signal"], r["moment"]) for r in res["runs"]]
    assert res["left"] == {"bpf_programs": [], "probe_files": {}, "named_netns": []}
    by = {r["signal"] + (":watch" if r["args"][:1] == ["watch"] else ""): r for r in res["runs"]}
    assert by["SIGTERM"]["phase"].startswith("probes attached"), by["SIGTERM"]["phase"]  # as the first was attached
    assert by["SIGTERM:watch"]["phase"] == "probes attached, reproducing or watching"
    assert "the command got SIGTERM" in by["SIGTERM:watch"]["stderr"]
    assert by["SIGKILL"]["rc"] == -9


@pytest.mark.parametrize("scenario,backend", [("writes3_json", "kprobe"), ("fentry_json", "fentry"),
                                              ("tracepoint_json", "tracepoint")])
def test_foreign_connections_leave_no_event_and_lose_none(vm_run, scenario, backend, report):
    res = vm_run[scenario]
    assert res["rc"] == 0, res["stderr"]
    noise = res["noise"]
    report(f"noise-{backend}", vm_run, noise)
    assert noise["connections"] > 0 and noise["during_the_trace"] > 0, noise
    assert noise["foreign"] == []
    objs = [json.loads(x) for x in res["stdout"].splitlines() if x.strip()]
    assert objs[0]["backend"] == backend
    assert objs[-1]["type"] == "summary" and objs[-1]["lost_events"] == 0


def test_foreign_connections_do_not_reach_a_watch(vm_run, report):
    res = vm_run["watch_article"]
    report("noise-watch", vm_run, res["noise_loop"])
    assert res["noise_loop"]["connections"] > 0
    for name, w in res["watchers"].items():
        if not name.endswith("_json"):
            continue
        objs = [json.loads(x) for x in w["stdout"].splitlines() if x.strip()]
        conns = [o for o in objs if o["type"] == "connection"]
        assert conns and all(9999 in (c["lport"], c["rport"]) for c in conns), (name, conns)
        assert objs[-1]["lost_events"] == 0, name
