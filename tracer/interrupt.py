"""Signals: SIGINT, SIGTERM and SIGHUP stop the tool at any moment, cleanly.

install() makes each of them raise Interrupted in the main thread. Interrupted is
a KeyboardInterrupt, so code that already stops something on Ctrl-C (a VM, a
command) does so for each of the three. The CLI turns it into one line and exit
status 128 + the signal's number, as a shell reports a process killed by it.

Work that must not be cut in half -- compiling, loading and attaching BPF
programs, detaching them, starting or stopping a child process -- runs
`shielded()`: a signal arriving meanwhile is held and raised once the work is
done. While one interruption is being handled, later signals are dropped (the
cleanup is never cut short); rearm() lets them through again, for a watch that
shows what it saw after the probes are detached.

Child processes are started `immune()`: these signals blocked in the starting
thread, a mask they inherit across fork and exec (sigprocmask(2)), so a Ctrl-C
at the terminal, which reaches the whole process group, leaves them to the tool;
they end when the tool closes their pipe, or with it (PR_SET_PDEATHSIG).

Pure Python: no bcc, no rich, importable before anything else.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A signal stopped the tool: exit status 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def signum_of(exc: BaseException) -> int:
    """The signal behind an interruption: a plain KeyboardInterrupt is Python's own SIGINT."""
    return getattr(exc, "signum", signal.SIGINT)


def name_of(signum: int) -> str:
    return signal.Signals(signum).name


class _State:
    installed = False
    depth = 0  # nesting of shielded()
    held: int | None = None  # a signal that arrived while shielded
    handling = False  # an interruption is being handled: later signals are dropped
    exiting = False  # the command is done: a signal now only changes the exit status
    late: int | None = None  # the signal that came while exiting
    ignored: frozenset[int] = frozenset()  # ignored when the tool started (nohup, a background job)


_state = _State()


def install() -> None:
    """The handlers, as early as possible. A signal the tool was started with
    ignored (nohup ignores SIGHUP) stays ignored, and a watched command gets it so too."""
    ignored = set()
    for s in SIGNALS:
        if signal.getsignal(s) == signal.SIG_IGN:
            ignored.add(s)
            continue
        signal.signal(s, _handler)
    _state.ignored = frozenset(ignored)
    _state.installed = True
    atexit.register(_at_exit)  # registered first, so it runs last (after bcc's own cleanup)


def exiting() -> None:
    """The command is over (its status decided): from here a signal must not raise
    inside Python's exit (the atexit callbacks would print a traceback); it is said
    and changes the exit status once everything else has run."""
    _state.exiting = True


def _at_exit() -> None:
    if _state.late is None and _state.installed:
        # The tool's last Python: Python's finalization then puts the default handlers back
        # (a SIGHUP there would kill the process without a word). So the signals are blocked
        # from here; one that came before is taken as late, one after is left pending and
        # dropped at exit: the run's own status stands.
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        pending = sorted(set(signal.sigpending()) & (set(SIGNALS) - _state.ignored))
        _state.late = pending[0] if pending else None
    if _state.late is not None:
        say_interrupted(Interrupted(_state.late), "while exiting")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                continue  # closed, or its reader is gone: nothing more can reach it
        os._exit(128 + _state.late)


def say_interrupted(exc: BaseException, what: str = "") -> None:
    """The one line an interruption prints on stderr."""
    line = f"interrupted by {name_of(signum_of(exc))}" + (f": {what}" if what else "")
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        return  # stderr is gone (a terminal hung up: SIGHUP): the exit status still tells


def ignored_at_start() -> frozenset[int]:
    return _state.ignored


def _handler(signum: int, _frame) -> None:
    if _state.handling:
        return  # already stopping: the cleanup in progress is not cut short
    if _state.exiting:
        _state.late = _state.late or signum
        return
    if _state.depth:
        _state.held = _state.held or signum
        return
    _state.handling = True
    raise Interrupted(signum)


def _raise_held() -> None:
    if _state.depth == 0 and _state.held is not None and not _state.handling:
        signum, _state.held = _state.held, None
        _state.handling = True
        raise Interrupted(signum)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Run the block whole: a signal arriving meanwhile is raised after it. If the
    block raises, the signal stays held (take_held() finds it)."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
    _raise_held()


def take_held() -> int | None:
    """A signal held by a shielded block that ended with an error; it counts as handled now."""
    signum, _state.held = _state.held, None
    if signum is not None:
        _state.handling = True
    return signum


def rearm() -> None:
    """The cleanup is done: a further signal interrupts again (e.g. what is shown next)."""
    _state.handling = False


@contextlib.contextmanager
def immune() -> Iterator[None]:
    """Start child processes with the three signals blocked (they inherit the mask):
    they stop when the tool tells them, not when a terminal's Ctrl-C reaches them."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
