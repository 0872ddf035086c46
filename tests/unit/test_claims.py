"""The claim checker on recorded streams, including streams where the kernel
disagrees with the tool's source reading: it must then say refuted or
not-observed, and --check must fail.

Source facts used (Linux 6.1.192/6.12.117, docs/kernel-source.md):
tcp_sendmsg_locked is in net/ipv4/tcp.c; tcp_reset picks EPIPE in CLOSE_WAIT
and ECONNRESET in ESTABLISHED (net/ipv4/tcp_input.c).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tracer.display import words
from tracer.process.annotate import annotate
from tracer.process.claims import CLAIMS, check_all
from tracer.record.event import Kind
from tracer.record.recording import Recording

DATA = Path(__file__).parent / "data"
KPROBE = DATA / "debian-6.1.0-56-kprobe-all.jsonl"
TRACEPOINT = DATA / "native-6.18-tracepoint-writes3.jsonl"


def verdicts(rec: Recording) -> dict[str, str]:
    return {r.claim.id: r.verdict.verdict for r in check_all(annotate(rec))}


def results(rec: Recording):
    return {r.claim.id: r for r in check_all(annotate(rec))}


@pytest.fixture
def kp() -> Recording:
    return Recording.load_all(KPROBE)[0]  # the first recording is the `close` scenario


@pytest.fixture
def tp() -> Recording:
    return Recording.load(TRACEPOINT)


def test_claims_cover_the_article():
    ids = {c.id for c in CLAIMS}
    assert ids == {"close-wait-no-error", "epipe-condition", "sendmsg-file", "peer-rst", "reset-sets-epipe",
                   "reset-calls-tcp-done", "second-write-error-path", "packet-sequence"}
    for c in CLAIMS:
        assert c.statement and c.source and c.how in ("dynamic", "source")


def test_kprobe_recording_verdicts(kp):
    assert kp.scenario == "close" and kp.backend == "kprobe"
    v = verdicts(kp)
    assert v == {
        "close-wait-no-error": "verified",
        "epipe-condition": "imprecise",
        "sendmsg-file": "refuted",
        "peer-rst": "verified",
        "reset-sets-epipe": "imprecise",  # 6.1.0-56 has tcp_done_with_error (6.1.103 backport)
        "reset-calls-tcp-done": "verified",
        "second-write-error-path": "imprecise",
        "packet-sequence": "verified",
    }
    assert all(r.as_expected for r in results(kp).values())


def test_every_verdict_has_evidence_from_events(kp):
    for r in results(kp).values():
        assert r.verdict.evidence, r.claim.id
    second = [words.evidence(e) for e in results(kp)["second-write-error-path"].verdict.evidence]
    assert any("sk_stream_wait_connect" in e for e in second)


def test_tracepoint_backend_says_not_observed_for_paths(tp):
    v = verdicts(tp)
    assert v["second-write-error-path"] == "not-observed"
    assert v["epipe-condition"] == "not-observed"
    assert v["close-wait-no-error"] == "verified" and v["packet-sequence"] == "verified"
    assert all(r.as_expected for r in results(tp).values())


def test_kernel_without_tcp_done_with_error_verifies_the_articles_sk_err_claim(kp):
    """Derived: a kernel before 6.11 without the stable backport has no tcp_done_with_error: tcp_reset stores sk_err itself."""
    rec = dataclasses.replace(
        kp,
        events=[e for e in kp.events if e.kind != Kind.DONE_WITH_ERROR],
        kernel_functions=[f for f in kp.kernel_functions if f != "tcp_done_with_error"],
    )
    r = results(rec)["reset-sets-epipe"]
    assert r.verdict.verdict == "verified" and r.expected == "verified"


def test_rst_in_established_refutes_the_epipe_claim(kp):
    """Derived: had the RST hit an ESTABLISHED socket, sk_err would not be EPIPE."""
    est = next(k for k, v in kp.state_names.items() if v == "ESTABLISHED")
    rec = dataclasses.replace(kp, events=[dataclasses.replace(e, state=est) if e.kind == Kind.TCP_RESET else e
                                          for e in kp.events])
    r = results(rec)["reset-sets-epipe"]
    assert r.verdict.verdict == "refuted" and not r.as_expected


def test_second_write_through_the_sk_err_check_would_verify_the_article(kp):
    """Derived: if write 2 had not gone through sk_stream_wait_connect, the article's path holds."""
    w2 = next(w for w in kp.writes if w.index == 2)
    rec = dataclasses.replace(kp, events=[
        e for e in kp.events
        if not (e.kind in (Kind.WAIT_CONNECT_ENTER, Kind.WAIT_CONNECT_RETURN) and w2.t_start_ns <= e.ts_ns <= w2.t_end_ns)])
    r = results(rec)["second-write-error-path"]
    assert r.verdict.verdict == "verified" and not r.as_expected


def test_missing_rst_packet_refutes_the_packet_sequence(kp):
    rec = dataclasses.replace(kp, events=[e for e in kp.events if not (e.kind == Kind.PACKET and e.tcp_flags & 0x04)])
    r = results(rec)["packet-sequence"]
    assert r.verdict.verdict == "refuted" and not r.as_expected


def test_packets_not_captured_is_not_observed(kp):
    rec = dataclasses.replace(kp, attached=[a for a in kp.attached if "net_dev_start_xmit" not in a],
                              events=[e for e in kp.events if e.kind != Kind.PACKET])
    assert verdicts(rec)["packet-sequence"] == "not-observed"


def test_first_write_failing_refutes_close_wait_claim(kp):
    """Derived: write 1 failing (as with an RST before it) contradicts 'the first write succeeds'."""
    close = next(k for k, v in kp.state_names.items() if v == "CLOSE")
    w1 = next(w for w in kp.writes if w.index == 1)
    rec = dataclasses.replace(kp, events=[
        dataclasses.replace(e, state=close, sk_err=104) if e.kind == Kind.SENDMSG_ENTER and w1.t_start_ns <= e.ts_ns <= w1.t_end_ns
        else e for e in kp.events])
    assert verdicts(rec)["close-wait-no-error"] == "refuted"


def test_file_claim_is_a_cited_source_fact(kp):
    r = results(kp)["sendmsg-file"]
    assert r.claim.how == "source"
    assert any("net/ipv4/tcp.c" in words.evidence(e) for e in r.verdict.evidence)
