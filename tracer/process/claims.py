"""The article's claims (../shared/article.txt) as data, each checked against
what the kernel reported, packetdrill-style: the claim, where it points in the
source, how it is checked, and a verdict with the evidence that decided it.

Verdicts: verified, refuted, imprecise (outcome right, mechanism different),
not-observed (this backend or kernel cannot see it; says why).

`expected()` is the verdict the tool's own source reading predicts for the
kernel and backend of the run; `--check` fails when a verdict differs.
Source read: Linux 6.1.192 and 6.12.117 (docs/kernel-source.md). A claim's
`eras` name the kernel differences that change what is seen or expected
(tracer/kernel/eras.py, with the oldest kernel and the source of each); the
expected verdict follows what the recorded kernel has, never its version.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tracer.process.timeline import CallFacts, IoNote, KernelNote, Timeline
from tracer.record.event import Kind
from tracer.kernel.names import err_name, ret_name, shutdown_name
from tracer.process.verdicts import observed_rst_sender

VERIFIED, REFUTED, IMPRECISE, NOT_OBSERVED = "verified", "refuted", "imprecise", "not-observed"


@dataclass(frozen=True)
class Verdict:
    verdict: str
    evidence: tuple[str | CallFacts, ...]  # sentences, and calls' facts that display words


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str  # the article's words
    source: str  # where it points in the kernel source, and the versions read
    how: str  # "dynamic" (observed events) or "source" (a cited fact tracing cannot see)
    check: Callable[[Timeline], Verdict]
    expected: Callable[[Timeline], str]
    # The kernel eras that change what is seen or expected (keys of tracer/kernel/eras.py's ERAS,
    # where each is stated with the oldest kernel that has it and its source).
    eras: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: Verdict
    expected: str

    @property
    def as_expected(self) -> bool:
        return self.verdict.verdict == self.expected


# --- helpers on the timeline ------------------------------------------------------


def _client(tl: Timeline) -> list[KernelNote]:
    return tl.kernel_notes(side="client")


def _write(tl: Timeline, i: int) -> IoNote | None:
    return next((w for w in tl.writes if w.index == i), None)


def _sees_functions(tl: Timeline) -> bool:
    """kprobe/fentry see inside tcp_sendmsg_locked; tracepoints do not."""
    return tl.recording.backend in ("kprobe", "fentry") and "sk_stream_wait_connect" not in tl.recording.missing


def _has(tl: Timeline, func: str) -> bool:
    return func in tl.recording.kernel_functions


def _step(w: IoNote, func: str):
    return next((s for s in w.path if s.func == func), None)


# --- the claims ----------------------------------------------------------------------


def _first_write_succeeds(tl: Timeline) -> Verdict:
    w1 = _write(tl, 1)
    into_cw = next((n for n in _client(tl) if n.values.get("state") == "CLOSE_WAIT"
                    or n.values.get("state_after") == "CLOSE_WAIT"), None)
    if not w1 or not w1.observed:
        return Verdict(NOT_OBSERVED, ("write 1 was not seen in the kernel",))
    ev = [CallFacts(w1)]
    if into_cw:
        ev.insert(0, f"{into_cw.func} at {into_cw.t_ns / 1e6:+.3f} ms: client → CLOSE_WAIT")
    ok = into_cw is not None and w1.state == "CLOSE_WAIT" and w1.sk_err == 0 and w1.ret == w1.size
    return Verdict(VERIFIED if ok else REFUTED, tuple(ev))


def _epipe_condition(tl: Timeline) -> Verdict:
    failing = [w for w in tl.writes if w.index >= 1 and w.errno == "EPIPE"]
    if not failing:
        return Verdict(NOT_OBSERVED, ("no write failed with EPIPE",))
    if not _sees_functions(tl):
        return Verdict(NOT_OBSERVED, (f"the {tl.recording.backend} backend cannot see which check inside "
                                      "tcp_sendmsg_locked returned -EPIPE",) + tuple(CallFacts(w) for w in failing))
    ev, via_wait = [], 0
    for w in failing:
        wc = _step(w, "sk_stream_wait_connect")
        if wc is not None and wc.ret is not None and wc.ret < 0:
            via_wait += 1
            ev.append(f"write {w.index}: state {w.state}, sk_err {err_name(w.sk_err)} → sk_stream_wait_connect "
                      f"returned {ret_name(wc.ret)} (sk_err {err_name(wc.values.get('sk_err_after', 0))} after)")
        else:
            ev.append(CallFacts(w, prefix=f"write {w.index}: no sk_stream_wait_connect; "))
    if via_wait:
        ev.append("the -EPIPE came from sk_stream_wait_connect (net/core/stream.c), reached because the state "
                  "was neither ESTABLISHED nor CLOSE_WAIT; the sk_err/SEND_SHUTDOWN check was not reached")
        return Verdict(IMPRECISE, tuple(ev))
    return Verdict(VERIFIED, tuple(ev))


def _sendmsg_file(tl: Timeline) -> Verdict:
    present = "tcp_sendmsg_locked" in tl.recording.kernel_functions
    return Verdict(REFUTED, (
        "tcp_sendmsg_locked is defined in net/ipv4/tcp.c, not net/ipv4/tcp_input.c (read in 6.1.192 and "
        "6.12.117; it has been there since it was split out of tcp_sendmsg in 4.18)",
        "source files cannot be seen at run time: " + ("the function exists on this kernel (kallsyms)" if present
                                                       else "the function was not found on this kernel"),
    ))


_SENDER_SOURCE = {
    "timewait": " -- the closed server socket had become a timewait socket (tcp_timewait_state_process, "
                "net/ipv4/tcp_minisocks.c)",
    "full socket": " -- the closed server socket was still a full orphaned FIN_WAIT2 socket (its FIN's ACK came "
                   "while close() owned it, or tcp_fin_timeout > 60 s): the data made tcp_rcv_state_process reset "
                   "it and answer with an RST (net/ipv4/tcp_input.c, 6.1.192:6828, 6.12.117:7029)",
}


def _peer_rst(tl: Timeline) -> Verdict:
    packets = tl.kernel_notes(Kind.PACKET)
    data = next((p for p in packets if p.side == "client" and p.values["length"] > 0), None)
    rst = next((p for p in packets if p.side == "server" and "R" in p.values["flags"]), None)
    sender = observed_rst_sender(tl)
    ev = []
    if data and rst:
        ev.append(f"client data {data.values['flags']} {data.values['length']} bytes at {data.t_ns / 1e6:+.3f} ms, "
                  f"server {rst.values['flags']} at {rst.t_ns / 1e6:+.3f} ms")
    if sender:
        ev.append(f"the RST was sent by: {sender}" + _SENDER_SOURCE.get(sender, ""))
    reset = next((n for n in _client(tl) if n.event.kind in (Kind.TCP_RESET, Kind.RESET_TP)), None)
    if reset:
        ev.append(f"{reset.func} on the client at {reset.t_ns / 1e6:+.3f} ms")
    if data and rst and rst.t_ns > data.t_ns:
        return Verdict(VERIFIED, tuple(ev))
    if not packets:
        return Verdict(VERIFIED if reset else NOT_OBSERVED,
                       tuple(ev) or ("neither packets nor tcp_reset could be seen",))
    return Verdict(REFUTED, tuple(ev) or ("no RST from the server followed the client's data",))


def _who_wrote_sk_err(tl: Timeline) -> Verdict:
    client = _client(tl)
    reset = next((n for n in client if n.event.kind in (Kind.TCP_RESET, Kind.RESET_TP)), None)
    if not reset:
        return Verdict(NOT_OBSERVED, ("no tcp_reset on the client",))
    ev = [f"{reset.func}: client in {reset.values['state']}, sk_err {err_name(reset.event.sk_err)} at entry"]
    dwe = next((n for n in client if n.func == "tcp_done_with_error"), None)
    done = next((n for n in client if n.func == "tcp_done" and n.t_ns >= reset.t_ns), None)
    report = next((n for n in client if n.func == "inet_sk_error_report"), None)
    if dwe:
        ev.append(f"tcp_done_with_error(err={err_name(dwe.event.value)}) with sk_err {err_name(dwe.event.sk_err)} "
                  "at entry")
    if done:
        ev.append(f"tcp_done: sk_err {err_name(done.event.sk_err)} at entry")
    if report:
        ev.append(f"inet_sk_error_report: error {err_name(report.event.value)}")
    became_epipe = (done and done.event.sk_err == 32) or (report and report.event.value == 32)
    w2 = _write(tl, 2)
    if not done and not report and w2 is not None and w2.observed:
        # Neither tcp_done (kprobe/fentry) nor sock:inet_sk_error_report (5.14+) was seen: the
        # tracepoint backend on an older kernel. The next write's entry shows what sk_err became.
        ev.append(f"write 2 found sk_err {err_name(w2.sk_err)} at its entry (the RST's error is seen there: "
                  "sock:inet_sk_error_report exists from 5.14, sk_error_report in net/core/sock.c)")
        became_epipe = w2.sk_err == 32
    if reset.values["state"] != "CLOSE_WAIT" or not became_epipe:
        return Verdict(REFUTED, tuple(ev))
    if dwe and dwe.event.sk_err == 0:
        ev.append("tcp_reset chose EPIPE and passed it on; tcp_done_with_error stored it (net/ipv4/tcp_input.c)")
        return Verdict(IMPRECISE, tuple(ev))
    if _has(tl, "tcp_done_with_error"):
        ev.append("not seen which function stored it; on this kernel tcp_reset hands EPIPE to tcp_done_with_error, "
                  "which stores it (source, net/ipv4/tcp_input.c)")
        return Verdict(IMPRECISE, tuple(ev))
    ev.append("this kernel has no tcp_done_with_error: tcp_reset stores sk_err itself")
    return Verdict(VERIFIED, tuple(ev))


def _expected_who_wrote(tl: Timeline) -> str:
    return IMPRECISE if _has(tl, "tcp_done_with_error") else VERIFIED


def _tcp_done_stops_sending(tl: Timeline) -> Verdict:
    client = _client(tl)
    reset = next((n for n in client if n.event.kind in (Kind.TCP_RESET, Kind.RESET_TP)), None)
    if not reset:
        return Verdict(NOT_OBSERVED, ("no tcp_reset on the client",))
    done = next((n for n in client if n.func == "tcp_done" and n.t_ns >= reset.t_ns), None)
    if done and "state_after" in done.values:
        ok = done.values["state_after"] == "CLOSE" and done.values["sk_shutdown_after"] & 2
        return Verdict(VERIFIED if ok else REFUTED, (
            f"tcp_done after tcp_reset: {done.values['state']} → {done.values['state_after']}, sk_shutdown → "
            f"{shutdown_name(done.values['sk_shutdown_after'])}",))
    closed = next((n for n in client if n.func == "inet_sock_set_state" and n.t_ns >= reset.t_ns
                   and n.values.get("state") == "CLOSE"), None)
    w2 = _write(tl, 2)
    if closed and w2 and w2.observed:
        ok = bool(w2.sk_shutdown & 2)
        return Verdict(VERIFIED if ok else REFUTED, (
            f"{closed.values['old_state']} → CLOSE right after the RST (tcp_done is not traceable with this backend: "
            "tcp_done calls tcp_set_state(sk, TCP_CLOSE), net/ipv4/tcp.c)",
            f"sk_shutdown {shutdown_name(w2.sk_shutdown)} at write 2",))
    return Verdict(NOT_OBSERVED, ("neither tcp_done nor the move to CLOSE was seen",))


def _second_write_path(tl: Timeline) -> Verdict:
    w2 = _write(tl, 2)
    if not w2 or not w2.observed:
        return Verdict(NOT_OBSERVED, ("write 2 was not seen in the kernel",))
    if w2.errno != "EPIPE":
        return Verdict(REFUTED, (CallFacts(w2),))
    if not _sees_functions(tl):
        blind = f"the {tl.recording.backend} backend cannot see the path; its inference: "
        return Verdict(NOT_OBSERVED, (CallFacts(w2), CallFacts(w2, "decision", blind)))
    wc = _step(w2, "sk_stream_wait_connect")
    if wc is not None:
        return Verdict(IMPRECISE, (CallFacts(w2), f"path: {' → '.join(s.func for s in w2.path)}",
                                   CallFacts(w2, "decision", "decided: ")))
    return Verdict(VERIFIED, (CallFacts(w2), CallFacts(w2, "decision", "decided: ")))


ARTICLE_PACKETS = (("client", "[S]"), ("server", "[S.]"), ("client", "[.]"), ("server", "[F.]"),
                   ("client", "[.]"), ("client", "[P.]"), ("server", "[R]"))


def _packets(tl: Timeline) -> Verdict:
    if not any("net_dev_start_xmit" in p for p in tl.recording.attached):
        return Verdict(NOT_OBSERVED, ("net:net_dev_start_xmit is not available to capture packets",))
    seen = tl.kernel_notes(Kind.PACKET)
    got = tuple((n.side, n.values["flags"]) for n in seen)
    text = ", ".join(f"{s} {f}" + (f" {n.values['length']} bytes" if n.values["length"] else "")
                     for (s, f), n in zip(got, seen))
    if got == ARTICLE_PACKETS:
        return Verdict(VERIFIED, (text,))
    if set(ARTICLE_PACKETS) <= set(got):
        return Verdict(IMPRECISE, (text, "the article's packets are there, with others"))
    return Verdict(REFUTED, (text,))


def _sees(tl: Timeline) -> str:
    return IMPRECISE if _sees_functions(tl) else NOT_OBSERVED


CLAIMS = (
    Claim("close-wait-no-error",
          "After the server sends FIN, the client socket enters CLOSE_WAIT, which does not set an error, "
          "so the first write succeeds.",
          "tcp_fin (net/ipv4/tcp_input.c), tcp_sendmsg_locked (net/ipv4/tcp.c); 6.1, 6.12", "dynamic",
          _first_write_succeeds, lambda tl: VERIFIED),
    Claim("epipe-condition",
          "tcp_sendmsg_locked returns -EPIPE only when sk->sk_err is set or the socket's send side is shut down.",
          "tcp_sendmsg_locked (net/ipv4/tcp.c), sk_stream_wait_connect (net/core/stream.c); 6.1, 6.12", "dynamic",
          _epipe_condition, _sees),
    Claim("sendmsg-file", "tcp_sendmsg_locked in net/ipv4/tcp_input.c",
          "tcp_sendmsg_locked is in net/ipv4/tcp.c (4.18 to 6.18)", "source", _sendmsg_file, lambda tl: REFUTED),
    Claim("peer-rst",
          "When the server receives the data, it notices its socket is already closed and replies with a RST.",
          "tcp_timewait_state_process (net/ipv4/tcp_minisocks.c), tcp_v4_send_reset (net/ipv4/tcp_ipv4.c); "
          "6.1, 6.12", "dynamic", _peer_rst, lambda tl: VERIFIED, eras=("send_reset_every_rst",)),
    Claim("reset-sets-epipe",
          "The kernel's tcp_reset handler sets sk->sk_err = EPIPE for the client socket in CLOSE_WAIT state.",
          "tcp_reset, tcp_done_with_error (net/ipv4/tcp_input.c; the latter in mainline 6.11, stable 6.10.y, 6.6.44+ and 6.1.103+)",
          "dynamic", _who_wrote_sk_err, _expected_who_wrote,
          eras=("tcp_done_with_error", "tcp_reset_skb", "inet_sk_error_report")),
    Claim("reset-calls-tcp-done", "... and eventually calls tcp_done, which disables further sending.",
          "tcp_done (net/ipv4/tcp.c): tcp_set_state(TCP_CLOSE), sk_shutdown = SHUTDOWN_MASK; 6.1, 6.12",
          "dynamic", _tcp_done_stops_sending, lambda tl: VERIFIED, eras=("tcp_done_with_error",)),
    Claim("second-write-error-path",
          "Consequently, the second write jumps to the error path and returns -EPIPE "
          "(through the sk_err check in tcp_sendmsg_locked).",
          "tcp_sendmsg_locked (net/ipv4/tcp.c) → sk_stream_wait_connect → sock_error (net/core/stream.c, "
          "include/net/sock.h); 6.1, 6.12", "dynamic", _second_write_path, _sees),
    Claim("packet-sequence",
          "tcpdump: three packets for the handshake, a FIN from the server, an ACK from the client, the "
          "client's data packet, and finally a RST from the server.",
          "observed on the wire (net:net_dev_start_xmit)", "dynamic", _packets, lambda tl: VERIFIED),
)


def check_all(tl: Timeline) -> list[ClaimResult]:
    """The article's claims are about its own scenario (`close`)."""
    return [ClaimResult(c, c.check(tl), c.expected(tl)) for c in CLAIMS]
