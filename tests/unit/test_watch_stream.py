"""A busy watch: incident selection, folding of alike calls, the stream's bounds, and the
streamed recording -- on recorded watches from this 6.18 microVM (tracepoint backend):

- watch-6.18-tracepoint-busy: `watch --port P --duration 4 --json --record FILE` while
  scripts/bench_load.c opened 40 connections in 1 s on 127.0.0.1:P, 3 of them the
  half-close (the server closes without answering; the client writes twice: the second
  fails with EPIPE). Both ends are watched: 80 connections, 77 healthy.
- watch-6.18-tracepoint-curl413: `watch --port P --record FILE -- curl -sS -H 'Expect:'
  --data-binary @3MB http://127.0.0.1:P/` against a Python server that reads the request
  head, waits 0.3 s, answers 413 and closes with the body unread: the kernel resets the
  connection. curl's 154-byte request, then 44 writes of 65,536 bytes, then the RST in
  ESTABLISHED and ECONNRESET in sk_err.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tracer.cli import main
from tracer.process.connections import WatchRecording, connections
from tracer.process.fold import Fold, fold
from tracer.process.selection import CHECK_EVERY, Selection, replay
from tracer.process.stream import End, Rule, Stream, classify, state_codes
from tracer.process.timeline import IoNote
from tracer.record.event import Kind, rows_of, to_raw
from tracer.record.recording import WatchRecordWriter

DATA = Path(__file__).resolve().parent / "data"
BUSY = DATA / "watch-6.18-tracepoint-busy.jsonl"
CURL = DATA / "watch-6.18-tracepoint-curl413.jsonl"
HALF_CLOSE = ("write_after_fin", "write_after_rst", "call_failed", "rst_received")
ECONNRESET, EAGAIN = 104, 11


def invoke(args):
    return CliRunner().invoke(main, args, env={"COLUMNS": "200"})


def objs(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x.strip()]


@pytest.fixture(scope="module")
def busy() -> WatchRecording:
    return WatchRecording.load(BUSY)


@pytest.fixture(scope="module")
def curl() -> WatchRecording:
    return WatchRecording.load(CURL)


class Keep:
    """A sink that keeps what it is given."""

    def __init__(self):
        self.shown, self.ended = [], None

    def start(self, wrec) -> None: ...

    def connection(self, ct) -> None:
        self.shown.append(ct)

    def status(self, tally, live) -> None: ...

    def end(self, wrec, sel) -> None:
        self.ended = sel


# --- incidents first -----------------------------------------------------------------


def test_the_half_closed_connections_are_the_incidents(busy):
    sink = Keep()
    sel = replay(busy, sink, show_all=False)
    t = sel.tally
    assert (t.connections, t.healthy, t.incidents, t.shown) == (80, 77, 3, 3)
    for ct in sink.shown:
        assert [r.value for r in ct.rules] == list(HALF_CLOSE)
        assert [(k.ret, k.errno) for k in ct.calls][-1] == (-1, "EPIPE")
        assert ct.rport == ct.conn.ports()[1] and ct.writers  # the client's end: it wrote
    assert {r.value: n for r, n in t.by_rule.items()} == {r: 3 for r in HALF_CLOSE}


def test_all_shows_every_connection_and_counts_the_same(busy):
    sink = Keep()
    sel = replay(busy, sink, show_all=True)
    assert (sel.tally.connections, sel.tally.incidents, sel.tally.shown) == (80, 3, 80)
    assert sum(1 for ct in sink.shown if ct.rules) == 3
    # Both ends of each connection are watched (loopback): each names the other as its peer.
    by_conn = {ct.conn.conn: ct for ct in sink.shown}
    assert all(by_conn[ct.peer].peer == ct.conn.conn for ct in sink.shown)


def test_console_shows_incidents_json_shows_all_unless_incidents_only():
    text = invoke(["watch", "--replay", str(BUSY)]).output
    assert len(re.findall(r"^connection #\d+", text, re.M)) == 3
    assert "80 connections: 77 healthy, 3 incidents" in text and "3 shown" in text
    every = invoke(["watch", "--replay", str(BUSY), "--all"]).output
    assert len(re.findall(r"^connection #\d+", every, re.M)) == 80
    lines = objs(invoke(["watch", "--replay", str(BUSY), "--json"]).output)
    assert len([o for o in lines if o["type"] == "connection"]) == 80
    few = objs(invoke(["watch", "--replay", str(BUSY), "--json", "--incidents-only"]).output)
    conns = [o for o in few if o["type"] == "connection"]
    assert [c["incident"] for c in conns] == [list(HALF_CLOSE)] * 3
    summary = few[-1]
    assert (summary["connections"], summary["healthy"], summary["incidents"], summary["shown"]) == (80, 77, 3, 3)


def test_incidents_only_is_for_json():
    r = invoke(["watch", "--replay", str(BUSY), "--incidents-only"])
    assert r.exit_code == 2 and "--incidents-only is for --json" in r.output
    r = invoke(["watch", "--replay", str(BUSY), "--json", "--all", "--incidents-only"])
    assert r.exit_code == 2 and "give one of them" in r.output


def _healthy_client(busy) -> list:
    """The events of a healthy client end: it wrote its request and read the answer."""
    ct = next(ct for ct in connections(busy) if not ct.rules and ct.calls)
    return ct.conn.events


def _rules(busy, events) -> list[str]:
    return [r.value for r in classify([to_raw(e) for e in events], state_codes(busy.rec.state_names))]


def test_each_rule_from_a_healthy_connection_changed(busy):
    events = _healthy_client(busy)
    assert _rules(busy, events) == []
    exit_ = next(e for e in events if e.kind == Kind.WATCH_CALL_EXIT)
    failed = [dataclasses.replace(e, value=-ECONNRESET) if e is exit_ else e for e in events]
    assert _rules(busy, failed) == ["call_failed"]
    # EAGAIN: a non-blocking socket's full buffer, retried by every busy server: no incident.
    again = [dataclasses.replace(e, value=-EAGAIN) if e is exit_ else e for e in events]
    assert _rules(busy, again) == []
    enter = next(e for e in events if e.kind == Kind.WATCH_CALL_ENTER)
    after_fin = [dataclasses.replace(e, sk_shutdown=1) if e is enter else e for e in events]
    assert _rules(busy, after_fin) == ["write_after_fin"]
    names = {v: k for k, v in busy.rec.state_names.items()}
    closing = next(e for e in events if e.kind == Kind.SET_STATE and e.old_state == names["ESTABLISHED"])
    aborted = [dataclasses.replace(e, state=names["CLOSE"]) if e is closing else e for e in events]
    assert _rules(busy, aborted) == ["rst_sent"]
    sigpipe = dataclasses.replace(exit_, kind=Kind.SIGNAL, value=13, ts_ns=exit_.ts_ns + 1, call=None,
                                  signal_result=0)
    assert _rules(busy, events + [sigpipe]) == ["sigpipe"]


# --- repeated writes folded -----------------------------------------------------------


def test_curl_reads_as_one_folded_line(curl):
    text = invoke(["watch", "--replay", str(CURL)]).output
    assert len(re.findall(r"^connection #\d+", text, re.M)) == 1
    assert "incident: an RST received" in text
    assert "write 1 (154 bytes) → 154" in text
    assert re.search(r"^ *\+[\d.]+ ms  writes 2–45: sendto 65,536 B each → 65,536, ESTABLISHED, queued$", text, re.M)
    assert not re.search(r"write \d+ \(65536 bytes\)", text)  # none of the 44 is shown whole
    assert "tcp_receive_reset: RST accepted in state ESTABLISHED" in text
    assert "error ECONNRESET stored in sk_err" in text
    assert "writes 2–45 (44 alike) = 65536" in text  # the findings fold them too
    assert re.search(r"#1 .*sendto 154 B → all, 44× sendto 65,536 B → all +RST received", text)


def test_a_call_that_differs_is_shown_whole_between_two_folds(curl):
    ct = connections(curl)[0]
    odd = ct.timeline.writes[19]  # write 20
    items = [dataclasses.replace(i, call=dataclasses.replace(i.call, ret=1000)) if i is odd else i
             for i in ct.items]
    folded = [i for i in fold(items) if isinstance(i, (IoNote, Fold))]
    shape = [(i.first.index, i.last.index) if isinstance(i, Fold) else i.index for i in folded]
    assert shape == [1, (2, 19), 20, (21, 45)]


def test_only_consecutive_calls_fold(curl):
    """A kernel step between two alike calls keeps them apart."""
    ct = connections(curl)[0]
    writes = ct.timeline.writes
    step = next(i for i in ct.items if not isinstance(i, IoNote))
    items = [writes[1], writes[2], step, writes[3], writes[4]]
    shape = [(i.first.index, i.last.index) if isinstance(i, Fold) else type(i).__name__ for i in fold(items)]
    assert shape == [(2, 3), type(step).__name__, (4, 5)]


# --- the stream's bounds ----------------------------------------------------------------


def _rows(wrec):
    return rows_of(to_raw(e) for e in sorted(wrec.rec.events, key=lambda e: e.ts_ns))


def test_connections_are_forgotten_once_handed_out(busy):
    s = Stream(busy.rec.state_names)
    rows = _rows(busy)
    s.add(rows)
    last = rows[-1][0]
    out = s.ready(last + s.grace_ns + 1)
    assert all(end == End.DESTROYED for _, end in out)
    for o, end in out:
        s.done(o, end)
    assert len(out) == 80 and not s.live  # nothing kept: every socket was destroyed


def test_a_long_connection_is_handed_out_in_parts(curl):
    s = Stream(curl.rec.state_names, max_records=40)
    s.add(_rows(curl))
    parts = [(o, end) for o, end in s.ready(0)]
    assert [end for _, end in parts] == [End.PART] * len(parts) and len(parts) >= 3
    for o, end in parts:
        assert o.records[0] in parts[0][0].records[:4] or o.part == 1  # each part has the socket's address
        s.done(o, end)
    assert len(s.live) == 1  # the last part, until its socket's destruction is old enough


def test_a_quiet_connection_is_handed_out(curl):
    rows = _rows(curl)
    s = Stream(curl.rec.state_names, quiet_ns=10**9)
    s.add([r for r in rows if r[2] != Kind.WATCH_DESTROY])
    out = s.ready(rows[-1][0] + 2 * 10**9)
    assert [end for _, end in out] == [End.QUIET]
    assert classify(out[0][0].records, state_codes(curl.rec.state_names)) == (Rule.RST_RECEIVED,)
    s.done(*out[0])
    # It comes back (its destruction, here): a later part, with the socket's addresses.
    s.add([r for r in rows if r[2] == Kind.WATCH_DESTROY])
    later = s.live[rows[0][1]]
    assert later.part == 2 and later.connection().addresses() == out[0][0].connection().addresses()


def test_when_time_runs_out_the_rest_is_counted_not_shown(busy):
    sink = Keep()
    s = Stream(busy.rec.state_names)
    sel = Selection(busy, s, sink, show_all=True)
    s.add(_rows(busy))
    calls = iter(range(1000))
    assert not sel.hand_out(s.rest(), stop=lambda: next(calls) >= 1)  # time is up at the second look
    t = sel.tally
    assert (t.connections, t.shown, t.unshown_at_stop) == (80, CHECK_EVERY, 80 - CHECK_EVERY)
    assert t.unshown_incidents == 3 - sum(1 for ct in sink.shown if ct.rules)


def test_behind_the_healthy_are_counted_and_the_incidents_shown(busy):
    """--all or JSON on a machine that cannot keep up: incidents first."""
    sink = Keep()
    s = Stream(busy.rec.state_names)
    sel = Selection(busy, s, sink, show_all=True, behind=lambda shedding: True)
    s.add(_rows(busy))
    sel.hand_out(s.rest())
    t = sel.tally
    assert (t.connections, t.shown, t.shed) == (80, 3, 77)
    assert all(ct.rules for ct in sink.shown)


# --- --record streams ------------------------------------------------------------------


def test_a_streamed_recording_reads_back(busy, tmp_path):
    f = tmp_path / "w.jsonl"
    with open(f, "w") as out:
        w = WatchRecordWriter(out)
        w.start(dataclasses.replace(busy, stop_reason="", stop_ns=0))
        rows = _rows(busy)
        w.records(rows[:100])
        w.records(rows[100:])
        w.finish(busy)
    again = WatchRecording.load(f)
    assert again.rec.events == sorted(busy.rec.events, key=lambda e: e.ts_ns)
    assert (again.stop_reason, again.stop_ns, again.rec.lost_events) == (busy.stop_reason, busy.stop_ns,
                                                                         busy.rec.lost_events)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(f.read_text().splitlines(keepends=True)[:-2]))
    with pytest.raises(ValueError, match="truncated"):
        WatchRecording.load(cut)
