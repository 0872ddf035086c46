"""A scenario's observed results beside the ones its kernel-source reading
predicts (tracer/scenarios.py). Pure: works on an annotated Timeline.

A row is ok=True (matches), False (contradicts), or None (this backend or
kernel cannot see it: neither counted as a match nor as a mismatch). What a
kernel can see is decided by what it has (tracer/kernel/eras.py), from the
facts the recording kept: e.g. tcp:tcp_send_reset sees a timewait socket's
RST only where its record has a `reason` field (6.10+).
"""
from __future__ import annotations

from dataclasses import dataclass

from tracer.kernel.eras import SEND_RESET_TP, send_reset_sees_timewait
from tracer.process.timeline import IoNote, Timeline
from tracer.record.event import Kind
from tracer.process import scenarios
from tracer.process.scenarios import Scenario


@dataclass(frozen=True)
class Row:
    what: str
    expected: str
    observed: str
    ok: bool | None

    def to_json(self) -> dict:
        return {"what": self.what, "expected": self.expected, "observed": self.observed, "ok": self.ok}


@dataclass(frozen=True)
class ScenarioVerdict:
    scenario: Scenario
    rows: tuple[Row, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok is not False for r in self.rows)

    @property
    def status(self) -> str:
        if not self.ok:
            return "mismatch"
        return "match" if all(r.ok for r in self.rows) else "match (partly observable)"


def _result(w: IoNote) -> str:
    if w.killed_by:
        return w.killed_by
    return "success" if w.ret >= 0 else (w.errno or "?")


def _read_result(r: IoNote | None) -> str:
    return "not run" if r is None else (str(r.ret) if r.ret >= 0 else r.errno or "?")


def observed_rst_sender(tl: Timeline) -> str | None:
    """Who sent the RST, from the traced sender path (not guessed): None if no RST was sent."""
    return next((n.values["rst_sender"] for n in tl.kernel_notes() if n.values.get("rst_sender")), None)


SENDERS = ("timewait", "full socket", "active reset", "no socket")
# tcp:tcp_send_reset before 6.10: fired by tcp_send_active_reset, and by tcp_v4/v6_send_reset only
# `if (sk_fullsock(sk))` (net/ipv4/tcp_ipv4.c 5.15.100:804, 6.1.192:823, 6.9.0:877); from 6.10 for every RST.
FULL_SOCKETS_ONLY = ("full socket", "active reset")
BLIND_BEFORE_6_10 = ("not observable with the tracepoint backend on this kernel: its tcp:tcp_send_reset has no "
                     "`reason` field, so it fires only for full sockets and active resets (tcp_v4_send_reset, "
                     "net/ipv4/tcp_ipv4.c: `if (sk_fullsock(sk))` until 6.9, every RST from 6.10)")


def rst_senders_observable(tl: Timeline) -> tuple[str, ...]:
    """Which RST senders this recording's probes could see: with kprobe/fentry the sender
    functions (tcp_v4/v6_send_reset, tcp_send_active_reset) see them all; tcp:tcp_send_reset
    sees them all from 6.10, full sockets and active resets before (judged from the record's
    fields the recording kept; a recording without them is judged as seeing all, as before)."""
    attached = " ".join(tl.recording.attached)
    if any(f in attached for f in ("kprobe:tcp_v4_send_reset", "kprobe:tcp_v6_send_reset",
                                   "fentry:tcp_v4_send_reset", "fentry:tcp_v6_send_reset")):
        return SENDERS
    if f"tracepoint:{SEND_RESET_TP}" in attached:
        return FULL_SOCKETS_ONLY if send_reset_sees_timewait(tl.recording.tracepoint_fields) is False else SENDERS
    return ()


def _rst_observable(tl: Timeline) -> bool:
    return bool(rst_senders_observable(tl))


def check(tl: Timeline) -> ScenarioVerdict:
    sc = scenarios.get(tl.recording.scenario)
    exp = sc.expected
    rows: list[Row] = []
    writes = [w for w in tl.writes if w.index >= 1]
    for w in writes:
        if w.index > len(exp.writes):
            break
        want = exp.writes[w.index - 1]
        if want is None:  # not judged
            continue
        got = _result(w)
        rows.append(Row(f"write {w.index}", want, got, got == want))
    reads = {r.index: r for r in tl.reads}
    for i, want in enumerate(exp.reads, 1):
        if want is not None:
            got = _read_result(reads.get(i))
            rows.append(Row("read" if len(exp.reads) == 1 else f"read {i}", want, got, got == want))
    done = {(q.what, q.index): q for q in tl.recording.queries}
    for i, (label, want) in enumerate(exp.queries, 1):
        if want is None:
            continue
        n = sum(1 for lb, _ in exp.queries[:i] if lb == label)
        what = label if sum(1 for lb, _ in exp.queries if lb == label) == 1 else f"{label} {n}"
        q = done.get((label, n))
        got = "not run" if q is None else q.value
        want_text = want if isinstance(want, str) else "|".join(want) or "none"
        rows.append(Row(what, want_text, got, q is not None and got == want_text))

    sender = observed_rst_sender(tl)
    client_reset = any(n.event.kind in (Kind.TCP_RESET, Kind.RESET_TP) for n in tl.kernel_notes(side="client"))
    if not exp.rst_from:
        rows.append(Row("RST", "none", "none" if not (sender or client_reset) else (sender or "an RST arrived"),
                        not (sender or client_reset)))
    elif sender:
        rows.append(Row("RST sent by", " or ".join(exp.rst_from), sender, sender in exp.rst_from))
    elif not _rst_observable(tl):
        rows.append(Row("RST sent by", " or ".join(exp.rst_from), "not observed", None))
    elif set(exp.rst_from) - set(rst_senders_observable(tl)):
        # One of the predicted senders cannot be seen here: its silence is not a mismatch.
        rows.append(Row("RST sent by", " or ".join(exp.rst_from), BLIND_BEFORE_6_10, None))
    else:
        rows.append(Row("RST sent by", " or ".join(exp.rst_from), "not observed", False))

    signal_tp = any("signal_generate" in p for p in tl.recording.attached)
    sigs = [n for n in tl.kernel_notes(Kind.SIGNAL) if n.values.get("signal") == "SIGPIPE"]
    if not signal_tp:
        rows.append(Row("SIGPIPE", exp.sigpipe, "not observable here", None))
    else:
        epipes = sum(1 for w in writes if w.errno == "EPIPE" or w.killed_by == "SIGPIPE")
        if exp.sigpipe == "none":
            got, ok = ("none" if not sigs else f"{len(sigs)} generated"), not sigs
        elif exp.sigpipe == "kills":
            got = "kills" if any(w.killed_by == "SIGPIPE" for w in writes) and any(
                n.values["result"] == "delivered" for n in sigs) else f"{len(sigs)} generated, writer lived"
            ok = got == "kills"
        else:  # ignored: one per EPIPE write, none delivered
            ok = len(sigs) == epipes and all(n.values["result"] == "ignored" for n in sigs)
            got = "ignored" if ok else f"{len(sigs)} generated for {epipes} EPIPE writes"
        rows.append(Row("SIGPIPE", exp.sigpipe, got, ok))
    return ScenarioVerdict(sc, tuple(rows))
