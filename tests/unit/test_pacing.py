"""The pacing between writes (tracer/repro.py answer_pending) on the recorded streams, cut at
the moments a slow machine could stop at: the next write waits for the server's answer to
the data and for the client's handling of an RST, and for nothing else."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tracer.record.event import Kind
from tracer.record.recording import Recording
from tracer.collect.repro import answer_pending

DATA = Path(__file__).parent / "data"
FILES = [DATA / "debian-6.1.0-56-kprobe-all.jsonl", DATA / "native-6.18-tracepoint-all.jsonl"]


@pytest.fixture(params=FILES, ids=lambda p: p.name.split("-all")[0])
def recs(request) -> dict[str, Recording]:
    return {r.scenario: r for r in Recording.load_all(request.param)}


def cut(rec: Recording, before) -> Recording:
    """The recording as it stood when `before` had not been seen yet."""
    events = sorted(rec.events, key=lambda e: e.ts_ns)
    return dataclasses.replace(rec, events=[e for e in events if e.ts_ns < before.ts_ns])


def packet(rec, frm, flag, after=0):
    src = rec.client_port if frm == "client" else rec.server_port
    return next(e for e in sorted(rec.events, key=lambda e: e.ts_ns)
                if e.kind == Kind.PACKET and e.sport == src and e.tcp_flags & flag and e.ts_ns > after)


def write(rec, i):
    return next(w for w in rec.writes if w.index == i)


def test_whole_runs_need_no_wait(recs):
    for rec in recs.values():
        assert [answer_pending(rec, w) for w in rec.writes] == [None] * len(rec.writes), rec.scenario


def test_close_waits_for_the_rst_then_for_its_handling(recs):
    rec = recs["close"]
    w1 = write(rec, 1)
    data = packet(rec, "client", 0x08)  # PSH: write 1's bytes
    rst = packet(rec, "server", 0x04, data.ts_ns - 1)
    assert w1.t_start_ns <= data.ts_ns <= w1.t_end_ns
    assert answer_pending(cut(rec, rst), w1) == "the server's answer to the data"
    closed = next(e for e in sorted(rec.events, key=lambda e: e.ts_ns) if e.kind == Kind.SET_STATE
                  and e.ts_ns > rst.ts_ns and e.sport == rec.client_port and rec.state_names[e.state] == "CLOSE")
    assert answer_pending(cut(rec, closed), w1) == "the client's handling of the RST"
    after = dataclasses.replace(rec, events=[e for e in rec.events if e.ts_ns <= closed.ts_ns])
    assert answer_pending(after, w1) is None


def test_shutdown_wr_waits_for_the_ack_only(recs):
    rec = recs["shutdown-wr"]
    w1 = write(rec, 1)
    data = packet(rec, "client", 0x08)
    ack = packet(rec, "server", 0x10, data.ts_ns)
    assert answer_pending(cut(rec, ack), w1) == "the server's answer to the data"
    assert answer_pending(dataclasses.replace(rec, events=[e for e in rec.events if e.ts_ns <= ack.ts_ns]), w1) is None


def test_failed_writes_and_runs_without_packets_wait_for_nothing(recs):
    rec = recs["close"]
    assert answer_pending(rec, write(rec, 2)) is None  # EPIPE: nothing was sent
    no_packets = dataclasses.replace(rec, events=[e for e in rec.events if e.kind != Kind.PACKET])
    assert answer_pending(no_packets, write(rec, 1)) is None
