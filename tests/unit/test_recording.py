"""Recordings (JSON lines): what `--record FILE` writes must come back unchanged in
`replay FILE`, and a bad file must be refused with the line that is wrong."""
import io
import json

import pytest

from tracer.record.event import Kind
from tracer.record.recording import Recording


def _dump(rec: Recording) -> str:
    buf = io.StringIO()
    rec.dump(buf)
    return buf.getvalue()


def test_load_reads_every_record_of_the_file(rec, rec_path):
    kinds = [json.loads(line)["record"] for line in rec_path.read_text().splitlines() if line.strip()]
    assert kinds[0] == "meta"
    assert len(rec.marks) == kinds.count("mark")
    assert len(rec.writes) == kinds.count("write")
    assert len(rec.events) == kinds.count("event")
    meta = json.loads(rec_path.read_text().splitlines()[0])
    assert rec.kernel == meta["kernel"] and rec.client_port == meta["client_port"]
    assert rec.state_names == {int(k): v for k, v in meta["state_names"].items()}
    assert all(isinstance(e.kind, Kind) for e in rec.events)


def test_dump_load_round_trip_is_equal(rec):
    again = Recording.load_lines(io.StringIO(_dump(rec)))
    assert again == rec
    # and stable: dumping the reloaded recording gives the same text
    assert _dump(again) == _dump(rec)


def test_dump_load_round_trip_via_file(rec, tmp_path):
    path = tmp_path / "r.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        rec.dump(f)
    assert Recording.load(path) == rec


def test_round_trip_of_an_empty_recording_with_lost_events():
    rec = Recording(kernel="6.18.0", backend="kprobe", lost_events=7, state_names={1: "ESTABLISHED"})
    again = Recording.load_lines(io.StringIO(_dump(rec)))
    assert again == rec
    assert again.lost_events == 7 and again.state_names == {1: "ESTABLISHED"}


def test_blank_lines_are_ignored(rec):
    text = _dump(rec).replace("\n", "\n\n")
    assert Recording.load_lines(io.StringIO(text)) == rec


def _with_bad_line(rec, lineno: int, bad: str) -> list[str]:
    lines = _dump(rec).splitlines(keepends=True)
    lines.insert(lineno - 1, bad + "\n")
    return lines


def _an_event_line(rec) -> dict:
    return json.loads(next(line for line in _dump(rec).splitlines() if '"record": "event"' in line))


BAD_LINES = {
    "not json": lambda rec: "this is not json",
    "truncated json": lambda rec: '{"record": "event", "ts_ns": 12',
    "unknown record type": lambda rec: json.dumps({"record": "frobnicate"}),
    "no record key": lambda rec: json.dumps({"kernel": "6.1"}),
    "unknown event kind": lambda rec: json.dumps({**_an_event_line(rec), "kind": "NOT_A_KIND"}),
    "event missing a field": lambda rec: json.dumps({k: v for k, v in _an_event_line(rec).items() if k != "sk"}),
    "event with bad sk": lambda rec: json.dumps({**_an_event_line(rec), "sk": "0xZZ"}),
    "write with extra field": lambda rec: json.dumps({"record": "write", "index": 1, "bogus": 2}),
    "json array": lambda rec: "[1, 2]",
}


@pytest.mark.parametrize("what", sorted(BAD_LINES))
def test_bad_line_gives_value_error_with_line_number(rec, what):
    lines = _with_bad_line(rec, 5, BAD_LINES[what](rec))
    with pytest.raises(ValueError, match=r"\bline 5\b"):
        Recording.load_lines(lines)


@pytest.mark.parametrize("bad", ["null", "42", '"a string"'])
def test_json_scalar_line_gives_value_error_with_line_number(rec, bad):
    with pytest.raises(ValueError, match=r"\bline 3\b"):
        Recording.load_lines(_with_bad_line(rec, 3, bad))


def test_meta_with_malformed_state_names_gives_value_error(rec):
    with pytest.raises(ValueError, match=r"\bline 1\b"):
        Recording.load_lines([json.dumps({"record": "meta", "state_names": [1, 2]}) + "\n"])


def test_non_utf8_line_in_file_names_its_line(rec, tmp_path):
    path = tmp_path / "r.jsonl"
    data = "".join(_with_bad_line(rec, 4, "X")).encode()
    path.write_bytes(data.replace(b"X\n", b"\xff\xfe garbage\n", 1))
    with pytest.raises(ValueError, match=r"\bline 4\b"):
        Recording.load(path)


DATA_DIR = __import__("pathlib").Path(__file__).resolve().parent / "data"


@pytest.mark.parametrize("path", sorted(DATA_DIR.glob("*.jsonl")), ids=lambda p: p.stem)
def test_every_recorded_event_survives_decoding_to_named_fields(path):
    """Events are decoded once into named fields (a signal's result, a call, an address
    part...) and written back raw: every recorded event line comes back byte for byte."""
    from tracer.record.event import Event

    lines = [json.loads(line) for line in path.read_text().splitlines() if '"record": "event"' in line]
    assert lines
    for d in lines:
        again = {"record": "event", **Event.from_json(d).to_json()}
        assert json.dumps(again) == json.dumps(d), d


def test_kind_dependent_fields_get_their_own_names():
    from tracer.record.event import Event

    base = {"ts_ns": 1, "sk": "0x1", "value": 13, "pid": 1, "tid": 1, "sk_err": 0, "cpu": 0, "seq": 0,
            "ack_seq": 0, "sport": 0, "dport": 0, "state": 0, "sk_shutdown": 0, "tcp_flags": 0, "comm": "x"}
    sig = Event.from_json({**base, "kind": "SIGNAL", "fd": 1, "old_state": 0})
    assert (sig.signal_result, sig.fd) == (1, -1)  # TRACE_SIGNAL_IGNORED, not a file descriptor
    call = Event.from_json({**base, "kind": "WATCH_CALL_ENTER", "fd": 3, "old_state": 2})
    assert (call.call, call.fd, call.old_state) == ("sendto", 3, 0)
    addr = Event.from_json({**base, "kind": "WATCH_ADDR", "fd": 3, "old_state": 10})
    assert (addr.family, addr.addr_part, addr.fd, addr.old_state) == (10, 3, -1, 0)
    state = Event.from_json({**base, "kind": "SET_STATE", "fd": -1, "old_state": 8})
    assert (state.old_state, state.call, state.family) == (8, None, None)
