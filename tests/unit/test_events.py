"""tracer/events.py must mirror bpf/halfclose.h exactly: the BPF programs write
struct hc_event into the ring buffer and Python reads it with RawEvent, so any
drift in names, order, sizes or signedness silently garbles every event.

The header is parsed here with a small regex parser (no code from tracer/)."""
import ctypes
import re
import struct

import pytest

from tracer.record import event as events
from tracer.collect.sources import bpf_dir
from tracer.record.event import Event, Kind, RawEvent, decode, decode_bytes

HEADER = bpf_dir() / "halfclose.h"  # the one event layout

# C type -> (size in bytes, signed). Linux uapi: include/uapi/asm-generic/int-ll64.h.
C_TYPES = {
    "__u64": (8, False),
    "__s64": (8, True),
    "__u32": (4, False),
    "__s32": (4, True),
    "__u16": (2, False),
    "__s16": (2, True),
    "__u8": (1, False),
    "__s8": (1, True),
    "char": (1, None),
}
# struct format letters for the same types (little-endian is the BPF target byte order on x86).
STRUCT_CODE = {"__u64": "Q", "__s64": "q", "__u32": "I", "__s32": "i", "__u16": "H", "__s16": "h",
               "__u8": "B", "__s8": "b"}


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def parse_struct(text: str, name: str) -> list[tuple[str, str, int | None]]:
    """[(c_type, field, array_len or None)] of `struct name { ... };`."""
    body = re.search(r"struct\s+%s\s*\{(.*?)\};" % name, _strip_comments(text), re.S)
    assert body, f"struct {name} not found in {HEADER}"
    out = []
    for decl in body.group(1).split(";"):
        decl = decl.strip()
        if not decl:
            continue
        m = re.fullmatch(r"(__[us]\d+|char)\s+(\w+)\s*(?:\[\s*(\d+)\s*\])?", decl)
        assert m, f"cannot parse field declaration {decl!r}"
        out.append((m.group(1), m.group(2), int(m.group(3)) if m.group(3) else None))
    return out


def parse_enum(text: str, name: str) -> dict[str, int]:
    body = re.search(r"enum\s+%s\s*\{(.*?)\};" % name, _strip_comments(text), re.S)
    assert body, f"enum {name} not found in {HEADER}"
    return {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(\d+)", body.group(1))}


def enum_comments(text: str, name: str) -> dict[str, str]:
    """HC_X -> the comment on its line (the header documents the function of each kind)."""
    body = re.search(r"enum\s+%s\s*\{(.*?)\};" % name, text, re.S).group(1)
    return dict(re.findall(r"(HC_\w+)\s*=\s*\d+,?\s*/\*\s*(.*?)\s*\*/", body))


@pytest.fixture(scope="module")
def header_text() -> str:
    return HEADER.read_text()


@pytest.fixture(scope="module")
def c_fields(header_text):
    return parse_struct(header_text, "hc_event")


def _c_layout(c_fields):
    """Offsets and total size with the C ABI's natural alignment (x86-64 and BPF agree)."""
    off, offsets, max_align = 0, {}, 1
    for ctype, name, n in c_fields:
        size, _ = C_TYPES[ctype]
        align = size
        off = (off + align - 1) // align * align
        offsets[name] = off
        off += size * (n or 1)
        max_align = max(max_align, align)
    return offsets, (off + max_align - 1) // max_align * max_align


def test_parser_sees_the_whole_struct(c_fields, header_text):
    # Guard for the parser itself: every ';' in the struct body became a field.
    body = re.search(r"struct\s+hc_event\s*\{(.*?)\};", _strip_comments(header_text), re.S).group(1)
    assert len(c_fields) == body.count(";") and len(c_fields) > 5


def test_rawevent_field_names_and_order_match_header(c_fields):
    assert [name for name, _ in RawEvent._fields_] == [name for _, name, _ in c_fields]


def test_rawevent_field_types_match_header(c_fields):
    ctypes_of = dict(RawEvent._fields_)
    for ctype, name, n in c_fields:
        size, signed = C_TYPES[ctype]
        t = ctypes_of[name]
        if n is not None:  # char comm[16]
            assert issubclass(t, ctypes.Array), name
            assert t._length_ == n, name
            assert t._type_ is ctypes.c_char, name
            continue
        assert ctypes.sizeof(t) == size, f"{name}: {ctype} is {size} bytes, ctypes has {ctypes.sizeof(t)}"
        # Signedness: -1 stays negative only in a signed type.
        assert (t(-1).value < 0) == signed, f"{name}: {ctype} signed={signed}"


def test_rawevent_offsets_and_size_match_c_layout(c_fields):
    offsets, size = _c_layout(c_fields)
    for name, off in offsets.items():
        assert getattr(RawEvent, name).offset == off, name
    assert ctypes.sizeof(RawEvent) == size
    # The header states its size ("no hidden padding (64 bytes)"): the C layout and
    # the mirror must both have exactly that size, with no padding anywhere.
    stated = int(re.search(r"\((\d+) bytes\)", HEADER.read_text()).group(1))
    assert size == stated == ctypes.sizeof(RawEvent)
    assert size == sum(C_TYPES[t][0] * (n or 1) for t, _, n in c_fields)  # no padding


def test_kind_matches_enum_hc_kind(header_text):
    c_enum = parse_enum(header_text, "hc_kind")
    assert c_enum, "no enum members parsed"
    assert {k.removeprefix("HC_"): v for k, v in c_enum.items()} == {k.name: k.value for k in Kind}


def test_kind_function_and_entry_return_match_header_comments(header_text):
    """The header's comment on each kind names the function and entry/return; so must KIND_FUNC/RETURN_KINDS."""
    comments = enum_comments(header_text, "hc_kind")
    assert set(comments) == {"HC_" + k.name for k in Kind}
    for kind in Kind:
        text = comments["HC_" + kind.name]
        assert events.KIND_FUNC[kind] in text, (kind, text)
        # "tcp_sendmsg_locked entry; value = size" -> "entry"
        m = re.search(re.escape(events.KIND_FUNC[kind]) + r"\s+(entry|return)\b", text)
        # kprobe kinds say "<func> entry" / "<func> return"; tracepoint kinds are never returns.
        assert Event_of(kind).is_return == bool(m and m.group(1) == "return"), kind


def Event_of(kind: Kind, **kw) -> Event:
    """An Event made the way the tool makes them: decoded from a RawEvent."""
    raw = RawEvent()
    raw.kind = kind
    raw.comm = b"x"
    for k, v in kw.items():
        setattr(raw, k, v.encode() if k == "comm" else v)
    return decode(raw)


def _pack(c_fields, values: dict) -> bytes:
    """Pack a struct hc_event with `struct`, from the parsed header (independent of RawEvent)."""
    fmt = "<" + "".join(f"{n}s" if n else STRUCT_CODE[t] for t, _, n in c_fields)
    return struct.pack(fmt, *(values.get(name, 0) for _, name, _ in c_fields))


def test_decode_bytes_of_a_packed_struct(c_fields):
    values = dict(
        ts_ns=32236888064, sk=0xFF1190DD44138900, value=-32, pid=246, tid=247, sk_err=-5,
        kind=Kind.WAIT_CONNECT_RETURN.value, sport=45878, dport=9999, state=7, old_state=8,
        sk_shutdown=3, comm=b"python3",
    )
    buf = _pack(c_fields, values)
    assert len(buf) == ctypes.sizeof(RawEvent)
    ev = decode_bytes(buf)
    assert ev.kind is Kind.WAIT_CONNECT_RETURN
    assert ev.comm == "python3"
    for name in ("ts_ns", "sk", "value", "pid", "tid", "sk_err", "sport", "dport", "state",
                 "old_state", "sk_shutdown"):
        assert getattr(ev, name) == values[name], name
    assert ev.func == "sk_stream_wait_connect" and ev.is_return


def test_decode_bytes_full_width_comm_and_extremes(c_fields):
    # comm is TASK_COMM_LEN (16) with no NUL when the name is 16 chars; u64 max; s64 min.
    values = dict(ts_ns=2**64 - 1, sk=2**64 - 1, value=-(2**63), pid=2**32 - 1, tid=0, sk_err=-(2**31),
                  kind=Kind.SET_STATE.value, sport=65535, dport=0, state=255, old_state=255,
                  sk_shutdown=255, comm=b"ksoftirqd/123456")
    ev = decode_bytes(_pack(c_fields, values))
    assert ev.comm == "ksoftirqd/123456"
    assert (ev.ts_ns, ev.sk, ev.value, ev.pid, ev.sk_err) == (2**64 - 1, 2**64 - 1, -(2**63), 2**32 - 1, -(2**31))


def test_rawevent_bytes_round_trip():
    vals = dict(ts_ns=5, sk=0xFF11, value=6, pid=10, tid=11, sk_err=32, sport=1, dport=2, state=8,
                old_state=0, sk_shutdown=1)
    raw = RawEvent(kind=Kind.SENDMSG_ENTER, comm=b"a.out", **vals)
    ev = decode_bytes(bytes(raw))
    assert ev.kind is Kind.SENDMSG_ENTER and ev.comm == "a.out"
    assert {k: getattr(ev, k) for k in vals} == vals


def test_event_json_round_trip(rec):
    assert rec.events, "the recording has events"
    for ev in rec.events:
        d = ev.to_json()
        assert d["kind"] == ev.kind.name
        assert d["sk"] == hex(ev.sk)
        assert Event.from_json(d) == ev


def test_event_from_json_accepts_int_sk_and_ignores_extra_keys():
    ev = Event_of(Kind.TCP_RESET, sk=0xFF1190DD44138900)
    d = ev.to_json()
    d["sk"] = ev.sk
    d["record"] = "event"
    assert Event.from_json(d) == ev


# --- struct hc_packet: the packet bytes of the second ring buffer (bpf/shared/capture.bpf.c) ---


@pytest.fixture(scope="module")
def packet_fields(header_text):
    return parse_struct(header_text, "hc_packet")


def test_rawpacket_mirrors_struct_hc_packet(packet_fields, header_text):
    assert [name for name, _ in events.RawPacket._fields_] == [name for _, name, _ in packet_fields]
    ctypes_of = dict(events.RawPacket._fields_)
    for ctype, name, n in packet_fields:
        size, signed = C_TYPES[ctype]
        t = ctypes_of[name]
        if n is not None:  # __u8 data[256]
            assert issubclass(t, ctypes.Array) and t._length_ == n and ctypes.sizeof(t._type_) == size, name
            continue
        assert ctypes.sizeof(t) == size and (t(-1).value < 0) == signed, name
    offsets, size = _c_layout(packet_fields)
    for name, off in offsets.items():
        assert getattr(events.RawPacket, name).offset == off, name
    # The header states its size: the C layout, the mirror and the sum of the fields agree (no padding).
    stated = int(re.search(r"(\d+) bytes, no padding\. \*/\s*struct hc_packet\b", header_text).group(1))
    assert size == stated == ctypes.sizeof(events.RawPacket)
    assert size == sum(C_TYPES[t][0] * (n or 1) for t, _, n in packet_fields)


def test_decode_packet_keeps_caplen_bytes(packet_fields):
    data = bytes(range(60)) + b"\xff" * 196  # past caplen: a previous packet's leftovers in the scratch map
    fmt = "<" + "".join(f"{n}s" if n else STRUCT_CODE[t] for t, _, n in packet_fields)
    buf = struct.pack(fmt, 123456789, 4026532177, 72, 60, 1, data)
    p = events.decode_packet_bytes(buf)
    assert (p.ts_ns, p.netns, p.len, p.cpu, p.caplen) == (123456789, 4026532177, 72, 1, 60)
    assert p.data == bytes(range(60))
    assert events.Packet.from_json(p.to_json()) == p
