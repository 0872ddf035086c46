"""tracer/annotate.py on the real Debian 6.1.0-56 recording (kprobes, --writes 3),
and on streams derived from it by editing the loaded Recording.

Expected values come from the recording's raw events (helpers.write_events etc.)
and from kernel facts, cited where used. Kernel source: Linux v6.1.192 (Debian
6.1.0-56); the functions named are the same in v6.12.
"""
import dataclasses
import re

import pytest

from tracer.display import words
from tracer.process.annotate import annotate
from tracer.record.event import Kind

from .helpers import (
    EPIPE,
    RCV_SHUTDOWN,
    SEND_SHUTDOWN,
    SHUTDOWN_MASK,
    client_event,
    client_sk,
    first,
    state_code,
    write,
    write_events,
)


def note(tl, index):
    return next(w for w in tl.writes if w.index == index)


def kernel_note(tl, func, sk=None):
    from tracer.process.timeline import KernelNote

    return next(
        n for n in tl.items if isinstance(n, KernelNote) and n.func == func and (sk is None or n.event.sk == sk)
    )


def finding(tl, prefix):
    hits = [f for f in words.findings(tl) if f.startswith(prefix)]
    assert len(hits) == 1, (prefix, words.findings(tl))
    return hits[0]


def step(w, func):
    return next(s for s in w.path if s.func == func)


# --- the recording itself: check the raw events say what the kernel does --------


def test_recording_shows_the_kernel_sequence(rec):
    """Guard for the data: the raw events are the sequence the kernel source predicts.
    If this fails, the recording is not the one the other tests reason about."""
    close_wait, close = state_code(rec, "CLOSE_WAIT"), state_code(rec, "CLOSE")
    w1 = first(write_events(rec, 1), Kind.SENDMSG_ENTER)
    # tcp_fin (net/ipv4/tcp_input.c): sk_shutdown |= RCV_SHUTDOWN, ESTABLISHED -> CLOSE_WAIT.
    assert (w1.state, w1.sk_err, w1.sk_shutdown) == (close_wait, 0, RCV_SHUTDOWN)
    # tcp_reset (net/ipv4/tcp_input.c): in CLOSE_WAIT, err = EPIPE -> tcp_done_with_error(sk, EPIPE).
    assert client_event(rec, Kind.TCP_RESET).state == close_wait
    assert client_event(rec, Kind.DONE_WITH_ERROR).value == EPIPE
    # tcp_done (net/ipv4/tcp.c): tcp_set_state(TCP_CLOSE); sk_shutdown = SHUTDOWN_MASK.
    done_ret = client_event(rec, Kind.TCP_DONE_RETURN)
    assert (done_ret.state, done_ret.sk_shutdown) == (close, SHUTDOWN_MASK)


# --- write 1: succeeds in CLOSE_WAIT ---------------------------------------------


def test_write1_succeeds_in_close_wait_with_rcv_shutdown_only(rec):
    tl = annotate(rec)
    w = note(tl, 1)
    enter = first(write_events(rec, 1), Kind.SENDMSG_ENTER)
    assert w.ret == write(rec, 1).ret == enter.value  # all 6 bytes queued
    assert w.errno is None
    assert w.observed
    assert w.state == "CLOSE_WAIT" == rec.state_names[enter.state]
    assert w.sk_err == 0
    assert w.sk_shutdown == RCV_SHUTDOWN
    # net/ipv4/tcp.c tcp_sendmsg_locked: CLOSE_WAIT sends without sk_stream_wait_connect.
    assert [s.func for s in w.path] == ["tcp_sendmsg_locked"]
    assert w.path[0].ret == first(write_events(rec, 1), Kind.SENDMSG_RETURN).value


def test_write1_decision_names_the_send_branch(rec):
    d = words.decision(note(annotate(rec), 1))
    assert "CLOSE_WAIT is allowed to send" in d
    assert "sk_err 0" in d
    assert "send side open" in d
    assert "sk_stream_wait_connect" not in d


# --- the RST and what it did -----------------------------------------------------


def test_tcp_reset_runs_on_the_client_in_close_wait(rec):
    tl = annotate(rec)
    n = kernel_note(tl, "tcp_reset", client_sk(rec))
    assert n.side == "client"
    assert n.values["state"] == "CLOSE_WAIT"
    assert n.values["sk_err"] == 0  # tcp_reset entry: nothing set yet
    assert "CLOSE_WAIT" in finding(tl, "RST:")


def test_rst_is_placed_during_write1_after_sendmsg_returned(rec):
    """The RST came back while write 1 was still in the kernel: the timewait
    server answered the data, and tcp_v4_rcv put the RST on the backlog of the
    locked socket, processed by release_sock() at the end of write 1
    (net/core/sock.c __release_sock). Placement checked against timestamps."""
    w1 = write(rec, 1)
    reset = client_event(rec, Kind.TCP_RESET)
    ret = first(write_events(rec, 1), Kind.SENDMSG_RETURN)
    assert w1.t_start_ns <= ret.ts_ns < reset.ts_ns <= w1.t_end_ns  # the data itself

    tl = annotate(rec)
    where = words.where(tl, kernel_note(tl, "tcp_reset", client_sk(rec)).where)
    assert where.startswith("during write 1")
    m = re.search(r"([\d.]+) µs after tcp_sendmsg_locked returned (\S+)", where)
    assert m, where
    assert float(m.group(1)) == pytest.approx((reset.ts_ns - ret.ts_ns) / 1000, abs=0.05)
    assert m.group(2).rstrip(",") == str(ret.value)
    assert "during write 1" in finding(tl, "RST:")


def test_tcp_done_with_error_carries_epipe(rec):
    tl = annotate(rec)
    n = kernel_note(tl, "tcp_done_with_error", client_sk(rec))
    assert n.values["err"] == EPIPE
    assert "err=EPIPE" in n.summary
    assert n.values["state"] == "CLOSE_WAIT"


def test_tcp_done_leaves_close_and_both_shutdown_bits(rec):
    tl = annotate(rec)
    n = kernel_note(tl, "tcp_done", client_sk(rec))
    # tcp_done (net/ipv4/tcp.c v6.1): tcp_set_state(sk, TCP_CLOSE); sk_shutdown = SHUTDOWN_MASK.
    assert n.values["state"] == "CLOSE_WAIT"
    assert n.values["state_after"] == "CLOSE"
    assert n.values["sk_shutdown_after"] == SHUTDOWN_MASK
    # tcp_done_with_error wrote sk_err before calling tcp_done.
    assert n.values["sk_err_after"] == EPIPE
    f = finding(tl, "tcp_done:")
    assert "CLOSE_WAIT → CLOSE" in f and "SEND_SHUTDOWN" in f


def test_sk_err_finding_attributes_the_write_to_tcp_done_with_error(rec):
    # v6.1.103+ / v6.11+: tcp_reset -> tcp_done_with_error(sk, err): WRITE_ONCE(sk->sk_err, err).
    f = finding(annotate(rec), "sk_err:")
    assert "tcp_done_with_error" in f
    assert "err=EPIPE" in f
    assert "written by tcp_reset" not in f


def test_fin_finding_names_tcp_fin(rec):
    f = finding(annotate(rec), "FIN:")
    assert "tcp_fin" in f and "CLOSE_WAIT" in f


# --- write 2: EPIPE from sk_err via sk_stream_wait_connect -------------------------


def test_write2_epipe_path_through_sk_stream_wait_connect(rec):
    tl = annotate(rec)
    w = note(tl, 2)
    evs = write_events(rec, 2)
    assert w.ret == -1 and w.errno == "EPIPE" == write(rec, 2).errno
    assert w.state == "CLOSE" and w.sk_err == EPIPE and w.sk_shutdown == SHUTDOWN_MASK
    # net/ipv4/tcp.c: not ESTABLISHED/CLOSE_WAIT -> sk_stream_wait_connect; error -> do_error -> sk_stream_error.
    assert [s.func for s in w.path] == ["tcp_sendmsg_locked", "sk_stream_wait_connect", "sk_stream_error"]

    wc = step(w, "sk_stream_wait_connect")
    # net/core/stream.c: sock_error() = xchg(&sk->sk_err, 0) -> returns -EPIPE, leaves 0.
    assert wc.values["sk_err"] == EPIPE == first(evs, Kind.WAIT_CONNECT_ENTER).sk_err
    assert wc.values["sk_err_after"] == 0 == first(evs, Kind.WAIT_CONNECT_RETURN).sk_err
    assert wc.ret == -EPIPE == first(evs, Kind.WAIT_CONNECT_RETURN).value

    se = step(w, "sk_stream_error")
    assert se.values["err"] == -EPIPE == first(evs, Kind.STREAM_ERROR_ENTER).value
    assert se.ret == -EPIPE == first(evs, Kind.STREAM_ERROR_RETURN).value
    assert step(w, "tcp_sendmsg_locked").ret == -EPIPE == first(evs, Kind.SENDMSG_RETURN).value


def test_write2_decision_says_sock_error_took_sk_err(rec):
    d = words.decision(note(annotate(rec), 2))
    assert "sk_stream_wait_connect" in d
    assert "sock_error() took sk_err=EPIPE" in d
    assert "0 afterwards" in d
    assert "returned -EPIPE" in d


# --- write 3: EPIPE from the state check, sk_err already 0 ------------------------


def test_write3_epipe_via_wait_connect_with_sk_err_zero(rec):
    tl = annotate(rec)
    w = note(tl, 3)
    evs = write_events(rec, 3)
    assert w.ret == -1 and w.errno == "EPIPE"
    assert w.state == "CLOSE" and w.sk_err == 0
    wc = step(w, "sk_stream_wait_connect")
    assert wc.values["sk_err"] == 0 == first(evs, Kind.WAIT_CONNECT_ENTER).sk_err
    # net/core/stream.c: no sk_err, state not SYN_SENT/SYN_RECV -> -EPIPE.
    assert wc.ret == -EPIPE
    d = words.decision(w)
    assert "sk_stream_wait_connect with sk_err 0" in d
    assert "not SYN_SENT/SYN_RECV" in d
    assert "sock_error() took" not in d


def test_findings_list_each_write_result(rec):
    tl = annotate(rec)
    for w in rec.writes:
        res = str(w.ret) if w.ret >= 0 else f"-1 {w.errno}"
        finding(tl, f"write {w.index} = {res}:")


def test_timeline_items_are_in_time_order_and_relative_to_the_first_thing(rec):
    tl = annotate(rec)
    times = [i.t_ns for i in tl.items]
    assert times == sorted(times)
    earliest = min([e.ts_ns for e in rec.events] + [m.t_ns for m in rec.marks] + [w.t_start_ns for w in rec.writes])
    assert tl.t0_ns == earliest
    assert note(tl, 2).t_ns == write(rec, 2).t_start_ns - earliest


# --- derived streams ---------------------------------------------------------------


def test_derived_pre_tcp_done_with_error_kernel_attributes_sk_err_to_tcp_reset(rec):
    # DERIVED stream: the recording minus its DONE_WITH_ERROR event. Kernels before
    # tcp_done_with_error (6.1 < .103, 6.6 < .44, mainline < 6.11) set sk_err inside
    # tcp_reset itself and then call tcp_done, so tcp_done is the first probe to see EPIPE.
    rec.events = [e for e in rec.events if e.kind != Kind.DONE_WITH_ERROR]
    rec.attached = [a for a in rec.attached if "tcp_done_with_error" not in a]
    rec.missing = ["tcp_done_with_error"]
    f = finding(annotate(rec), "sk_err:")
    assert "written by tcp_reset" in f
    assert "tcp_done_with_error" not in f
    assert "EPIPE" in f


def test_derived_no_sendmsg_events_invents_nothing(rec):
    # DERIVED stream: no tcp_sendmsg_locked events at all (e.g. the probe fired elsewhere).
    rec.events = [e for e in rec.events if e.kind not in (Kind.SENDMSG_ENTER, Kind.SENDMSG_RETURN)]
    tl = annotate(rec)
    assert len(tl.writes) == len(rec.writes)
    for w in tl.writes:
        assert not w.observed
        assert (w.state, w.sk_err, w.sk_shutdown) == (None, None, None)
        assert w.path == ()
        assert words.decision(w).startswith("not observed")
        # The user-space result is still reported as seen by the client.
        assert (w.ret, w.errno) == (write(rec, w.index).ret, write(rec, w.index).errno)


def test_derived_no_sendmsg_return_says_return_not_observed(rec):
    # DERIVED stream: write 2's tcp_sendmsg_locked return event dropped.
    gone = first(write_events(rec, 2), Kind.SENDMSG_RETURN)
    rec.events = [e for e in rec.events if e is not gone]
    w = note(annotate(rec), 2)
    assert "not observed" in words.decision(w)
    assert step(w, "tcp_sendmsg_locked").ret is None


def test_derived_no_tcp_reset_says_so(rec):
    # DERIVED stream: the tcp_reset event removed.
    rec.events = [e for e in rec.events if e.kind != Kind.TCP_RESET]
    tl = annotate(rec)
    assert "no tcp_reset was observed" in finding(tl, "RST:")
    assert not [f for f in words.findings(tl) if f.startswith("sk_err:")], "no RST, so nothing to attribute"


def _article_write2(rec):
    """DERIVED stream for the path the article claims: write 2 starts in CLOSE_WAIT with
    sk_err = EPIPE (the RST set sk_err but the state is still CLOSE_WAIT), so
    tcp_sendmsg_locked skips sk_stream_wait_connect and fails at
    `if (sk->sk_err || (sk->sk_shutdown & SEND_SHUTDOWN)) goto do_error;` (net/ipv4/tcp.c),
    whose error path calls sk_stream_error(sk, flags, -EPIPE) (sock_error takes sk_err)."""
    close_wait = state_code(rec, "CLOSE_WAIT")
    evs = write_events(rec, 2)
    edits = {}
    for e in evs:
        if e.kind in (Kind.WAIT_CONNECT_ENTER, Kind.WAIT_CONNECT_RETURN):
            edits[id(e)] = None
        elif e.kind in (Kind.SENDMSG_ENTER, Kind.STREAM_ERROR_ENTER):
            edits[id(e)] = dataclasses.replace(e, state=close_wait, sk_err=EPIPE, sk_shutdown=RCV_SHUTDOWN)
        else:  # returns: sk_err taken by sock_error() in sk_stream_error
            edits[id(e)] = dataclasses.replace(e, state=close_wait, sk_err=0, sk_shutdown=RCV_SHUTDOWN)
    rec.events = [edits.get(id(e), e) for e in rec.events if edits.get(id(e), e) is not None]
    return rec


def test_derived_article_path_names_the_sk_err_check(rec):
    tl = annotate(_article_write2(rec))
    w = note(tl, 2)
    assert (w.state, w.sk_err, w.ret) == ("CLOSE_WAIT", EPIPE, -1)
    assert [s.func for s in w.path] == ["tcp_sendmsg_locked", "sk_stream_error"]
    assert step(w, "tcp_sendmsg_locked").ret == -EPIPE
    d = words.decision(w)
    assert "sk->sk_err" in d and "do_error" in d
    assert "sk_err EPIPE" in d
    assert "sk_stream_wait_connect" not in d


def test_derived_send_shutdown_in_close_wait_names_send_shutdown(rec):
    # DERIVED stream: write 2 in CLOSE_WAIT with sk_err 0 but SEND_SHUTDOWN set (the client
    # called shutdown(SHUT_WR) after the FIN); the same check in tcp_sendmsg_locked fires.
    close_wait = state_code(rec, "CLOSE_WAIT")
    evs = {id(e) for e in write_events(rec, 2)}
    out = []
    for e in rec.events:
        if id(e) in evs:
            if e.kind in (Kind.WAIT_CONNECT_ENTER, Kind.WAIT_CONNECT_RETURN):
                continue
            e = dataclasses.replace(e, state=close_wait, sk_err=0, sk_shutdown=RCV_SHUTDOWN | SEND_SHUTDOWN)
        out.append(e)
    rec.events = out
    d = words.decision(note(annotate(rec), 2))
    assert "SEND_SHUTDOWN set" in d and "do_error" in d


def test_derived_missing_wait_connect_probe_does_not_claim_the_sk_err_check(rec):
    # DERIVED stream: the recording as if sk_stream_wait_connect had not been attachable
    # (probe_plan marks it optional). Kernel fact (net/ipv4/tcp.c tcp_sendmsg_locked, v6.1/v6.12):
    # outside ESTABLISHED/CLOSE_WAIT the write goes through sk_stream_wait_connect before
    # the `sk->sk_err || SEND_SHUTDOWN` check, so in CLOSE that check is not what decided.
    rec.events = [e for e in rec.events if e.kind not in (Kind.WAIT_CONNECT_ENTER, Kind.WAIT_CONNECT_RETURN)]
    rec.attached = [a for a in rec.attached if "sk_stream_wait_connect" not in a]
    rec.missing = ["sk_stream_wait_connect"]
    tl = annotate(rec)
    for i in (2, 3):
        w = note(tl, i)
        assert w.state == "CLOSE"
        assert "allowed to send" not in words.decision(w), words.decision(w)
        assert "sk->sk_err" not in words.decision(w), words.decision(w)


# --- which socket is which ----------------------------------------------------------


def test_accepted_socket_is_the_server_not_the_listener(rec):
    """inet_csk_clone_lock sets SYN_RECV before it copies inet_dport (net/ipv4/inet_connection_sock.c,
    6.1.192:1195), so the accepted socket's first event has the listener's ports. Its later
    events (FIN_WAIT1, FIN_WAIT2) carry the connection's ports: the whole socket is the server."""
    from tracer.process.timeline import KernelNote

    tl = annotate(rec)
    sets = [n for n in tl.items if isinstance(n, KernelNote) and n.event.kind == Kind.SET_STATE]
    names = {v: k for k, v in rec.state_names.items()}
    accepted = next(n.event.sk for n in sets if n.event.state == names["SYN_RECV"])
    listener = next(n.event.sk for n in sets if (n.event.old_state, n.event.state) == (names["LISTEN"], names["CLOSE"]))
    assert accepted != listener
    # The raw data: the first event of the accepted socket has no peer port yet.
    first_accepted = next(e for e in rec.events if e.sk == accepted)
    assert first_accepted.dport == 0 and first_accepted.sport == rec.server_port
    assert {n.side for n in sets if n.event.sk == accepted} == {"server"}
    assert {n.side for n in sets if n.event.sk == listener} == {"listener"}
    assert any(n.event.state == names["FIN_WAIT2"] for n in sets if n.event.sk == accepted)
