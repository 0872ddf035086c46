"""The keeper of a watched command (`trace-halfclose watch -- CMD`): it starts the
command, passes it the signals the tool got, and makes sure that nothing the
command started outlives the watch -- even when the tool itself is killed.

    python -I -S keeper.py REPORT_FD CONTROL_FD IGNORED -- CMD [ARG...]

The tool (tracer/collect/watch.py) starts it with SIGINT, SIGTERM and SIGHUP
blocked (tracer/interrupt.py immune()): it hears only the tool, through
CONTROL_FD, one line per order:
    signal N       send signal N to the command and everything it started
and end of file: the tool is done or dead -- then every process left under
the keeper gets SIGTERM, after 2 s SIGKILL, and the keeper exits. A tool gone
before the command started (killed while the keeper was starting) leaves nothing
to start: the keeper exits without running it.
It reports on REPORT_FD, one line each: `pid N` once the command runs (or
`error TEXT` when it cannot be started), `exit S` when it ended (S as
subprocess.Popen.returncode: negative for a signal).

The keeper is a child subreaper (PR_SET_CHILD_SUBREAPER, prctl(2)): whatever
the command forks and orphans is re-parented to it, not to init, so the
processes left are exactly the keeper's descendants. The command gets
PR_SET_PDEATHSIG SIGKILL, in case the keeper itself is killed. It starts with
the three signals unblocked and at their defaults, except those the tool was
started with ignored (IGNORED, comma-separated numbers, e.g. SIGHUP under nohup).

Standard library only, run with -I -S: it must start fast and import nothing
from the command's directory. Linux only (prctl).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # include/uapi/linux/prctl.h
PR_SET_CHILD_SUBREAPER = 36
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_S = 2.0  # between SIGTERM and SIGKILL


def _prctl(option: int, arg: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def die_with_parent(parent: int) -> None:
    """SIGKILL when the parent dies (PR_SET_PDEATHSIG). If it died before this
    call, the death signal never comes: then exit now."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)


def descendants(root: int) -> list[int]:
    """Every process under root, from /proc (parent links)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # exited while /proc was read: nothing to stop
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def send(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue  # it exited meanwhile: nothing to signal


def tool_gone(control_fd: int) -> bool:
    """The tool closed its end of CONTROL_FD (it is done, or dead): the pipe hangs up."""
    import select

    poller = select.poll()
    poller.register(control_fd, select.POLLIN)
    return any(events & select.POLLHUP for _fd, events in poller.poll(0))


class Keeper:
    def __init__(self, report_fd: int, control_fd: int):
        self.report = report_fd
        self.control = control_fd
        self.command: int | None = None

    def say(self, line: str) -> None:
        try:
            os.write(self.report, (line + "\n").encode())
        except OSError:
            return  # the tool is gone: the end of CONTROL_FD will follow; nobody is left to tell

    def reap(self) -> None:
        """Collect every child that ended (orphans of the command come here too)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.command:
                self.say(f"exit {os.waitstatus_to_exitcode(status)}")
                self.command = None

    def finish(self) -> None:
        """SIGTERM to everything left, SIGKILL after GRACE_S, until nothing is left."""
        import time

        me = os.getpid()
        termed: set[int] = set()
        deadline = time.monotonic() + GRACE_S
        # SIGTERM to each process left, newcomers too: one forked while the first were
        # signalled (a shell starting its next command) would otherwise wait for SIGKILL.
        while (left := descendants(me)) and time.monotonic() < deadline:
            send([pid for pid in left if pid not in termed], signal.SIGTERM)
            termed.update(left)
            self.reap()
            time.sleep(0.02)
        deadline = time.monotonic() + GRACE_S
        while (left := descendants(me)) and time.monotonic() < deadline:
            send(left, signal.SIGKILL)
            time.sleep(0.02)
            self.reap()
        if left:  # in uninterruptible sleep (D state): SIGKILL takes effect when it wakes
            print(f"trace-halfclose watch: processes {left} of the command did not end after SIGKILL",
                  file=sys.stderr)

    def run(self) -> None:
        import select

        buf = b""
        while True:
            ready, _, _ = select.select([self.control], [], [], 0.05)
            self.reap()
            if not ready:
                continue
            data = os.read(self.control, 4096)
            if not data:
                self.finish()
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                words = line.split()
                if len(words) == 2 and words[0] == b"signal" and words[1].isdigit():
                    send(descendants(os.getpid()), int(words[1]))


def main(argv: list[str]) -> int:
    import subprocess

    report, control, ignored = int(argv[1]), int(argv[2]), argv[3]
    command = argv[5:]  # after "--"
    keep_ignored = {int(s) for s in ignored.split(",") if s}
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    keeper = Keeper(report, control)

    def as_started() -> None:  # in the command's process, before exec
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN if s in keep_ignored else signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != me:
            os._exit(127)

    me = os.getpid()
    if tool_gone(control):  # it died while this keeper started: nothing may run after it
        return 0
    try:
        proc = subprocess.Popen(command, preexec_fn=as_started)
    except OSError as exc:
        keeper.say(f"error {exc.strerror or exc}")
        return 127
    keeper.command = proc.pid
    keeper.say(f"pid {proc.pid}")
    keeper.run()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except BrokenPipeError:
        os._exit(0)  # the tool's terminal is gone: nothing to report to
