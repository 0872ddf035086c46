"""Watch mode's grouping and annotation on recorded watches (tests/unit/data/watch-*.jsonl):

- watch-6.1-kprobe-article, watch-6.1-tracepoint-article: Debian 6.1.0-56 in the
  VM, `watch --port 9999` (kprobe, tracepoint) while the article's C client
  wrote twice to `ncat -l 9999`, which went away in between; a noise
  connection on port 9998 ran beside it;
- watch-6.12-fentry-multi: Debian 6.12.117 in the VM, `watch --backend fentry
  --comm watch_client -- sh tests/live/watch_clients.sh ...`: two clients at once;
- watch-6.18-tracepoint-article, watch-6.18-tracepoint-calls: this 6.18 microVM
  (tracepoints only): the article by port; a Python client using send,
  sendmsg, writev and write.

Expected kernel behaviour, as for the reproduction (docs/kernel-source.md,
6.1.192 and 6.12.117): CLOSE_WAIT sends (tcp_sendmsg_locked, net/ipv4/tcp.c);
the RST stores EPIPE (tcp_reset/tcp_done_with_error, net/ipv4/tcp_input.c);
in CLOSE sk_stream_wait_connect's sock_error() takes it (net/core/stream.c).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from tracer.display import words
from tracer.collect.sources import bpf_dir
from tracer.record.event import Kind
from tracer.record.recording import Recording
from tracer.display.words import command_end
from tracer.process.connections import WatchRecording, calls_of, connections, group
from tracer.process.stream import Stream, rows_of
from tracer.record.event import to_raw
from tracer.process.timeline import UNTRACED_CALL
from tracer.record.event import CALLS

DATA = Path(__file__).resolve().parent / "data"
EPIPE = 32  # include/uapi/asm-generic/errno-base.h
PORT = 9999


def load(name: str) -> WatchRecording:
    return WatchRecording.load(DATA / f"watch-{name}.jsonl")


@pytest.fixture
def kp() -> WatchRecording:
    return load("6.1-kprobe-article")


@pytest.fixture
def tp() -> WatchRecording:
    return load("6.1-tracepoint-article")


def client_of(cts):
    mine = [ct for ct in cts if ct.calls]
    assert len(mine) == 1
    return mine[0]


def with_events(wrec: WatchRecording, events) -> WatchRecording:
    return dataclasses.replace(wrec, rec=dataclasses.replace(wrec.rec, events=list(events)))


def test_calls_mirror_the_bpf_defines():
    source = (bpf_dir() / "watch" / "common.bpf.c").read_text()
    defined = {int(v): k.lower() for k, v in re.findall(r"#define HC_CALL_(\w+) (\d+)", source)}
    assert defined == CALLS


def test_the_article_by_port_kprobe(kp):
    cts = connections(kp)
    assert len(cts) == 2
    ct = client_of(cts)
    assert (ct.family, ct.laddr, ct.raddr, ct.rport) == ("AF_INET", "127.0.0.1", "127.0.0.1", PORT)
    assert [(c.name, c.fd, c.size, c.ret, c.errno, c.comm) for c in ct.calls] == [
        ("write", 3, 6, 6, None, "watch_client"), ("write", 3, 6, -1, "EPIPE", "watch_client")]
    w1, w2 = ct.timeline.writes
    assert (w1.ret, w1.errno, w1.state, w1.sk_err) == (6, None, "CLOSE_WAIT", 0)
    assert (w2.ret, w2.errno, w2.state, w2.sk_err) == (-1, "EPIPE", "CLOSE", EPIPE)
    assert [s.func for s in w2.path] == ["tcp_sendmsg_locked", "sk_stream_wait_connect", "sk_stream_error"]
    assert "sock_error() took sk_err=EPIPE" in words.decision(w2) and not w2.inferred
    assert any(f.startswith("RST: tcp_reset ran with the client in CLOSE_WAIT, during write 1")
               for f in words.findings(ct.timeline))


def test_each_event_is_in_its_sockets_connection(kp):
    cts = connections(kp)
    for ct in cts:
        assert {e.sk for e in ct.conn.events} == {ct.conn.sk}
        assert PORT in (ct.lport, ct.rport)
    assert sum(len(ct.conn.events) for ct in cts) == len(kp.rec.events)
    # Nothing of the noise connection on 9998 reached user space: the filter is in the kernel.
    assert not [e for e in kp.rec.events if 9998 in (e.sport, e.dport)]


def test_softirq_events_are_attributed_by_socket_not_task(kp):
    """The FIN came while the client slept: another task's CPU time, the client's connection."""
    ct = client_of(connections(kp))
    writer = ct.calls[0].pid
    fin = next(e for e in ct.conn.events if e.kind == Kind.TCP_FIN)
    assert fin.pid != writer
    server = next(c for c in connections(kp) if not c.calls)
    assert server.peer == ct.conn.conn and ct.peer == server.conn.conn
    assert server.timeline.findings == [] and server.lport == PORT


def test_tracepoint_backend_annotation(tp):
    ct = client_of(connections(tp))
    w1, w2 = ct.timeline.writes
    assert w1.inferred and w2.inferred and words.observed_at(w1.observed_at) == "write(2) entry"
    assert [s.func for s in w2.path] == ["sys_enter_write", "sys_exit_write"]
    assert "sock_error() takes sk_err=EPIPE" in words.decision(w2)
    report = next(e for e in ct.conn.events if e.kind == Kind.ERROR_REPORT)
    assert report.value == EPIPE and report.sk == ct.conn.sk


def test_two_clients_stay_apart():
    cts = connections(load("6.12-fentry-multi"))
    assert len(cts) == 2
    assert len({ct.calls[0].pid for ct in cts}) == 2 and len({ct.lport for ct in cts}) == 2
    for ct in cts:
        assert [(c.ret, c.errno, c.pid) for c in ct.calls] == [(6, None, ct.calls[0].pid), (-1, "EPIPE", ct.calls[0].pid)]
        assert {e.pid for e in ct.conn.events if e.kind == Kind.SENDMSG_ENTER} == {ct.calls[0].pid}
        assert [w.errno for w in ct.timeline.writes] == [None, "EPIPE"]


def test_every_call_is_named_for_itself():
    ct = client_of(connections(load("6.18-tracepoint-calls")))
    assert [(c.name, c.size, c.ret) for c in ct.calls] == [
        ("sendto", 3, 3), ("sendmsg", 5, 5), ("writev", 6, 6), ("write", 4, 4)]
    sendto, sendmsg, writev, write = ct.timeline.writes
    assert words.observed_at(sendto.observed_at) == "sendto(2) entry" and sendto.path[0].func == "sys_enter_sendto"
    assert writev.path[-1].func == "sys_exit_writev" and "writev(2)" in words.decision(writev)
    assert words.observed_at(write.observed_at) == "write(2) entry"
    assert not any("write(2)" in f for f in words.findings(ct.timeline) if f.startswith("write 1 ="))


def test_streaming_hands_out_the_same_connections_in_the_same_order():
    for name in ("6.1-kprobe-article", "6.12-fentry-multi", "6.18-tracepoint-article"):
        events = sorted(load(name).rec.events, key=lambda e: e.ts_ns)
        batch = [(c.conn, c.sk, len(c.events)) for c in group(events)]
        for size in (1, 3, 7):
            g, shown = Stream({}), []
            for i in range(0, len(events), size):
                g.add(rows_of(to_raw(e) for e in events[i:i + size]))
                shown += [(o, g.done(o, end)) for o, end in g.ready(events[min(i + size, len(events)) - 1].ts_ns)]
            shown += [(o, g.done(o, end)) for o, end in g.rest()]
            assert [(o.conn, o.sk, len(o.records)) for o, _ in shown] == batch, (name, size)


def test_a_new_socket_at_a_reused_address_is_a_new_connection(kp):
    client = client_of(connections(kp)).conn
    later = [dataclasses.replace(e, ts_ns=e.ts_ns + 10**10) for e in client.events]
    conns = group(client.events + later)
    assert [c.sk for c in conns] == [client.sk, client.sk]
    assert conns[0].ended_ns <= later[0].ts_ns and len(conns[0].events) == len(conns[1].events)


def test_a_socket_that_joins_at_its_first_write(kp):
    """Connected before the watch (or accepted): it joins in tcp_sendmsg_locked, so its
    WATCH_ADDR comes after the call's entry event, which carries the call's start."""
    client = client_of(connections(kp)).conn
    first_call = next(e for e in client.events if e.kind == Kind.WATCH_CALL_ENTER)
    first_send = next(e for e in client.events if e.kind == Kind.SENDMSG_ENTER)
    addr = next(e for e in client.events if e.kind == Kind.WATCH_ADDR)
    later = [e for e in client.events if e.ts_ns >= first_call.ts_ns and e.kind != Kind.WATCH_ADDR]
    conns = group(later + [dataclasses.replace(addr, ts_ns=first_send.ts_ns - 1)])
    assert len(conns) == 1
    ct = client_of(connections(with_events(kp, conns[0].events)))
    assert [(c.name, c.ret, c.errno) for c in ct.calls] == [("write", 6, None), ("write", -1, "EPIPE")]
    assert ct.laddr == "127.0.0.1"


def test_writes_from_an_untraced_caller_are_still_annotated(kp):
    """Without the write-like call's events (sendmmsg, sendfile, io_uring ...), tcp_sendmsg_locked
    itself gives the write's size and result."""
    wrec = with_events(kp, [e for e in kp.rec.events if e.kind not in (Kind.WATCH_CALL_ENTER, Kind.WATCH_CALL_EXIT)])
    ct = client_of(connections(wrec))
    assert [(c.name, c.fd, c.size, c.ret, c.errno) for c in ct.calls] == [(UNTRACED_CALL, None, 6, 6, None),
                                                                       (UNTRACED_CALL, None, 6, -1, "EPIPE")]
    assert [w.errno for w in ct.timeline.writes] == [None, "EPIPE"]
    assert [s.func for s in ct.timeline.writes[1].path][:2] == ["tcp_sendmsg_locked", "sk_stream_wait_connect"]


def test_a_call_that_never_returned(kp):
    last_exit = [e for e in kp.rec.events if e.kind == Kind.WATCH_CALL_EXIT][-1]
    wrec = with_events(kp, [e for e in kp.rec.events if e is not last_exit])
    ct = client_of(connections(wrec))
    assert [c.ret for c in ct.calls] == [6, None]
    assert [w.index for w in ct.timeline.writes] == [1]


def test_several_writers_on_one_socket(kp):
    """A socket shared by two processes (fork): both writers' calls are annotated."""
    client = client_of(connections(kp))
    second = client.calls[1]
    moved = [dataclasses.replace(e, pid=e.pid + 1, comm="other")
             if e.tid == second.tid and second.t_start_ns <= e.ts_ns <= second.t_end_ns else e
             for e in kp.rec.events]
    ct = client_of(connections(with_events(kp, moved)))
    assert [w[1] for w in ct.writers] == ["watch_client", "other"]
    assert [w.errno for w in ct.timeline.writes] == [None, "EPIPE"]
    assert [s.func for s in ct.timeline.writes[1].path][:2] == ["tcp_sendmsg_locked", "sk_stream_wait_connect"]


def test_ipv6_addresses(kp):
    """WATCH_ADDR for AF_INET6: fd 1, 2 the local address, 3, 4 the remote one (8 bytes each)."""
    client = client_of(connections(kp)).conn
    addr = next(e for e in client.events if e.kind == Kind.WATCH_ADDR)
    loopback = (1).to_bytes(16, "big")  # ::1, as the kernel stores it
    halves = [int.from_bytes(loopback[i:i + 8], "little", signed=True) for i in (0, 8)]  # read as s64
    v6 = [dataclasses.replace(addr, addr_part=part, family=10, value=halves[(part - 1) % 2]) for part in (1, 2, 3, 4)]
    events = v6 + [e for e in client.events if e.kind != Kind.WATCH_ADDR]
    conn = group(events)[0]
    assert conn.addresses() == ("AF_INET6", "::1", "::1")


def test_recording_round_trip_and_refusals(kp, tmp_path):
    f = tmp_path / "w.jsonl"
    with open(f, "w") as out:
        kp.dump(out)
    again = WatchRecording.load(f)
    assert again.filter == kp.filter and again.rec.events == kp.rec.events and again.stop_reason == kp.stop_reason
    with pytest.raises(ValueError, match="not a watch recording"):
        WatchRecording.load(DATA / "debian-6.1.0-56-writes3.jsonl")
    with pytest.raises(ValueError, match="unknown record type 'watch'"):
        Recording.load_all(f)


def test_command_end():
    assert command_end(255) == "the command exited with status 255"
    assert command_end(-15) == "the command was killed by SIGTERM"


def test_calls_pair_by_thread(kp):
    ct = client_of(connections(kp))
    calls = calls_of(ct.conn.events)
    assert [c.index for c in calls] == [1, 2]
    assert all(c.t_start_ns < c.t_end_ns for c in calls)
    # The kernel's path of each write lies inside its call.
    for c in calls:
        enters = [e for e in ct.conn.events if e.kind == Kind.SENDMSG_ENTER and c.t_start_ns <= e.ts_ns <= c.t_end_ns]
        assert len(enters) == 1
