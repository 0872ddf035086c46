"""The NDJSON output (`--json`): one JSON object per line, each with "type";
meta first, summary last; writes and kernel events carry the values of the
recording's events, and nothing is invented when an event is missing."""
import io
import json

import pytest

from tracer.display import ndjson as jsonout
from tracer.process.annotate import annotate
from tracer.record.event import Kind

from .helpers import EPIPE, WRITE_PATH, first, write_events

KERNEL_KINDS = {Kind.TCP_RESET, Kind.DONE_WITH_ERROR, Kind.TCP_DONE, Kind.TCP_FIN}


def ndjson(rec) -> list[dict]:
    buf = io.StringIO()
    jsonout.write(annotate(rec), buf)
    text = buf.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]  # raises if any line is not JSON


@pytest.fixture
def out(rec):
    return ndjson(rec)


def test_every_line_is_a_json_object_with_a_type(out):
    assert out
    for obj in out:
        assert isinstance(obj, dict) and isinstance(obj.get("type"), str), obj
    assert {o["type"] for o in out} <= {"meta", "user", "kernel", "write", "finding", "summary"}


def test_first_line_is_meta_last_is_summary(out, rec):
    assert out[0]["type"] == "meta"
    assert out[-1]["type"] == "summary"
    assert [o["type"] for o in out].count("meta") == 1
    assert [o["type"] for o in out].count("summary") == 1
    meta = out[0]
    assert meta["kernel"] == rec.kernel
    assert meta["backend"] == rec.backend
    assert meta["probes"] == rec.attached
    assert meta["client_port"] == rec.client_port and meta["server_port"] == rec.server_port


def test_timeline_lines_are_in_time_order(out):
    t = [o["t_ms"] for o in out if o["type"] in ("user", "kernel", "write")]
    assert t == sorted(t)


def test_write_lines_carry_the_results_and_entry_values(out, rec):
    writes = [o for o in out if o["type"] == "write"]
    assert [w["index"] for w in writes] == [w.index for w in rec.writes]
    for line, w in zip(writes, rec.writes):
        enter = first(write_events(rec, w.index), Kind.SENDMSG_ENTER)
        assert line["ret"] == w.ret
        assert line["errno"] == w.errno  # "EPIPE" or null
        assert line["state"] == rec.state_names[enter.state]
        assert line["sk_err"] == enter.sk_err
        assert line["sk_shutdown"] == enter.sk_shutdown
        assert line["size"] == w.size
        assert isinstance(line["decision"], str) and line["decision"]
    assert writes[0]["errno"] is None and writes[0]["ret"] == rec.writes[0].size
    assert writes[1]["errno"] == "EPIPE" and writes[1]["ret"] == -1


def test_write_path_is_a_list_of_steps_with_func_and_known_returns(out, rec):
    ret_kind = {
        "tcp_sendmsg_locked": Kind.SENDMSG_RETURN,
        "sk_stream_wait_connect": Kind.WAIT_CONNECT_RETURN,
        "sk_stream_error": Kind.STREAM_ERROR_RETURN,
    }
    for line in (o for o in out if o["type"] == "write"):
        evs = write_events(rec, line["index"])
        path = line["path"]
        assert isinstance(path, list) and path
        seen = [e.func for e in evs if not e.is_return]
        assert [s["func"] for s in path] == seen  # one step per function entered, in order
        for s in path:
            r = first(evs, ret_kind[s["func"]])
            assert s["ret"] == r.value
    write2 = next(o for o in out if o["type"] == "write" and o["index"] == 2)
    assert {s["func"]: s["ret"] for s in write2["path"]} == {
        "tcp_sendmsg_locked": -EPIPE,
        "sk_stream_wait_connect": -EPIPE,
        "sk_stream_error": -EPIPE,
    }


def test_kernel_events_are_kernel_lines(out, rec):
    kernel = [o for o in out if o["type"] == "kernel"]
    assert kernel
    by_sk_event = {(o["sk"], o["event"]) for o in kernel}
    for e in rec.events:
        if e.kind in KERNEL_KINDS:
            assert (hex(e.sk), e.kind.name) in by_sk_event, e
    for o in kernel:
        assert Kind[o["event"]] not in WRITE_PATH  # write-path events belong to "write" lines
        assert not o["event"].endswith("_RETURN")  # returns are folded into their entry
        assert o["func"] and o["side"] in ("client", "server", "listener", "socket")


def test_summary_matches_the_writes_and_event_count(out, rec):
    s = out[-1]
    assert s["writes"] == [{"index": w.index, "ret": w.ret, "errno": w.errno, "killed_by": w.killed_by}
                           for w in rec.writes]
    assert s["events"] == len(rec.events)
    assert s["lost_events"] == rec.lost_events


def test_findings_are_text_lines(out):
    findings = [o for o in out if o["type"] == "finding"]
    assert findings and all(isinstance(f["text"], str) and f["text"] for f in findings)


def test_unobserved_writes_have_null_values_not_invented_ones(rec):
    # DERIVED stream: no tcp_sendmsg_locked events.
    rec.events = [e for e in rec.events if e.kind not in (Kind.SENDMSG_ENTER, Kind.SENDMSG_RETURN)]
    for line in (o for o in ndjson(rec) if o["type"] == "write"):
        assert line["observed"] is False
        assert line["state"] is None and line["sk_err"] is None and line["sk_shutdown"] is None
        assert line["sk_err_name"] is None and line["sk_shutdown_name"] is None
        assert line["path"] == []
