"""--packetdrill: the script of every scenario (tracer/display/packetdrill.py) against recorded runs.

The expected lines are computed here from the recording's raw events (ports, absolute
sequence numbers, the client's results), not with the writer's code: the calls and
their errnos in order, every packet with its sequence and acknowledgment numbers
relative to its sender's ISN and the receiver's, the RST exactly, the sysctls.
packetdrill itself is not run here (it is not in Debian); the README says how the
scripts were replayed on 6.1, 6.12 and 6.18.
"""
from __future__ import annotations

import errno
import os
import re

import pytest

pytest.importorskip("dpkt")

from tests.unit.conftest import DATA  # noqa: E402
from tracer.display import packetdrill  # noqa: E402
from tracer.process.annotate import annotate  # noqa: E402
from tracer.record.event import Kind  # noqa: E402
from tracer.record.recording import Recording  # noqa: E402

RECORDINGS = {
    "6.18-tracepoint-bytes": DATA / "native-6.18-tracepoint-all-packets.jsonl",
    "6.1-kprobe-bytes": DATA / "debian-6.1.0-57-kprobe-all-packets.jsonl",
    "6.12-kprobe-bytes": DATA / "debian-6.12.117-kprobe-all-packets.jsonl",
    "6.18-tracepoint": DATA / "native-6.18-tracepoint-all.jsonl",
    "6.1-kprobe": DATA / "debian-6.1.0-56-kprobe-all.jsonl",
    "6.1-kprobe-fin-timeout": DATA / "debian-6.1.0-56-kprobe-all-fin-timeout-120.jsonl",
}
# packetdrill's flag letters (its tcp_packet.c): S F R P, then "." for ACK.
LETTERS = ((0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"))
SYN, FIN, RST, ACK = 0x02, 0x01, 0x04, 0x10


def cases():
    for name, path in RECORDINGS.items():
        for rec in Recording.load_all(path):
            yield pytest.param(path, rec.scenario, id=f"{name}-{rec.scenario}")


def load(path, scenario) -> Recording:
    return next(r for r in Recording.load_all(path) if r.scenario == scenario)


def scenario_packets(rec: Recording):
    """The run's packets up to the reproduction's end (its teardown is the processes exiting:
    with no end recorded, the client's first FIN or RST, as it never closes in a scenario)."""
    out = []
    for e in sorted((e for e in rec.events if e.kind == Kind.PACKET), key=lambda e: e.ts_ns):
        if rec.teardown_ns and e.ts_ns >= rec.teardown_ns:
            break
        if not rec.teardown_ns and e.sport == rec.client_port and e.tcp_flags & (FIN | RST):
            break
        out.append(e)
    return out


def expected_packet(rec: Recording, e, isn: dict[int, int]) -> str:
    out = e.sport == rec.client_port
    flags = "".join(ch for bit, ch in LETTERS if e.tcp_flags & bit) + ("." if e.tcp_flags & ACK else "")
    seq = (e.seq - isn[e.sport]) % 2**32
    text = f"{'>' if out else '<'} {flags} {seq}:{seq + e.value}({e.value})"
    if e.tcp_flags & ACK:
        text += f" ack {(e.ack_seq - isn[e.dport]) % 2**32}"
    return text


def event_lines(text: str) -> list[str]:
    """The script's events without their times and comments."""
    out = []
    for line in text.splitlines():
        line = line.split("//")[0].strip()
        if not line or line.startswith("`") or line.startswith("--"):
            continue
        out.append(re.sub(r"^(?:\+?[\d.]+(?:\.\.\.[\d.]+)?)\s+", "", line))
    return out


@pytest.mark.parametrize("path,scenario", list(cases()))
def test_script_of_every_scenario(path, scenario):
    rec = load(path, scenario)
    s = packetdrill.script(annotate(rec))
    if any(w.killed_by for w in rec.writes):
        # sigpipe-default: packetdrill ignores SIGPIPE, so the run cannot be replayed: one line says so
        assert not s.replayable
        assert s.text.count("\n") == 1 and s.text.startswith(f"// scenario {scenario}: not expressible in packetdrill")
        assert "SIGPIPE" in s.text
        return
    assert s.replayable
    lines = event_lines(s.text)
    # the calls, in order, with their observed results and errnos
    calls = [line for line in lines if not line.startswith(("<", ">"))]
    assert calls[:2] == ["socket(..., SOCK_STREAM, IPPROTO_TCP) = 3", "connect(3, ..., ...) = 0"]
    io = sorted(rec.writes + rec.reads, key=lambda w: w.t_start_ns)
    want = []
    for w in io:
        if w in rec.reads:
            head = f"read(3, ..., {w.size})"
        elif scenario == "nosignal":
            head = f"send(3, ..., {w.size}, MSG_NOSIGNAL)"
        else:
            head = f"write(3, ..., {w.size})"
        res = str(w.ret) if w.ret >= 0 else f"-1 {w.errno} ({os.strerror(getattr(errno, w.errno))})"
        want.append(f"{head} = {res}")
    assert [c for c in calls if not c.startswith(("socket", "connect", "getsockopt"))] == want
    # every packet, its numbers relative to each side's ISN
    pkts = scenario_packets(rec)
    isn = {e.sport: e.seq for e in pkts if e.tcp_flags & SYN}
    got = [line for line in lines if line.startswith(("<", ">"))]
    assert len(got) == len(pkts)
    for line, e in zip(got, pkts):
        assert line.startswith(expected_packet(rec, e, isn)), (line, expected_packet(rec, e, isn))
    # the order of calls and packets is the order they happened in
    order = sorted([(w.t_start_ns, "call") for w in io] + [(e.ts_ns, "packet") for e in pkts])
    kinds = ["packet" if line.startswith(("<", ">")) else "call" for line in lines
             if not line.startswith(("socket", "connect", "getsockopt"))]
    assert kinds == [k for _, k in order]


@pytest.mark.parametrize("path", list(RECORDINGS.values()), ids=list(RECORDINGS))
def test_the_rst_line_is_exact(path):
    """close: the server's RST has its exact sequence number (the kernel ignores one out of window)."""
    rec = load(path, "close")
    pkts = scenario_packets(rec)
    isn = {e.sport: e.seq for e in pkts if e.tcp_flags & SYN}
    rst = next(e for e in pkts if e.tcp_flags & RST)
    fin = next(e for e in pkts if e.tcp_flags & FIN and e.sport == rec.server_port)
    assert (rst.seq - isn[rec.server_port]) % 2**32 == (fin.seq - isn[rec.server_port]) % 2**32 + 1 == 2
    text = packetdrill.script(annotate(rec)).text
    assert re.search(r"^\s*\+[\d.]+ < R 2:2\(0\) win 0\s+// sent by ", text, re.M), text


def test_header_names_the_run_and_the_sysctls_come_from_the_recording():
    rec = load(RECORDINGS["6.18-tracepoint-bytes"], "close")
    text = packetdrill.script(annotate(rec)).text
    first = text.splitlines()[:2]
    assert first[0].startswith("// trace-halfclose: scenario close")
    assert f"Linux {rec.kernel}, backend {rec.backend}, ipv4: client 127.0.0.1:{rec.client_port}" in first[1]
    assert rec.sysctls, "this recording has the namespace's sysctls"
    line = next(x for x in text.splitlines() if x.startswith("`"))
    assert line == "`sysctl -q " + " ".join(f"{k}={v}" for k, v in rec.sysctls.items()) + "`"


def test_options_and_windows_come_from_the_captured_bytes():
    rec = load(RECORDINGS["6.18-tracepoint-bytes"], "close")
    text = packetdrill.script(annotate(rec)).text
    synack = next(x for x in text.splitlines() if " < S. " in x)
    # the server's SYN-ACK as captured: its window and options (mss of loopback, TS, wscale)
    assert re.search(r"< S\. 0:0\(0\) ack 1 win \d+ <mss 65495,sackOK,TS val \d+ ecr \d+,nop,wscale \d+>", synack)
    syn = next(x for x in text.splitlines() if " > S " in x)
    assert "<mss 1460," in syn  # packetdrill's tun device (MTU 1500), said in the line before
    assert "> . 1:1(0) ack 1 <nop,nop,TS val" in text  # the client's options are checked; its windows not


def test_a_recording_without_bytes_says_what_it_assumes():
    rec = load(RECORDINGS["6.1-kprobe"], "close")
    text = packetdrill.script(annotate(rec)).text
    assert "no packet bytes" in text
    assert "`sysctl -q net.ipv4.tcp_timestamps=1 net.ipv4.tcp_sack=1 net.ipv4.tcp_window_scaling=1 " \
           "net.ipv4.tcp_ecn=2`" in text
    assert "sysctls not recorded" in text
    assert "> S 0:0(0) <...>" in text and "< S. 0:0(0) ack 1 win 65535\n" in text


def test_the_family_is_always_given():
    """packetdrill otherwise uses the family of the machine's primary address (IPv6 in a vng guest)."""
    rec = load(RECORDINGS["6.18-tracepoint-bytes"], "close")
    assert "\n--ip_version=ipv4\n" in packetdrill.script(annotate(rec)).text
    rec.family = "ipv6"
    text = packetdrill.script(annotate(rec)).text
    assert "\n--ip_version=ipv6\n" in text and "client [::1]:" in text


def test_gaps_are_relative_times():
    assert [packetdrill._gap(x) for x in (0.0002, 0.012, 1.25)] == ["+0", "+.012", "+1.250"]
