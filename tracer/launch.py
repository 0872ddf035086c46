"""The program's entry (the trace-halfclose script and `python -m tracer`): the
signal handlers first (tracer/interrupt.py), then the command line.

Installing them before click, rich and the commands are imported leaves only
Python's own start-up (before this module runs) with Python's defaults.
"""
from __future__ import annotations

import sys

from tracer import interrupt


def main() -> None:
    try:
        try:
            interrupt.install()
            from tracer.cli import main as cli

            cli()  # click's standalone mode: always ends in SystemExit
        finally:
            interrupt.exiting()  # a later signal only changes the exit status
    except KeyboardInterrupt as exc:  # while the command line was being imported or set up
        interrupt.say_interrupted(exc)
        sys.exit(128 + interrupt.signum_of(exc))
