"""Annotation of a tracepoint-backend recording (this project's 6.18 microVM,
no kprobes, fentry refused): values are observed at write(2) entry and exit,
the branch inside tcp_sendmsg_locked is inferred and must say so."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tracer.display import words
from tracer.process.annotate import annotate
from tracer.display.ndjson import write_json
from tracer.record.event import Kind
from tracer.record.recording import Recording

from .helpers import EPIPE, RCV_SHUTDOWN, SHUTDOWN_MASK

DATA = Path(__file__).parent / "data" / "native-6.18-tracepoint-writes3.jsonl"


@pytest.fixture
def rec() -> Recording:
    return Recording.load(DATA)


def raw(rec: Recording, kind: Kind, index: int):
    """The client's event of `kind` inside write `index`'s syscall."""
    w = next(x for x in rec.writes if x.index == index)
    return next(e for e in rec.events if e.kind == kind and w.t_start_ns <= e.ts_ns <= w.t_end_ns)


def test_recording_is_a_tracepoint_run(rec):
    assert rec.backend == "tracepoint"
    assert not any(e.kind in (Kind.SENDMSG_ENTER, Kind.TCP_RESET) for e in rec.events)


def test_write_values_come_from_the_write_tracepoints(rec):
    tl = annotate(rec)
    for w in tl.writes:
        enter = raw(rec, Kind.WRITE_ENTER, w.index)
        assert w.observed and words.observed_at(w.observed_at) == "write(2) entry"
        assert (w.sk_err, w.sk_shutdown) == (enter.sk_err, enter.sk_shutdown)
        assert w.state == rec.state_names[enter.state]
    w1, w2, w3 = tl.writes
    assert (w1.ret, w1.state, w1.sk_err, w1.sk_shutdown) == (6, "CLOSE_WAIT", 0, RCV_SHUTDOWN)
    assert (w2.errno, w2.state, w2.sk_err, w2.sk_shutdown) == ("EPIPE", "CLOSE", EPIPE, SHUTDOWN_MASK)
    assert (w3.errno, w3.sk_err) == ("EPIPE", 0)


def test_every_branch_is_marked_inferred(rec):
    for w in annotate(rec).writes:
        assert w.inferred and words.decision(w).startswith("inferred:")
        assert write_json(w)["inferred"] is True
        # The path holds only what tracepoints saw: no function of tcp_sendmsg_locked's path.
        assert {s.func for s in w.path} <= {"sys_enter_write", "sock_send_length", "sys_exit_write"}


def test_write2_inference_rests_on_sk_err_taken(rec):
    w2 = annotate(rec).writes[1]
    exit2 = raw(rec, Kind.WRITE_EXIT, 2)
    assert exit2.sk_err == 0 and exit2.value == -EPIPE  # observed: sk_err cleared, -EPIPE
    assert "sk_stream_wait_connect" in words.decision(w2) and "sock_error() takes sk_err=EPIPE" in words.decision(w2)


def test_sk_err_writer_is_not_claimed(rec):
    findings = "\n".join(words.findings(annotate(rec)))
    assert "reported by inet_sk_error_report" in findings
    assert "not visible to tracepoints" in findings
    assert "inside tcp_done_with_error" not in findings


def test_tcp_done_is_inferred_from_the_close_transition(rec):
    findings = words.findings(annotate(rec))
    done = next(f for f in findings if f.startswith("tcp_done:"))
    assert "inferred" in done and "CLOSE_WAIT → CLOSE" in done


def test_no_inference_without_the_values(rec):
    """If write 2's entry event is lost, nothing about its branch may be claimed."""
    w = next(x for x in rec.writes if x.index == 2)
    rec = dataclasses.replace(rec, events=[e for e in rec.events
                                           if not (e.kind == Kind.WRITE_ENTER and w.t_start_ns <= e.ts_ns <= w.t_end_ns)])
    w2 = annotate(rec).writes[1]
    assert not w2.observed and w2.state is None and w2.sk_err is None
    assert words.decision(w2).startswith("not observed")
