"""The kernel event: bpf/halfclose.h mirrored once in ctypes, decoded in one place.

`Event` is the frozen, JSON-ready form every later stage (annotation, JSON,
recordings, tests) works on. tests/unit/test_events.py parses the C header and
fails if this mirror drifts from it.
"""
from __future__ import annotations

import ctypes
import enum
import json
import struct
from dataclasses import dataclass, fields


class Kind(enum.IntEnum):
    """enum hc_kind of bpf/halfclose.h."""

    SENDMSG_ENTER = 1
    SENDMSG_RETURN = 2
    WAIT_CONNECT_ENTER = 3
    WAIT_CONNECT_RETURN = 4
    STREAM_ERROR_ENTER = 5
    STREAM_ERROR_RETURN = 6
    TCP_RESET = 7
    DONE_WITH_ERROR = 8
    TCP_DONE = 9
    TCP_DONE_RETURN = 10
    TCP_FIN = 11
    TCP_FIN_RETURN = 12
    SET_STATE = 13
    RESET_TP = 14
    ERROR_REPORT = 15
    SEND_LENGTH = 16
    WRITE_ENTER = 17
    WRITE_EXIT = 18
    PACKET = 20
    SEND_RESET = 21
    ACTIVE_RESET = 22
    RECVMSG_ENTER = 23
    RECVMSG_RETURN = 24
    SIGNAL = 25
    READ_ENTER = 26
    READ_EXIT = 27
    GETSOCKOPT_ENTER = 28
    WATCH_CALL_ENTER = 30
    WATCH_CALL_EXIT = 31
    WATCH_ADDR = 32
    WATCH_DESTROY = 33


class RawEvent(ctypes.Structure):
    """struct hc_event of bpf/halfclose.h, field for field."""

    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("sk", ctypes.c_uint64),
        ("value", ctypes.c_int64),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("sk_err", ctypes.c_int32),
        ("kind", ctypes.c_uint32),
        ("fd", ctypes.c_int32),
        ("cpu", ctypes.c_uint32),
        ("seq", ctypes.c_uint32),
        ("ack_seq", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("state", ctypes.c_uint8),
        ("old_state", ctypes.c_uint8),
        ("sk_shutdown", ctypes.c_uint8),
        ("tcp_flags", ctypes.c_uint8),
        ("comm", ctypes.c_char * 16),
    ]


# Which functions each kind belongs to, and whether it is an entry or a return.
KIND_FUNC = {
    Kind.SENDMSG_ENTER: "tcp_sendmsg_locked",
    Kind.SENDMSG_RETURN: "tcp_sendmsg_locked",
    Kind.WAIT_CONNECT_ENTER: "sk_stream_wait_connect",
    Kind.WAIT_CONNECT_RETURN: "sk_stream_wait_connect",
    Kind.STREAM_ERROR_ENTER: "sk_stream_error",
    Kind.STREAM_ERROR_RETURN: "sk_stream_error",
    Kind.TCP_RESET: "tcp_reset",
    Kind.DONE_WITH_ERROR: "tcp_done_with_error",
    Kind.TCP_DONE: "tcp_done",
    Kind.TCP_DONE_RETURN: "tcp_done",
    Kind.TCP_FIN: "tcp_fin",
    Kind.TCP_FIN_RETURN: "tcp_fin",
    Kind.SET_STATE: "inet_sock_set_state",
    Kind.RESET_TP: "tcp_receive_reset",
    Kind.ERROR_REPORT: "inet_sk_error_report",
    Kind.SEND_LENGTH: "sock_send_length",
    Kind.WRITE_ENTER: "sys_enter_write",
    Kind.WRITE_EXIT: "sys_exit_write",
    Kind.PACKET: "net_dev_start_xmit",
    Kind.SEND_RESET: "send_reset",
    Kind.ACTIVE_RESET: "tcp_send_active_reset",
    Kind.RECVMSG_ENTER: "tcp_recvmsg",
    Kind.RECVMSG_RETURN: "tcp_recvmsg",
    Kind.SIGNAL: "signal_generate",
    Kind.READ_ENTER: "sys_enter_read",
    Kind.READ_EXIT: "sys_exit_read",
    Kind.GETSOCKOPT_ENTER: "sk_getsockopt",
    Kind.WATCH_CALL_ENTER: "watch_call",
    Kind.WATCH_CALL_EXIT: "watch_call",
    Kind.WATCH_ADDR: "watch_join",
    Kind.WATCH_DESTROY: "tcp_destroy_sock",
}
RETURN_KINDS = {
    Kind.SENDMSG_RETURN,
    Kind.WAIT_CONNECT_RETURN,
    Kind.STREAM_ERROR_RETURN,
    Kind.TCP_DONE_RETURN,
    Kind.TCP_FIN_RETURN,
    Kind.RECVMSG_RETURN,
}


# The write-like calls of watch mode: HC_CALL_* of bpf/ (the watch's call events carry one).
CALLS = {1: "write", 2: "sendto", 3: "sendmsg", 4: "writev"}

# Raw fields whose meaning depends on the kind (see bpf/halfclose.h), and the
# named field each one is decoded into. Every other kind keeps fd and old_state
# in their own meaning (the file descriptor; the state before a state change).
KIND_FIELDS: dict[Kind, dict[str, str]] = {
    Kind.SEND_RESET: {"old_state": "tw_substate"},
    Kind.SIGNAL: {"fd": "signal_result"},
    Kind.WATCH_CALL_ENTER: {"old_state": "call"},
    Kind.WATCH_CALL_EXIT: {"old_state": "call"},
    Kind.WATCH_ADDR: {"old_state": "family", "fd": "addr_part"},
}
# What a raw field holds when it does not apply (hc_fill in bpf/sock_read.h sets fd = -1).
RAW_UNSET = {"fd": -1, "old_state": 0}


@dataclass(frozen=True)
class Event:
    """One kernel event; the same field names as struct hc_event and the JSON,
    plus the named fields that KIND_FIELDS decodes (None where they do not apply)."""

    ts_ns: int
    sk: int
    value: int
    pid: int
    tid: int
    sk_err: int
    kind: Kind
    fd: int  # a file descriptor, or -1
    cpu: int
    seq: int
    ack_seq: int
    sport: int
    dport: int
    state: int
    old_state: int  # SET_STATE: the state before; 0 otherwise
    sk_shutdown: int
    tcp_flags: int
    comm: str
    tw_substate: int | None = None  # SEND_RESET from a timewait socket: its substate
    signal_result: int | None = None  # SIGNAL: signal_generate's result (TRACE_SIGNAL_*)
    call: str | None = None  # WATCH_CALL_*: write, sendto, sendmsg or writev
    family: int | None = None  # WATCH_ADDR: the socket's address family (AF_*)
    addr_part: int | None = None  # WATCH_ADDR: which 8 address bytes `value` holds (0: IPv4, 1-4: IPv6)

    @property
    def func(self) -> str:
        return KIND_FUNC[self.kind]

    @property
    def is_return(self) -> bool:
        return self.kind in RETURN_KINDS

    def to_json(self) -> dict:
        """The raw record (struct hc_event's fields), as recordings store it."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name in RAW_FIELDS}
        for raw, named in KIND_FIELDS.get(self.kind, {}).items():
            value = getattr(self, named)
            d[raw] = _call_number(value) if named == "call" else value
        d["kind"] = self.kind.name
        d["sk"] = f"{self.sk:#x}"
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Event":
        d = dict(d)
        d["kind"] = Kind[d["kind"]]
        for name, default in (("fd", -1), ("cpu", 0), ("seq", 0), ("ack_seq", 0), ("tcp_flags", 0)):
            d.setdefault(name, default)
        d["sk"] = int(d["sk"], 16) if isinstance(d["sk"], str) else d["sk"]
        return _named(d)


RAW_FIELDS = tuple(name for name, _ in RawEvent._fields_)
_CALL_NUMBER = {name: num for num, name in CALLS.items()}


def _call_number(name: str) -> int:
    """HC_CALL_* of a decoded call; a number the tool did not know stays that number."""
    return _CALL_NUMBER[name] if name in _CALL_NUMBER else int(name)


def _named(raw: dict) -> Event:
    """The one place a raw record's kind-dependent fields get their names."""
    values = {k: raw[k] for k in RAW_FIELDS}
    for field_name, named in KIND_FIELDS.get(values["kind"], {}).items():
        v = values[field_name]
        values[named] = CALLS.get(v, str(v)) if named == "call" else v
        values[field_name] = RAW_UNSET[field_name]
    return Event(**values)


def decode(raw: RawEvent) -> Event:
    """A raw kernel event from the ring buffer, decoded (the live twin of Event.from_json)."""
    values = {name: getattr(raw, name) for name in RAW_FIELDS}
    values["kind"] = Kind(raw.kind)
    values["comm"] = raw.comm.decode("utf-8", "replace")
    return _named(values)


def decode_bytes(buf: bytes) -> Event:
    return decode(RawEvent.from_buffer_copy(buf))


# --- the watch's fast path: raw records as bytes, read with struct -------------------
# A busy watch sees ~100,000 events a second and annotates few of its connections: it
# keeps each record's bytes (80 B) and reads only the fields it needs; an Event is made
# only for a connection that is annotated (tracer/process/stream.py).

RAW = struct.Struct("<QQqIIiIiIIIHHBBBB16s")  # struct hc_event, field for field (RAW_FIELDS)
RAW_SIZE = RAW.size
# The fields that group records by connection: ts_ns, sk, then kind and fd (after value, pid,
# tid, sk_err: 20 bytes).
RAW_HEAD = struct.Struct("<QQ20xIi")
RAW_INDEX = {name: i for i, name in enumerate(n for n, _ in RawEvent._fields_)}


def rows_of(records) -> list[tuple[int, int, int, int, bytes]]:
    """Records' bytes as (ts_ns, sk, kind, fd, record) rows, what a watch groups by (the ring
    reader, tracer/collect/ringbuf.py, cuts them so itself)."""
    return [RAW_HEAD.unpack_from(b) + (b,) for b in records]


def from_raw(buf: bytes) -> Event:
    """A raw record's bytes, decoded as decode() does."""
    values = dict(zip(RAW_FIELDS, RAW.unpack(buf)))
    values["kind"] = Kind(values["kind"])
    values["comm"] = values["comm"].split(b"\0", 1)[0].decode("utf-8", "replace")
    return _named(values)


_KIND_NAMES = {int(k): k.name for k in Kind}


def raw_json_line(buf: bytes) -> str:
    """A raw record as a recording's "event" line (the same fields as Event.to_json()),
    without making an Event: a watch's --record streams every event."""
    (ts, sk, value, pid, tid, sk_err, kind, fd, cpu, seq, ack, sport, dport, state, old, shut, flags,
     comm) = RAW.unpack(buf)
    name = _KIND_NAMES.get(kind)
    if name is None:
        raise ValueError(f"unknown event kind {kind}")
    c = json.dumps(comm.split(b"\0", 1)[0].decode("utf-8", "replace"))
    return (f'{{"record": "event", "ts_ns": {ts}, "sk": "{sk:#x}", "value": {value}, "pid": {pid}, '
            f'"tid": {tid}, "sk_err": {sk_err}, "kind": "{name}", "fd": {fd}, "cpu": {cpu}, "seq": {seq}, '
            f'"ack_seq": {ack}, "sport": {sport}, "dport": {dport}, "state": {state}, "old_state": {old}, '
            f'"sk_shutdown": {shut}, "tcp_flags": {flags}, "comm": {c}}}\n')


def to_raw(e: Event) -> bytes:
    """An Event back to its record's bytes (a recording replayed through the watch's stream)."""
    d = e.to_json()
    d["kind"] = int(e.kind)
    d["sk"] = e.sk
    d["comm"] = e.comm.encode("utf-8", "replace")[:15]
    return RAW.pack(*(d[name] for name in RAW_FIELDS))


# --- packet bytes: struct hc_packet, the second ring buffer (bpf/shared/capture.bpf.c) ---


class RawPacket(ctypes.Structure):
    """struct hc_packet of bpf/halfclose.h, field for field."""

    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("netns", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
        ("caplen", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("data", ctypes.c_uint8 * 256),
    ]


@dataclass(frozen=True)
class Packet:
    """One packet's bytes from its network header on: the IP and TCP headers and what
    could be read of its payload. ts_ns is its HC_PACKET event's, which pairs them."""

    ts_ns: int
    netns: int
    len: int  # the packet's length (IP total length)
    data: bytes  # the captured bytes (caplen = len(data)), from the IP header on
    cpu: int = 0

    @property
    def caplen(self) -> int:
        return len(self.data)

    def to_json(self) -> dict:
        return {"ts_ns": self.ts_ns, "netns": self.netns, "len": self.len, "cpu": self.cpu,
                "data": self.data.hex()}

    @classmethod
    def from_json(cls, d: dict) -> "Packet":
        return cls(int(d["ts_ns"]), int(d["netns"]), int(d["len"]), bytes.fromhex(d["data"]), int(d.get("cpu", 0)))


def decode_packet(raw: RawPacket) -> Packet:
    """A raw packet record from the ring buffer; only its first caplen bytes are the packet's."""
    n = min(raw.caplen, len(raw.data))
    return Packet(raw.ts_ns, raw.netns, raw.len, bytes(raw.data[:n]), raw.cpu)


def decode_packet_bytes(buf: bytes) -> Packet:
    return decode_packet(RawPacket.from_buffer_copy(buf))
