"""trace-halfclose: the command line (click). Thin: parse, call, render.

Runs the article's reproduction (the server closes, the client writes twice)
in a private network namespace and shows, write by write, the kernel path that
produced each result, from kprobes on tcp_sendmsg_locked, sk_stream_wait_connect,
sk_stream_error, tcp_reset, tcp_done_with_error, tcp_done and tcp_fin.
"""
from __future__ import annotations

import click

from tracer.cli import doctor, replay, run, scenarios, vm, watch
from tracer.cli.common import EPILOG


class DefaultGroup(click.Group):
    """`trace-halfclose ARGS` means `trace-halfclose run ARGS`, as a bcc tool would behave."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Show why a write after the peer's close succeeds once, then fails with EPIPE.

    With no command, runs `run`: the reproduction, traced.
    """


for _command in (run.run, replay.replay, scenarios.scenarios, doctor.doctor, vm.vm, watch.watch):
    main.add_command(_command)

if __name__ == "__main__":
    main()
