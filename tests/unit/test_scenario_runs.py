"""Recorded runs of the scenario files on this machine's kernel (6.18, tracepoints):
every built-in matches again on replay, the SO_ERROR/poll steps and the reads carry
the kernel path that decided them, and a user's file recorded with --record is judged
again from the text the recording kept."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tracer.cli import main
from tracer.process import scenarios
from tracer.process.annotate import annotate
from tracer.process.timeline import Branch, QueryNote
from tracer.process.verdicts import check
from tracer.record.recording import Recording

DATA = Path(__file__).parent / "data"
FILES = DATA / "native-6.18-tracepoint-files.jsonl"  # `--scenario all --check --record`, 14 built-ins
USER = DATA / "native-6.18-user-file.jsonl"  # the README's guide: close, the server reads first


def test_every_builtin_matches_on_replay():
    recs = Recording.load_all(FILES)
    assert [r.scenario for r in recs] == list(scenarios.ORDER)
    for rec in recs:
        v = check(annotate(rec))
        assert v.ok, (rec.scenario, v.rows)


def _timeline(name):
    return annotate(next(r for r in Recording.load_all(FILES) if r.scenario == name))


def test_so_error_is_annotated_with_sock_error_and_its_effect():
    tl = _timeline("so-error")
    q = [i for i in tl.items if isinstance(i, QueryNote)]
    assert [(n.what, n.index, n.value) for n in q] == [("SO_ERROR", 1, "EPIPE"), ("SO_ERROR", 2, "0")]
    assert q[0].facts["branch"] == "so_error_taken" and q[0].inferred
    # write 2's entry shows the sk_err SO_ERROR left: 0, so it failed from the state, not from sk_err.
    assert q[0].facts["next_call"] == 2 and q[0].facts["next_sk_err"] == 0
    assert q[1].facts["branch"] == "so_error_none"


def test_poll_bits_come_with_the_state_they_were_read_in():
    q = [i for i in _timeline("poll").items if isinstance(i, QueryNote)]
    assert [(n.facts["state"], n.value) for n in q] == [("CLOSE_WAIT", "POLLIN|POLLOUT|POLLRDHUP"),
                                                         ("CLOSE", "POLLIN|POLLOUT|POLLERR|POLLHUP|POLLRDHUP")]


def test_reads_are_decided_by_tcp_recvmsg_locked_order():
    eof = _timeline("read-after-rst").reads[0]
    assert (eof.ret, eof.decision.branch) == (0, Branch.EOF_ERR_LEFT)  # SOCK_DONE before sk_err
    reset = _timeline("reset-read").reads[0]
    assert (reset.errno, reset.decision.branch) == ("ECONNRESET", Branch.READ_SK_ERR)
    assert _timeline("read-first").reads[0].decision.branch == Branch.EOF


def test_a_users_recording_is_judged_from_the_file_it_kept():
    r = CliRunner().invoke(main, ["replay", str(USER), "--check", "--json"])
    assert r.exit_code == 0, r.output
    assert '"type": "scenario", "name": "mine"' in r.output and '"verdict": "match"' in r.output


def test_every_branch_is_worded_in_every_form():
    """words.py words each Branch for the timeline (READ_WORDS or the write tables) and for one line (reason)."""
    from tracer.display import words

    for b in (Branch.EOF, Branch.EOF_ERR_LEFT, Branch.READ_SK_ERR, Branch.READ_ERROR, Branch.READ_DATA):
        assert b in words.READ_WORDS and b in words.REASON_WORDS, b


def test_evidence_files_hold_the_queries(tmp_path):
    r = CliRunner().invoke(main, ["replay", str(FILES), "--packetdrill", str(tmp_path / "x.pkt"),
                                  "--pcap", str(tmp_path / "x.pcap"), "--ladder"])
    assert r.exit_code == 0, r.output
    so_error = (tmp_path / "x-so-error.pkt").read_text()
    assert "getsockopt(3, SOL_SOCKET, SO_ERROR, [EPIPE], [4]) = 0" in so_error
    poll = (tmp_path / "x-poll.pkt").read_text()
    assert "poll([{fd=3, events=POLLIN|POLLOUT|POLLRDHUP, revents=POLLIN|POLLOUT|POLLRDHUP}], 1, 0) = 1" in poll


# The VM boots' `--scenario all --check --record` (tests/live/scenarios.py all_json).
KPROBE = [DATA / "debian-6.1.0-57-kprobe-files.jsonl", DATA / "debian-6.12.117-kprobe-files.jsonl"]


@pytest.mark.parametrize("path", KPROBE, ids=["6.1", "6.12"])
def test_kprobes_see_the_new_paths(path):
    from tracer.process.verdicts import observed_rst_sender

    tls = {r.scenario: annotate(r) for r in Recording.load_all(path)}
    assert list(tls) == list(scenarios.ORDER)
    for name, tl in tls.items():
        assert check(tl).status == "match", (name, check(tl).rows)
    # tcp_v4_send_reset(NULL, skb): no timewait socket was left (tcp_max_tw_buckets 0).
    assert observed_rst_sender(tls["no-timewait"]) == "no socket"
    assert observed_rst_sender(tls["orphan-finwait2"]) == "full socket"
    # SO_ERROR took sk_err: write 2's sk_stream_wait_connect saw 0 and returned -EPIPE from the state.
    w2 = next(w for w in tls["so-error"].writes if w.index == 2)
    wc = next(s for s in w2.path if s.func == "sk_stream_wait_connect")
    assert (wc.values.get("sk_err"), w2.decision.branch) == (0, Branch.WAIT_STATE), w2.path
    # Reads seen in tcp_recvmsg itself, not inferred.
    reset = tls["reset-read"].reads[0]
    assert (reset.decision.branch, reset.inferred) == (Branch.READ_SK_ERR, False)
    eof = tls["read-after-rst"].reads[0]
    assert (eof.decision.branch, eof.inferred) == (Branch.EOF_ERR_LEFT, False)

    # SO_ERROR seen at sk_getsockopt's entry: the sk_err it returned (EPIPE), then 0. The 6.12 recording
    # was made before that probe existed: there SO_ERROR is worded from the source, marked inferred.
    q = tls["so-error"].queries
    if "kprobe:sk_getsockopt" in tls["so-error"].recording.attached:
        assert [(n.inferred, n.facts.get("sk_err_at_entry")) for n in q] == [(False, 32), (False, 0)]
    else:
        assert [(n.inferred, n.facts.get("sk_err_at_entry")) for n in q] == [(True, None), (True, None)]
