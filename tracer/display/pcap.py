"""--pcap FILE: the reproduction's packets as a pcapng file, each with a comment of
the kernel events around it. Written with dpkt (imported only here, only for --pcap).

One section per run (a `--scenario all` file has one per scenario), its header
naming the kernel, the backend and the scenario; one interface, link type RAW
(101: IPv4 or IPv6 from the first byte), nanosecond times. Each packet is what
the BPF program captured (bpf/shared/capture.bpf.c): the IP and TCP headers and
up to 64 payload bytes when they were in the skb's linear data, the original
length beside it. Its time is its HC_PACKET event's CLOCK_MONOTONIC time plus the
wall-clock offset the run recorded.

Which kernel events go in which packet's comment (packet_notes): a write or read
goes with the first data packet the client sent after the call began (a failed one
with the packet before it); an RST's sender with the next RST; a user step (the
server's close) with the next packet; any other kernel step with the packet its
side has just received, unless a user step came in between (then it leads to the
next packet its side sends).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import IO, Sequence

from tracer.display import words
from tracer.kernel.names import TCP_RST
from tracer.process.timeline import IoNote, KernelNote, MarkNote, QueryNote, Timeline
from tracer.record.event import Kind, Packet

LINKTYPE_RAW = 101  # pcap-linktype(7): raw IPv4 or IPv6
SNAPLEN = 256  # struct hc_packet's data[]
_PROTO_TCP = 6


class NoPacketBytes(ValueError):
    """The recording has packet events but no packet bytes (made before the capture existed)."""


@dataclass(frozen=True)
class Segment:
    """A packet for the file: its note in the timeline, its bytes, and the steps around it."""

    note: KernelNote
    packet: Packet
    around: tuple  # IoNote | KernelNote | MarkNote, in time order


def _is_packet(n) -> bool:
    return isinstance(n, KernelNote) and n.event.kind == Kind.PACKET


def _sender(p: KernelNote) -> str:
    return p.side


def _receiver(p: KernelNote) -> str:
    return {"client": "server", "server": "client"}.get(p.side, "")


def nearest_rst(packets: Sequence[KernelNote], sender: KernelNote) -> KernelNote | None:
    """The RST a sender note stands for: the nearest in time (kprobes see the sender before the
    packet; tcp:tcp_send_reset of an active reset fires after it is sent)."""
    rsts = [p for p in packets if p.event.tcp_flags & TCP_RST]
    return min(rsts, key=lambda p: abs(p.t_ns - sender.t_ns)) if rsts else None


def packet_notes(tl: Timeline) -> list[tuple[KernelNote, list]]:
    """Each packet of the timeline with the calls, kernel steps and user steps around it."""
    packets = [n for n in tl.items if _is_packet(n)]
    if not packets:
        return []
    around: dict[int, list] = {id(p): [] for p in packets}
    marks = [n for n in tl.items if isinstance(n, MarkNote)]
    for n in tl.items:
        if _is_packet(n):
            continue
        prev = next((p for p in reversed(packets) if p.t_ns <= n.t_ns), None)
        nxt = next((p for p in packets if p.t_ns > n.t_ns), None)
        target = None
        if isinstance(n, IoNote):
            if n.op == "write" and n.ret is not None and n.ret > 0:
                target = next((p for p in packets if p.t_ns >= n.t_ns and p.side == "client"
                               and p.values.get("length")), None)
            target = target or prev or nxt
        elif isinstance(n, (MarkNote, QueryNote)):
            target = nxt or prev
        elif n.event.kind in (Kind.SEND_RESET, Kind.ACTIVE_RESET):
            target = nearest_rst(packets, n) or prev or nxt
        else:
            user_step_since = prev is not None and any(prev.t_ns < m.t_ns <= n.t_ns for m in marks)
            if prev is not None and not user_step_since and n.side == _receiver(prev):
                target = prev
            elif nxt is not None and n.side == _sender(nxt):
                target = nxt
            else:
                target = prev or nxt
        around[id(target)].append(n)
    return [(p, around[id(p)]) for p in packets]


def comment_of(items: Sequence) -> str:
    out = []
    for n in items:
        if isinstance(n, IoNote):
            out.append(words.packet_call(n))
        elif isinstance(n, MarkNote):
            out.append(n.what)
        elif isinstance(n, QueryNote):
            out.append(f"{words.query_label(n)} = {n.value}")
        else:
            out.append(words.packet_step(n))
    return words.packet_comment(out)


def segments(tl: Timeline) -> tuple[list[Segment], int]:
    """The timeline's packets paired with their bytes (same ts_ns); and how many had no bytes
    (lost from the ring buffer). NoPacketBytes when the recording has none at all."""
    rec = tl.recording
    grouped = packet_notes(tl)
    if grouped and not rec.packets:
        raise NoPacketBytes(f"scenario {rec.scenario}: this recording has packet events but no packet bytes "
                            "(recorded before trace-halfclose captured them)")
    by_ts = {p.ts_ns: p for p in rec.packets}
    out, missing = [], 0
    for note, items in grouped:
        p = by_ts.get(note.event.ts_ns)
        if p is None:
            missing += 1
            continue
        out.append(Segment(note, p, tuple(items)))
    return out, missing


def check(timelines: Sequence[Timeline]) -> None:
    """NoPacketBytes unless every run that has packets has their bytes."""
    for tl in timelines:
        segments(tl)


# --- bytes -----------------------------------------------------------------------------


def with_checksum(data: bytes, length: int) -> bytes:
    """The TCP checksum filled in when the whole segment was captured: on loopback the kernel
    leaves it partial (CHECKSUM_PARTIAL: the pseudo-header's sum only, for an offload that
    never runs). A truncated segment keeps it as it was."""
    import dpkt

    if len(data) < length or not data:
        return data
    version = data[0] >> 4
    if version == 4:
        ihl = (data[0] & 0xF) * 4
        if data[9] != _PROTO_TCP:
            return data
        src, dst, start = data[12:16], data[16:20], ihl
        pseudo = src + dst + struct.pack(">BBH", 0, _PROTO_TCP, length - ihl)
    elif version == 6:
        if data[6] != _PROTO_TCP:
            return data
        src, dst, start = data[8:24], data[24:40], 40
        pseudo = src + dst + struct.pack(">IxxxB", length - 40, _PROTO_TCP)
    else:
        return data
    tcp = bytearray(data[start:length])
    if len(tcp) < 20:
        return data
    tcp[16:18] = b"\0\0"
    s = dpkt.in_cksum_add(0, pseudo)
    s = dpkt.in_cksum_add(s, bytes(tcp))
    tcp[16:18] = struct.pack(">H", dpkt.in_cksum_done(s))
    return data[:start] + bytes(tcp) + data[length:]


def _option(code: int, value) -> object:
    import dpkt.pcapng as ng

    opt = ng.PcapngOptionLE(code=code)
    if code == ng.PCAPNG_OPT_COMMENT:
        opt.text = value
    else:
        opt.data = value if isinstance(value, bytes) else value.encode("utf-8")
    return opt


def _options(pairs: list[tuple[int, object]]) -> list:
    import dpkt.pcapng as ng

    return [_option(code, value) for code, value in pairs] + [ng.PcapngOptionLE(code=ng.PCAPNG_OPT_ENDOFOPT)]


def _packet_block(data: bytes, length: int, ts_ns: int, comment: str):
    """An Enhanced Packet Block that keeps the original length: dpkt 1.9.8's writes caplen
    for both, which would hide that a packet was captured only in part."""
    import dpkt.pcapng as ng

    class Block(ng.EnhancedPacketBlockLE):
        def __bytes__(self):
            raw = bytearray(super().__bytes__())
            struct.pack_into("<I", raw, 24, self.original_len)  # after type, len, iface, ts_high, ts_low, caplen
            return bytes(raw)

    block = Block(pkt_data=data, ts_high=ts_ns >> 32, ts_low=ts_ns & 0xFFFFFFFF,
                  opts=_options([(ng.PCAPNG_OPT_COMMENT, comment)]) if comment else [])
    block.original_len = max(length, len(data))
    return block


def write(timelines: Sequence[Timeline], out: IO[bytes], version: str = "") -> list[str]:
    """Every run's packets into out, one section per run. Returns notes for the user (packets
    whose bytes were lost). NoPacketBytes when a run has packets but no bytes."""
    import dpkt.pcapng as ng

    notes = []
    for tl in timelines:
        rec = tl.recording
        segs, missing = segments(tl)
        section = words.pcap_section(rec.scenario, rec.kernel, rec.backend, rec.family)
        shb = ng.SectionHeaderBlockLE(opts=_options([
            (ng.PCAPNG_OPT_COMMENT, section + "; " + words.PCAP_CHECKSUMS),
            (ng.PCAPNG_OPT_SHB_OS, f"Linux {rec.kernel}"),
            (ng.PCAPNG_OPT_SHB_USERAPPL, f"trace-halfclose {version}".strip()),
        ]))
        idb = ng.InterfaceDescriptionBlockLE(linktype=LINKTYPE_RAW, snaplen=SNAPLEN, opts=_options([
            (ng.PCAPNG_OPT_IF_NAME, "lo"),
            (ng.PCAPNG_OPT_IF_DESCRIPTION, words.pcap_interface(rec.netns)),
            (ng.PCAPNG_OPT_IF_TSRESOL, b"\x09"),  # nanoseconds
        ]))
        writer = ng.Writer(out, shb=shb, idb=idb)  # a new Writer writes a new section
        for s in segs:
            ts = s.packet.ts_ns + rec.wall_offset_ns
            writer.writepkt(_packet_block(with_checksum(s.packet.data, s.packet.len), s.packet.len, ts,
                                          comment_of(s.around)))
        if missing:
            notes.append(f"scenario {rec.scenario}: {missing} packets had no bytes (lost from the ring buffer) "
                         "and are not in the file")
    return notes
