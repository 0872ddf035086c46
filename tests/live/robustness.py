"""What the robustness tests run and check, natively (tests/live/test_robustness.py)
and inside the VM (tests/live/guest_runner.py): the tool stopped by a signal at a
chosen moment, what it left behind, and the foreign events in a recording.

Left behind, looked up after the tool ended:
- processes: every descendant of the tool seen while it ran (sampled every 20 ms:
  the reproduction's child and client, a watched command's keeper and processes),
  by pid and start time, so a reused pid is not taken for one of them;
- network namespaces: those of the processes above, other than the tool's own,
  still used by one of them or held by a mount; `ip netns list` (named ones);
- BPF: program ids that `bpftool prog show` lists after and did not before,
  unless a live process that is not the tool's holds them open (another tool running:
  /proc/PID/fdinfo names the program of each BPF fd);
- probes in tracefs (kprobe_events, uprobe_events) and debugfs (kprobes/list).
"""
from __future__ import annotations

import array
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIVE = Path(__file__).resolve().parent
TRACEFS = Path("/sys/kernel/tracing")
DEBUG_KPROBES = Path("/sys/kernel/debug/kprobes/list")
TRACEBACK_MARKS = ("Traceback (most recent call last)", "Exception ignored", "Failed to detach", "Error in atexit")
SAMPLE_S = 0.02


def tool(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "tracer", *args]


# --- processes and namespaces ------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start: int  # clock ticks after boot (field 22 of /proc/PID/stat): with the pid, its identity
    netns: int  # inode of its network namespace, 0 when unreadable
    cmd: str


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time) of a live process, None when it has ended (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if rest[0] == b"Z" else (int(rest[1]), int(rest[19]))


def proc(pid: int) -> Proc | None:
    st = _stat(pid)
    if st is None:
        return None
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        netns = os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None  # ended meanwhile
    return Proc(pid, st[0], st[1], netns, cmd)


def all_procs() -> list[Proc]:
    return [p for d in os.listdir("/proc") if d.isdigit() and (p := proc(int(d)))]


def descendants(root: int) -> list[Proc]:
    """Every live process under root (parent links in /proc/PID/stat, read once each)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(int(d))):
            children.setdefault(st[0], []).append(int(d))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if (p := proc(c)) is not None:
                out.append(p)
            todo.append(c)
    return out


def still_alive(seen: dict[int, Proc]) -> list[Proc]:
    out = []
    for p in seen.values():
        now = proc(p.pid)
        if now is not None and now.start == p.start:
            out.append(now)
    return out


def mounted_netns() -> set[int]:
    """Network namespaces held by a mount (nsfs: `ip netns add`, or a bind mount)."""
    out = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if " nsfs " in line and "net:[" in line:
            out.add(int(line.split("net:[", 1)[1].split("]", 1)[0]))
    return out


def named_netns() -> list[str]:
    if shutil.which("ip") is None:
        return []
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()


# --- BPF and probes --------------------------------------------------------------------------


def bpftool(*args: str):
    p = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True)
    return json.loads(p.stdout or "[]") if p.returncode == 0 else []


def prog_ids() -> set[int]:
    return {p["id"] for p in bpftool("prog", "show")}


def prog_holders() -> dict[int, set[int]]:
    """prog id -> pids holding it open (a bpf-prog or bpf_link fd; /proc/PID/fdinfo says
    which program). A program nobody holds and still listed is pinned or leaked."""
    out: dict[int, set[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{d}/fd")
        except OSError:
            continue  # ended, or a kernel thread
        for fd in fds:
            try:
                if not os.readlink(f"/proc/{d}/fd/{fd}").startswith(("anon_inode:bpf-prog", "anon_inode:bpf_link")):
                    continue
                info = Path(f"/proc/{d}/fdinfo/{fd}").read_text()
            except OSError:
                continue  # closed meanwhile
            for line in info.splitlines():
                if line.startswith("prog_id:"):
                    out.setdefault(int(line.split()[1]), set()).add(int(d))
    return out


def attached_by(pid: int) -> list[str]:
    """What a process has attached: bpftool perf lists kprobes' perf events and raw tracepoints
    (BPF_TASK_FD_QUERY answers for both, kernel/bpf/syscall.c)."""
    return [e.get("tracepoint") or e.get("func") or e.get("fd_type", "?") for e in bpftool("perf", "show")
            if e["pid"] == pid]


def probe_files() -> dict[str, str]:
    out = {}
    for path in (TRACEFS / "kprobe_events", TRACEFS / "uprobe_events", DEBUG_KPROBES):
        try:
            out[str(path)] = path.read_text()
        except OSError:
            continue  # not on this kernel (no kprobes), or debugfs not mounted
    return out


@dataclass
class Snapshot:
    progs: set[int]
    probes: dict[str, str]
    netns_named: list[str]

    @classmethod
    def take(cls) -> "Snapshot":
        return cls(prog_ids(), probe_files(), named_netns())

    def left_since(self, before: "Snapshot", ours: set[int] = frozenset()) -> dict:
        """What appeared between before and self that is not held by a live process other than ours."""
        holders = prog_holders()
        new = self.progs - before.progs
        new &= prog_ids()  # a program that went away meanwhile (another tool's, closing) is not left
        # Held by a live process that is not one of ours: another program's (another run of
        # the tool, a test elsewhere); those are not left behind.
        progs = sorted(i for i in new if not any(pid not in ours for pid in holders.get(i, ())))
        probes = {k: v for k, v in self.probes.items() if v != before.probes.get(k, "")}
        netns = sorted(set(self.netns_named) - set(before.netns_named))
        return {"bpf_programs": progs, "probe_files": probes, "named_netns": netns}


def left_after(before: Snapshot, ours: set[int], within: float = 3.0) -> dict:
    """What the runs left behind, asked again for up to `within` seconds: closing a raw
    tracepoint's link puts its program only after an RCU grace period (bpf_link_free ->
    call_rcu(bpf_link_defer_dealloc_rcu_gp) for a link with dealloc_deferred, as
    bpf_raw_tp_link_lops has; kernel/bpf/syscall.c, 6.1.192 and 6.12.117), and nothing waits
    for it, unlike a perf tracepoint's close: a tool that just ended may still be listed."""
    end = time.monotonic() + within
    while True:
        left = Snapshot.take().left_since(before, ours)
        if not any(left.values()) or time.monotonic() >= end:
            return left
        time.sleep(0.1)


# --- a run stopped by a signal ---------------------------------------------------------------


def _reader(stream, box: list[bytes]) -> threading.Thread:
    def read() -> None:
        for chunk in iter(lambda: stream.read1(65536), b""):
            box.append(chunk)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


@dataclass(frozen=True)
class Moment:
    """When to send the signal: `delay` seconds after an event of the run, seen from outside:
    start      the process started
    bcc        bcc's library is mapped (the compile begins)
    attached   a perf event or a BPF link is open (the first probe is attached)
    child      its n-th child process started (a reproduction's child, a watch's keeper)
    gone       no child left, after n were seen (the end of a reproduction: detaching)
    output     its first output (printing)"""

    event: str
    delay: float = 0.0
    n: int = 1

    def __str__(self) -> str:
        what = {"child": f"child {self.n} started", "gone": f"children gone after {self.n}"}.get(self.event, self.event)
        return what + (f" +{self.delay:g}s" if self.delay else "")


def _reached(m: Moment, pid: int, kids: list[Proc], children: list[int], out: list[bytes]) -> bool:
    if m.event == "start":
        return True
    if m.event == "output":
        return bool(out)
    if m.event == "child":
        return len(children) >= m.n
    if m.event == "gone":
        return len(children) >= m.n and not kids
    try:
        if m.event == "bcc":
            return "libbcc" in Path(f"/proc/{pid}/maps").read_text()
        if m.event == "attached":  # a kprobe's perf event, or a raw tracepoint's link
            return any(os.readlink(f"/proc/{pid}/fd/{fd}") in ("anon_inode:[perf_event]", "anon_inode:bpf_link")
                       for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False  # it ended, or closed that fd as it was read
    raise ValueError(m.event)


def run_signalled(args: list[str], signum: int | None, at: Moment | None = None, *, env: dict | None = None,
                  timeout: float = 300, settle: float = 3.0) -> dict:
    """Start the tool, send signum at the moment `at` (signum None: no signal), and report
    what it printed, its exit status, the phase it was in, and what it left behind.
    settle: how long its processes may take to end after it did (a keeper ends a watched
    command within 2 s of the tool's death; a SIGKILLed tool cannot wait for it)."""
    own_netns = os.stat("/proc/self/ns/net").st_ino
    t0 = time.monotonic()
    p = subprocess.Popen(tool(args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = [], []
    readers = [_reader(p.stdout, out), _reader(p.stderr, err)]
    seen: dict[int, Proc] = {}
    children: list[int] = []  # the tool's own children, in the order they started
    signalled, phase, fire, too_late = False, "ended", None, False

    def sample() -> list[Proc]:
        kids = descendants(p.pid)
        for d in kids:
            if d.pid not in seen:
                seen[d.pid] = d
                if d.ppid == p.pid:
                    children.append(d.pid)
        return kids

    while p.poll() is None and time.monotonic() < t0 + timeout:
        kids = sample()
        if signum is not None and fire is None and _reached(at, p.pid, kids, children, out):
            fire = time.monotonic() + at.delay
        if fire is not None and time.monotonic() >= fire:
            break
        time.sleep(SAMPLE_S)
    waited = None
    if signum is not None and signum != signal.SIGKILL:
        # Python's own start-up, before the tool's first line runs, keeps Python's defaults
        # (SIGINT: a KeyboardInterrupt wherever Python is): the README says so, and a moment
        # that falls there waits for the tool's handlers (tracer/interrupt.py install()).
        while p.poll() is None and not handlers_installed(p.pid) and time.monotonic() < t0 + 10:
            waited = "Python's start-up: waited for the tool's handlers"
            time.sleep(0.002)
    sent_at = time.monotonic() - t0
    if signum is not None and p.poll() is None and proc(p.pid) is not None:  # not a zombie: not ended yet
        phase = waited or _phase(p.pid, seen, out)
        try:
            os.kill(p.pid, signum)
            signalled = True
            # The tool blocks the three signals in its last atexit callback (tracer/interrupt.py
            # _at_exit): one sent then, or a SIGKILL once it is in the kernel's exit, is too late
            # to change its status, which is the run's own.
            too_late = signals_blocked(p.pid)
        except ProcessLookupError:
            phase = "ended"
    try:
        while p.poll() is None and time.monotonic() < t0 + sent_at + timeout:
            sample()
            time.sleep(SAMPLE_S)
        p.wait(timeout=max(1.0, t0 + sent_at + timeout - time.monotonic()))
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    ended = time.monotonic()
    left = still_alive(seen)
    while left and time.monotonic() < ended + settle:
        time.sleep(0.05)
        left = still_alive(seen)
    settled = time.monotonic() - ended  # how long its processes outlived it
    for t in readers:
        t.join(timeout=10)  # the pipes close when the last process holding them is gone
    namespaces = {s.netns for s in seen.values() if s.netns and s.netns != own_netns}
    # A namespace is left when one of the run's processes is still in it, or a mount holds it
    # (ip netns add). An inode number alone is not enough: a namespace's number is reused
    # by the next one made (another run's, at the same time).
    held = {q.netns for q in left} | mounted_netns()
    stdout, stderr = b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace")
    return {
        "args": args, "signal": signal.Signals(signum).name if signum else None,
        "moment": str(at) if at else None, "at": round(sent_at, 3),
        "signalled": signalled, "phase": phase + (" (the three signals blocked when it was sent)" if too_late else ""),
        "too_late": too_late, "rc": p.returncode, "seconds": round(ended - t0, 3),
        "outlived_by": round(settled, 3),
        "stdout": stdout, "stderr": stderr,
        "processes_seen": [asdict(s) for s in seen.values()],
        "processes_left": [asdict(s) for s in left],
        "netns_left": sorted(namespaces & held),
        "tool_pid": p.pid,
    }


def signals_blocked(pid: int) -> bool:
    """Whether SIGINT, SIGTERM and SIGHUP are all blocked (SigBlk in /proc/PID/status)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigBlk:"):
                mask = int(line.split()[1], 16)
                return all(mask >> (s - 1) & 1 for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP))
    except OSError:
        return False  # reaped already
    return False


def handlers_installed(pid: int) -> bool:
    """Whether the tool catches SIGTERM and SIGHUP (SigCgt in /proc/PID/status): Python
    catches SIGINT from its start, the tool the other two once its code runs."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                mask = int(line.split()[1], 16)
                return all(mask >> (s - 1) & 1 for s in (signal.SIGTERM, signal.SIGHUP))
    except OSError:
        return False  # it ended
    return False


def _phase(pid: int, seen: dict[int, Proc], out: list[bytes]) -> str:
    """Roughly where the tool is, from outside: printing (its output began), whether its
    probes are attached (bpftool perf), whether its child processes run."""
    probes = attached_by(pid)
    kids = descendants(pid)
    if probes and kids:
        return "probes attached, reproducing or watching"
    if out:
        return "printing (probes still attached)" if probes else "after the output: detaching, exiting"
    if not probes:
        return "detaching (probes gone)" if seen else "loading (checks, BTF, bcc compiling)"
    return "probes attached, no child (attaching, between scenarios, or detaching)" if seen else \
        "probes attached, before the first child"


def too_late(r: dict) -> bool:
    """Signalled, but it found the three blocked and the run ended with its own status: the
    tool's last milliseconds. (Blocked also means a child being started, immune(): then the
    signal is acted on once they are unblocked, and the status says so.)"""
    return r["signalled"] and r.get("too_late", False) and r["rc"] == 0


def problems(r: dict, allow_exit_0: bool = True) -> list[str]:
    """What is wrong with a signalled run's outcome, as sentences (empty: nothing)."""
    out = []
    text = r["stdout"] + r["stderr"]
    for mark in TRACEBACK_MARKS:
        if mark in text:
            out.append(f"{mark!r} in the output")
    if r["processes_left"]:
        out.append(f"processes left: {[(p['pid'], p['cmd']) for p in r['processes_left']]}")
    if r["netns_left"]:
        out.append(f"network namespaces left: {r['netns_left']}")
    name = r["signal"]
    if name is None:
        if r["rc"] != 0:
            out.append(f"exit status {r['rc']} without a signal")
        return out
    num = signal.Signals[name]
    lines = [x for x in r["stderr"].splitlines() if x.strip()]
    said = [x for x in lines if x.startswith("interrupted by ")]
    if not r["signalled"] or too_late(r):  # it had ended, or was ending, before the signal was due
        if r["rc"] != 0 or not allow_exit_0:
            out.append(f"ended by itself with status {r['rc']}")
        return out
    if num == signal.SIGKILL:
        if r["rc"] != -signal.SIGKILL:
            out.append(f"exit status {r['rc']} after SIGKILL")
        return out
    if r["rc"] != 128 + num:
        out.append(f"exit status {r['rc']}, not {128 + num}")
    if len(said) != 1 or not said[0].startswith(f"interrupted by {name}") or lines[-1] != said[0]:
        out.append(f"not one last line 'interrupted by {name}': {lines[-3:]}")
    if any(x.startswith("error:") for x in lines):
        out.append(f"an error line besides: {lines}")
    return out


# --- foreign traffic ---------------------------------------------------------------------------


class Noise:
    """tests/live/noise.py in the background: COUNT connections to 127.0.0.1 on the ports."""

    def __init__(self, count: int, ports: list[int], workdir: Path):
        self.times_file = workdir / f"noise-{os.getpid()}-{time.monotonic_ns()}.bin"
        self.proc = subprocess.Popen([sys.executable, str(LIVE / "noise.py"), str(count), str(self.times_file),
                                      *map(str, ports)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first = self.proc.stdout.readline()
        if "listening" not in first:
            self.proc.kill()
            raise RuntimeError(f"noise.py did not start: {first!r}")

    def finish(self, timeout: float = 120) -> list[int]:
        """Wait for the loop to end (closing its stdin stops it early); the connections' times."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:  # it ended already: its times file is written
            pass
        self.proc.wait(timeout=timeout)
        times = array.array("q")
        with open(self.times_file, "rb") as f:
            times.frombytes(f.read())
        self.times_file.unlink()
        return list(times)


def wait_attached(pid: int, name: str, timeout: float = 300) -> bool:
    """Until process pid has a perf event on the tracepoint or function `name` (bpftool perf)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(name in a for a in attached_by(pid)):
            return True
        if proc(pid) is None:
            return False
        time.sleep(0.05)
    return False


def foreign_events(rec: dict) -> list[dict]:
    """Events of a recording (as loaded from --record's JSON lines) that are not the
    reproduction's: a socket never seen with its ports, or ports that are not its."""
    meta, events = rec["meta"], rec["events"]
    c, s = meta["client_port"], meta["server_port"]
    own = {(c, s), (s, c), (s, 0), (0, s), (0, c), (c, 0), (0, 0)}
    sockets = {e["sk"] for e in events if e["kind"] == "SET_STATE" and (e["sport"], e["dport"]) in own
               and (e["sport"], e["dport"]) != (0, 0)}
    bad = []
    for e in events:
        ports = (e["sport"], e["dport"])
        if e["kind"] == "SIGNAL":
            continue  # filtered by the client's pid in the kernel; no socket, no ports
        if ports not in own:
            bad.append(e)
        elif e["sk"] not in ("0x0", 0) and e["kind"] not in ("SEND_RESET", "ACTIVE_RESET") and e["sk"] not in sockets:
            bad.append(e)
    return bad


def load_recordings(path: Path) -> list[dict]:
    """A --record file as plain dicts: [{"meta", "events", "lost_events"}, ...]."""
    recs = []
    for line in path.read_text().splitlines():
        d = json.loads(line)
        if d["record"] == "meta":
            recs.append({"meta": d, "events": []})
        elif d["record"] == "event":
            recs[-1]["events"].append(d)
    return recs


def in_window(times: list[int], rec: dict) -> int:
    """How many noise connections ended while the recording's probes saw events."""
    ts = [e["ts_ns"] for e in rec["events"]]
    if not ts:
        return 0
    lo, hi = min(ts), max(ts)
    return sum(lo <= t <= hi for t in times)
