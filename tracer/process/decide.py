"""Which kernel branch decided a write's or a read's result, as a Decision value. Pure.

The branches are conditions of the kernel source (read in Linux 6.1.192 and
6.12.117, identical there; docs/kernel-source.md):
  net/ipv4/tcp.c  tcp_sendmsg_locked(): outside ESTABLISHED and CLOSE_WAIT it
      calls sk_stream_wait_connect(); later
      `err = -EPIPE; if (sk->sk_err || (sk->sk_shutdown & SEND_SHUTDOWN)) goto do_error;`
      and the error path returns sk_stream_error(sk, flags, err).
  net/core/stream.c  sk_stream_wait_connect(): first `sock_error(sk)` (which
      takes sk_err and leaves 0), then -EPIPE unless SYN_SENT or SYN_RECV.
  net/ipv4/tcp.c  tcp_recvmsg_locked(): with nothing queued it stops at
      SOCK_DONE, at sk_err (sock_error()), or at RCV_SHUTDOWN (0: end of file).
With kprobe/fentry the functions are seen; with tracepoints only the socket
before and after the syscall, so the branch is inferred and marked so.
"""
from __future__ import annotations

import errno

from tracer.kernel.names import RCV_SHUTDOWN, SEND_SHUTDOWN
from tracer.record.event import Event, Kind
from tracer.process.timeline import Branch, Decision

# tcp_sendmsg_locked sends without waiting only in these states (net/ipv4/tcp.c, v6.1 and v6.12).
SENDING_STATES = ("ESTABLISHED", "CLOSE_WAIT")
EPIPE = errno.EPIPE  # include/uapi/asm-generic/errno-base.h: 32


def first(path: list[Event], *kinds: Kind) -> Event | None:
    return next((e for e in path if e.kind in kinds), None)


def function_write(path: list[Event], st, wait_connect_traceable: bool) -> Decision:
    """kprobe/fentry: the functions on the path were seen."""
    enter, ret = first(path, Kind.SENDMSG_ENTER), first(path, Kind.SENDMSG_RETURN)
    wc_in, wc_out = first(path, Kind.WAIT_CONNECT_ENTER), first(path, Kind.WAIT_CONNECT_RETURN)
    if not ret:
        return Decision(Branch.NO_RETURN, False, {"at": "tcp_sendmsg_locked"})
    v = {"state": st(enter.state), "sk_err": enter.sk_err, "sk_shutdown": enter.sk_shutdown, "ret": ret.value}
    if wc_in and wc_out:
        v.update(sk_err=wc_in.sk_err, wait_ret=wc_out.value, sk_err_after=wc_out.sk_err)
        if wc_in.sk_err and wc_out.value == -wc_in.sk_err and wc_out.sk_err == 0:
            return Decision(Branch.WAIT_SOCK_ERROR, False, v)
        if wc_in.sk_err == 0 and wc_out.value == -EPIPE:
            return Decision(Branch.WAIT_STATE, False, v)
        return Decision(Branch.WAIT_OTHER, False, v)
    if wc_in:
        return Decision(Branch.WAIT_NO_RETURN, False, v)
    if v["state"] not in SENDING_STATES and not wait_connect_traceable:
        # The source sends such a write through sk_stream_wait_connect, which was not traceable here.
        return Decision(Branch.WAIT_UNTRACEABLE, False, v)
    if ret.value >= 0:
        if v["state"] in SENDING_STATES and enter.sk_err == 0 and not enter.sk_shutdown & SEND_SHUTDOWN:
            return Decision(Branch.QUEUED, False, v)
        return Decision(Branch.NO_WAIT, False, v)
    if ret.value == -EPIPE and (enter.sk_err or enter.sk_shutdown & SEND_SHUTDOWN):
        return Decision(Branch.ERR_CHECK, False, v)
    return Decision(Branch.NO_WAIT, False, v)


def syscall_write(enter: Event, after: Event | None, user_ret: int, st) -> Decision:
    """Tracepoints see the socket at the syscall's entry and after it, not the
    functions between: the branch the values fit, from the source, as an inference.
    after: the syscall's exit (or sock_send_length); user_ret: what the caller got."""
    # The kernel's result when seen (a write killed by SIGPIPE never returns to user space).
    ret = after.value if after else (user_ret if user_ret >= 0 else None)
    if ret is None:
        return Decision(Branch.NO_RETURN, False, {"at": "syscall"})
    v = {"state": st(enter.state), "sk_err": enter.sk_err, "ret": ret,
         **({"sk_err_after": after.sk_err} if after else {})}
    state, sk_err = v["state"], enter.sk_err
    if ret >= 0 and state in SENDING_STATES and not sk_err and not enter.sk_shutdown & SEND_SHUTDOWN:
        return Decision(Branch.QUEUED, True, v)
    if ret < 0 and state not in SENDING_STATES:
        if sk_err and ret == -sk_err and after and after.sk_err == 0:
            return Decision(Branch.WAIT_SOCK_ERROR, True, v)
        if not sk_err and ret == -EPIPE:
            return Decision(Branch.WAIT_STATE, True, v)
    if ret == -EPIPE and state in SENDING_STATES and (sk_err or enter.sk_shutdown & SEND_SHUTDOWN):
        return Decision(Branch.ERR_CHECK, True, v)
    return Decision(Branch.UNDECIDED, False, v)


def read(enter: Event, ret: Event | None) -> Decision:
    """A read: what tcp_recvmsg (kprobe/fentry) or read(2) (tracepoints) saw and returned."""
    inferred = enter.kind != Kind.RECVMSG_ENTER
    if ret is None:
        return Decision(Branch.NO_RETURN, False, {"at": "read"})
    v = {"func": enter.func, "ret": ret.value, "sk_err": enter.sk_err,
         "sk_shutdown": enter.sk_shutdown}
    # tcp_recvmsg_locked (net/ipv4/tcp.c, 6.1.x and 6.12.x), nothing copied: SOCK_DONE (tcp_fin set
    # it) breaks first -> 0; then sk_err -> sock_error(); then RCV_SHUTDOWN -> 0; CLOSE -> -ENOTCONN.
    if ret.value == 0 and enter.sk_shutdown & RCV_SHUTDOWN:
        return Decision(Branch.EOF_ERR_LEFT if enter.sk_err else Branch.EOF, inferred, v)
    if ret.value < 0 and enter.sk_err and -ret.value == enter.sk_err:
        return Decision(Branch.READ_SK_ERR, inferred, v)
    if ret.value < 0:
        return Decision(Branch.READ_ERROR, inferred, v)
    return Decision(Branch.READ_DATA, inferred, v)
