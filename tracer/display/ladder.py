"""The ladder diagram: a timeline drawn as two lifelines with the packets between them. Pure.

Built from the annotated Timeline (tracer/process/timeline.py), the same data as
the text and JSON output, never from raw events. One column per side -- the
reproduction's client and server, or a watched connection and its peer -- with:
  - the kernel's steps on their side's line, state transitions as they happen,
    sk_err and sk_shutdown where they change;
  - the writes and reads on the client's line with their results and a one-line reason;
  - the packets as arrows between the lines, with flags, relative seq/ack and length;
  - what user space did (connect, the server's close) across both.

`Ladder` is the diagram as data; `text()` lays it out in a terminal's columns as lines
of (text, role) spans. console.py gives the roles rich styles, svg.py draws the Ladder
itself with matplotlib. Every phrase comes from words.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from tracer.display import words
from tracer.process import scenarios
from tracer.process.timeline import IoNote, KernelNote, MarkNote, Timeline
from tracer.record.event import Kind

LEFT, RIGHT = 0, 1

# Step kinds.
NOTE = "note"  # a kernel step on its side's line (column None: a socket of neither side)
CALL = "call"  # a write or read on its caller's line
PACKET = "packet"  # an arrow from the sender's line (column) to the other
RECEIVED = "received"  # a segment known only from its receiver's kernel function: no packet was traced
MARK = "mark"  # user space, across both lines

# Roles of the spans (console.py and svg.py style them): title, subtitle, header, time,
# line, client, server (a side's steps), call, ok, error (a call and its result), reason,
# where (inside which write), packet, mark, other (a socket of neither side), teardown
# (text() gives it to every span of a step after the reproduction ended).

# Kernel steps whose values are the side's own socket at entry (and, paired with their
# return, after): what the ladder compares to show sk_err and sk_shutdown where they change.
_SOCKET_VALUES = {Kind.TCP_FIN, Kind.TCP_DONE, Kind.TCP_RESET, Kind.RESET_TP, Kind.DONE_WITH_ERROR,
                  Kind.ACTIVE_RESET}
# The functions that handle a received FIN or RST: without traced packets, the segment they show arrived.
_RECEIVED = {Kind.TCP_FIN: "FIN", Kind.TCP_RESET: "RST", Kind.RESET_TP: "RST"}


@dataclass(frozen=True)
class Span:
    text: str
    role: str


Line = tuple[Span, ...]


@dataclass(frozen=True)
class Step:
    """One row of the ladder: what happened, on (or from) which line, as lines of spans."""

    t_ns: int
    kind: str
    column: int | None  # NOTE, CALL: its line; PACKET, RECEIVED: the sender's line; MARK: None
    lines: tuple[Line, ...]
    teardown: bool = False  # after the reproduction ended: drawn dimmed
    flags: str = ""  # PACKET: tcpdump's flags, [P.]; RECEIVED: FIN or RST


@dataclass(frozen=True)
class Ladder:
    title: str  # names the scenario (or the connections), the kernel and the backend
    subtitle: str  # what the scenario does; empty for a watch
    columns: tuple[str, str]  # what each line is: client, server, a watched connection
    steps: tuple[Step, ...]
    kernel: str
    backend: str
    scenario: str  # the reproduction's scenario, or "watch"

    def packets(self) -> list[Step]:
        return [s for s in self.steps if s.kind == PACKET]

    def on(self, column: int) -> list[Step]:
        """The notes and calls on one side's line."""
        return [s for s in self.steps if s.kind in (NOTE, CALL) and s.column == column]


def plain(line: Line) -> str:
    return "".join(s.text for s in line)


# --- from a timeline to steps ----------------------------------------------------------


class _Side:
    """What one line last showed of its socket (None: not seen yet), to show changes only."""

    def __init__(self) -> None:
        self.known: dict[str, int | None] = {"sk_err": None, "sk_shutdown": None}
        self.where: tuple | None = None

    def changes(self, entry: dict, after: dict | None = None) -> list[str]:
        """sk_err and sk_shutdown where they differ from what the line showed last (at this
        step's entry) or change within it (entry → after); then remember the newest."""
        out = []
        for name in ("sk_err", "sk_shutdown"):
            now = entry.get(name)
            if now is None:
                continue
            first = now if self.known[name] is None else self.known[name]
            new = (after or {}).get(name, now)
            if new != first:
                out.append(words.value_change(name, first, new))
            self.known[name] = new
        return out

    def placement(self, n: KernelNote) -> str:
        """Inside which write a step ran, once per stretch of steps inside the same write."""
        text = words.where_short(n.where)
        key = (n.where.write, n.where.relation) if text else None
        shown, self.where = key != self.where, key
        return text if shown else ""


def _kernel_steps(n: KernelNote, column: int | None, side: _Side | None, receipts: bool) -> list[Step]:
    """A kernel note as its step; receipts: also an arrow into a receiving function's note."""
    kind, v = n.event.kind, n.values
    if kind == Kind.PACKET:
        return [Step(n.t_ns, PACKET, column, ((Span(words.packet(v), "packet"),),), n.teardown, v["flags"])]
    role = "other" if column is None else ("client" if column == LEFT else "server")
    lines = [(Span(words.ladder_step(n, apart=column is None), role),)]
    if side is not None:
        if kind in _SOCKET_VALUES:
            after = ({"sk_err": v["sk_err_after"], "sk_shutdown": v["sk_shutdown_after"]}
                     if "state_after" in v else None)
            lines += [(Span(c, role),) for c in side.changes(v, after)]
        elif kind == Kind.ERROR_REPORT:  # the label names the error stored
            side.known["sk_err"] = v["error"]
        where = side.placement(n)
        if where:
            lines.append((Span(f"({where})", "where"),))
    steps = [Step(n.t_ns, NOTE, column, tuple(lines), n.teardown)]
    if receipts and kind in _RECEIVED and column is not None:
        what = _RECEIVED[kind]
        steps.insert(0, Step(n.t_ns, RECEIVED, 1 - column, ((Span(words.received(n.func, what), "packet"),),),
                             n.teardown, what))
    return steps


def _call_step(w: IoNote, column: int, side: _Side) -> Step:
    ok = w.ret is not None and w.ret >= 0 and not w.killed_by
    lines = [(Span(words.call_mark(w), "call"), Span(words.short_result(w), "ok" if ok else "error")),
             (Span(words.reason(w), "reason"),)]
    if w.observed:
        entry = {"sk_err": w.sk_err, "sk_shutdown": w.sk_shutdown}
        # sk_err after the call, where a function inside it was seen to change it
        # (sock_error() in sk_stream_wait_connect); not the syscall's exit, which can
        # follow steps that have rows of their own (an RST handled during the write).
        inside = next((s.values["sk_err_after"] for s in w.path
                       if s.role == "wait_connect" and "sk_err_after" in s.values), None)
        role = "client" if column == LEFT else "server"
        lines += [(Span(c, role),) for c in side.changes(entry, None if inside is None else {"sk_err": inside})]
    return Step(w.t_ns, CALL, column, tuple(lines))


def _steps(items, column_of, sides: dict[int, _Side], receipts: bool, offset_ns: int = 0) -> list[Step]:
    """A timeline's items as steps; column_of(item) picks the line of a call or a kernel note
    (None: neither side's); receipts: arrows into the functions that handled a FIN or an RST
    (no packet was traced). offset_ns puts the times on a common clock (a watch's peers)."""
    out: list[Step] = []
    for item in items:
        if isinstance(item, IoNote):
            column = column_of(item)
            out.append(_call_step(item, column, sides[column]))
        elif isinstance(item, KernelNote):
            column = column_of(item)
            out += _kernel_steps(item, column, sides.get(column), receipts)
        elif isinstance(item, MarkNote):
            out.append(Step(item.t_ns, MARK, None, ((Span(item.what, "mark"),),)))
    return [Step(s.t_ns + offset_ns, s.kind, s.column, s.lines, s.teardown, s.flags) for s in out]


def _traced_packets(items) -> bool:
    return any(isinstance(i, KernelNote) and i.event.kind == Kind.PACKET for i in items)


def of_timeline(tl: Timeline) -> Ladder:
    """The reproduction: the client's line on the left, the server's (and its listener's) on the right."""
    rec = tl.recording

    def column_of(item) -> int | None:
        if isinstance(item, IoNote) or item.side == "client" or item.event.kind == Kind.SIGNAL:
            return LEFT  # the calls are the client's, and so are the signals they raise
        return RIGHT if item.side in ("server", "listener") else None

    steps = _steps(tl.items, column_of, {LEFT: _Side(), RIGHT: _Side()}, not _traced_packets(tl.items))
    columns = (words.repro_column("client", rec.family, rec.client_port, rec.client_pid),
               words.repro_column("server", rec.family, rec.server_port))
    scenario = scenarios.get(rec.scenario) if scenarios.known(rec.scenario) else None
    return Ladder(words.ladder_title(rec.scenario, rec.kernel, rec.backend, rec.family),
                  scenario.title if scenario else "", columns, tuple(steps), rec.kernel, rec.backend, rec.scenario)


def of_connection(ct, peer=None) -> Ladder:
    """A watched connection (a ConnTimeline, tracer/process/connections.py) on the left and,
    when both ends were watched, its peer on the right, on the left one's clock."""
    rec = ct.timeline.recording
    ends = [(ct, LEFT)] + ([(peer, RIGHT)] if peer is not None else [])
    base = ct.timeline.t0_ns
    receipts = not any(_traced_packets(c.items) for c, _ in ends)
    steps: list[Step] = []
    for c, column in ends:  # each end's socket is the "client" of its own timeline: its own line
        steps += _steps(c.items, lambda _item, column=column: column, {column: _Side()}, receipts,
                        c.timeline.t0_ns - base)
    steps.sort(key=lambda s: s.t_ns)
    left = words.watch_column(ct.conn.conn, ct.laddr, ct.lport, ct.writers)
    right = (words.watch_column(peer.conn.conn, peer.laddr, peer.lport, peer.writers) if peer is not None
             else words.watch_column(None, ct.raddr, ct.rport))
    return Ladder(words.watch_title([c.conn.conn for c, _ in ends], rec.kernel, rec.backend), "", (left, right),
                  tuple(steps), rec.kernel, rec.backend, "watch")


def of_watch(cts) -> list[Ladder]:
    """A watch's ladders, as console.WatchConsole draws them: each connection, with its peer
    when both ends were watched (one ladder, where the second of the two ends)."""
    out, waiting = [], {}
    for ct in cts:
        if ct.peer in waiting:
            out.append(of_pair(ct, waiting.pop(ct.peer)))
        elif ct.peer is not None:
            waiting[ct.conn.conn] = ct
        else:
            out.append(of_connection(ct))
    return out + [of_connection(ct) for ct in waiting.values()]


def of_pair(a, b) -> Ladder:
    """Two watched ends of one connection: the end that connected (or wrote) on the left."""
    def initiative(ct) -> tuple:
        return (ct.connected_by is None, not ct.calls, ct.conn.conn)

    first, second = sorted((a, b), key=initiative)
    return of_connection(first, second)


# --- text layout ------------------------------------------------------------------------

ARROW, DASHED = "─", "┄"
MIN_NOTES = 12  # narrowest column of notes before the layout stops shrinking
MIN_LANE = 12


def wrap(line: Line, width: int) -> list[Line]:
    """Greedy word wrap of a line of spans (width in characters); a word longer than the width is cut."""
    words_: list[Span] = []
    for span in line:
        for i, w in enumerate(span.text.split(" ")):
            # An arrow starts a line with what it leads to, when the two fit in one.
            if words_ and words_[-1].text == "→" and len(w) + 2 <= width:
                words_[-1] = Span(f"→ {w}", span.role)
                continue
            if i and words_:
                words_.append(Span(" ", span.role))
            if w:
                words_.append(Span(w, span.role))
    out: list[list[Span]] = [[]]
    used = 0
    for w in words_:
        if w.text == " ":
            if used + 1 < width:
                out[-1].append(w)
                used += 1
            elif used:  # no room for the space: the next word starts a line
                out.append([])
                used = 0
            continue
        text = w.text
        while text:
            room = width - used
            if len(text) <= room:
                out[-1].append(Span(text, w.role))
                used += len(text)
                text = ""
            elif used:  # start a new line
                if out[-1] and out[-1][-1].text == " ":
                    out[-1].pop()
                out.append([])
                used = 0
            else:  # a word wider than the line
                out[-1].append(Span(text[:room], w.role))
                text = text[room:]
                out.append([])
                used = 0
    return [tuple(_merge(line)) for line in out if line]


def _merge(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for s in spans:
        if out and out[-1].role == s.role:
            out[-1] = Span(out[-1].text + s.text, s.role)
        else:
            out.append(s)
    while out and not out[-1].text.strip():
        out.pop()
    return out


def _width(line: Line) -> int:
    return sum(len(s.text) for s in line)


class _Canvas:
    """One row of characters, each with its role."""

    def __init__(self, width: int):
        self.chars = [" "] * width
        self.roles = [""] * width

    def put(self, x: int, text: str, role: str) -> None:
        for i, ch in enumerate(text):
            if 0 <= x + i < len(self.chars):
                self.chars[x + i], self.roles[x + i] = ch, role

    def put_line(self, x: int, line: Line) -> None:
        for s in line:
            self.put(x, s.text, s.role)
            x += len(s.text)

    def line(self, dim: bool) -> Line:
        end = len(self.chars)
        while end and self.chars[end - 1] == " ":
            end -= 1
        spans: list[Span] = []
        for ch, role in zip(self.chars[:end], self.roles[:end]):
            role = "teardown" if dim and role else role
            if spans and spans[-1].role == role:
                spans[-1] = Span(spans[-1].text + ch, role)
            else:
                spans.append(Span(ch, role))
        return tuple(spans)


@dataclass(frozen=True)
class Geometry:
    """Where things go in a row: the time, the left notes, the two lines, the right notes."""

    time: int  # width of the time column
    left: int  # width of the left notes
    lane: int  # cells between the lines
    right: int  # width of the right notes

    @property
    def x_left(self) -> int:  # the left line's cell
        return self.time + 1 + self.left + 1

    @property
    def x_right(self) -> int:
        return self.x_left + 1 + self.lane

    @property
    def total(self) -> int:
        return self.x_right + 2 + self.right


def _ms(t_ns: int) -> str:
    return f"{t_ns / 1e6:.3f}"


def geometry(ld: Ladder, width: int) -> Geometry:
    """Columns for `width` cells: the lane fits the longest packet label; the notes share the
    rest as they need it, each wrapped when the terminal is too narrow for them."""
    time = max([len(_ms(s.t_ns)) for s in ld.steps] + [2])
    labels = [_width(s.lines[0]) for s in ld.steps if s.kind in (PACKET, RECEIVED)]
    lane = max([MIN_LANE] + [n + 5 for n in labels])  # ─ label ─► with a space either side
    need = [max([_width(line) for s in ld.on(c) for line in s.lines] + [len(ld.columns[c]) - 1, MIN_NOTES])
            for c in (LEFT, RIGHT)]
    # time, a space, the left notes, a space, its line, the lane, the right line, a space, a tick's room
    fixed = time + 5
    lane = max(MIN_LANE, min(lane, (width - fixed) * 2 // 5))
    room = width - fixed - lane
    if sum(need) <= room:
        left, right = need
    else:  # the client's notes (right-aligned, the calls' reasons) get the larger share
        left = max(MIN_NOTES, min(need[0], max(room - need[1], room * 11 // 20)))
        right = max(MIN_NOTES, min(need[1], room - left))
    return Geometry(time, left, lane, right)


def text(ld: Ladder, width: int) -> list[Line]:
    """The ladder in `width` terminal cells: a title, the columns' names over their lines, a row
    (or a few, wrapped) per step with its time on the left."""
    g = geometry(ld, width)
    xl, xr = g.x_left, g.x_right
    rows: list[Line] = wrap((Span(ld.title, "title"),), width)
    if ld.subtitle:
        rows += wrap((Span(ld.subtitle, "subtitle"),), width)

    def canvas(time: str = "") -> _Canvas:
        c = _Canvas(g.total)
        c.put(g.time - len(time), time, "time")
        c.put(xl, "│", "line")
        c.put(xr, "│", "line")
        return c

    # The columns' names over their lines: the left one ends at its line, the right one starts at its.
    left = wrap((Span(ld.columns[LEFT], "header"),), xl - g.time)
    right = wrap((Span(ld.columns[RIGHT], "header"),), g.total - xr)
    for i in range(max(len(left), len(right))):
        head = _Canvas(g.total)
        if i == 0:
            head.put(g.time - 2, "ms", "time")
        if i < len(left):
            head.put_line(xl + 1 - _width(left[i]), left[i])
        if i < len(right):
            head.put_line(xr, right[i])
        rows.append(head.line(False))
    rows.append(canvas().line(False))
    for s in ld.steps:
        time = _ms(s.t_ns)
        if s.kind in (NOTE, CALL) and s.column is not None:
            width_ = g.left if s.column == LEFT else g.right
            lines = [w for line in s.lines for w in wrap(line, width_)]
            for i, line in enumerate(lines):
                c = canvas(time if i == 0 else "")
                if s.column == LEFT:
                    c.put_line(xl - 1 - _width(line), line)
                    if i == 0:
                        c.put(xl, "┤", "line")
                else:
                    c.put_line(xr + 2, line)
                    if i == 0:
                        c.put(xr, "├", "line")
                rows.append(c.line(s.teardown))
        elif s.kind in (PACKET, RECEIVED):
            rows += _arrow(s, g, canvas, time)
        else:  # MARK, or a note of a socket on neither side: across both lines
            span = g.total - g.time - 1
            for i, line in enumerate(w for line in s.lines for w in wrap(line, span)):
                c = canvas(time if i == 0 else "")
                x = g.time + 1 + (span - _width(line)) // 2
                c.put(x - 1, " " * (_width(line) + 2), "")  # a space either side, over the lines
                c.put_line(x, line)
                rows.append(c.line(s.teardown))
    rows.append(canvas().line(False))
    return rows


def _arrow(s: Step, g: Geometry, canvas, time: str) -> list[Line]:
    """A packet: an arrow across the lane from the sender's line, its label on it (wrapped
    under it when the lane is too narrow). RECEIVED: dashed, from no traced sender."""
    xl, xr = g.x_left, g.x_right
    fill = ARROW if s.kind == PACKET else DASHED
    labels = wrap(s.lines[0], g.lane - 5)
    c = canvas(time)
    c.put(xl + 1, fill * g.lane, "packet")
    if s.column == LEFT:
        c.put(xr - 1, "►", "packet")
        if s.kind == PACKET:
            c.put(xl, "├", "line")
    else:
        c.put(xl + 1, "◄", "packet")
        if s.kind == PACKET:
            c.put(xr, "┤", "line")
    rows = []
    for i, label in enumerate(labels):
        if i:
            c = canvas("")
        x = xl + 1 + (g.lane - _width(label)) // 2
        c.put(x - 1, " " * (_width(label) + 2), "")  # a space either side, over the arrow
        c.put_line(x, label)
        rows.append(c.line(s.teardown))
    return rows


def side_by_side(lds: list[Ladder], width: int, gap: int = 3) -> list[Line]:
    """Several ladders next to each other in `width` columns (compare: one per kernel),
    each laid out in its share of the width, row by row."""
    each = max((width - gap * (len(lds) - 1)) // max(len(lds), 1), 20)
    columns = [text(ld, each) for ld in lds]
    rows = []
    for i in range(max(len(c) for c in columns)):
        row: list[Span] = []
        for j, col in enumerate(columns):
            line = col[i] if i < len(col) else ()
            row += list(line)
            if j < len(columns) - 1:
                row.append(Span(" " * (each - _width(line) + gap), "line"))
        rows.append(tuple(row))
    return rows
