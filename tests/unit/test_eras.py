"""Kernel eras (tracer/kernel/eras.py): what the running kernel has, decided from what it
shows -- BTF, kallsyms, a tracepoint's format in tracefs -- never from its version; the
refusal below the floor; and the verdicts and claims of a kernel older than 6.10 with the
tracepoint backend, where the closed server's timewait RST cannot be seen.

Kernel facts used, each read in the source (tracer/kernel/eras.py cites them all):
- tcp:tcp_send_reset fires in tcp_v4_send_reset only `if (sk_fullsock(sk))` until 6.9
  (net/ipv4/tcp_ipv4.c 5.15.100:804, 6.1.192:823, 6.9.0:877), for every RST from 6.10,
  when its record gained `reason` (include/trace/events/tcp.h 6.11.11, 6.12.117); the
  recorded formats: tests/unit/data/tracefs-formats-*.txt (6.1.0-57: no `reason`).
- sock:sock_send_length from 6.3, sock:inet_sk_error_report from 5.14, tcp_done_with_error
  from 6.11 (stable 6.1.103): a kernel like 5.15.100 has none of them.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tracer.cli import main
from tracer.errors import UserError
from tracer.collect.doctor import era_checks
from tracer.collect.plan import candidates, function_targets, tracepoint_targets
from tracer.kernel.eras import BY_KEY, ERAS, RECORDED_FIELDS, SEND_RESET_TP, floor_missing, recorded_fields
from tracer.kernel.support import format_fields
from tracer.process.annotate import annotate
from tracer.process.claims import CLAIMS, check_all
from tracer.process.scenarios import SCENARIOS
from tracer.process.verdicts import check
from tracer.record.event import Kind
from tracer.record.recording import Recording
from tests.unit.kernels import PROTOTYPES_5_15, RECORDED, formats, recorded_prototypes, view

DATA = Path(__file__).parent / "data"
TP_ALL = DATA / "native-6.18-tracepoint-all.jsonl"


def kernel(name: str, **kw):
    protos = PROTOTYPES_5_15 if name == "5.15" else recorded_prototypes(name)
    fields = {} if name == "5.15" else formats(name)
    return view(function_targets(), tracepoint_targets(), protos, tracepoint_fields=fields, **kw)


# --- what the kernel has, from what it shows -------------------------------------------


def test_recorded_formats_parse_into_fields():
    fields = formats("6.12.117+deb12-amd64")
    assert fields[SEND_RESET_TP] == {"skbaddr", "skaddr", "state", "reason", "saddr", "daddr"}
    assert formats("6.1.0-57-amd64")[SEND_RESET_TP] == {"skbaddr", "skaddr", "state", "sport", "dport", "family",
                                                        "saddr", "daddr", "saddr_v6", "daddr_v6"}
    assert "sock:sock_send_length" not in formats("6.1.0-57-amd64")  # 6.3+
    assert {"error", "sport", "dport", "protocol"} <= formats("6.1.0-57-amd64")["sock:inet_sk_error_report"]


def test_format_fields_leave_out_the_common_header_and_array_sizes():
    text = ("name: x\nID: 1\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
            "\tfield:__u8 saddr[sizeof(struct sockaddr_in6)];\toffset:8;\tsize:28;\tsigned:0;\n"
            "\tfield:enum sk_rst_reason reason;\toffset:36;\tsize:4;\tsigned:0;\n\nprint fmt: \"%d\", REC->reason\n")
    assert format_fields(text) == {"saddr", "reason"}


@pytest.mark.parametrize("name,every_rst", [("6.1.0-57-amd64", False), ("6.12.117+deb12-amd64", True),
                                            ("6.18.44-fc-v769", True)])
def test_send_reset_sees_every_rst_from_its_reason_field(name, every_rst):
    assert BY_KEY["send_reset_every_rst"].present(kernel(name)) is every_rst


def test_the_5_15_shapes_are_told_from_its_prototypes():
    v = kernel("5.15")
    assert BY_KEY["tcp_recvmsg_nonblock"].present(v) is True
    assert BY_KEY["tcp_reset_skb"].present(v) is True
    assert BY_KEY["tcp_recvmsg_nonblock"].present(kernel("6.1.0-57-amd64")) is False


def test_tcp_done_with_error_by_kallsyms_not_by_version():
    v = kernel("6.1.0-57-amd64")  # 6.1.192 carries the 6.1.103 backport
    assert BY_KEY["tcp_done_with_error"].present(v) is True
    gone = dataclasses.replace(v, functions=v.functions - {"tcp_done_with_error"})
    assert BY_KEY["tcp_done_with_error"].present(gone) is False


def test_every_era_cites_a_source_and_an_oldest_kernel():
    for era in ERAS:
        assert era.since and era.source and era.effect and era.asked, era.key
        assert any(ch.isdigit() for ch in era.source), era.key  # a version read


def test_scenarios_and_claims_name_known_eras():
    for sc in SCENARIOS.values():
        assert sc.eras and set(sc.eras) <= set(BY_KEY), sc.name
    assert {c.id for c in CLAIMS if c.eras} >= {"peer-rst", "reset-sets-epipe", "reset-calls-tcp-done"}
    assert all(set(c.eras) <= set(BY_KEY) for c in CLAIMS)


def test_a_recording_keeps_the_fields_the_verdicts_need():
    fields = sorted(formats("6.1.0-57-amd64")[SEND_RESET_TP])
    assert recorded_fields(kernel("6.1.0-57-amd64")) == {SEND_RESET_TP: fields}
    assert set(RECORDED_FIELDS) == {SEND_RESET_TP}


# --- the floor -----------------------------------------------------------------------------


def test_no_ring_buffer_is_one_line_naming_it_and_5_8():
    v = kernel("6.1.0-57-amd64", ringbuf=False)
    assert floor_missing(v) is BY_KEY["ringbuf"]
    with pytest.raises(UserError) as ei:
        candidates("repro", "auto", v)
    msg = ei.value.message
    assert "BPF ring buffer" in msg and "Linux 5.8" in msg and "\n" not in msg
    assert ei.value.exit_code == 2 and "trace-halfclose vm" in ei.value.remedy


def test_ring_buffer_not_checked_is_not_a_refusal():
    assert floor_missing(kernel("6.1.0-57-amd64", ringbuf=None)) is None


def test_no_btf_is_refused_when_it_is_read(tmp_path):
    from tracer.kernel.view import load_btf
    with pytest.raises(UserError) as ei:
        load_btf(tmp_path / "vmlinux")
    assert "BTF" in ei.value.message and "5.4" in ei.value.message and "CONFIG_DEBUG_INFO_BTF" in ei.value.remedy


def test_a_needed_tracepoint_missing_says_which():
    v = kernel("6.1.0-57-amd64", kprobes=False, btf=False)
    v = dataclasses.replace(v, tracepoints=v.tracepoints - {"tcp:tcp_receive_reset"})
    with pytest.raises(UserError) as ei:
        candidates("repro", "tracepoint", v)
    assert "tcp:tcp_receive_reset" in ei.value.message


# --- the doctor ----------------------------------------------------------------------------


def test_doctor_lists_every_era_of_the_kernel():
    checks = {c.name: c for c in era_checks(kernel("6.1.0-57-amd64"))}
    assert len(checks) == len(ERAS)
    tw = checks["era: tcp:tcp_send_reset on every RST"]
    assert not tw.ok and tw.detail.startswith("no (Linux 6.10+)") and not tw.required and "6.9.0:877" in tw.source
    assert checks["era: BPF ring buffer"].ok and checks["era: BPF ring buffer"].required
    assert checks["era: tcp_done_with_error"].ok


def test_doctor_without_a_view_says_not_known():
    for c in era_checks(None):
        assert not c.ok and not c.required and "not known" in c.detail


# --- verdicts on a kernel before 6.10, tracepoint backend ----------------------------------


def before_6_10(rec: Recording, report: bool = True) -> Recording:
    """The 6.18 tracepoint run as a 5.15 kernel would have given it: tcp:tcp_send_reset without
    `reason` (6.1's recorded format) does not fire for a timewait socket or no socket; no
    sock:sock_send_length (6.3+), no tcp_done_with_error (6.11, 6.1.103); report=False: no
    sock:inet_sk_error_report either (before 5.14)."""
    tw = next(k for k, v in rec.state_names.items() if v == "TIME_WAIT")
    gone = {Kind.SEND_LENGTH} | (set() if report else {Kind.ERROR_REPORT})
    events = [e for e in rec.events if e.kind not in gone
              and not (e.kind == Kind.SEND_RESET and (e.sk == 0 or e.state == tw))]
    tps = {"tracepoint:sock:sock_send_length"} | (set() if report else {"tracepoint:sock:inet_sk_error_report"})
    return dataclasses.replace(
        rec, kernel="5.15.100", events=events,
        attached=[a for a in rec.attached if a not in tps],
        missing=[*rec.missing, *(a.removeprefix("tracepoint:") for a in sorted(tps))],
        kernel_functions=[f for f in rec.kernel_functions if f != "tcp_done_with_error"],
        tracepoint_fields={SEND_RESET_TP: sorted(formats("6.1.0-57-amd64")[SEND_RESET_TP])})


def test_before_6_10_the_timewait_sender_is_not_observable_and_every_scenario_passes():
    for rec in Recording.load_all(TP_ALL):
        v = check(annotate(before_6_10(rec)))
        assert v.ok, (rec.scenario, v.rows)
        row = next((r for r in v.rows if r.what == "RST sent by"), None)
        if row is not None and "timewait" in row.expected:
            assert row.ok is None and row.observed.startswith("not observable with the tracepoint backend")
            assert "tcp_v4_send_reset" in row.observed and "6.10" in row.observed
            assert v.status == "match (partly observable)"


def test_from_6_10_the_same_silence_is_a_mismatch():
    rec = Recording.load_all(TP_ALL)[0]
    old = before_6_10(rec)
    fields = sorted(formats("6.12.117+deb12-amd64")[SEND_RESET_TP])
    now = dataclasses.replace(old, tracepoint_fields={SEND_RESET_TP: fields})
    row = next(r for r in check(annotate(now)).rows if r.what == "RST sent by")
    assert row.ok is False and row.observed == "not observed"


def test_a_recording_without_fields_is_judged_as_before():
    rec = Recording.load_all(TP_ALL)[0]
    assert rec.tracepoint_fields == {}  # recorded before the fields were kept
    old = dataclasses.replace(before_6_10(rec), tracepoint_fields={})
    row = next(r for r in check(annotate(old)).rows if r.what == "RST sent by")
    assert row.ok is False


def test_before_6_10_the_close_sender_is_seen_when_it_was_a_full_socket():
    rec = Recording.load_all(TP_ALL)[0]
    rec = dataclasses.replace(rec, tracepoint_fields={SEND_RESET_TP: sorted(formats("6.1.0-57-amd64")[SEND_RESET_TP])})
    row = next(r for r in check(annotate(rec)).rows if r.what == "RST sent by")
    assert row.ok is True  # the 6.18 run saw it: a sender seen matches whatever the era


@pytest.mark.parametrize("report", [True, False])
def test_claims_before_6_10_with_tracepoints_are_as_expected(report):
    """reset-sets-epipe: no tcp_done_with_error, so tcp_reset stores sk_err (verified); before 5.14
    (no inet_sk_error_report) the EPIPE is read at write 2's entry."""
    rec = before_6_10(Recording.load_all(TP_ALL)[0], report=report)
    results = {r.claim.id: r for r in check_all(annotate(rec))}
    assert all(r.as_expected for r in results.values()), {k: r.verdict for k, r in results.items()}
    assert results["reset-sets-epipe"].verdict.verdict == "verified"
    if not report:
        assert any("write 2 found sk_err EPIPE" in str(e) for e in results["reset-sets-epipe"].verdict.evidence)


def test_replay_check_passes_on_a_kernel_before_6_10(tmp_path):
    path = tmp_path / "old.jsonl"
    with open(path, "w") as f:
        for rec in Recording.load_all(TP_ALL):
            before_6_10(rec).dump(f)
    r = CliRunner().invoke(main, ["replay", "--check", "--json", str(path)])
    assert r.exit_code == 0, r.output
    verdicts = {o["name"]: o["verdict"] for o in map(json.loads, r.output.splitlines()) if o["type"] == "scenario"}
    assert verdicts["close"] == "match (partly observable)" and verdicts["linger0"] == "match"
    again = Recording.load_all(path)  # the facts survive the recording
    assert again[0].tracepoint_fields[SEND_RESET_TP] and "reason" not in again[0].tracepoint_fields[SEND_RESET_TP]


def test_debian_6_1_with_tracepoints_is_partly_observable_and_passes_the_check():
    """Recorded in the VM on Debian's 6.1.0-57 (`--backend tracepoint --scenario all --check
    --record`): its tcp:tcp_send_reset has no `reason`, so the closed server's timewait RST was
    not traced; the run kept the fields, and replay judges as the run did."""
    recs = Recording.load_all(DATA / "debian-6.1.0-57-tracepoint-all.jsonl")
    assert "reason" not in recs[0].tracepoint_fields[SEND_RESET_TP]
    status = {}
    for rec in recs:
        v = check(annotate(rec))
        assert v.ok, (rec.scenario, v.rows)
        status[rec.scenario] = v.status
    assert status["close"] == "match (partly observable)"
    assert status["shutdown-rdwr"] == status["linger0"] == "match"  # a full socket's and an active reset are seen
    assert "sock:sock_send_length" in recs[0].missing  # 6.3+


def test_kernel_view_reads_prototypes_fields_and_the_ring_buffer(tmp_path):
    """The view from recorded inputs: a 5.15-shaped BTF (tests/unit/test_btf.py), a kallsyms,
    and a tracefs holding 6.1's recorded tcp_send_reset format."""
    from tests.unit.test_btf import kernel_5_15
    from tracer.kernel.view import kernel_view

    text = (DATA / "tracefs-formats-6.1.0-57-amd64.txt").read_text()
    fmt = text.split("=== tcp/tcp_send_reset\n", 1)[1].split("\n=== ", 1)[0]
    (tmp_path / "events/tcp/tcp_send_reset").mkdir(parents=True)
    (tmp_path / "events/tcp/tcp_send_reset/format").write_text(fmt)
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text("ffffffff81000000 T tcp_recvmsg\nffffffff81000100 T tcp_sendmsg_locked\n"
                        "ffffffff81000200 T bpf_ringbuf_output\nffffffff81000300 t tcp_fin.isra.0\n")
    v = kernel_view(tmp_path, kernel_5_15(), ["tcp_recvmsg", "tcp_sendmsg_locked", "tcp_fin"],
                    ["tcp:tcp_send_reset", "sock:sock_send_length"], kallsyms=kallsyms)
    assert v.functions == {"tcp_recvmsg", "tcp_sendmsg_locked"}  # the ring buffer's symbol is not one of ours
    assert v.prototypes["tcp_recvmsg"].ret_slot == 6
    assert v.ringbuf is True  # this BTF has no enum bpf_map_type: kallsyms answers
    assert v.tracepoints == {"tcp:tcp_send_reset"}
    assert "reason" not in v.tracepoint_fields["tcp:tcp_send_reset"]
    assert BY_KEY["send_reset_every_rst"].present(v) is False and BY_KEY["sock_send_length"].present(v) is False
