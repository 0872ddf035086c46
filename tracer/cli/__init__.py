"""trace-halfclose: the command line (click). Thin: parse, call, render.

Runs the article's reproduction (the server closes, the client writes twice)
in a private network namespace and shows, write by write, the kernel path that
produced each result, from kprobes on tcp_sendmsg_locked, sk_stream_wait_connect,
sk_stream_error, tcp_reset, tcp_done_with_error, tcp_done and tcp_fin.
"""
from __future__ import annotations

import sys

import click

from tracer.cli import compare, doctor, replay, run, scenarios, vm, watch
from tracer.cli.common import EPILOG, interrupted, usage_error


class DefaultGroup(click.Group):
    """`trace-halfclose ARGS` means `trace-halfclose run ARGS`, as a bcc tool would behave.

    Errors keep the tool's format (an `error:` line, then a `remedy:` line), click's
    usage errors too; a signal (tracer/interrupt.py) is one line and exit 128 + its
    number, never click's "Aborted!"."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:  # a usage error, before the command ran
            usage_error(exc)
        except click.exceptions.Abort:  # end of input at a prompt (the tool has none)
            click.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["run", *args]
        try:
            return super().parse_args(ctx, args)
        except KeyboardInterrupt as exc:
            interrupted(exc)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:  # the commands say more where they can
            interrupted(exc)


@click.group(cls=DefaultGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Show why a write after the peer's close succeeds once, then fails with EPIPE.

    With no command, runs `run`: the reproduction, traced.
    """


for _command in (run.run, replay.replay, scenarios.scenarios, doctor.doctor, vm.vm, watch.watch, compare.compare):
    main.add_command(_command)

if __name__ == "__main__":
    main()
