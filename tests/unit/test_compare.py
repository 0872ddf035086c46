"""`trace-halfclose compare` on recordings: rows aligned by meaning, differences labelled.

Kernel facts used: tcp_done_with_error (net/ipv4/tcp_input.c) stores sk_err since mainline
6.11 and the stable backports (6.10.y, 6.6.44, 6.1.103); before it tcp_reset stored it
itself. Debian's 6.1.0-56 (6.1.192) has it. The derived streams below are made from the
real 6.1 kprobe recording and say so.
"""
import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tracer.cli import main
from tracer.process.compare import compare, runs_of
from tracer.record.event import Kind
from tracer.record.recording import Recording

DATA = Path(__file__).resolve().parent / "data"
KPROBE_ALL = DATA / "debian-6.1.0-56-kprobe-all.jsonl"
TRACEPOINT_ALL = DATA / "native-6.18-tracepoint-all.jsonl"
CLOSE = DATA / "debian-6.1.0-56-writes3.jsonl"


def _save(recs: list[Recording], path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in recs:
            r.dump(f)
    return path


def _pre_6_10(rec: Recording) -> Recording:
    """As on a kernel without tcp_done_with_error: tcp_reset stores sk_err itself. Derived from
    the 6.1 run by dropping the function's events and its name from the kernel's functions."""
    return dataclasses.replace(
        rec, kernel="5.15-derived", events=[e for e in rec.events if e.kind != Kind.DONE_WITH_ERROR],
        kernel_functions=[f for f in rec.kernel_functions if f != "tcp_done_with_error"],
        attached=[a for a in rec.attached if not a.endswith(":tcp_done_with_error")])


def _write2_succeeds(rec: Recording) -> Recording:
    """Derived: write 2 returned 6 (a kernel that would not have failed it)."""
    writes = [dataclasses.replace(w, ret=w.size, errno=None) if w.index == 2 else w for w in rec.writes]
    return dataclasses.replace(rec, kernel="derived-write2-ok", writes=writes)


def _run(args) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["compare", *map(str, args)], env={"COLUMNS": "160"})
    return r.exit_code, r.output


def test_kprobe_against_tracepoint_differs_only_by_the_backend():
    c = compare(runs_of([("a", Recording.load_all(KPROBE_ALL)), ("b", Recording.load_all(TRACEPOINT_ALL))]))
    assert c.differences, "the backends see different things"
    assert not c.user_visible_differences  # every return value, errno and signal is the same
    for row in c.differences:
        assert [r.kind for r in row.reasons] == ["backend"], (row.what, row.values)
    # the branch that decided each write is the same: observed with kprobes, inferred with tracepoints
    assert not [r for r in c.differences if r.what.endswith(": branch")]
    assert {r.what for r in c.differences} >= {"write 2: seen by", "sk_err stored by"}


def test_the_tcp_done_with_error_era_is_labelled(tmp_path):
    rec = Recording.load(CLOSE)
    old = _save([_pre_6_10(rec)], tmp_path / "old.jsonl")
    c = compare(runs_of([("new", [rec]), ("old", Recording.load_all(old))]))
    row = next(r for r in c.differences if r.what == "sk_err stored by")
    assert row.values == ("tcp_done_with_error", "tcp_reset")
    assert [r.kind for r in row.reasons] == ["era"] and row.reasons[0].function == "tcp_done_with_error"
    assert row.reasons[0].per_run == (True, False)
    assert not c.user_visible_differences
    code, out = _run([CLOSE, old])
    assert code == 0 and "tcp_done_with_error on 6.1.0-56-amd64, not on 5.15-derived" in out
    assert "every return value, errno and signal is the same" in out


def test_a_different_result_is_user_visible_and_check_fails(tmp_path):
    rec = Recording.load(CLOSE)
    other = _save([_write2_succeeds(rec)], tmp_path / "w2.jsonl")
    c = compare(runs_of([("a", [rec]), ("b", Recording.load_all(other))]))
    visible = c.user_visible_differences
    assert [(r.what, r.values) for r in visible] == [("write 2", ("EPIPE", "6"))]
    code, out = _run([CLOSE, other, "--check"])
    assert code == 1, out
    assert "1 in what a program sees" in out
    code, _ = _run([CLOSE, other])
    assert code == 0  # without --check the comparison is shown, not judged


def test_identical_runs_are_the_same_behaviour():
    code, out = _run([KPROBE_ALL, KPROBE_ALL, "--check"])
    assert code == 0, out
    assert "same behaviour on all 2 kernels" in out


def test_json_lists_every_row_with_values_per_run(tmp_path):
    rec = Recording.load(CLOSE)
    old = _save([_pre_6_10(rec)], tmp_path / "old.jsonl")
    code, out = _run([CLOSE, old, "--json"])
    assert code == 0
    objs = [json.loads(line) for line in out.splitlines()]
    assert objs[0]["type"] == "meta" and objs[0]["mode"] == "compare"
    assert [r["label"] for r in objs[0]["runs"]] == ["6.1.0-56-amd64", "5.15-derived"]
    rows = [o for o in objs if o["type"] == "row"]
    assert all(set(o["values"]) == {"6.1.0-56-amd64", "5.15-derived"} for o in rows)
    sk_err = next(o for o in rows if o["what"] == "sk_err stored by")
    assert not sk_err["same"] and "tcp_done_with_error" in sk_err["reasons"][0]
    summary = objs[-1]
    assert summary["type"] == "summary" and summary["differences"] == sum(1 for o in rows if not o["same"])
    assert summary["user_visible_differences"] == 0


def test_times_are_not_differences(tmp_path):
    rec = Recording.load(CLOSE)
    shift = 123_456_789
    moved = dataclasses.replace(
        rec, kernel="shifted", events=[dataclasses.replace(e, ts_ns=e.ts_ns + shift) for e in rec.events],
        writes=[dataclasses.replace(w, t_start_ns=w.t_start_ns + shift, t_end_ns=w.t_end_ns + shift)
                for w in rec.writes],
        marks=[dataclasses.replace(m, t_ns=m.t_ns + shift) for m in rec.marks],
        teardown_ns=rec.teardown_ns + shift if rec.teardown_ns else 0)  # 0: not recorded
    c = compare(runs_of([("a", [rec]), ("b", [moved])]))
    assert not c.differences


@pytest.mark.parametrize("bad", ["watch", "garbage", "missing"])
def test_a_file_that_is_not_a_recording_is_left_out_with_a_line(tmp_path, bad):
    path = {"watch": DATA / "watch-6.1-kprobe-article.jsonl", "missing": tmp_path / "nope.jsonl",
            "garbage": tmp_path / "g.jsonl"}[bad]
    if bad == "garbage":
        path.write_text("{not json\n")
    code, out = _run([CLOSE, path])
    assert code == 2  # one run left: nothing to compare
    assert f"{path}: left out" in out and "Traceback" not in out


def test_recordings_and_kernels_are_not_mixed():
    code, out = _run([CLOSE, CLOSE, "--kernel", "running"])
    assert code == 2 and "not both" in out


def test_ladders_side_by_side_one_per_kernel():
    code, out = _run([KPROBE_ALL, TRACEPOINT_ALL, "--ladder", "--scenario", "linger0"])
    assert code == 0, out
    heads = [line for line in out.splitlines() if line.startswith("scenario linger0 on Linux")]
    assert len(heads) == 1  # both ladders' titles on one row
    assert "backend kprobe" in heads[0] and "backend tracepoint" in heads[0]
    # linger0's story on both kernels: no FIN from the server, its RST ends the connection
    assert "[F" not in out.split("scenario linger0 on Linux")[1].split("trace-halfclose compare")[0]
    assert out.count("[R.]") == 2


def test_ladder_and_json_do_not_go_together():
    code, out = _run([KPROBE_ALL, TRACEPOINT_ALL, "--ladder", "--json"])
    assert code == 2 and "--ladder" in out


# --- compare --scenario PATH: a user's own question, on each kernel ----------------------

USER_FILE = DATA / "native-6.18-user-file.jsonl"  # a run of a file named mine.toml


def _user_scenario(tmp_path) -> Path:
    from tests.live.scenarios import USER_SCENARIO

    path = tmp_path / "mine.toml"
    path.write_text(USER_SCENARIO)
    return path


def test_a_scenario_file_picks_its_scenario_out_of_recordings(tmp_path):
    code, out = _run([USER_FILE, USER_FILE, "--scenario", _user_scenario(tmp_path), "--json"])
    assert code == 0, out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert {r["scenario"] for r in rows if r.get("type") == "row"} == {"mine"}


@pytest.fixture
def no_boot(monkeypatch):
    """record_kernels, replaced: what compare asked of each kernel, and no VM."""
    import tracer.collect.compare as collect

    asked = {}

    def record_kernels(kernels, chosen, ipv6, backend, progress, every=False, **_):
        asked.update(kernels=kernels, asked=collect.Asked(tuple(chosen), ipv6, every))
        return []

    monkeypatch.setattr(collect, "record_kernels", record_kernels)
    return asked


def test_each_kernel_is_asked_the_users_file_by_its_absolute_path(no_boot, tmp_path, monkeypatch):
    _user_scenario(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, _out = _run(["--kernel", "a", "--kernel", "b", "--scenario", "mine.toml"])
    assert code == 2  # no run came back (record_kernels is replaced): nothing to compare
    asked = no_boot["asked"]
    assert asked.chosen == (("mine", "mine.toml"),)
    args = asked.inner_args("kprobe", Path("/x/run.jsonl"))
    assert args[args.index("--scenario") + 1] == str(tmp_path / "mine.toml")  # the guest starts in the checkout
    assert "--ipv6" not in args


@pytest.mark.parametrize("given, which", [("all", "all"), ("close", "close")])
def test_built_ins_are_asked_by_name(no_boot, given, which):
    _run(["--kernel", "a", "--kernel", "b", "--scenario", given, "--ipv6"])
    args = no_boot["asked"].inner_args("auto", Path("/x/run.jsonl"))
    assert args[args.index("--scenario") + 1] == which and "--ipv6" in args


def test_a_bad_scenario_file_is_refused_before_any_kernel_runs(no_boot, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('title = "x"\n[[server]]\ndo = "dance"\n')
    code, out = _run(["--kernel", "a", "--kernel", "b", "--scenario", bad])
    assert code == 2 and f"{bad}:3" in out and "Traceback" not in out
    assert no_boot == {}  # nothing was booted


def test_ipv6_is_for_running_scenarios_not_recordings():
    code, out = _run([CLOSE, CLOSE, "--ipv6"])
    assert code == 2 and "--ipv6" in out
