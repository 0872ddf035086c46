"""`trace-halfclose doctor`: What this machine can trace."""
from __future__ import annotations

import sys

import click



@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per check, then a verdict line.")
def doctor(as_json) -> None:
    """Check what this machine can trace: root, bcc, headers, tracefs, BTF,
    kprobes, fentry, each function and tracepoint the tool uses, and what
    `vm` needs. Exit status 0 when the tool can run here."""
    import json

    from tracer.collect import doctor as doc

    items = doc.run_checks()
    ok, summary = doc.verdict(items)
    if as_json:
        for c in items:
            click.echo(json.dumps(c.to_json()))
        click.echo(json.dumps({"type": "verdict", "ok": ok, "summary": summary}))
    else:
        from tracer.display import console

        console.checks(items, summary, ok)
    sys.exit(0 if ok else 1)
