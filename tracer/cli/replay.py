"""`trace-halfclose replay`: Annotate a recording again (no root, no BPF)."""
from __future__ import annotations

import click

from tracer.errors import UserError
from tracer.cli.common import fail, show


@click.command()
@click.argument("recording", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="NDJSON on stdout.")
@click.option("--check", is_flag=True, help="Exit status 1 unless everything is as the source reading expects.")
def replay(recording, as_json, check) -> None:
    """Annotate a recording saved with --record (no root, no BPF needed)."""
    from tracer.record.recording import Recording, WatchRecordingGiven

    try:
        recs = Recording.load_all(recording)
    except WatchRecordingGiven as exc:
        fail(UserError(f"cannot read {recording}: {exc}",
                       "a watch recording is replayed with `trace-halfclose watch --replay FILE`"))
    except (OSError, ValueError) as exc:
        fail(UserError(f"cannot read {recording}: {exc}", "give a file written by `trace-halfclose --record`"))
    show(recs, as_json, check)
