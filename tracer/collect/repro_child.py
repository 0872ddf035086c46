"""The reproduction's processes: a server and a client in a private network namespace.

Run by tracer/collect/repro.py as
`python -m tracer.collect.repro_child PORT SCENARIO --parent PID [--ipv6]`.
It takes one command per line on stdin and answers with one JSON object per
line on stdout, so the tracer decides when each step happens (after it has
seen the FIN, for instance) and nothing here sleeps blindly. Needs root.

It ends when told (`exit`), at the end of its input, or with the tool: it and
its client die with their parent (PR_SET_PDEATHSIG), and SIGINT, SIGTERM and
SIGHUP stay blocked as the tool started it (tracer/interrupt.py immune()), so
a Ctrl-C at the terminal is the tool's to handle. A closed pipe ends it
quietly. Its network namespace goes with the last of the two.

This process is the server. The client is a child process of its own, so a
scenario where SIGPIPE kills the writer kills only the client, and the
server reports how it died. The client is the article's program in Python:
plain write(2) (os.write), SIGPIPE ignored unless the scenario says not.

Commands: connect | server K | client K | exit (K: a step's index in the scenario's list).
The scenario is a built-in's name, or `--file PATH` (a user's file, checked by the tool
before it started this process); its sysctls are written under /proc/sys inside the
private namespace, never the host's.
"""
from __future__ import annotations

import sys

from tracer.collect.keeper import die_with_parent

if __name__ == "__main__" and "--parent" in sys.argv:  # first of all: a tool killed meanwhile ends it here
    die_with_parent(int(sys.argv[sys.argv.index("--parent") + 1]))

import ctypes  # noqa: E402
import errno  # noqa: E402
import fcntl  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402

from tracer.process import scenarios  # noqa: E402
from tracer.process.scenarios import ClientStep, Scenario, ServerStep  # noqa: E402

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
SHUT = {"rd": socket.SHUT_RD, "wr": socket.SHUT_WR, "rdwr": socket.SHUT_RDWR}
SEND_FLAGS = {"MSG_NOSIGNAL": socket.MSG_NOSIGNAL, "MSG_DONTWAIT": socket.MSG_DONTWAIT}
POLL = {name: getattr(select, name) for name in scenarios.POLL_BITS}


def say(**kw) -> None:
    print(json.dumps(kw), flush=True)


def now() -> int:
    # CLOCK_MONOTONIC: the clock of bpf_ktime_get_ns(), so user and kernel times line up.
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def enter_private_netns() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
    # A new namespace has only loopback, and it is down.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    return os.stat("/proc/self/ns/net").st_ino


def set_sysctls(sc: Scenario) -> None:
    """The scenario's net.* sysctls, in this process's (private) network namespace: /proc/sys/net
    shows the namespace of the task that opens it."""
    for name, value in sc.sysctls:
        path = "/proc/sys/" + name.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(value)
        except FileNotFoundError:
            raise OSError(errno.ENOENT, f"sysctl {name}: this kernel has no such setting ({path})") from None
        except OSError as exc:
            raise OSError(exc.errno, f"sysctl {name} = {value}: {os.strerror(exc.errno or 0)}") from None


def errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno, str(exc.errno))


# --- the client process ---------------------------------------------------------


def client_main(ctl: socket.socket, sc: Scenario, family: int, addr: str, port: int, server: int) -> None:
    """Serve the server's commands over ctl, one JSON line each way; exit quietly when
    the server is gone."""
    try:
        die_with_parent(server)
        _client_loop(ctl, sc, family, addr, port)
    except (BrokenPipeError, ConnectionError):
        pass  # the server is gone (the tool stopped): nobody to answer
    os._exit(0)


def client_step(sock: socket.socket, step: ClientStep, index: int) -> dict:
    """One client step; the reply says what the call returned (index: the write's, read's or query's number)."""
    t0 = now()
    if step.do == "write":
        data = step.payload(index)
        flags = 0
        for f in step.flags:
            flags |= SEND_FLAGS[f]
        try:
            ret, err = (sock.send(data, flags) if flags else os.write(sock.fileno(), data)), None
        except OSError as exc:
            ret, err = -1, errname(exc)
        return {"op": "write", "index": index, "size": len(data), "ret": ret, "errno": err, "t_start_ns": t0,
                "t_end_ns": now()}
    if step.do == "read":
        try:
            ret, err = len(os.read(sock.fileno(), step.size)), None
        except OSError as exc:
            ret, err = -1, errname(exc)
        return {"op": "read", "index": index, "size": step.size, "ret": ret, "errno": err, "t_start_ns": t0,
                "t_end_ns": now()}
    if step.do == "getsockopt":
        value = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return {"op": "query", "what": step.label, "index": index,
                "value": "0" if value == 0 else errno.errorcode.get(value, str(value)), "t_start_ns": t0,
                "t_end_ns": now()}
    if step.do == "poll":
        p = select.poll()
        mask = 0
        for e in step.events:
            mask |= POLL[e]
        p.register(sock.fileno(), mask)
        got = p.poll(step.timeout_ms)
        revents = got[0][1] if got else 0
        bits = [name for name, bit in POLL.items() if revents & bit]
        return {"op": "query", "what": "poll", "index": index, "value": "|".join(bits) or "none",
                "t_start_ns": t0, "t_end_ns": now()}
    if step.do == "shutdown":
        sock.shutdown(SHUT[step.how])
    elif step.do == "sleep":
        time.sleep(step.seconds)
    elif step.do == "close":
        sock.close()
    return {"op": step.do, "index": index, "t_start_ns": t0, "t_end_ns": now()}


def _client_loop(ctl: socket.socket, sc: Scenario, family: int, addr: str, port: int) -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL if sc.sigpipe_default else signal.SIG_IGN)
    f = ctl.makefile("rw")
    sock = None
    for line in f:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "connect":
            sock = socket.socket(family, socket.SOCK_STREAM)
            t = now()
            sock.connect((addr, port))
            reply = {"t_ns": t, "client_port": sock.getsockname()[1]}
        elif cmd[0] == "step":  # step K INDEX
            reply = client_step(sock, sc.client_steps[int(cmd[1])], int(cmd[2]))
        else:  # exit
            break
        f.write(json.dumps(reply) + "\n")
        f.flush()


# --- the server (this process) ------------------------------------------------------


class Server:
    def __init__(self, sc: Scenario, ipv6: bool, port: int):
        self.sc = sc
        self.family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self.addr = "::1" if ipv6 else "127.0.0.1"
        self.port = port
        self.listener = socket.socket(self.family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((self.addr, port))
        self.listener.listen(1)
        self.conn = None
        self.early_bytes = sum(s.size for s in sc.early_steps if s.do == "write")
        self.settled = False

    def settle(self) -> None:
        """Before the server's first step after accept: the client's earlier bytes are in its
        receive queue (the kernel says so: FIONREAD), so a close finds them there unread."""
        self.settled = True
        deadline = time.monotonic() + 5
        while self.early_bytes and time.monotonic() < deadline:
            queued = struct.unpack("i", fcntl.ioctl(self.conn, 0x541B, b"\0" * 4))[0]  # FIONREAD
            if queued >= self.early_bytes:
                return
            select.select([self.conn], [], [], 0.05)

    def step(self, s: ServerStep) -> dict:
        """One of the scenario's server steps (after accept)."""
        if not self.settled:
            self.settle()
        t = now()
        out: dict = {}
        if s.do == "read":
            data = self.conn.recv(s.bytes or 1, socket.MSG_WAITALL)
            out["ret"] = len(data)
        elif s.do == "sleep":
            time.sleep(s.seconds)
        elif s.do == "setsockopt":
            value = struct.pack("ii", *s.value) if s.option == "SO_LINGER" else s.value
            self.conn.setsockopt(socket.SOL_SOCKET, getattr(socket, s.option), value)
        elif s.do == "shutdown":
            self.conn.shutdown(SHUT[s.how])
        elif s.do in ("close", "exit"):
            self.conn.close()
            self.listener.close()
        return {"t_ns": t, **out}


def main(argv: list[str]) -> int:
    port, name = int(argv[1]), argv[2]
    try:
        if "--file" in argv:
            from tracer.process.scenario_file import ScenarioFileError, load

            try:
                sc = load(argv[argv.index("--file") + 1])
            except ScenarioFileError as exc:
                say(ev="error", message=str(exc))
                return 1
        else:
            sc = scenarios.SCENARIOS[name]
        netns = enter_private_netns()
        set_sysctls(sc)
        server = Server(sc, "--ipv6" in argv, port)
    except OSError as exc:
        say(ev="error", message=exc.strerror if exc.strerror and "sysctl" in exc.strerror else str(exc))
        return 1
    ours, theirs = socket.socketpair()
    me = os.getpid()
    pid = os.fork()
    if pid == 0:
        ours.close()
        # The listener is the server's: a copy left open here would outlive the server's close
        # and answer the client's segments after it (an RST from a LISTEN socket).
        server.listener.close()
        client_main(theirs, sc, server.family, server.addr, port, me)
    theirs.close()
    ctl = ours.makefile("rw")
    say(ev="ready", netns=netns, pid=pid, server_port=port, family="ipv6" if "--ipv6" in argv else "ipv4")

    def ask(cmd: str) -> dict | None:
        """A command to the client; None when the client died (then say how)."""
        try:
            ctl.write(cmd + "\n")
            ctl.flush()
            line = ctl.readline()
        except OSError:
            line = ""
        return json.loads(line) if line else None

    def died() -> str:
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return signal.Signals(os.WTERMSIG(status)).name
        return f"exit {os.WEXITSTATUS(status)}"

    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "connect":
            r = ask("connect")
            if r is None:
                say(ev="error", message=f"the client process ended before it connected ({died()})")
                return 1
            server.conn, _ = server.listener.accept()
            say(ev="connected", **r)
        elif cmd[0] == "server" and len(cmd) == 2 and cmd[1].isdigit() and int(cmd[1]) < len(sc.server_steps):
            step = sc.server_steps[int(cmd[1])]
            try:
                r = server.step(step)
            except OSError as exc:
                say(ev="error", message=f"server step {int(cmd[1]) + 1} ({step.do}): {exc}")
                return 1
            say(ev="server", step=int(cmd[1]), do=step.do, **r)
        elif (cmd[0] == "client" and len(cmd) == 3 and cmd[1].isdigit() and int(cmd[1]) < len(sc.client_steps)
              and cmd[2].isdigit()):
            t = now()
            step = sc.client_steps[int(cmd[1])]
            r = ask(f"step {cmd[1]} {cmd[2]}")
            if r is None:
                r = {"op": step.do, "index": int(cmd[2]), "size": step.size, "ret": -1, "errno": None,
                     "t_start_ns": t, "t_end_ns": now(), "killed_by": died()}
            say(ev="client", **r)
        elif cmd[0] == "exit":
            break
        else:
            say(ev="error", message=f"unknown command {line.strip()!r}")
    ask("exit")
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # already reaped by died()
        pass
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv)
        sys.stdout.flush()
    except BrokenPipeError:  # the tool is gone (its end of the pipe closed): nobody to answer
        code = 0
    os._exit(code)  # no flush at exit: a closed pipe would be reported then
