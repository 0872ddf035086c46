"""Signals (tracer/interrupt.py) and the keeper of a watched command
(tracer/collect/keeper.py), each in a process of its own: no root, no BPF."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEEPER = ROOT / "tracer" / "collect" / "keeper.py"


def python(code: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_a_signal_in_a_shielded_block_is_raised_after_it():
    p = python("""
        import os, signal, time
        from tracer import interrupt
        interrupt.install()
        done = []
        try:
            with interrupt.shielded():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                done.append("the block ran to its end")
        except interrupt.Interrupted as exc:
            print(done, exc.signum, exc.name)
    """)
    assert p.stdout.strip() == "['the block ran to its end'] 15 SIGTERM", p.stderr


def test_at_its_very_end_a_signal_already_sent_is_said_and_a_later_one_cannot_kill_it():
    """The last atexit callback blocks the signals: Python's finalization would put the default
    handlers back, and a SIGHUP there killed the process without a word (seen once detaching
    became instant, #16). One that came before is said, with its status."""
    before = python("""
        import os, signal
        from tracer import interrupt
        interrupt.install()
        interrupt.exiting()
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGHUP])  # it comes while blocked: pending
        os.kill(os.getpid(), signal.SIGHUP)
    """)
    assert before.returncode == 129 and before.stderr.strip() == "interrupted by SIGHUP: while exiting", before
    after = python("""
        import atexit, os, signal
        from tracer import interrupt
        interrupt.install()
        interrupt.exiting()
        atexit.unregister(interrupt._at_exit)
        interrupt._at_exit()  # what the last callback does; then a signal during finalization
        os.kill(os.getpid(), signal.SIGHUP)
        print("still here")
    """)
    assert after.returncode == 0 and after.stdout.strip() == "still here" and not after.stderr, after


def test_while_an_interruption_is_handled_later_signals_are_dropped_until_rearmed():
    p = python("""
        import os, signal, time
        from tracer import interrupt
        interrupt.install()
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except interrupt.Interrupted as exc:
            os.kill(os.getpid(), signal.SIGHUP)  # during the cleanup: dropped
            time.sleep(0.05)
            print("cleaned up after", exc.name)
        interrupt.rearm()
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(1)
        except interrupt.Interrupted as exc:
            print("then", exc.name)
    """)
    assert p.stdout.split("\n")[:2] == ["cleaned up after SIGINT", "then SIGHUP"], p.stderr


def test_a_signal_held_by_a_block_that_failed_is_taken_by_the_error_path():
    p = python("""
        import os, signal, time
        from tracer import interrupt
        interrupt.install()
        try:
            with interrupt.shielded():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                raise ValueError("the block failed")
        except ValueError:
            print("held:", interrupt.take_held())
    """)
    assert p.stdout.strip() == "held: 15", p.stderr


def test_a_signal_ignored_at_start_stays_ignored():
    p = subprocess.run([sys.executable, "-c", "from tracer import interrupt; interrupt.install(); "
                        "print(sorted(int(s) for s in interrupt.ignored_at_start()))"], cwd=ROOT, capture_output=True, text=True,
                       preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))  # as nohup starts it
    assert p.stdout.strip() == "[1]", p.stderr


def test_children_started_immune_have_the_three_signals_blocked():
    p = python("""
        import subprocess
        from tracer import interrupt
        with interrupt.immune():
            out = subprocess.run(["grep", "SigBlk", "/proc/self/status"], capture_output=True, text=True).stdout
        print(int(out.split()[1], 16) & 0x4003)
    """)
    assert p.stdout.strip() == str(0x4003), p.stderr  # SIGHUP 1, SIGINT 2, SIGTERM 15: bits 0, 1, 14


def test_a_signal_while_exiting_changes_the_status_and_is_said():
    p = python("""
        import os, signal, sys
        from tracer import interrupt
        interrupt.install()
        interrupt.exiting()
        os.kill(os.getpid(), signal.SIGTERM)
        print("the command's output")
    """)
    assert p.returncode == 143
    assert p.stdout == "the command's output\n"
    assert p.stderr == "interrupted by SIGTERM: while exiting\n"


def test_the_program_says_one_line_when_interrupted_while_it_starts():
    """SIGTERM before the command line is imported: the entry's handler, one line, 143."""
    p = python("""
        import os, signal, sys
        sys.argv = ["trace-halfclose", "scenarios"]
        import tracer.launch
        orig = tracer.launch.interrupt.install
        def install():
            orig()
            os.kill(os.getpid(), signal.SIGTERM)
        tracer.launch.interrupt.install = install
        tracer.launch.main()
    """)
    assert (p.returncode, p.stdout, p.stderr) == (143, "", "interrupted by SIGTERM\n")


# --- the keeper ---------------------------------------------------------------------------


class Kept:
    """The keeper with a command, as tracer/collect/watch.py starts it."""

    def __init__(self, *command: str, ignored: str = ""):
        self.report_r, report_w = os.pipe()
        control_r, self.control = os.pipe()
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", str(KEEPER), str(report_w), str(control_r), ignored,
                                      "--", *command], pass_fds=(report_w, control_r), stdout=subprocess.PIPE,
                                     text=True)
        os.close(report_w)
        os.close(control_r)
        self.lines = []

    def read(self, until: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        buf = b""
        while time.monotonic() < deadline and until not in buf.decode():
            buf += os.read(self.report_r, 4096)
        self.lines += buf.decode().splitlines()
        return buf.decode()

    def tree(self) -> list[int]:
        from tracer.collect.keeper import descendants

        return descendants(self.proc.pid)

    def tree_of(self, n: int, timeout: float = 5) -> list[int]:
        """The command's process tree, once it has n processes (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        while len(self.tree()) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.tree()

    def close(self) -> None:
        if self.control is not None:
            os.close(self.control)
            self.control = None
        self.proc.wait(timeout=10)


@pytest.fixture
def kept():
    made = []

    def make(*command, **kw):
        k = Kept(*command, **kw)
        made.append(k)
        return k

    yield make
    for k in made:
        if k.proc.poll() is None:
            k.proc.kill()
            k.proc.wait()


def test_the_keeper_reports_the_command_and_its_exit(kept):
    k = kept("sh", "-c", "exit 3")
    k.read("exit")
    assert k.lines[0].startswith("pid ") and k.lines[-1] == "exit 3"
    k.close()
    assert k.proc.returncode == 0


def test_the_keeper_passes_a_signal_on_to_the_whole_tree(kept):
    k = kept("sh", "-c", "sleep 300 & sleep 300 & wait")
    k.read("pid")
    tree = k.tree_of(3)
    assert len(tree) == 3  # sh and its two sleeps
    os.write(k.control, b"signal 2\n")
    k.read("exit")
    assert k.lines[-1] == "exit -2"  # sh, killed by SIGINT, as a terminal's Ctrl-C would
    k.close()
    assert not any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
                   for pid in tree)


def test_when_the_tool_is_gone_the_keeper_ends_what_the_command_left(kept):
    """The tool's end (its control pipe closed: a SIGKILLed tool closes it too) ends every
    process the command started, orphans included (the keeper is their subreaper)."""
    k = kept("sh", "-c", "(sleep 300 &) ; sleep 300")
    k.read("pid")
    tree = k.tree_of(2)
    assert len(tree) >= 2
    t = time.monotonic()
    k.close()
    assert time.monotonic() - t < 5
    alive = [pid for pid in tree if Path(f"/proc/{pid}").exists()]
    assert alive == []


def test_a_command_that_cannot_start_is_reported(kept):
    k = kept("/nonexistent/program")
    assert k.read("error").startswith("error ")
    k.proc.wait(timeout=10)
    assert k.proc.returncode == 127


def test_the_command_starts_with_the_signals_as_the_tool_got_them(kept):
    """Unblocked and at their defaults, except one the tool was started with ignored."""
    k = kept("grep", "-E", "SigBlk|SigIgn", "/proc/self/status", ignored="1")
    k.read("exit")
    k.close()
    masks = {line.split(":")[0]: int(line.split()[1], 16) for line in k.proc.stdout.read().splitlines()}
    assert masks["SigBlk"] == 0
    assert masks["SigIgn"] & 0x4003 == 0x1  # SIGHUP ignored (as under nohup); SIGINT, SIGTERM at their defaults


def test_a_process_forked_while_the_keeper_ends_the_rest_gets_sigterm_too(kept, tmp_path):
    """The command, told SIGTERM, starts one more process and exits: that newcomer was not
    there when the keeper signalled the tree, and must get SIGTERM too (not SIGKILL after
    the grace): it says which signal reached it. Its mask holds SIGTERM until its handler is set."""
    inner = ("import os, pathlib, signal, time\n"
             f"signal.signal(signal.SIGTERM, lambda *_: (pathlib.Path({str(tmp_path)!r}, 'newcomer')"
             ".write_text('SIGTERM'), os._exit(0)))\n"
             "signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])\n"
             "time.sleep(300)\n")
    outer = ("import os, pathlib, signal, subprocess, sys, time\n"
             "def on_term(*_):\n"
             "    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])\n"
             f"    subprocess.Popen([sys.executable, '-c', {inner!r}])\n"
             "    os._exit(0)\n"
             "signal.signal(signal.SIGTERM, on_term)\n"
             f"pathlib.Path({str(tmp_path)!r}, 'ready').touch()\n"
             "time.sleep(300)\n")
    k = kept(sys.executable, "-c", outer)
    k.read("pid")
    deadline = time.monotonic() + 10
    while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    k.close()
    assert (tmp_path / "newcomer").read_text() == "SIGTERM"
    assert k.tree() == []


def test_a_keeper_whose_tool_died_while_it_started_runs_nothing(tmp_path):
    """The tool killed before its keeper got going (its control pipe already closed): the
    command is never started, so nothing of it can outlive the tool."""
    report_r, report_w = os.pipe()
    control_r, control_w = os.pipe()
    os.close(control_w)
    proc = subprocess.Popen([sys.executable, "-I", "-S", str(KEEPER), str(report_w), str(control_r), "",
                             "--", "touch", str(tmp_path / "ran")], pass_fds=(report_w, control_r))
    os.close(report_w)
    os.close(control_r)
    assert proc.wait(timeout=10) == 0
    assert os.read(report_r, 4096) == b""  # no pid: nothing was started
    assert not (tmp_path / "ran").exists()
