"""`trace-halfclose replay`: Annotate a recording again (no root, no BPF)."""
from __future__ import annotations

import click

from tracer.errors import UserError
from tracer.cli.common import check_outputs, fail, ladder_options, show
from tracer.cli.evidence import check_evidence, evidence_options, write_evidence


@click.command()
@click.argument("recording", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="NDJSON on stdout.")
@click.option("--check", is_flag=True, help="Exit status 1 unless everything is as the source reading expects.")
@ladder_options
@evidence_options
def replay(recording, as_json, check, ladder, svg, pcap_file, packetdrill_file) -> None:
    """Annotate a recording saved with --record (no root, no BPF needed)."""
    from tracer.record.recording import Recording, WatchRecordingGiven

    check_outputs(as_json, ladder, svg)
    check_evidence(pcap_file, packetdrill_file)
    try:
        recs = Recording.load_all(recording)
    except WatchRecordingGiven as exc:
        fail(UserError(f"cannot read {recording}: {exc}",
                       "a watch recording is replayed with `trace-halfclose watch --replay FILE`"))
    except (OSError, ValueError) as exc:
        fail(UserError(f"cannot read {recording}: {exc}", "give a file written by `trace-halfclose --record`"))
    write_evidence(recs, pcap_file, packetdrill_file)
    show(recs, as_json, check, ladder, svg)
