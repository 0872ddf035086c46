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

Commands: connect | presend | close | read | write INDEX | exit
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

from tracer.process.scenarios import SCENARIOS, Scenario  # noqa: E402

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
PAYLOADS = [b"hello\n", b"world\n", b"again\n"]
UNREAD = b"unread\n"


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
        elif cmd[0] in ("write", "presend"):
            index = int(cmd[1]) if cmd[0] == "write" else 0
            data = UNREAD if cmd[0] == "presend" else PAYLOADS[(index - 1) % len(PAYLOADS)]
            t0 = now()
            try:
                if sc.nosignal:
                    ret, err = sock.send(data, socket.MSG_NOSIGNAL), None
                else:
                    ret, err = os.write(sock.fileno(), data), None
            except OSError as exc:
                ret, err = -1, errname(exc)
            reply = {"index": index, "size": len(data), "ret": ret, "errno": err, "t_start_ns": t0, "t_end_ns": now()}
        elif cmd[0] == "read":
            t0 = now()
            try:
                ret, err = len(os.read(sock.fileno(), 4096)), None
            except OSError as exc:
                ret, err = -1, errname(exc)
            reply = {"index": 1, "size": 4096, "ret": ret, "errno": err, "t_start_ns": t0, "t_end_ns": now()}
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

    def close(self) -> None:
        """The scenario's way of closing the server's end."""
        if self.sc.unread:
            # The client's bytes must be in the receive queue, unread, before the close.
            select.select([self.conn], [], [], 5)
        if self.sc.server == "shutdown-wr":
            self.conn.shutdown(socket.SHUT_WR)
        elif self.sc.server == "shutdown-rdwr":
            self.conn.shutdown(socket.SHUT_RDWR)
        else:
            if self.sc.server == "linger0":
                self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.conn.close()
        self.listener.close()


def main(argv: list[str]) -> int:
    port, name = int(argv[1]), argv[2]
    sc = SCENARIOS[name]
    try:
        netns = enter_private_netns()
        server = Server(sc, "--ipv6" in argv, port)
    except OSError as exc:
        say(ev="error", message=str(exc))
        return 1
    ours, theirs = socket.socketpair()
    me = os.getpid()
    pid = os.fork()
    if pid == 0:
        ours.close()
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
        elif cmd[0] == "close":
            t = now()
            server.close()
            say(ev="server_closed", t_ns=t, how=sc.server)
        elif cmd[0] in ("write", "presend", "read") and (cmd[0] != "write" or cmd[1:2] and cmd[1].isdigit()):
            t = now()
            r = ask(line.strip())
            if r is None:
                r = {"index": int(cmd[1]) if cmd[0] == "write" else 0, "size": 6, "ret": -1, "errno": None,
                     "t_start_ns": t, "t_end_ns": now(), "killed_by": died()}
            say(ev="read" if cmd[0] == "read" else "write", **r)
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
