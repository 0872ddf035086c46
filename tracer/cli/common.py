"""What the commands share: the examples, errors as one line and a remedy, showing runs."""
from __future__ import annotations

import os
import sys

from tracer.errors import UserError

EPILOG = """\b
Examples:
  sudo trace-halfclose                     the article: two writes after the server closed
  sudo trace-halfclose --writes 3          a third write shows the other EPIPE path
  sudo trace-halfclose --scenario all      every variant, observed beside the source's prediction
  sudo trace-halfclose --check             exit 1 unless the kernel did what its source says
  sudo trace-halfclose --json | jq .       NDJSON for machines (see README)
  sudo trace-halfclose --record r.jsonl    then `trace-halfclose replay r.jsonl` anywhere
  sudo trace-halfclose vm                  boot a distro kernel with kprobes and run it there
  trace-halfclose scenarios                the scenarios and what the source predicts
  sudo trace-halfclose doctor              what this machine can trace, with remedies

Needs root, bcc (python3-bpfcc) and headers of the running kernel. kprobes or
fentry show every function on the path; with tracepoints only, the branch
inside tcp_sendmsg_locked is inferred and marked so.
"""



def fail(exc: UserError) -> None:
    from tracer.display import console

    console.error(exc)
    sys.exit(exc.exit_code)


def show(recs, as_json: bool, check: bool) -> None:
    """Annotate, judge and display one run (with the article's claims for `close`)
    or a matrix of runs; with check, exit 1 unless everything is as the source predicts."""
    from tracer.process.annotate import annotate
    from tracer.process.claims import check_all
    from tracer.process.verdicts import check as check_scenario

    judged = []
    for rec in recs:
        tl = annotate(rec)
        judged.append((tl, check_all(tl) if rec.scenario == "close" and len(recs) == 1 else [], check_scenario(tl)))
    if as_json:
        from tracer.display import ndjson

        for tl, claims, verdict in judged:
            ndjson.write(tl, sys.stdout, claims, verdict, tag_scenario=len(recs) > 1)
    else:
        from tracer.display import console

        out = console.out_console()
        if len(judged) == 1:
            tl, claims, verdict = judged[0]
            console.timeline(tl, out)
            if claims:
                console.claims(claims, out)
            console.scenario_verdict(verdict, out)
        else:
            console.matrix([(tl, verdict) for tl, _, verdict in judged], out)
    ok = all(v.ok and all(c.as_expected for c in claims) for _, claims, v in judged)
    if check and not ok:
        sys.exit(1)


def stdout_gone() -> None:
    """The reader of stdout went away (| head): stop quietly, as a pipeline expects."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(141)  # 128 + SIGPIPE, as a shell reports a command killed by it


