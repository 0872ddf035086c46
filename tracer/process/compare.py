"""The same scenarios on several kernels, side by side: rows aligned by meaning. Pure.

Each run (one kernel, one backend: the recordings of one `--record` file) is
annotated scenario by scenario; from each timeline the rows a reader compares
are taken as values: every write's and read's result (user-visible) and the
branch that decided it, the kernel steps by meaning (FIN processed, RST
accepted, who stored sk_err, tcp_done, the RST's sender), the packet
sequence, and the article's claims' verdicts. Times never enter a row: order
and values do. A row whose values differ carries the reasons the tool knows
(kernel facts a recording kept, or the backends' reach), as values that
tracer/display words.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tracer.kernel.names import err_name
from tracer.process.annotate import annotate
from tracer.process.claims import check_all
from tracer.process.timeline import Finding, IoNote, KernelNote, Timeline
from tracer.process.verdicts import check as check_scenario
from tracer.record.event import Kind
from tracer.record.recording import Recording

# Rows decided by a kernel function some kernels have: the function, and when it came
# (net/ipv4/tcp_input.c; mainline 6.11, in stable 6.10.y, 6.6.44 and 6.1.103, docs/kernel-source.md).
ERA_FUNCTIONS = {
    "sk_err stored by": ("tcp_done_with_error", "tcp_done_with_error: mainline 6.11, stable 6.10.y, 6.6.44+, "
                         "6.1.103+; before it, tcp_reset stores sk_err itself"),
}
NOT_SEEN = "not observed"


@dataclass(frozen=True)
class Run:
    """One kernel's run: its label and its recordings by scenario."""

    label: str  # the kernel release (and the backend, when two runs share a kernel)
    kernel: str
    backend: str
    recordings: dict[str, Recording]


    @property
    def kernel_functions(self) -> frozenset[str]:
        """Of the tool's functions, those the kernel had (every recording of a run lists them)."""
        return frozenset(next(iter(self.recordings.values())).kernel_functions) if self.recordings else frozenset()


@dataclass(frozen=True)
class Reason:
    """Why a row's values differ, as far as the tool knows."""

    kind: str  # "era": a kernel function some of the kernels have; "backend": the runs' backends differ
    per_run: tuple  # era: whether each run's kernel has the function; backend: each run's backend
    function: str = ""  # era: the function
    note: str = ""  # era: when it came, with the source


@dataclass(frozen=True)
class Row:
    scenario: str
    group: str  # results, path, kernel, packets, claims, verdict
    what: str
    values: tuple[str | None, ...]  # one per run; None: the run has no such row (or not this scenario)
    user_visible: bool = False  # a return value, an errno or a signal: what --check judges
    reasons: tuple["Reason", ...] = ()  # why the values differ, where the tool knows

    @property
    def same(self) -> bool:
        return len(set(self.values)) == 1


@dataclass
class Comparison:
    runs: list[Run]
    rows: list[Row] = field(default_factory=list)
    timelines: list[dict[str, Timeline]] = field(default_factory=list)  # per run, by scenario (for ladders)

    @property
    def differences(self) -> list[Row]:
        return [r for r in self.rows if not r.same]

    @property
    def user_visible_differences(self) -> list[Row]:
        return [r for r in self.differences if r.user_visible]

    @property
    def scenarios(self) -> list[str]:
        return list(dict.fromkeys(r.scenario for r in self.rows))


def runs_of(files: list[tuple[str, list[Recording]]]) -> list[Run]:
    """(name, recordings) per file → runs, labelled by kernel (and backend when kernels repeat)."""
    kernels = [recs[0].kernel if recs else name for name, recs in files]
    runs = []
    for (name, recs), kernel in zip(files, kernels):
        backend = recs[0].backend if recs else ""
        label = kernel if kernels.count(kernel) == 1 else f"{kernel} ({backend})"
        if label in [r.label for r in runs]:
            label = f"{label} #{len(runs) + 1}"  # the same kernel and backend twice: by position
        runs.append(Run(label, kernel, backend, {r.scenario: r for r in recs}))
    return runs


# --- rows of one timeline -------------------------------------------------------------


def _call_rows(w: IoNote) -> list[tuple[str, str, str, bool]]:
    """(group, what, value, user_visible) for a write or read."""
    label = f"{w.op} {w.index}" if w.index else f"{w.op} before the close"
    if w.killed_by:
        result = f"killed by {w.killed_by}"
    else:
        result = str(w.ret) if w.ret >= 0 else w.errno or "?"
    functions = [s.func for s in w.path if s.role in ("sendmsg", "wait_connect", "stream_error")
                 or (s.role == "read_entry" and not s.func.startswith("sys_"))]
    seen = " → ".join(functions) if functions else ("syscall tracepoints" if w.observed else NOT_SEEN)
    return [("results", label, result, True),
            ("path", f"{label}: branch", w.decision.branch.value, False),
            ("path", f"{label}: seen by", seen, False)]


def _finding(tl: Timeline, kind: str) -> Finding | None:
    return next((f for f in tl.findings if f.kind == kind), None)


def _client(tl: Timeline, *kinds: Kind) -> KernelNote | None:
    return next((n for n in tl.kernel_notes(side="client") if n.event.kind in kinds), None)


def _kernel_rows(tl: Timeline) -> list[tuple[str, str, str, bool]]:
    rows = []
    fin = _client(tl, Kind.TCP_FIN) or next((n for n in tl.kernel_notes(Kind.SET_STATE, "client")
                                             if n.values.get("state") == "CLOSE_WAIT"), None)
    if fin:
        before = fin.values.get("state") if fin.event.kind == Kind.TCP_FIN else fin.values.get("old_state")
        after = fin.values.get("state_after", "CLOSE_WAIT")
        rows.append(("kernel", "FIN processed", f"client {before} → {after}", False))
    else:
        rows.append(("kernel", "FIN processed", "none", False))
    reset = _client(tl, Kind.TCP_RESET, Kind.RESET_TP)
    where = ""
    if reset and reset.where:
        relation = {"after_return": "during", "in_syscall": "during", "after": "after"}[reset.where.relation]
        where = f", {relation} write {reset.where.write}"
    rows.append(("kernel", "RST accepted", f"in {reset.values['state']}{where}" if reset else "none", False))
    sk_err = _finding(tl, "sk_err")
    if sk_err:
        v = sk_err.values
        by = {"done_with_error": "tcp_done_with_error", "between": v.get("writer"), "during": v.get("func"),
              "already": f"before {v.get('func')}", "reported": "not observable with this backend",
              "unchanged": "no change"}[v["how"]]
        rows.append(("kernel", "sk_err stored by", by, False))
        if "err" in v:
            rows.append(("kernel", "sk_err after the RST", err_name(v["err"]), False))
    done = _finding(tl, "tcp_done") or _finding(tl, "tcp_done_inferred")
    if done:
        after = done.values.get("state_after", "CLOSE")
        rows.append(("kernel", "tcp_done", f"client → {after}", False))
    sender = _finding(tl, "rst_sender")
    rows.append(("kernel", "RST sent by", sender.values["sender"] if sender else "none", False))
    packets = _finding(tl, "packets")
    if packets:
        rows.append(("packets", "packets", ", ".join(f"{s} {f}" + (f" {n}" if n else "")
                                                     for s, f, n in packets.values["packets"]), False))
    signals = _finding(tl, "signals")
    rows.append(("results", "signals", ", ".join(f"{s} ({r})" for s, r in signals.values["signals"])
                 if signals else "none", True))
    return rows


def rows_of(tl: Timeline) -> list[tuple[str, str, str, bool]]:
    """(group, what, value, user_visible) of one scenario's timeline, in reading order."""
    rows = []
    for w in [*tl.reads, *tl.writes]:
        rows += _call_rows(w)
    rows += [("results", f"{q.what} {q.index}", q.value, True) for q in tl.queries]  # what the client got
    rows += _kernel_rows(tl)
    if tl.recording.scenario == "close":
        rows += [("claims", c.claim.id, c.verdict.verdict, False) for c in check_all(tl)]
    rows.append(("verdict", "scenario verdict", check_scenario(tl).status, False))
    return rows


# --- across runs --------------------------------------------------------------------


def _reasons(what: str, values: tuple, runs: list[Run]) -> tuple[Reason, ...]:
    """What the tool knows about why a row differs: a kernel function some kernels have
    (each recording lists which of the tool's functions its kernel had), or the backends."""
    out = []
    if what in ERA_FUNCTIONS:
        func, when = ERA_FUNCTIONS[what]
        has = tuple(func in run.kernel_functions for run in runs)
        if len(set(has)) > 1:
            out.append(Reason("era", has, func, when))
    backends = tuple(run.backend for run in runs)
    if len({b for b, v in zip(backends, values) if v is not None}) > 1:
        out.append(Reason("backend", backends))
    return tuple(out)


def compare(runs: list[Run], scenarios: list[str] | None = None) -> Comparison:
    """Align every scenario's rows across runs (by scenario, then by what the row says)."""
    order = scenarios or list(dict.fromkeys(s for run in runs for s in run.recordings))
    timelines = [{s: annotate(rec) for s, rec in run.recordings.items()} for run in runs]
    out = Comparison(runs, timelines=timelines)
    for scenario in order:
        per_run = [{(g, w): (v, u) for g, w, v, u in rows_of(tls[scenario])} if scenario in tls else {}
                   for tls in timelines]
        keys = list(dict.fromkeys(k for rows in per_run for k in rows))
        for group, what in keys:
            values = tuple(rows.get((group, what), (None, False))[0] for rows in per_run)
            visible = any(rows.get((group, what), (None, False))[1] for rows in per_run)
            reasons = () if len(set(values)) == 1 else _reasons(what, values, runs)
            out.rows.append(Row(scenario, group, what, values, visible, reasons))
    return out
