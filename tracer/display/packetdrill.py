"""--packetdrill FILE: a packetdrill script of an observed reproduction, from the client's side.

packetdrill (github.com/google/packetdrill) plays the server: it injects the
server's packets (`<` lines) through a tun device and checks the client's
(`>` lines) and the client's system calls with their results. What the script
holds, all from the timeline and the recording:
  - a comment naming the run, and how to replay it;
  - the namespace's sysctls that shape the client's segments, in a backtick line
    (recorded by tracer/collect/netns.py; for a recording without them, the values
    every new network namespace starts with: tcp_sk_init, net/ipv4/tcp_ipv4.c);
  - socket() and a blocking connect() that returns once the handshake is done;
  - the client's writes and reads with their observed results (`= 6`,
    `= -1 EPIPE (Broken pipe)`, `read(...) = 0`); send(MSG_NOSIGNAL) for `nosignal`;
  - every packet of the scenario, sequence and acknowledgment numbers relative
    to each side's ISN, as packetdrill numbers them (an RST's must be exact, or
    the kernel ignores it); the server's windows and the TCP options of both
    sides from the captured bytes (recording without bytes: windows 65535 and no
    options, said in a comment); the client's windows are not checked;
  - the observed gaps between these events as relative times.
The client's SYN carries the mss of packetdrill's tun device (MTU 1500), not
loopback's; that line says so. The teardown (the client and server exiting
after the reproduction) is not in the script.

A run packetdrill cannot replay gets one line saying why instead of a script:
a writer killed by SIGPIPE (packetdrill ignores SIGPIPE, run.c).

Pure: no packetdrill is needed to write a script (tests/unit/test_packetdrill.py
checks them; the README says how to replay them).
"""
from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass

from tracer.display import words
from tracer.kernel.names import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN
from tracer.process import scenarios
from tracer.process.timeline import IoNote, KernelNote, MarkNote, QueryNote, Timeline
from tracer.record.event import Kind, Packet

# What a new network namespace starts with (tcp_sk_init, net/ipv4/tcp_ipv4.c, 6.1 and 6.12).
NETNS_DEFAULTS = {"net.ipv4.tcp_timestamps": "1", "net.ipv4.tcp_sack": "1", "net.ipv4.tcp_window_scaling": "1",
                  "net.ipv4.tcp_ecn": "2"}
TUN_MTU = 1500  # packetdrill's tun device (TUN_DRIVER_DEFAULT_MTU, config.c)
NO_BYTES_WINDOW = 65535  # an inbound packet's window when the recording has no bytes (packetdrill needs one)
# packetdrill's flag letters (tcp_packet.c): FIN SYN RST PSH ACK URG ECE CWR
_FLAG_LETTERS = ((0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x20, "U"), (0x40, "E"), (0x80, "W"))
FD = 3
REPLAY = "packetdrill --tolerance_usecs=300000 FILE"


@dataclass(frozen=True)
class Script:
    """A generated script, or why there is none (then text is that one line)."""

    text: str
    replayable: bool


def _flags(bits: int) -> str:
    letters = "".join(ch for bit, ch in _FLAG_LETTERS if bits & bit)
    return letters + "." if bits & TCP_ACK else letters


def _gap(seconds: float) -> str:
    """A relative time: +0 below a millisecond, else milliseconds: +.012, +1.250."""
    if seconds < 0.001:
        return "+0"
    text = f"{seconds:.3f}"
    return "+" + (text[1:] if text.startswith("0.") else text)


def _seconds(seconds: float) -> str:
    """The end of a blocking call, in seconds after the event before it: 0.004."""
    return f"{max(seconds, 0):.3f}"


def _tcp_header(p: Packet) -> bytes | None:
    """The TCP header of the captured bytes, or None when it was not captured whole."""
    data = p.data
    if not data:
        return None
    start = (data[0] & 0xF) * 4 if data[0] >> 4 == 4 else 40
    if len(data) < start + 20:
        return None
    end = start + (data[start + 12] >> 4) * 4
    return data[start:end] if len(data) >= end else None


def _options(header: bytes, syn_mss: int | None) -> str:
    """The TCP options in packetdrill's syntax; syn_mss replaces the mss (the client's SYN)."""
    import dpkt

    out = []
    for kind, value in dpkt.tcp.parse_opts(header[20:]):
        if kind == dpkt.tcp.TCP_OPT_NOP:
            out.append("nop")
        elif kind == dpkt.tcp.TCP_OPT_EOL:
            out.append("eol")
        elif kind == dpkt.tcp.TCP_OPT_MSS:
            out.append(f"mss {syn_mss if syn_mss is not None else int.from_bytes(value, 'big')}")
        elif kind == dpkt.tcp.TCP_OPT_WSCALE:
            out.append(f"wscale {value[0]}")
        elif kind == dpkt.tcp.TCP_OPT_SACKOK:
            out.append("sackOK")
        elif kind == dpkt.tcp.TCP_OPT_TIMESTAMP:
            out.append(f"TS val {int.from_bytes(value[:4], 'big')} ecr {int.from_bytes(value[4:8], 'big')}")
        else:
            return "<...>"  # an option packetdrill's grammar cannot spell here (SACK blocks, MD5, ...)
    return f"<{','.join(out)}>" if out else ""


def _errno_text(name: str) -> str:
    num = getattr(_errno, name, None)
    return f"{name} ({os.strerror(num)})" if num is not None else name


class _Writer:
    def __init__(self, tl: Timeline):
        self.tl = tl
        self.rec = tl.recording
        self.sc = scenarios.get(self.rec.scenario) if scenarios.known(self.rec.scenario) else None
        self.by_ts = {p.ts_ns: p for p in self.rec.packets}
        self.has_bytes = bool(self.rec.packets)
        self.lines: list[str] = []
        self.last_ns: int | None = None

    def at(self, t_ns: int) -> str:
        """The relative time of an event at t_ns (timeline time), from the previous event."""
        gap = "0" if self.last_ns is None else _gap((t_ns - self.last_ns) / 1e9)
        self.last_ns = t_ns
        return gap

    def emit(self, t_ns: int, text: str, returns_after: float | None = None) -> None:
        """An event line; returns_after: a blocking call, returning that many seconds after the
        previous event (packetdrill's `start...end`)."""
        when = self.at(t_ns)
        if returns_after is not None:
            when += f"...{_seconds(returns_after)}"
        self.lines.append(f"{when:>6} {text}")

    # -- events --

    def packet(self, n: KernelNote, syn_mss: int | None) -> str:
        e, v = n.event, n.values
        out = n.side == "client"
        seq, length = v["seq"], v["length"]
        text = f"{'>' if out else '<'} {_flags(e.tcp_flags)} {seq}:{(seq + length) % 2**32}({length})"
        if v.get("ack") is not None:
            text += f" ack {v['ack']}"
        captured = self.by_ts.get(e.ts_ns)
        header = _tcp_header(captured) if captured else None
        if not out:
            window = int.from_bytes(header[14:16], "big") if header else (0 if e.tcp_flags & TCP_RST else NO_BYTES_WINDOW)
            text += f" win {window}"
        if header is not None:
            opts = _options(header, syn_mss)
            if opts:
                text += " " + opts
        elif out:
            text += " <...>"  # no bytes: the client's options were not captured, so they are not checked
        return text

    def call(self, w: IoNote) -> str:
        if w.op == "read":
            head = f"read({FD}, ..., {w.size})"
        elif self.sc is not None and self.sc.nosignal:
            head = f"send({FD}, ..., {w.size}, MSG_NOSIGNAL)"
        else:
            head = f"write({FD}, ..., {w.size})"
        result = str(w.ret) if w.ret >= 0 else f"-1 {_errno_text(w.errno or 'EIO')}"
        return f"{head} = {result}"

    def query(self, q: QueryNote) -> str:
        """getsockopt(SO_ERROR) or poll, as the client got it (packetdrill checks the values)."""
        if q.what == "SO_ERROR":
            return f"getsockopt({FD}, SOL_SOCKET, SO_ERROR, [{q.value}], [4]) = 0"
        step = next((s for s in self.sc.client_steps if s.do == "poll"), None) if self.sc else None
        asked = "|".join(step.events) if step else "POLLIN|POLLOUT|POLLRDHUP"
        revents = q.value if q.value != "none" else "0"
        return f"poll([{{fd={FD}, events={asked}, revents={revents}}}], 1, 0) = {0 if q.value == 'none' else 1}"

    # -- the script --

    def unexpressible(self) -> str | None:
        killed = next((w for w in self.tl.writes if w.killed_by), None)
        if killed:
            return (f"// scenario {self.rec.scenario}: not expressible in packetdrill: {words.call_label(killed)} "
                    f"was killed by {killed.killed_by}, but packetdrill ignores SIGPIPE for every call it makes "
                    "(run.c) and would see it return -1 EPIPE instead; no script.")
        if not any(isinstance(n, KernelNote) and n.event.kind == Kind.PACKET for n in self.tl.items):
            return (f"// scenario {self.rec.scenario}: no packets were traced in this run "
                    "(net:net_dev_start_xmit), so there is nothing for packetdrill to play; no script.")
        return None

    def header(self) -> list[str]:
        r = self.rec
        host = "[::1]" if r.family == "ipv6" else "127.0.0.1"
        title = f" ({self.sc.title})" if self.sc else ""
        lines = [
            f"// trace-halfclose: scenario {r.scenario}{title}",
            f"// recorded on Linux {r.kernel}, backend {r.backend}, {r.family}: client {host}:{r.client_port}"
            f" (pid {r.client_pid}), server {host}:{r.server_port}, netns {r.netns}",
            "// packetdrill plays the server: its packets are the `<` lines; the client's calls and packets are checked.",
            "// Sequence and acknowledgment numbers are relative to each side's initial sequence number.",
            f"// Replay as root on the kernel it was recorded on: unshare -n {REPLAY}",
            "// (unshare -n: the sysctls below change a new network namespace, not this host's)",
        ]
        if not self.has_bytes:
            lines.append(f"// This recording has no packet bytes: the server's windows are {NO_BYTES_WINDOW} "
                         "(0 on an RST) and no packet carries TCP options; the client's options are not checked.")
        return lines

    def sysctl_line(self) -> list[str]:
        values = dict(self.rec.sysctls) or dict(NETNS_DEFAULTS)
        note = [] if self.rec.sysctls else [
            "// sysctls not recorded in this run: the values every new network namespace starts with "
            "(tcp_sk_init, net/ipv4/tcp_ipv4.c), as the reproduction's had"]
        return note + ["`sysctl -q " + " ".join(f"{k}={v}" for k, v in values.items()) + "`"]

    def body(self) -> None:
        items = self._scenario_items()
        packets = [n for n in items if isinstance(n, KernelNote) and n.event.kind == Kind.PACKET]
        syn = next((p for p in packets if p.side == "client" and p.event.tcp_flags & TCP_SYN), None)
        handshake_ack = next((p for p in packets if syn and p.side == "client" and p.t_ns > syn.t_ns
                              and not p.event.tcp_flags & TCP_SYN), None)
        connect = next((m for m in items if isinstance(m, MarkNote) and m.what.startswith("client connected")), None)
        start = connect.t_ns if connect else (syn.t_ns if syn else 0)
        self.emit(start, f"socket(..., SOCK_STREAM, IPPROTO_TCP) = {FD}")
        # Blocking, as the client's: it returns once the client has sent the handshake's ACK.
        self.emit(start, f"connect({FD}, ..., ...) = 0",
                  returns_after=(handshake_ack.t_ns - start) / 1e9 if handshake_ack else 0.0)
        mss = TUN_MTU - (60 if self.rec.family == "ipv6" else 40)
        for n in items:
            if isinstance(n, MarkNote):
                if n is not connect:
                    self.lines.append(f"// {n.what}")
            elif isinstance(n, IoNote):
                self.emit(max(n.t_ns, start), self.call(n))
            elif isinstance(n, QueryNote):
                self.emit(max(n.t_ns, start), self.query(n))
            elif isinstance(n, KernelNote) and n.event.kind == Kind.PACKET:
                is_syn = n is syn
                if is_syn and self.has_bytes:
                    self.lines.append(f"// the SYN's mss is that of packetdrill's tun device (MTU {TUN_MTU}); "
                                      "on loopback it was the captured one")
                self.emit(max(n.t_ns, start), self.packet(n, mss if is_syn else None))
                if n is handshake_ack:
                    # The reproduction waits for connect(2) to return before the server acts; a call
                    # waits for the blocking connect in packetdrill (await_idle_thread, run_system_call.c).
                    self.lines.append("// connect(2) returned before the server went on: a call waits for it here")
                    self.emit(n.t_ns, f"getsockopt({FD}, SOL_SOCKET, SO_ERROR, [0], [4]) = 0")
                if n.event.tcp_flags & TCP_RST and n.side == "server":
                    sender = self._rst_sender(n)
                    if sender:
                        self.lines[-1] += f"  // {sender}"
            elif isinstance(n, KernelNote) and n.event.kind == Kind.SIGNAL:
                self.lines.append(f"// the kernel generated {n.values['signal']} for the client "
                                  f"({n.values['result']}); packetdrill ignores SIGPIPE too")
        if self.sc is not None and self.sc.nosignal:
            self.lines.append("// send(MSG_NOSIGNAL): no SIGPIPE")
        self.lines.append("// the reproduction ended here; its teardown (the client and server exiting) "
                          "is not replayed")

    def _scenario_items(self) -> list:
        """The timeline up to the reproduction's end (the teardown is the client and server exiting).
        A recording made before the end was recorded ends at the client's first FIN or RST: the
        client never calls close(2) or shutdown(2) in a scenario (tracer/collect/repro_child.py),
        so such a packet is its exit."""
        if self.rec.teardown_ns:
            end = self.rec.teardown_ns - self.tl.t0_ns
            return [n for n in self.tl.items if not (n.teardown if isinstance(n, KernelNote) else n.t_ns >= end)]
        out = []
        for n in self.tl.items:
            if (isinstance(n, KernelNote) and n.event.kind == Kind.PACKET and n.side == "client"
                    and n.event.tcp_flags & (TCP_FIN | TCP_RST)):
                break
            out.append(n)
        return out

    def _rst_sender(self, rst: KernelNote) -> str:
        """The RST's sender, from the timeline's sender note that stands for it (nearest_rst)."""
        from tracer.display.pcap import nearest_rst

        packets = [n for n in self.tl.items if isinstance(n, KernelNote) and n.event.kind == Kind.PACKET]
        for n in self.tl.items:
            if (isinstance(n, KernelNote) and n.event.kind in (Kind.SEND_RESET, Kind.ACTIVE_RESET)
                    and nearest_rst(packets, n) is rst):
                return words.rst_sent_by(n.values)
        return ""

    def script(self) -> Script:
        why = self.unexpressible()
        if why:
            return Script(why + "\n", False)
        lines = self.header()
        # Always said: packetdrill otherwise takes the family of the machine's primary address
        # (finalize_config, config.c), IPv6 in a virtme-ng guest.
        lines.append(f"--ip_version={'ipv6' if self.rec.family == 'ipv6' else 'ipv4'}")
        lines += self.sysctl_line()
        lines.append("")
        self.body()
        return Script("\n".join(lines + self.lines) + "\n", True)


def script(tl: Timeline) -> Script:
    """The packetdrill script of one reproduction's timeline."""
    return _Writer(tl).script()
