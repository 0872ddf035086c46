"""--pcap: the pcapng writer (tracer/display/pcap.py) on recorded runs with packet bytes.

The file is read back with dpkt's reader and by walking its blocks by hand (the
pcapng format: block type, length, body, length), never with the writer's own code.
tests/live/test_native_pcap.py reads a live run's file with tcpdump and tshark.
"""
from __future__ import annotations

import io
import re
import struct

import pytest

dpkt = pytest.importorskip("dpkt")
import dpkt.pcapng  # noqa: E402

from tests.unit.conftest import DATA  # noqa: E402
from tracer.display import pcap  # noqa: E402
from tracer.process.annotate import annotate  # noqa: E402
from tracer.record.event import Kind  # noqa: E402
from tracer.record.recording import Recording  # noqa: E402

WITH_BYTES = DATA / "native-6.18-tracepoint-all-packets.jsonl"  # --scenario all on 6.18, tracepoint, with bytes
KPROBE_6_1 = DATA / "debian-6.1.0-57-kprobe-all-packets.jsonl"  # the same in a VM: Debian's 6.1, kprobe
KPROBE_6_12 = DATA / "debian-6.12.117-kprobe-all-packets.jsonl"
WITHOUT_BYTES = DATA / "debian-6.1.0-56-writes3.jsonl"  # recorded before the capture existed
SHB, IDB, EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
TCP_FLAGS = ((0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x10, "."))


def runs(path=WITH_BYTES) -> dict[str, Recording]:
    return {r.scenario: r for r in Recording.load_all(path)}


def written(recs) -> bytes:
    out = io.BytesIO()
    pcap.write([annotate(r) for r in recs], out, "test")
    return out.getvalue()


def blocks(raw: bytes):
    """(type, body) of every block, walking the file by its length fields."""
    off = 0
    while off < len(raw):
        btype, blen = struct.unpack_from("<II", raw, off)
        assert struct.unpack_from("<I", raw, off + blen - 4)[0] == blen, "trailing length differs"
        yield btype, raw[off + 8:off + blen - 4]
        off += blen


def options(body: bytes) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    off = 0
    while off + 4 <= len(body):
        code, n = struct.unpack_from("<HH", body, off)
        if code == 0:
            break
        out.setdefault(code, []).append(body[off + 4:off + 4 + n])
        off += 4 + n + (-n % 4)
    return out


def packets(raw: bytes) -> list[dict]:
    """Each EPB: its time (ns), lengths, bytes and comment."""
    out = []
    for btype, body in blocks(raw):
        if btype != EPB:
            continue
        _iface, hi, lo, caplen, length = struct.unpack_from("<IIIII", body)
        data = body[20:20 + caplen]
        opts = options(body[20 + caplen + (-caplen % 4):])
        out.append({"ts": hi << 32 | lo, "caplen": caplen, "len": length, "data": data,
                    "comment": opts.get(1, [b""])[0].decode()})
    return out


def flags(data: bytes) -> str:
    tcp = dpkt.ip.IP(data).data if data[0] >> 4 == 4 else dpkt.ip6.IP6(data).data
    bits = tcp.flags
    return "".join(ch for bit, ch in TCP_FLAGS if bits & bit)


@pytest.mark.parametrize("path", [WITH_BYTES, KPROBE_6_1, KPROBE_6_12], ids=["6.18-tracepoint", "6.1-kprobe",
                                                                           "6.12-kprobe"])
def test_close_is_seven_packets_in_order_with_their_lengths(path):
    rec = runs(path)["close"]
    pkts = packets(written([rec]))
    assert [flags(p["data"]) for p in pkts] == ["S", "S.", ".", "F.", ".", "P.", "R"]
    data = pkts[5]
    assert data["len"] == 52 + 6 and data["caplen"] == 52  # the payload was in page fragments: not captured
    assert all(p["caplen"] == p["len"] for i, p in enumerate(pkts) if i != 5)


def test_each_packet_is_its_recorded_bytes_at_its_events_time():
    rec = runs()["close"]
    pkts = packets(written([rec]))
    sent = [e for e in rec.events if e.kind == Kind.PACKET]
    assert [p["ts"] for p in pkts] == [e.ts_ns + rec.wall_offset_ns for e in sent]
    for p, e in zip(pkts, sent):
        tcp = dpkt.ip.IP(p["data"]).data
        assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack if e.tcp_flags & 0x10 else 0) == \
               (e.sport, e.dport, e.seq, e.ack_seq if e.tcp_flags & 0x10 else 0)


@pytest.mark.parametrize("path", [WITH_BYTES, KPROBE_6_1, KPROBE_6_12], ids=["6.18-tracepoint", "6.1-kprobe",
                                                                           "6.12-kprobe"])
def test_comments_name_the_kernel_events_around_each_packet(path):
    rec = runs(path)["close"]
    comments = [p["comment"] for p in packets(written([rec]))]
    assert "write 1 → 6 in CLOSE_WAIT" in comments[5]
    senders = [e for e in rec.events if e.kind == Kind.SEND_RESET]
    assert senders, "the recording has the RST's sender"
    substate = rec.state_names.get(senders[0].tw_substate)
    if rec.state_names[senders[0].state] == "TIME_WAIT":
        assert comments[6].startswith(f"sent by a timewait socket (substate {substate}), tcp_timewait_state_process")
    else:
        assert comments[6].startswith("sent by a full socket in state")
    assert re.search(r"client: tcp_(receive_)?reset: RST in CLOSE_WAIT", comments[6])
    assert "write 2 → EPIPE in CLOSE" in comments[6]
    assert "server called close(2) on its connection" in comments[3]
    assert "client: CLOSE → SYN_SENT" in comments[0]
    assert all("\n" not in c for c in comments)  # one line each: tshark prints a field a line


def test_every_kernel_step_lands_on_exactly_one_packet():
    tl = annotate(runs()["close"])
    grouped = pcap.packet_notes(tl)
    placed = [id(n) for _, items in grouped for n in items]
    assert sorted(placed) == sorted(id(n) for n in tl.items if not pcap._is_packet(n))


def test_checksums_are_filled_in_where_the_whole_segment_was_captured():
    for p in packets(written([runs()["close"]])):
        ip = dpkt.ip.IP(p["data"])
        tcp = bytes(p["data"][ip.hl * 4:])
        pseudo = ip.src + ip.dst + struct.pack(">BBH", 0, 6, p["len"] - ip.hl * 4)
        ok = dpkt.in_cksum_done(dpkt.in_cksum_add(dpkt.in_cksum_add(0, pseudo), tcp)) == 0
        assert ok == (p["caplen"] == p["len"])  # the truncated data packet keeps the partial one


def test_ipv6_checksum():
    data = bytes.fromhex(  # an IPv6 SYN-ACK on loopback with the kernel's partial checksum
        "6000000000280640" + "00" * 15 + "01" + "00" * 15 + "01"
        + "270fb1763ab9a1ee4d1c71b5a012ffc40030000002043fc40402080a3325e5e723f0b5be0103030a")
    fixed = pcap.with_checksum(data, len(data))
    ip6 = dpkt.ip6.IP6(fixed)
    pseudo = ip6.src + ip6.dst + struct.pack(">IxxxB", len(fixed) - 40, 6)
    assert dpkt.in_cksum_done(dpkt.in_cksum_add(dpkt.in_cksum_add(0, pseudo), fixed[40:])) == 0


def test_one_section_per_scenario_naming_kernel_backend_and_scenario():
    recs = list(runs().values())
    raw = written(recs)
    sections = [options(body[16:]) for btype, body in blocks(raw) if btype == SHB]
    assert len(sections) == len(recs)
    for rec, opts in zip(recs, sections):
        comment = opts[1][0].decode()
        assert comment.startswith(f"trace-halfclose: scenario {rec.scenario} on Linux {rec.kernel}, "
                                  f"backend {rec.backend}, {rec.family}")
        assert opts[3][0].decode() == f"Linux {rec.kernel}"  # shb_os
    idbs = [body for btype, body in blocks(raw) if btype == IDB]
    assert len(idbs) == len(recs)
    linktype, _, snaplen = struct.unpack_from("<HHI", idbs[0])
    assert (linktype, snaplen) == (101, 256)
    assert options(idbs[0][8:])[9] == [b"\x09"]  # if_tsresol: nanoseconds


def test_dpkt_reads_the_file_back():
    raw = written([runs()["shutdown-wr"]])
    reader = dpkt.pcapng.Reader(io.BytesIO(raw))
    assert reader.datalink() == 101
    assert len(list(reader)) == len(packets(raw))


def test_a_recording_without_packet_bytes_is_refused():
    rec = Recording.load(WITHOUT_BYTES)
    with pytest.raises(pcap.NoPacketBytes, match="no packet bytes"):
        pcap.check([annotate(rec)])
