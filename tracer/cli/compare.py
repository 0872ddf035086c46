"""`trace-halfclose compare`: the same scenarios on several kernels, side by side."""
from __future__ import annotations

import sys

import click

from tracer.cli.common import chosen_scenarios, fail
from tracer.errors import UserError


@click.command()
@click.argument("recordings", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--kernel", "kernels", multiple=True, metavar="K",
              help="A kernel to run the scenarios on (repeatable): `running` (this machine's, natively), a "
                   "vmlinuz or a kernel build tree (booted with virtme-ng, as `trace-halfclose vm` does). "
                   "Default: the running kernel and the newest under /boot that is not the running one.")
@click.option("--scenario", default="all", show_default=True, metavar="NAME|PATH|all",
              help="Which scenarios to run on each kernel (`trace-halfclose scenarios` lists them), or a "
                   "scenario file of your own: your question, asked of every kernel.")
@click.option("--ipv6", is_flag=True, help="Run the scenarios over IPv6 (::1) instead of IPv4.")
@click.option("--backend", type=click.Choice(["auto", "kprobe", "fentry", "tracepoint"]), default="auto",
              show_default=True, help="How to trace on each kernel.")
@click.option("--json", "as_json", is_flag=True,
              help="NDJSON: a meta line with the runs, one line per aligned row, a summary (see README).")
@click.option("--ladder", is_flag=True, help="Also each scenario's ladder diagram, one per kernel side by side.")
@click.option("--check", is_flag=True,
              help="Exit status 1 when what a program sees differs between kernels: a return value, an errno "
                   "or a signal.")
def compare(recordings, kernels, scenario, ipv6, backend, as_json, ladder, check) -> None:
    """Run the same scenarios on several kernels and show what differs, side by side.

    With RECORDINGS (files written by `--record`, from any machine) it compares
    them without root or BPF; otherwise it runs the scenarios on each --kernel.
    Rows are aligned by meaning: each write's and read's result and the branch
    that decided it, the kernel steps (FIN, RST, who stored sk_err, tcp_done,
    the RST's sender), the packets and the article's claims. Rows that are the
    same everywhere are folded into a count; a differing row says why, where
    the tool knows (a kernel function some kernels have, or the backends).
    Times are never a difference; order and values are.

    \b
      trace-halfclose compare a.jsonl b.jsonl        recordings of two kernels (no root)
      sudo trace-halfclose compare                   this kernel and the newest other one under /boot
      sudo trace-halfclose compare --kernel /boot/vmlinuz-6.1.0-57-amd64 --kernel /boot/vmlinuz-6.12.57+deb12-amd64
      sudo trace-halfclose compare --scenario close --check
      sudo trace-halfclose compare --scenario mine.toml   your own scenario file on each kernel
      trace-halfclose compare a.jsonl b.jsonl --ladder   each scenario's ladders, one per kernel
    """
    from tracer.display import console

    if ladder and as_json:
        fail(UserError("--ladder draws for people; --json is for machines", "use one of them"))
    if recordings and kernels:
        fail(UserError("give recordings or --kernel, not both",
                       "trace-halfclose compare A.jsonl B.jsonl, or trace-halfclose compare --kernel K --kernel K"))
    if recordings and ipv6:
        fail(UserError("--ipv6 is how scenarios run; recordings already ran", "drop --ipv6"))
    chosen = chosen_scenarios(scenario, ipv6)  # a bad file ends here, before any VM boots
    files = _from_files(recordings) if recordings else _from_kernels(list(kernels), scenario, chosen, ipv6, backend)
    if len(files) < 2:
        fail(UserError(f"{len(files)} run(s) to compare: compare needs at least two",
                       "give two recordings, or two kernels that can run the scenarios"))
    from tracer.process.compare import compare as compare_runs, runs_of

    wanted = None if scenario == "all" else [name for name, _file in chosen]
    result = compare_runs(runs_of(files), wanted)
    if as_json:
        from tracer.display import ndjson

        ndjson.write_compare(result, sys.stdout)
    else:
        out = console.out_console()
        if ladder:
            console.compare_ladders(result, out)
        console.compare(result, out)
    if check and result.user_visible_differences:
        sys.exit(1)


def _from_files(paths) -> list:
    """Each file's recordings; a file that is not one gets a line and is left out."""
    from tracer.display import console
    from tracer.record.recording import Recording

    out = []
    for path in paths:
        try:
            out.append((path, Recording.load_all(path)))
        except (OSError, ValueError) as exc:
            console.note(f"{path}: left out: {exc}")
    return out


def _from_kernels(kernels: list[str], scenario: str, chosen: list, ipv6: bool, backend: str) -> list:
    from tracer.collect.compare import default_kernels, record_kernels
    from tracer.display import console

    kernels = kernels or default_kernels()
    console.note(f"trace-halfclose compare: scenario {scenario} on {len(kernels)} kernel(s): {', '.join(kernels)}")
    try:
        runs = record_kernels(kernels, chosen, ipv6, backend, lambda k, msg: console.note(f"{k}: {msg}"),
                              every=scenario == "all")
    except UserError as exc:
        fail(exc)
    except KeyboardInterrupt:
        console.note("interrupted: the runs were stopped")
        sys.exit(130)
    return [(r.kernel, list(r.recordings)) for r in runs if not r.error]
