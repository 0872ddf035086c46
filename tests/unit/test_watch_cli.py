"""`trace-halfclose watch`: its errors (before anything is loaded, no traceback),
its filter as -D constants, and --replay of recorded watches, as text and as
NDJSON in the core's schema plus the connection fields."""
import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tracer.cli import main
from tracer.display.ndjson import lines as core_lines
from tracer.process.annotate import annotate
from tracer.record.recording import Recording
from tracer.collect.watch import WatchOptions, check_options, filter_defines

DATA = Path(__file__).resolve().parent / "data"
KPROBE = DATA / "watch-6.1-kprobe-article.jsonl"
# include/net/tcp_states.h (v6.1): TCP_SYN_SENT 2, TCP_SYN_RECV 3, TCP_LISTEN 10
STATES = {2: "SYN_SENT", 3: "SYN_RECV", 10: "LISTEN", 7: "CLOSE"}


def invoke(args):
    return CliRunner().invoke(main, args, env={"COLUMNS": "300"})


def assert_clean_failure(r, text: str):
    assert r.exit_code != 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    assert "error:" in r.output and text in r.output, r.output


def no_such_pid() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


@pytest.mark.parametrize("args,text", [
    (["watch"], "watch needs a filter"),
    (["watch", "--json"], "watch needs a filter"),
    (["watch", "--pid", "NOPID"], "no process with pid"),
    (["watch", "--pid", "1", "--", "true"], "--pid cannot be combined with a command"),
    (["watch", "--comm", ""], "--comm is empty"),
    (["watch", "--", "/nonexistent/program"], "command not found: /nonexistent/program"),
    (["watch", "--replay", str(KPROBE), "--port", "1"], "--replay takes no filter"),
    (["watch", "--replay", "/nonexistent.jsonl"], "cannot read /nonexistent.jsonl"),
    (["watch", "--replay", str(DATA / "debian-6.1.0-56-writes3.jsonl")], "not a watch recording"),
])
def test_bad_input_is_one_error_line(args, text):
    args = [str(no_such_pid()) if a == "NOPID" else a for a in args]
    assert_clean_failure(invoke(args), text)


def test_click_rejects_bad_values():
    for args in (["watch", "--port", "0"], ["watch", "--duration", "0", "--port", "1"], ["watch", "--pid", "x"]):
        r = invoke(args)
        assert r.exit_code == 2 and "Traceback" not in r.output


def test_the_core_replay_refuses_a_watch_recording():
    r = invoke(["replay", str(KPROBE)])
    assert_clean_failure(r, "unknown record type 'watch'")


def test_a_long_comm_is_cut_to_the_kernels_15_bytes():
    opts, notes = check_options(WatchOptions(comm="a-very-long-program-name"))
    assert opts.comm == "a-very-long-pro" and "TASK_COMM_LEN" in notes[0]


def test_filter_defines():
    assert filter_defines(WatchOptions(port=9999), STATES) == [
        "-DHC_WATCH_PORT=9999", "-DHC_TCP_SYN_SENT=2", "-DHC_TCP_SYN_RECV=3", "-DHC_TCP_LISTEN=10"]
    flags = filter_defines(WatchOptions(comm="a.out", command=("./a.out",)), STATES)
    assert flags[:4] == ["-DHC_WATCH_PORT=0", "-DHC_WATCH_BY_PID", "-DHC_WATCH_BY_COMM", "-DHC_WATCH_FOLLOW"]
    assert "-DHC_WATCH_FOLLOW" not in filter_defines(WatchOptions(pids=(os.getpid(),)), STATES)


def test_help_lists_watch():
    assert "watch" in invoke(["--help"]).output.split("Commands:")[1]
    out = invoke(["watch", "--help"]).output
    for opt in ("--pid", "--comm", "--port", "--duration", "--json", "--record", "--replay", "--backend"):
        assert opt in out


def test_replay_text():
    """By default the incidents: the article's client (EPIPE after the peer's FIN and RST);
    ncat's healthy end is only counted. --all shows both, each naming the other as its peer."""
    r = invoke(["watch", "--replay", str(KPROBE)])
    assert r.exit_code == 0, r.output
    out = r.output
    assert "trace-halfclose watch on Linux 6.1.0-56-amd64, backend kprobe" in out
    assert re.search(r"connection #1  127\.0\.0\.1:\d+ → 127\.0\.0\.1:9999  watch_client \(pid \d+\), fd 3", out)
    assert "incident: a write after the peer's FIN; a write after an RST (or with sk_err set); a call failed; " \
           "an RST received" in out
    assert "connection #2" not in out
    assert "write 1 (6 bytes) → 6" in out and "write 2 (6 bytes) → -1 EPIPE" in out
    assert out.count("write(2) on fd 3 by watch_client") == 2
    assert "sk_stream_wait_connect → -EPIPE" in out
    assert "tcp_destroy_sock: socket destroyed in state CLOSE" in out
    assert "stopped: interrupted (Ctrl-C)" in out
    assert "2 connections: 1 healthy, 1 incidents" in out and "1 shown" in out
    assert re.search(r"#1 +127\.0\.0\.1:\d+ +127\.0\.0\.1:9999 +write 6 B → all, write 6 B → -1 EPIPE", out)
    every = invoke(["watch", "--replay", str(KPROBE), "--all"]).output
    assert re.search(r"connection #1  127\.0\.0\.1:\d+ → 127\.0\.0\.1:9999  watch_client \(pid \d+\), fd 3  "
                     r"\(peer of #2\)", every)
    assert re.search(r"connection #2  127\.0\.0\.1:9999 → 127\.0\.0\.1:\d+  no write-like call seen", every)
    assert "2 connections: 1 healthy, 1 incidents" in every and "2 shown" in every


def test_replay_json_is_the_core_schema_plus_connections():
    r = invoke(["watch", "--replay", str(KPROBE), "--json"])
    assert r.exit_code == 0, r.output
    objs = [json.loads(x) for x in r.output.splitlines()]
    core = list(core_lines(annotate(Recording.load(DATA / "debian-6.1.0-56-writes3.jsonl"))))
    # The keys every core line of a type has (a kernel line has more for some events).
    core_keys = {t: set.intersection(*(set(o) for o in core if o["type"] == t))
                 for t in ("meta", "kernel", "write", "user")}
    meta = objs[0]
    assert meta["type"] == "meta" and meta["mode"] == "watch"
    assert core_keys["meta"] <= set(meta)
    assert meta["filter"] == {"pids": [], "comm": None, "port": 9999, "command": []}
    types = [o["type"] for o in objs]
    assert types[-1] == "summary" and types.count("connection") == 2
    for o in objs:
        if o["type"] in ("kernel", "write"):
            assert core_keys[o["type"]] <= set(o) and "conn" in o
        if o["type"] == "write":
            assert {"call", "pid", "tid", "comm", "fd"} <= set(o)
    conn = next(o for o in objs if o["type"] == "connection" and o["comm"] == "watch_client")
    for k in ("conn", "sk", "family", "laddr", "lport", "raddr", "rport", "pid", "comm", "fd", "writers", "peer"):
        assert k in conn
    # Every line of a connection comes after its connection line and before the next one.
    current = None
    for o in objs:
        if o["type"] == "connection":
            current = o["conn"]
        elif "conn" in o and o["type"] != "summary":
            assert o["conn"] == current
    summary = objs[-1]
    assert summary["connections"] == 2 and [(w["index"], w["ret"], w["errno"]) for w in summary["writes"]] == [
        (1, 6, None), (2, -1, "EPIPE")]
