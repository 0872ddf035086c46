"""`trace-halfclose scenarios`: List the scenarios and what the kernel source predicts."""
from __future__ import annotations

import click

from tracer.cli.common import fail, stdout_gone
from tracer.errors import UserError


@click.command()
@click.option("--show", "show_name", metavar="NAME|PATH",
              help="Print a built-in scenario's file (TOML), to copy and edit; or check a file of your own "
                   "and print it (exit status 2 with file:line: key: what is wrong).")
def scenarios(show_name) -> None:
    """List the scenarios: what each does, what the kernel source predicts, and the
    kernel eras that change what happens or what a backend sees.

    \b
    Your own scenario:
      trace-halfclose scenarios --show close > mine.toml    # copy a built-in, edit one step
      sudo trace-halfclose --scenario ./mine.toml --check   # run it, read the verdict
    """
    from tracer.kernel.eras import BY_KEY
    from tracer.process.scenarios import SCENARIOS

    if show_name is not None:
        _show(show_name)
        return
    for sc in SCENARIOS.values():
        exp = sc.expected
        writes = ", ".join("success" if w is None else w for w in exp.writes)
        click.echo(f"{sc.name}: {sc.title}")
        click.echo(f"    writes: {writes}" + (f"; read: {exp.read}" if exp.read else "")
                   + "".join(f"; {label}: {want if isinstance(want, str) else '|'.join(want)}"
                             for label, want in exp.queries if want is not None)
                   + f"; RST from: {' or '.join(exp.rst_from) or 'none'}; SIGPIPE: {exp.sigpipe}")
        for name, value in sc.sysctls:
            click.echo(f"    sysctl in its namespace: {name} = {value}")
        for why in exp.why:
            click.echo(f"    - {why}")
        for key in sc.eras:
            era = BY_KEY[key]
            click.echo(f"    era: {era.feature} ({era.when}): {era.effect} ({era.source})")


def _show(name: str) -> None:
    """A built-in's file as shipped, or a user's file once it checked out."""
    import os

    from tracer.process.scenario_file import ScenarioFileError, load
    from tracer.process.scenarios import ORDER
    from tracer.scenarios import builtin_path

    if name in ORDER and not os.path.isfile(name):
        text = builtin_path(name).read_text(encoding="utf-8")
    elif os.path.isfile(name) or "/" in name or name.endswith(".toml"):
        try:
            load(name)
        except ScenarioFileError as exc:
            fail(UserError(str(exc)))
        with open(name, encoding="utf-8") as f:
            text = f.read()
    else:
        fail(UserError(f"unknown scenario {name!r}: choose one of {', '.join(ORDER)}, or the path of a scenario file"))
    try:
        click.echo(text, nl=False)
    except BrokenPipeError:
        stdout_gone()
