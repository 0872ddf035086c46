"""`trace-halfclose scenarios`: List the scenarios and what the kernel source predicts."""
from __future__ import annotations

import click


@click.command()
def scenarios() -> None:
    """List the scenarios: what each does, what the kernel source predicts, and the
    kernel eras that change what happens or what a backend sees."""
    from tracer.kernel.eras import BY_KEY
    from tracer.process.scenarios import SCENARIOS

    for sc in SCENARIOS.values():
        exp = sc.expected
        writes = ", ".join("success" if w is None else w for w in exp.writes)
        click.echo(f"{sc.name}: {sc.title}")
        click.echo(f"    writes: {writes}" + (f"; read: {exp.read}" if exp.read else "")
                   + f"; RST from: {' or '.join(exp.rst_from) or 'none'}; SIGPIPE: {exp.sigpipe}")
        for why in exp.why:
            click.echo(f"    - {why}")
        for key in sc.eras:
            era = BY_KEY[key]
            click.echo(f"    era: {era.feature} ({era.when}): {era.effect} ({era.source})")
