"""Display: the rich timeline and ladder diagram for people. The only module that imports rich."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tracer.display import ladder as ladders
from tracer.display import words
from tracer.kernel.names import err_name, ret_name, shutdown_name
from tracer.process.fold import Fold, fold
from tracer.process.timeline import UNTRACED_CALL, IoNote, KernelNote, MarkNote, QueryNote, Timeline
from tracer.errors import UserError

err_console = Console(stderr=True, highlight=False, soft_wrap=True)

SIDE_STYLE = {"client": "bold", "server": "dim", "listener": "dim", "socket": "dim"}


@contextlib.contextmanager
def status(initial: str) -> Iterator:
    """A spinner on stderr while bcc compiles and the reproduction runs.
    Yields a function that changes its text."""
    if not err_console.is_terminal:
        yield lambda _msg: None
        return
    with err_console.status(initial) as st:
        yield lambda msg: st.update(escape(msg))


class Spinner:
    """A spinner that can be stopped from another thread (when the VM first prints)."""

    def __init__(self, msg: str):
        self._status = err_console.status(escape(msg)) if err_console.is_terminal else None
        if self._status:
            self._status.start()

    def stop(self) -> None:
        if self._status:
            self._status.stop()
            self._status = None


def error(exc: UserError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(exc.message)}")
    if exc.remedy:
        err_console.print(f"  [bold]remedy:[/] {escape(exc.remedy)}")


def note(msg: str) -> None:
    err_console.print(escape(msg))


def _ms(t_ns: int) -> str:
    return f"{t_ns / 1e6:+9.3f} ms"


def _write(console: Console, w: IoNote) -> None:
    if w.killed_by:
        result = f"[red]killed by {w.killed_by}[/]"
    else:
        result = f"[green]{w.ret}[/]" if w.ret >= 0 else f"[red]-1 {w.errno}[/]"
    console.print(f"[cyan]{_ms(w.t_ns)}[/]  [bold]{words.call_label(w)}[/] ({w.size} bytes) → {result}")
    if w.observed:
        console.print(
            f"{'':14}at {words.observed_at(w.observed_at)}: state [bold]{w.state}[/], "
            f"sk_err {err_name(w.sk_err)}, sk_shutdown {shutdown_name(w.sk_shutdown)}"
        )
    for s in w.path:
        ret = f" → {ret_name(s.ret)}" if s.ret is not None else ""
        console.print(f"{'':14}  {s.func}{ret}  [dim]{escape(words.step_detail(s))}[/]")
    label = "[yellow]decided[/] [italic](inferred)[/]" if w.inferred else "[yellow]decided:[/]"
    console.print(f"{'':14}{label} {escape(words.decision(w, prefix=False))}")


def _where(tl: Timeline, n: KernelNote) -> str:
    return f"  [magenta]({escape(words.where(tl, n.where))})[/]" if n.where else ""


def _findings(console: Console, tl: Timeline, title: str | None = None) -> None:
    table = Table(title=title, show_header=False, box=None, padding=(0, 1))
    for f in words.findings(tl):
        table.add_row("•", escape(f))
    console.print(table)


def _kernel(console: Console, tl: Timeline, n: KernelNote, sides: bool) -> None:
    """A kernel step; sides: name the socket's side (a watched connection is one socket)."""
    if not sides:
        console.print(f"[cyan]{_ms(n.t_ns)}[/]  {n.func}: {escape(n.summary)}{_where(tl, n)}")
        return
    style = "dim" if n.teardown else SIDE_STYLE.get(n.side, "")
    console.print(f"[cyan]{_ms(n.t_ns)}[/]  [{style}]{n.side:<8} {n.func}: {escape(n.summary)}[/]{_where(tl, n)}")


def _items(console: Console, tl: Timeline, items, sides: bool = True, after_write=lambda w: None) -> None:
    """The timeline's items in time order (one loop for both modes); after_write(w)
    adds lines under a write (watch: which call, fd and task)."""
    for item in items:
        if isinstance(item, IoNote):
            _write(console, item)
            after_write(item)
        elif isinstance(item, KernelNote):
            _kernel(console, tl, item, sides)
        elif isinstance(item, QueryNote):
            console.print(f"[cyan]{_ms(item.t_ns)}[/]  [bold]{escape(words.query_label(item))} → "
                          f"{escape(item.value)}[/]")
            console.print(f"{'':12}{escape(words.query_decision(item))}", style="dim" if item.inferred else "")
        elif isinstance(item, MarkNote):
            console.print(f"[cyan]{_ms(item.t_ns)}[/]  [blue]user     {escape(item.what)}[/]")


def _backend_lines(console: Console, title: str, rec) -> None:
    """The first lines of every timeline: kernel, backend, why not the others, probes."""
    console.print(f"[bold]{title}[/] on Linux {rec.kernel}, backend {rec.backend}")
    for why in rec.backend_notes:
        console.print(f"not used: {why}", style="dim")
    console.print(f"probes: {', '.join(rec.attached)}", style="dim")
    if rec.missing:
        console.print(f"not on this kernel: {', '.join(rec.missing)}", style="dim")
    for why in rec.missing_notes:
        console.print(f"not traced: {why}", style="dim")


def timeline(tl: Timeline, console: Console | None = None, as_ladder: bool = False) -> None:
    """The reproduction's timeline: item by item, or (as_ladder) as a ladder diagram."""
    console = console or Console(highlight=False)
    rec = tl.recording
    _backend_lines(console, "trace-halfclose", rec)
    host = "[::1]" if rec.family == "ipv6" else "127.0.0.1"
    console.print(
        f"reproduction: scenario {rec.scenario}, netns {rec.netns}, server {host}:{rec.server_port}, "
        f"client {host}:{rec.client_port} (pid {rec.client_pid}); state names from {rec.state_names_source}",
        style="dim",
    )
    console.print()
    if as_ladder:
        ladder(ladders.of_timeline(tl), console)
    else:
        _items(console, tl, tl.items)
    console.print()
    _findings(console, tl, "What the kernel showed")


# The ladder's roles (display/ladder.py) in the timeline's colours: the client bold, the
# server dim, times cyan, user space blue, results green or red, placements magenta.
LADDER_STYLE = {"title": "bold", "subtitle": "dim", "header": "bold", "time": "cyan", "client": "bold",
                "server": "dim", "call": "bold", "ok": "green", "error": "red", "where": "magenta",
                "mark": "blue", "other": "dim", "teardown": "dim"}


def ladder(ld, console: Console | None = None) -> None:
    """A ladder diagram (display/ladder.py) at the console's width."""
    console = console or out_console()
    _ladder_lines(ladders.text(ld, console.width), console)


def compare_ladders(c, console: Console | None = None) -> None:
    """compare --ladder: per scenario, each kernel's ladder beside the others'."""
    console = console or out_console()
    for scenario in c.scenarios:
        have = [(run, tls[scenario]) for run, tls in zip(c.runs, c.timelines) if scenario in tls]
        console.print()
        console.print(f"[bold]scenario {escape(scenario)}[/]: " + escape("  |  ".join(r.label for r, _ in have)))
        _ladder_lines(ladders.side_by_side([ladders.of_timeline(tl) for _, tl in have], console.width), console)


def _ladder_lines(lines, console: Console) -> None:
    for line in lines:
        out = Text()
        for span in line:
            out.append(span.text, LADDER_STYLE.get(span.role, ""))
        console.print(out, no_wrap=True, overflow="crop")


VERDICT_STYLE = {"verified": "green", "refuted": "red", "imprecise": "yellow", "not-observed": "dim"}


def claims(results, console: Console | None = None) -> None:
    """The article's claims after the timeline: verdict, evidence, and whether the source reading expected it."""
    console = console or out_console()
    table = Table(title="The article's claims, checked against this kernel", show_lines=True, header_style="bold")
    for col in ("claim", "verdict", "evidence"):
        table.add_column(col)
    for r in results:
        style = VERDICT_STYLE.get(r.verdict.verdict, "")
        mark = "" if r.as_expected else f"\n[red](source reading expected {r.expected})[/]"
        table.add_row(f"[bold]{r.claim.id}[/]\n{escape(r.claim.statement)}\n[dim]{escape(r.claim.source)}[/]",
                      f"[{style}]{r.verdict.verdict}[/]{mark}",
                      "\n".join(f"• {escape(words.evidence(e))}" for e in r.verdict.evidence))
    console.print(table)


def _ok(ok: bool | None) -> str:
    return {True: "[green]match[/]", False: "[red]MISMATCH[/]", None: "[dim]not observable[/]"}[ok]


def scenario_verdict(v, console: Console | None = None) -> None:
    """Observed beside expected (from the kernel source) for one scenario."""
    console = console or out_console()
    table = Table(title=f"Scenario {v.scenario.name}: {v.scenario.title}", header_style="bold")
    for col in ("", "expected (source)", "observed", ""):
        table.add_column(col)
    for r in v.rows:
        table.add_row(r.what, escape(r.expected), escape(r.observed), _ok(r.ok))
    console.print(table)
    for why in v.scenario.expected.why:
        console.print(f"  [dim]source: {escape(why)}[/]")


def _short_path(w: IoNote) -> str:
    """The deciding path in a few words: the functions with their returns, or the inference."""
    funcs = [s for s in w.path if s.role not in ("syscall_enter", "send_length", "syscall_exit")
             and not s.func.startswith("sys_")]
    if funcs:
        return " → ".join(f"{s.func}" + (f" {ret_name(s.ret)}" if s.ret is not None else "") for s in funcs)
    return words.decision(w, short=True)


def matrix(rows, console: Console | None = None) -> None:
    """--scenario all: one row per scenario: each write's and read's result and the deciding path."""
    console = console or out_console()
    if rows:
        rec = rows[0][0].recording
        console.print(f"[bold]trace-halfclose --scenario all[/] on Linux {rec.kernel}, backend {rec.backend}, "
                      f"{rec.family}")
    table = Table(show_lines=True, header_style="bold")
    for col in ("scenario", "observed (expected)", "deciding path", "RST sent by", "SIGPIPE", "verdict"):
        table.add_column(col)
    for tl, v in rows:
        results, paths = [], []
        by = {r.what: r for r in v.rows}
        for w in [*tl.reads, *[w for w in tl.writes if w.index >= 1]]:
            row = by.get("read" if w.op == "read" else f"write {w.index}")
            got = w.killed_by or (str(w.ret) if w.ret >= 0 else w.errno)
            exp = f" ({row.expected})" if row and row.expected != ("success" if w.ret >= 0 else got) else ""
            results.append(f"{w.op} {w.index}: {got}{exp}")
            paths.append(f"{w.op} {w.index}: {_short_path(w)}")
        rst = by.get("RST sent by") or by.get("RST")
        sig = by.get("SIGPIPE")
        status = {"match": "[green]match[/]", "mismatch": "[red]MISMATCH[/]"}.get(v.status, f"[yellow]{v.status}[/]")
        table.add_row(f"[bold]{v.scenario.name}[/]\n[dim]{escape(v.scenario.title)}[/]", "\n".join(results),
                      escape("\n".join(paths)), escape(rst.observed if rst else ""), escape(sig.observed if sig else ""),
                      status)
    console.print(table)


def checks(items, summary: str, ok: bool, console: Console | None = None) -> None:
    """The doctor's table: one row per check, with the remedy where it failed."""
    console = console or out_console()
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 1))
    for col in ("", "check", "detail", "remedy"):
        table.add_column(col)
    for c in items:
        mark = "[green]OK[/]" if c.ok else ("[red]NO[/]" if c.required else "[yellow]--[/]")
        table.add_row(mark, escape(c.name), escape(c.detail), "" if c.ok else escape(c.remedy))
    console.print(table)
    console.print(f"[bold {'green' if ok else 'red'}]{escape(summary)}[/]")


def compare(c, console: Console | None = None) -> None:
    """Kernels side by side: per scenario the rows that differ, highlighted, each with a
    note number for its reason (the notes under the table); identical rows folded into a count."""
    console = console or out_console()
    console.print(f"[bold]trace-halfclose compare[/]: {escape(', '.join(f'{r.label} ({r.backend})' for r in c.runs))}")
    table = Table(show_lines=False, header_style="bold")
    for col in ("scenario", "what", *(r.label for r in c.runs), "why"):
        table.add_column(escape(col))
    notes: list[str] = []

    def note_of(reason) -> str:
        text = words.compare_reason(reason, c.runs)
        if text not in notes:
            notes.append(text)
        return f"{'kernel' if reason.kind == 'era' else 'backend'} [{notes.index(text) + 1}]"

    for scenario in c.scenarios:
        rows = [r for r in c.rows if r.scenario == scenario]
        first = True
        for r in (r for r in rows if not r.same):
            style = "red" if r.user_visible else "yellow"
            values = (f"[{style}]{escape(v if v is not None else '—')}[/]" for v in r.values)
            table.add_row(escape(scenario) if first else "", f"[{style}]{escape(r.what)}[/]", *values,
                          ", ".join(note_of(x) for x in r.reasons))
            first = False
        same = sum(1 for r in rows if r.same)
        if same:
            table.add_row(escape(scenario) if first else "", f"[dim]{same} rows the same on every kernel[/]",
                          *([""] * (len(c.runs) + 1)))
        table.add_section()
    console.print(table)
    for i, text in enumerate(notes, 1):
        console.print(f"[dim][{i}] {escape(text)}[/]")
    ok = not c.user_visible_differences
    console.print(f"[bold {'green' if ok else 'red'}]{escape(words.compare_summary(c))}[/]")


def timings(clock) -> None:
    """--timings: one line on stderr, each phase and the time from start to attached."""
    phases = ", ".join(f"{name} {seconds:.2f}" for name, seconds in clock.phases)
    err_console.print(f"[dim]timings (s): {escape(phases)}; start to attached "
                      f"{clock.until('compile and attach'):.2f}, total {clock.total:.2f}[/]")


def out_console() -> Console:
    return Console(file=sys.stdout, highlight=False)


# --- watch (trace-halfclose watch) ----------------------------------------------------


def _fd(fd: int | None) -> str:
    return "?" if fd is None else str(fd)


def _endpoint(addr: str | None, port: int) -> str:
    host = "?" if addr is None else (f"[{addr}]" if ":" in addr else addr)
    return f"{host}:{port or '?'}"


def watch_header(wrec, console: Console) -> None:
    rec = wrec.rec
    _backend_lines(console, "trace-halfclose watch", rec)
    f = wrec.filter
    parts = [f"pid {', '.join(map(str, f['pids']))}" if f.get("pids") else "",
             f"comm {f['comm']!r}" if f.get("comm") is not None else "",
             f"port {f['port']} (local or remote)" if f.get("port") else "",
             f"the command {' '.join(f['command'])!r} and its new processes" if f.get("command") else ""]
    console.print(f"filter, in the kernel: {' and '.join(p for p in parts if p)}; state names from "
                  f"{rec.state_names_source}", style="dim")
    for m in rec.marks:
        console.print(f"[cyan]{_ms(m.t_ns - wrec.t0_ns)}[/]  [blue]{escape(m.what)}[/]")


def watch_connection(ct, console: Console) -> None:
    """One connection: who, where, why it is shown, then its timeline with alike
    consecutive calls folded into one line each (tracer/process/fold.py)."""
    _connection_head(ct, console)

    def by_whom(w: IoNote) -> None:
        k = ct.call_of(w)
        call = f"{k.name}(2)" if k.name != UNTRACED_CALL else f"{UNTRACED_CALL} (its caller is not traced)"
        console.print(f"{'':14}[dim]{call} on fd {_fd(k.fd)} by {escape(k.comm)} (pid {k.pid})[/]")

    name_of = lambda w: ct.call_of(w).name  # noqa: E731
    for item in fold(ct.items, name_of):
        if isinstance(item, Fold):
            console.print(f"[cyan]{_ms(item.t_ns)}[/]  [bold]{escape(words.fold_line(item, name_of(item.first)))}[/]")
        else:
            _items(console, ct.timeline, [item], sides=False, after_write=by_whom)
    _connection_tail(ct, console)


def watch_ladder(ct, peer, console: Console) -> None:
    """A connection, with its peer when both ends were watched, as one ladder diagram."""
    ends = [ct] if peer is None else sorted((ct, peer), key=lambda c: c.conn.conn)
    for c in ends:
        _connection_head(c, console)
    console.print()
    ladder(ladders.of_connection(ct) if peer is None else ladders.of_pair(ct, peer), console)
    for c in ends:
        _connection_tail(c, console)


def _connection_head(ct, console: Console) -> None:
    c = ct.conn
    who = "; ".join(f"{escape(comm)} (pid {pid}), fd {_fd(fd)}" for pid, comm, fd in ct.writers)
    if not who and ct.connected_by:
        who = f"connected by {escape(ct.connected_by[1])} (pid {ct.connected_by[0]}); no write-like call seen"
    who = who or "[dim]no write-like call seen: a socket's owner is known from its writes and connect(2)[/]"
    peer = f"  [dim](peer of #{ct.peer})[/]" if ct.peer else ""
    console.print()
    console.print(f"[bold]connection #{c.conn}[/]  {_endpoint(ct.laddr, ct.lport)} → "
                  f"{_endpoint(ct.raddr, ct.rport)}  {who}{peer}")
    if ct.rules:
        console.print(f"{'':14}[bold red]incident:[/] {escape(words.rules(ct.rules))}")
    if words.end_note(ct.end):
        console.print(f"{'':14}[dim]shown: {escape(words.end_note(ct.end))}[/]")


def _connection_tail(ct, console: Console) -> None:
    """Calls whose return was not seen, and the connection's findings (alike calls folded)."""
    for k in ct.calls:
        if k.ret is None:
            console.print(f"[cyan]{_ms(k.t_start_ns - ct.timeline.t0_ns)}[/]  {k.name} on fd {_fd(k.fd)}: "
                          "its return was not seen (the watch stopped first, or a return probe missed it)")
    tl = ct.timeline
    if not tl.findings:
        return
    folds = {n.index: item for item in fold(tl.writes, lambda w: ct.call_of(w).name) if isinstance(item, Fold)
             for n in item.notes}
    table = Table(show_header=False, box=None, padding=(0, 1))
    for f in tl.findings:
        if f.kind == "call" and f.values["note"].index in folds and f.values["note"].op == "write":
            item = folds[f.values["note"].index]
            if f.values["note"] is item.first:
                table.add_row("•", escape(words.fold_finding(item, ct.call_of(item.first).name)))
            continue
        table.add_row("•", escape(words.finding(f, tl)))
    console.print(table)


def watch_end(wrec, sel, console: Console) -> None:
    """How the watch ended, a small table of the shown connections, and the counts."""
    console.print()
    t = _ms(wrec.stop_ns - wrec.t0_ns)
    if wrec.command_status is not None:
        console.print(f"[cyan]{t}[/]  [blue]{escape(words.command_end(wrec.command_status))}[/]")
    console.print(f"[cyan]{t}[/]  [blue]stopped: {escape(wrec.stop_reason)}[/]")
    if sel.rows:
        table = Table(box=None, padding=(0, 1), show_edge=False)
        for col in ("conn", "local", "remote", "write-like calls", "incident"):
            table.add_column(col, overflow="fold")
        for r in sel.rows:
            table.add_row(f"#{r.conn}", _endpoint(r.laddr, r.lport), _endpoint(r.raddr, r.rport),
                          escape(words.calls_cell(r.writes)), escape(words.rules(r.rules, short=True)) or "-")
        console.print(table)
        if sel.rows_left_off:
            console.print(f"[dim]… and {sel.rows_left_off:,} more shown above[/]")
    console.print(escape(words.tally_line(sel.tally)))
    if sel.tally.shed:
        console.print(f"[yellow]{escape(words.shed_line(sel.tally))}[/]")
    if sel.tally.unshown_at_stop:
        console.print(f"[yellow]{escape(words.unshown_line(sel.tally))}[/]")
    if wrec.rec.lost_events:
        console.print(f"[red]{escape(words.lost_line(wrec.rec.lost_events))}[/]")


class WatchConsole:
    """A watch for people, connection by connection as they end (a tracer.collect.watch.Sink),
    with a live status line on stderr when it is a terminal.

    as_ladder: each connection as a ladder diagram; one whose peer is watched too waits
    for it, and the two are drawn as one ladder when the second ends."""

    def __init__(self, console: Console | None = None, as_ladder: bool = False):
        self.console = console or out_console()
        self.as_ladder = as_ladder
        self.waiting: dict[int, object] = {}  # conn -> a connection waiting for its peer
        self._status = None  # rich's Status on stderr, while watching

    def start(self, wrec) -> None:
        watch_header(wrec, self.console)

    def status(self, tally, live: int) -> None:
        if not err_console.is_terminal:
            return
        text = escape(words.status_line(tally, live))
        if self._status is None:
            self._status = err_console.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def _paused(self):
        """Output on the terminal while the status line is drawn: stop it, print, restart."""
        status = self._status

        @contextlib.contextmanager
        def pause():
            if status is not None:
                status.stop()
            try:
                yield
            finally:
                if status is not None:
                    status.start()
        return pause()

    def connection(self, ct) -> None:
        with self._paused():
            if not self.as_ladder:
                watch_connection(ct, self.console)
            elif ct.peer in self.waiting:
                watch_ladder(ct, self.waiting.pop(ct.peer), self.console)
            elif ct.peer is not None:
                self.waiting[ct.conn.conn] = ct
            else:
                watch_ladder(ct, None, self.console)

    def end(self, wrec, sel) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        for ct in self.waiting.values():  # its peer never ended: drawn alone
            watch_ladder(ct, None, self.console)
        self.waiting.clear()
        watch_end(wrec, sel, self.console)
