"""A watch as a stream: records grouped by socket as they arrive, each connection
handed out once -- when its socket is destroyed, when it goes quiet, or when it
holds too many records -- classified cheaply, and forgotten. Pure.

A busy server opens thousands of healthy connections a second and a few that
hit the half-close. Only the records of live connections are kept (their
bytes, 80 B each: tracer/record/event.py RAW), so memory is bounded whatever
the watch's length; a connection's cost does not depend on how many were seen
before it. Only the connections that are shown are decoded into Events and
annotated (tracer/process/connections.py annotate_connection); the others are
counted.

The incident rules are values (Rule); tracer/display/words.py words them.
"""
from __future__ import annotations

import collections
import enum
import signal
import struct
from dataclasses import dataclass, field
from typing import Iterable

from tracer.kernel.names import RCV_SHUTDOWN
from tracer.record.event import RAW, RAW_HEAD, RETURN_KINDS, Kind, from_raw, rows_of  # noqa: F401 (rows_of: re-exported)
from tracer.process.connections import GRACE_NS, Connection

QUIET_NS = 10_000_000_000  # a connection with no event for this long is handed out (a later event starts a part)
MAX_RECORDS = 10_000  # a connection holding more is handed out in parts (a long-lived stream)
MAX_LIVE = 20_000  # connections kept at once; beyond, the longest quiet are handed out
SCAN_NS = 1_000_000_000  # how often the quiet ones are looked for
RECENT = 50_000  # ended connections remembered (ports, addresses) to name a later one's peer
EAGAIN = 11  # include/uapi/asm-generic/errno-base.h: a non-blocking socket's full buffer, retried: no incident


class Rule(enum.Enum):
    """Why a connection is worth a look (an incident)."""

    WRITE_AFTER_FIN = "write_after_fin"  # a write-like call with RCV_SHUTDOWN set: the peer sent its FIN
    WRITE_AFTER_RST = "write_after_rst"  # a call after an RST was accepted, or with sk_err set at entry
    CALL_FAILED = "call_failed"  # a call returned an error (not EAGAIN)
    RST_RECEIVED = "rst_received"  # tcp_reset ran (tcp_receive_reset)
    RST_SENT = "rst_sent"  # an RST sent, or the socket went from ESTABLISHED/CLOSE_WAIT to CLOSE without FINs
    SIGPIPE = "sigpipe"  # SIGPIPE generated for a writer


class End(enum.Enum):
    """Why a connection was handed out."""

    DESTROYED = "destroyed"  # its socket was destroyed (or a new connection began at its address)
    QUIET = "quiet"  # no event for QUIET_NS, or too many connections were live
    PART = "part"  # MAX_RECORDS reached: the rest follows as another part
    STOPPED = "stopped"  # the watch ended before the connection did


@dataclass
class Open:
    """A connection being collected: its records' bytes in time order."""

    conn: int
    sk: int
    records: list[bytes] = field(default_factory=list)
    ended_ns: int | None = None
    joined: bool = False
    last_ns: int = 0
    part: int = 1
    handed: bool = False  # handed out (done()): no longer anyone's peer-to-be

    def connection(self) -> Connection:
        """The Events of a connection that is annotated."""
        c = Connection(self.conn, self.sk, [from_raw(b) for b in self.records], self.ended_ns, self.joined)
        c.events.sort(key=lambda e: e.ts_ns)
        return c


@dataclass(frozen=True)
class Done:
    """A connection handed out: its records, why, and the rules it matched."""

    open: Open
    end: End
    rules: tuple[Rule, ...]

    @property
    def incident(self) -> bool:
        return bool(self.rules)


@dataclass
class Tally:
    """The counts of a watch: what the live status line and the closing summary say."""

    connections: int = 0  # handed out
    healthy: int = 0
    incidents: int = 0
    shown: int = 0
    events: int = 0
    lost: int = 0
    by_rule: collections.Counter = field(default_factory=collections.Counter)
    unshown_at_stop: int = 0  # connections left when the watch stopped and not shown (time ran out)
    unshown_incidents: int = 0
    shed: int = 0  # healthy connections not shown (--all, JSON) while the watch was behind


# The fields classify() reads: value, sk_err, kind, state, old_state, sk_shutdown (offsets of
# struct hc_event: 16, 32, 36, 60, 61, 62).
_RULE_FIELDS = struct.Struct("<16xq8xiI20xBBB17x")
_CALL_ENTER = (int(Kind.WATCH_CALL_ENTER), int(Kind.SENDMSG_ENTER))
_CALL_EXIT = (int(Kind.WATCH_CALL_EXIT), int(Kind.SENDMSG_RETURN))
_RST_IN = (int(Kind.RESET_TP), int(Kind.TCP_RESET))
_RST_OUT = (int(Kind.SEND_RESET), int(Kind.ACTIVE_RESET))
_SET_STATE, _SIGNAL = int(Kind.SET_STATE), int(Kind.SIGNAL)
_SIGPIPE = int(signal.SIGPIPE)  # the Python build's signal numbers are the running kernel's (Linux: 13)
_RETURNS = frozenset(int(k) for k in RETURN_KINDS)


def state_codes(state_names: dict[int, str]) -> tuple[int, int, int]:
    """The codes of ESTABLISHED, CLOSE_WAIT and CLOSE in this kernel's state names, for classify()."""
    code = {v: k for k, v in state_names.items()}
    return code.get("ESTABLISHED", 1), code.get("CLOSE_WAIT", 8), code.get("CLOSE", 7)


def classify(records: Iterable[bytes], codes: tuple[int, int, int]) -> tuple[Rule, ...]:
    """The incident rules a connection's records match, read from the raw fields only;
    codes: state_codes() of the recording's state names (asked once per watch)."""
    established, close_wait, close = codes
    rules: set[Rule] = set()
    rst = False
    for value, sk_err, kind, state, old, shut in map(_RULE_FIELDS.unpack, records):
        if kind in _CALL_ENTER:
            if rst or sk_err:
                rules.add(Rule.WRITE_AFTER_RST)
            elif shut & RCV_SHUTDOWN:
                rules.add(Rule.WRITE_AFTER_FIN)
        elif kind in _CALL_EXIT:
            if value < 0 and value != -EAGAIN:
                rules.add(Rule.CALL_FAILED)
        elif kind == _SET_STATE:
            if state == close and old in (established, close_wait) and not rst:
                rules.add(Rule.RST_SENT)
        elif kind in _RST_IN:
            rst = True
            rules.add(Rule.RST_RECEIVED)
        elif kind in _RST_OUT:
            rules.add(Rule.RST_SENT)
        elif kind == _SIGNAL and value == _SIGPIPE:
            rules.add(Rule.SIGPIPE)
    return tuple(r for r in Rule if r in rules) if rules else ()


class Stream:
    """Records to connections, as they arrive; handed out when done (see the module)."""

    def __init__(self, state_names: dict[int, str], grace_ns: int = GRACE_NS, quiet_ns: int = QUIET_NS,
                 max_records: int = MAX_RECORDS, max_live: int = MAX_LIVE):
        self.state_names = state_names
        self.codes = state_codes(state_names)
        self.grace_ns, self.quiet_ns, self.max_records, self.max_live = grace_ns, quiet_ns, max_records, max_live
        self.live: dict[int, Open] = {}  # sk -> its current connection
        self.count = 0  # connections begun
        self._ended: collections.deque[Open] = collections.deque()  # in the order they ended
        self._out: list[tuple[Open, End]] = []  # handed out by add() itself (parts, superseded)
        self._addr: dict[int, list[bytes]] = {}  # sk -> its WATCH_ADDR records, for a later part
        self._next_scan = 0
        self._unindexed: list[Open] = []  # live connections not in _by_ports yet
        self._by_ports: dict[tuple[int, int], Open] = {}  # live connections by (lport, rport); stale ones checked
        self.recent: collections.OrderedDict = collections.OrderedDict()  # (lport, rport) -> (conn, laddr, raddr)

    def _begin(self, sk: int, part: int = 1) -> Open:
        self.count += 1
        o = Open(self.count, sk, part=part)
        if part > 1:  # a later part of the same socket: its addresses again
            o.records.extend(self._addr.get(sk, ()))
            o.joined = bool(o.records)
        self.live[sk] = o
        self._unindexed.append(o)
        return o

    def add(self, rows: list[tuple[int, int, int, int, bytes]]) -> None:
        """One batch from the ring buffer: (ts_ns, sk, kind, fd, record) rows (rows_of()). The
        buffer holds them in the order they were reserved, several CPUs interleaved: sorted by
        time here (nearly sorted already: cheap)."""
        rows = sorted(rows)
        live, addr_kind, destroy = self.live, int(Kind.WATCH_ADDR), int(Kind.WATCH_DESTROY)
        returns = _RETURNS
        for ts, sk, kind, fd, b in rows:
            if not sk:
                continue
            o = live.get(sk)
            joins = kind == addr_kind and fd in (0, 1)
            # A new connection at this address: after the socket's destruction (only returns of
            # functions running then may follow), or a second join. A join's record may come
            # after the first record of the write it joined in (a call's entry has its start time).
            if o is None or (o.ended_ns is not None and kind not in returns) or (joins and o.joined):
                if o is not None and o.ended_ns is None:
                    o.ended_ns = ts
                    self._ended.append(o)
                # A socket handed out as quiet (not destroyed) goes on as a later part, with its
                # addresses; a new one at the address brings its own join.
                o = self._begin(sk, 2 if o is None and sk in self._addr and not joins else 1)
            o.records.append(b)
            o.last_ns = ts
            if kind == addr_kind:
                o.joined |= joins
                if o.part == 1:
                    self._addr.setdefault(sk, []).append(b)
            elif kind == destroy:
                o.ended_ns = ts
                self._ended.append(o)
                self._addr.pop(sk, None)
            elif len(self._addr) > self.max_live * 4:  # sockets whose destruction was lost
                self._addr.pop(next(iter(self._addr)))
            if len(o.records) >= self.max_records and o.ended_ns is None:
                del live[sk]
                self._out.append((o, End.PART))
                self._begin(sk, o.part + 1).part = o.part + 1

    def ready(self, now_ns: int) -> list[tuple[Open, End]]:
        """Connections done: destroyed more than the grace ago (late records from other CPUs),
        quiet for too long, or in parts; each handed out once, then forgotten."""
        out, self._out = self._out, []
        ended = self._ended
        while ended and now_ns - ended[0].ended_ns > self.grace_ns:
            out.append((ended.popleft(), End.DESTROYED))
        if now_ns >= self._next_scan:
            self._next_scan = now_ns + SCAN_NS
            out += self._quiet(now_ns)
            if len(self._unindexed) > 2 * (len(self.live) + len(self._ended)) + 1000:  # peer() was not asked for a while
                self._unindexed = [o for o in self._unindexed if not o.handed]
        return out

    def _quiet(self, now_ns: int) -> list[tuple[Open, End]]:
        quiet = [o for o in self.live.values() if o.ended_ns is None and now_ns - o.last_ns > self.quiet_ns]
        if len(self.live) - len(quiet) > self.max_live:
            ids = {id(o) for o in quiet}
            busy = sorted((o for o in self.live.values() if o.ended_ns is None and id(o) not in ids),
                          key=lambda o: o.last_ns)
            quiet += busy[:len(self.live) - len(quiet) - self.max_live]
        return [(o, End.QUIET) for o in quiet]

    def rest(self) -> list[tuple[Open, End]]:
        """At the stop: what is left, the ended first (by their end), then the others by start."""
        out, self._out = self._out, []
        out += [(o, End.DESTROYED) for o in self._ended]
        seen = {id(o) for o, _ in out}
        left = sorted((o for o in self.live.values() if id(o) not in seen),
                      key=lambda o: RAW_HEAD.unpack_from(o.records[0])[0])
        out += [(o, End.STOPPED) for o in left]
        self._ended.clear()
        return out

    def done(self, o: Open, end: End) -> Done:
        """Classified; the connection leaves the stream (handed out by ready() or rest(), it
        stayed live until now, for its peer to find it) and the peer index."""
        if self.live.get(o.sk) is o:
            del self.live[o.sk]
        o.handed = True
        ports = _ports(o.records)
        if self._by_ports.get(ports) is o:
            del self._by_ports[ports]
        return Done(o, end, classify(o.records, self.codes))

    # --- peers: the connection at the other end, when both ends are watched (loopback) ---

    def remember(self, conn: int, lport: int, rport: int, laddr: str | None, raddr: str | None) -> None:
        """An annotated connection's identity, for its peer handed out later."""
        if not (lport and rport):
            return
        self.recent[(lport, rport)] = (conn, laddr, raddr)
        self.recent.move_to_end((lport, rport))
        while len(self.recent) > RECENT:
            self.recent.popitem(last=False)

    def peer(self, conn: int, lport: int, rport: int, laddr: str | None, raddr: str | None) -> int | None:
        """The peer among the connections annotated before, or those still live."""
        if not (lport and rport and laddr):
            return None
        got = self.recent.get((rport, lport))
        if got and got[0] != conn and (got[1], got[2]) == (raddr, laddr):
            return got[0]
        # The live ones by their ports: each indexed once its ports are known (a connecting
        # socket's first records have no local port yet).
        still = []
        for o in self._unindexed:
            if o.handed:
                continue
            ports = _ports(o.records)
            if ports[0] and ports[1]:
                self._by_ports[ports] = o
            else:
                still.append(o)
        self._unindexed = still
        o = self._by_ports.get((rport, lport))
        if o is None or o.conn == conn or o.handed:
            return None
        c = Connection(o.conn, o.sk, [from_raw(b) for b in o.records if RAW_HEAD.unpack_from(b)[2] == Kind.WATCH_ADDR])
        return o.conn if c.addresses()[1:] == (raddr, laddr) else None


def _ports(records: list[bytes]) -> tuple[int, int]:
    lport = rport = 0
    for b in records:
        sport, dport = RAW.unpack(b)[11:13]
        lport, rport = lport or sport, rport or dport
        if lport and rport:
            break
    return lport, rport
