"""Helpers for the tests: kernel constants and raw-event lookups in a Recording.

Everything here reads the recording's own events or states a kernel fact; no
value is copied from tracer/ (the code under test).
"""
from __future__ import annotations

import errno

from tracer.record.event import Event, Kind
from tracer.record.recording import Recording, WriteResult

# Linux errno: include/uapi/asm-generic/errno-base.h, EPIPE 32 (Python's errno is the same table).
EPIPE = errno.EPIPE
# include/net/sock.h (v6.1): RCV_SHUTDOWN 1, SEND_SHUTDOWN 2, SHUTDOWN_MASK 3.
RCV_SHUTDOWN = 1
SEND_SHUTDOWN = 2
SHUTDOWN_MASK = 3

WRITE_PATH = {
    Kind.SENDMSG_ENTER,
    Kind.SENDMSG_RETURN,
    Kind.WAIT_CONNECT_ENTER,
    Kind.WAIT_CONNECT_RETURN,
    Kind.STREAM_ERROR_ENTER,
    Kind.STREAM_ERROR_RETURN,
}


def state_code(rec: Recording, name: str) -> int:
    """A TCP state's number, from the state names the recording took from BTF."""
    return next(k for k, v in rec.state_names.items() if v == name)


def write(rec: Recording, index: int) -> WriteResult:
    return next(w for w in rec.writes if w.index == index)


def write_events(rec: Recording, index: int) -> list[Event]:
    """The client's write-path events that fired inside write `index`'s syscall."""
    w = write(rec, index)
    return sorted(
        (
            e
            for e in rec.events
            if e.kind in WRITE_PATH and e.pid == rec.client_pid and w.t_start_ns <= e.ts_ns <= w.t_end_ns
        ),
        key=lambda e: e.ts_ns,
    )


def first(events, kind: Kind) -> Event | None:
    return next((e for e in events if e.kind == kind), None)


def client_sk(rec: Recording) -> int:
    """The client socket's address: the one that tcp_sendmsg_locked ran on for the client pid."""
    return next(e.sk for e in rec.events if e.kind == Kind.SENDMSG_ENTER and e.pid == rec.client_pid)


def client_event(rec: Recording, kind: Kind) -> Event:
    sk = client_sk(rec)
    return next(e for e in sorted(rec.events, key=lambda e: e.ts_ns) if e.kind == kind and e.sk == sk)
