"""`trace-halfclose watch` with real BPF on this machine's kernel (on the 6.18
microVM: the tracepoint backend), against programs that are not the tool's:
the article's C client (tests/live/watch_client.c, compiled here with gcc)
and Debian's `ncat -l`.

What is asserted is what the kernel reported. Expected behaviour from the
source (Linux 6.1/6.12, docs/kernel-source.md): in CLOSE_WAIT
tcp_sendmsg_locked (net/ipv4/tcp.c) sends; the RST moves the socket to CLOSE
with sk_err EPIPE (tcp_reset, tcp_done_with_error, net/ipv4/tcp_input.c); the
next write fails in sk_stream_wait_connect (net/core/stream.c), whose
sock_error() takes sk_err.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
LIVE = Path(__file__).resolve().parent
EPIPE = 32
pytestmark = pytest.mark.live


def free_port() -> int:
    """A port nobody listens on or connects to here (not 9999: the reproduction's tests use it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool(*args: str) -> list[str]:
    return [sys.executable, "-m", "tracer", *args]


def objs(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def of_type(lines, t):
    return [o for o in lines if o["type"] == t]


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Path:
    require(os.geteuid() == 0, "live BPF tests need root")
    require(shutil.which("gcc") is not None, "gcc is missing (scripts/setup.sh --test installs it)")
    require(shutil.which("ncat") is not None, "ncat is missing (scripts/setup.sh --test installs it)")
    exe = tmp_path_factory.mktemp("watch") / "watch_client"
    subprocess.run(["gcc", "-Wall", "-o", str(exe), str(LIVE / "watch_client.c")], check=True)
    return exe


def start_watch(*args: str, env=None) -> subprocess.Popen:
    """A watch, returned once it says its probes are attached."""
    p = subprocess.Popen(tool("watch", *args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env)
    deadline, seen = time.monotonic() + 120, ""
    while time.monotonic() < deadline and p.poll() is None:
        line = p.stderr.readline()
        seen += line
        if "probes attached" in line:
            return p
    p.kill()
    out, err = p.communicate()
    pytest.fail(f"watch never attached its probes:\n{seen}{err}")


def noise(port: int) -> None:
    """Data both ways on a TCP connection no watch of another port may show."""
    server = subprocess.Popen(["ncat", "-l", str(port)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        server.stdin.write(b"from the server\n")
        server.stdin.flush()
        subprocess.run(["ncat", "--send-only", "127.0.0.1", str(port)], input=b"noise\n", timeout=10)
    finally:
        server.kill()
        server.wait()


@pytest.fixture(scope="module")
def by_port(client, tmp_path_factory):
    """`watch --port P` started first; then the article's client against `ncat -l P`
    and a noise connection on another port; then Ctrl-C."""
    port, other = free_port(), free_port()
    rec = tmp_path_factory.mktemp("rec") / "watch.jsonl"
    p = start_watch("--port", str(port), "--json", "--record", str(rec))
    noise(other)
    traffic = subprocess.run(["sh", str(LIVE / "watch_clients.sh"), str(client), str(port), "1", "1", "0.3"],
                             capture_output=True, text=True, timeout=60)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    return {"rc": p.returncode, "out": out, "err": err, "lines": objs(out), "port": port, "other": other,
            "rec": rec, "traffic": traffic}


def client_conn(lines) -> dict:
    conns = [c for c in of_type(lines, "connection") if c["comm"] == "watch_client"]
    assert len(conns) == 1, conns
    return conns[0]


def test_watch_by_port_stops_cleanly_on_ctrl_c(by_port):
    assert by_port["rc"] == 0, by_port["err"]
    assert "Traceback" not in by_port["err"]
    assert by_port["traffic"].returncode == 255  # the article's program: "second write failed"
    assert "second write failed: Broken pipe" in by_port["traffic"].stderr
    assert any(u["what"] == "stopped: interrupted (Ctrl-C)" for u in of_type(by_port["lines"], "user"))


def test_first_write_succeeds_second_fails_with_epipe(by_port):
    lines = by_port["lines"]
    conn = client_conn(lines)
    writes = of_type(lines, "write")
    assert [(w["conn"], w["index"], w["ret"], w["errno"]) for w in writes] == [
        (conn["conn"], 1, 6, None), (conn["conn"], 2, -1, "EPIPE")]
    w1, w2 = writes
    assert all(w["call"] == "write" and w["fd"] == conn["fd"] and w["comm"] == "watch_client" for w in writes)
    assert (w1["state"], w1["sk_err"], w1["sk_shutdown"]) == ("CLOSE_WAIT", 0, 1)
    assert (w2["state"], w2["sk_err"], w2["sk_shutdown"]) == ("CLOSE", EPIPE, 3)
    if lines[0]["backend"] == "tracepoint":
        assert w1["inferred"] and w2["inferred"]
        exit2 = next(s for s in w2["path"] if s["func"] == "sys_exit_write")
        assert exit2["ret"] == -EPIPE and exit2["sk_err_after"] == 0  # sock_error() took it
        assert "sock_error() takes sk_err=EPIPE" in w2["decision"]


def test_the_sockets_events_reach_its_connection(by_port):
    lines = by_port["lines"]
    conn = client_conn(lines)
    mine = [k for k in of_type(lines, "kernel") if k["conn"] == conn["conn"]]
    assert {k["sk"] for k in mine} == {conn["sk"]}
    reset = next(k for k in mine if k["func"] in ("tcp_reset", "tcp_receive_reset"))
    assert reset["state"] == "CLOSE_WAIT"
    states = [(k.get("old_state"), k["state"]) for k in mine if k["func"] == "inet_sock_set_state"]
    assert ("ESTABLISHED", "CLOSE_WAIT") in states or any(k["func"] == "tcp_fin" for k in mine)
    if "tracepoint:sock:inet_sk_error_report" in lines[0]["probes"]:
        # sk_error_report has no socket: the kernel side attributes it to the socket tcp_reset just ran on.
        assert next(k for k in mine if k["func"] == "inet_sk_error_report")["error"] == EPIPE


def test_nothing_else_appears(by_port):
    lines, port = by_port["lines"], by_port["port"]
    conns = of_type(lines, "connection")
    assert all(port in (c["lport"], c["rport"]) for c in conns), conns
    # The client's socket and ncat's end of the same connection, each the other's peer; no listener.
    assert len(conns) == 2
    a, b = conns
    assert a["peer"] == b["conn"] and b["peer"] == a["conn"]
    server_end = next(c for c in conns if c["lport"] == port)
    assert server_end["writers"] == [] and server_end["rport"] != 0
    assert by_port["other"] not in {c["lport"] for c in conns} | {c["rport"] for c in conns}
    assert len(of_type(lines, "write")) == 2


def test_recording_replays_to_the_same_output(by_port):
    p = subprocess.run(tool("watch", "--replay", str(by_port["rec"]), "--json"), cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == by_port["out"]


def test_two_clients_at_once_stay_apart(client):
    """watch -- CMD: the command (a script starting `ncat -l -k` and two clients) is
    started once the probes are attached; its processes are followed; --comm keeps the clients."""
    port = free_port()
    p = subprocess.run(tool("watch", "--comm", "watch_client", "--json", "--",
                            "sh", str(LIVE / "watch_clients.sh"), str(client), str(port), "2", "1", "0.3"),
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = objs(p.stdout)
    conns = of_type(lines, "connection")
    assert len(conns) == 2
    assert len({c["pid"] for c in conns}) == 2 and len({c["lport"] for c in conns}) == 2
    for c in conns:
        assert c["rport"] == port and c["comm"] == "watch_client"
        writes = [w for w in of_type(lines, "write") if w["conn"] == c["conn"]]
        assert [(w["ret"], w["errno"], w["pid"]) for w in writes] == [(6, None, c["pid"]), (-1, "EPIPE", c["pid"])]
        assert {k["sk"] for k in of_type(lines, "kernel") if k["conn"] == c["conn"]} == {c["sk"]}
    users = [u["what"] for u in of_type(lines, "user")]
    assert "the command exited with status 255" in users and "stopped: the command exited" in users


def test_every_write_like_call_is_named(tmp_path):
    """send (sendto(2) on x86-64), sendmsg, writev and write, each with its size and fd."""
    require(os.geteuid() == 0, "live BPF tests need root")
    port = free_port()
    script = tmp_path / "calls.py"
    script.write_text(
        "import os, socket, sys\n"
        "srv = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n"
        "c = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
        "s, _ = srv.accept()\n"
        "c.send(b'aaa')\n"
        "c.sendmsg([b'bb', b'ccc'])\n"
        "os.writev(c.fileno(), [b'd', b'ee', b'fff'])\n"
        "os.write(c.fileno(), b'gggg')\n"
        "print(c.fileno())\n")
    p = subprocess.run(tool("watch", "--port", str(port), "--json", "--", "/usr/bin/python3", str(script), str(port)),
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    fd = int(p.stderr.strip().splitlines()[-1])  # the command's stdout goes to stderr with --json
    lines = objs(p.stdout)
    writes = of_type(lines, "write")
    assert [(w["call"], w["size"], w["ret"], w["fd"]) for w in writes] == [
        ("sendto", 3, 3, fd), ("sendmsg", 5, 5, fd), ("writev", 6, 6, fd), ("write", 4, 4, fd)]
    if lines[0]["backend"] == "tracepoint":
        assert writes[0]["observed_at"] == "sendto(2) entry"
        assert [s["func"] for s in writes[2]["path"]][0] == "sys_enter_writev"
    # The same task accepted a connection but never wrote on it: with -- CMD only its writes count.
    assert len(of_type(lines, "connection")) == 1


def test_ctrl_c_stops_the_command_and_detaches():
    """Ctrl-C during `watch -- CMD`: the command gets SIGINT too (issue 12: the signal the
    tool got), what was seen is shown, and the exit status is 130 with one last line."""
    require(os.geteuid() == 0, "live BPF tests need root")
    p = start_watch("--port", str(free_port()), "--", "sleep", "60")
    time.sleep(1.0)
    from tests.live.robustness import descendants

    kids = [d.pid for d in descendants(p.pid) if d.cmd == "sleep 60"]  # under its keeper
    assert kids, "the command was not started"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "interrupted by SIGINT: probes detached, the command got SIGINT"
    assert "stopped: interrupted (Ctrl-C)" in out
    assert "the command was killed by SIGINT" in out
    for pid in kids:
        assert not Path(f"/proc/{pid}").exists()


def test_a_servers_writes_on_an_accepted_socket(client):
    """ncat -l writes to the connection it accepted: that socket joins the watch at
    its first write (its task matched; it was not on the watch before)."""
    port = free_port()
    p = start_watch("--comm", "ncat", "--port", str(port), "--json")
    server = subprocess.Popen(["ncat", "-l", str(port)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        reader = subprocess.Popen(["ncat", "--recv-only", "127.0.0.1", str(port)], stdout=subprocess.PIPE)
        time.sleep(0.5)
        server.stdin.write(b"hello\n")
        server.stdin.close()  # ncat sends, then shuts its side
        got = reader.communicate(timeout=10)[0]
    finally:
        server.kill()
        server.wait()
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert got == b"hello\n"
    lines = objs(out)
    conns = {c["lport"]: c for c in of_type(lines, "connection")}
    accepted = conns[port]
    assert (accepted["comm"], accepted["pid"]) == ("ncat", server.pid)
    writes = [w for w in of_type(lines, "write") if w["conn"] == accepted["conn"]]
    assert [(w["ret"], w["size"], w["call"] in ("write", "sendto")) for w in writes] == [(6, 6, True)]
    # The reading ncat wrote nothing: its connection is known from its connect(2).
    reading = next(c for c in conns.values() if c["rport"] == port)
    assert reading["writers"] == [] and reading["connected_by"] == {"pid": reader.pid, "comm": "ncat"}
    assert reading["peer"] == accepted["conn"]


SERVER_413 = """\
import socket, sys, time
srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("listening", flush=True)
c, _ = srv.accept()
head = b""
while b"\\r\\n\\r\\n" not in head:
    head += c.recv(4096)
# Close only with body bytes queued and unread, so that close() resets (tcp_close, net/ipv4/tcp.c):
# closed with an empty queue, it would send a FIN and curl's socket would meet the RST in CLOSE_WAIT.
c.recv(1, socket.MSG_PEEK)
time.sleep(0.3)  # curl sends more of the body meanwhile
# The answer promises a body it never sends: curl keeps its connection open, waiting, so the RST
# always finds it ESTABLISHED (an answer curl has whole would let curl close first, some of the time).
c.sendall(b"HTTP/1.1 413 Payload Too Large\\r\\nContent-Length: 100\\r\\n\\r\\n")
c.close()  # the body unread: the kernel resets the connection
"""


def test_curl_body_writes_fold_into_one_line(tmp_path):
    """The issue's curl case: a 3 MB POST to a server that answers 413 and closes with the
    body unread. One connection: the request, one folded line for the body's writes, the
    RST in ESTABLISHED, ECONNRESET."""
    require(os.geteuid() == 0, "live BPF tests need root")
    require(shutil.which("curl") is not None, "curl is missing (scripts/setup.sh --test installs it)")
    port = free_port()
    (tmp_path / "server.py").write_text(SERVER_413)
    body = tmp_path / "3MB"
    body.write_bytes(os.urandom(3_000_000))
    server = subprocess.Popen([sys.executable, str(tmp_path / "server.py"), str(port)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout.readline().strip() == "listening"
        p = subprocess.run(tool("watch", "--port", str(port), "--", "curl", "-sS", "-H", "Expect:",
                                "--data-binary", f"@{body}", f"http://127.0.0.1:{port}/"),
                           cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    finally:
        server.kill()
        server.wait()
    assert p.returncode == 0, p.stderr
    out = p.stdout
    import re

    assert len(re.findall(r"^connection #\d+ ", out, re.M)) == 1, out
    assert "incident: an RST received" in out, out
    head = re.search(r"write 1 \((\d+) bytes\) → (\d+)$", out, re.M)
    assert head and head.group(1) == head.group(2)  # the request, whole
    folded = re.search(r"writes 2–(\d+): sendto 65,536 B each → 65,536, ESTABLISHED, queued$", out, re.M)
    assert folded and int(folded.group(1)) > 2, out
    assert not re.search(r"write \d+ \(65536 bytes\)", out)  # none of the folded ones shown whole
    assert "tcp_receive_reset: RST accepted in state ESTABLISHED" in out, out
    assert "ECONNRESET" in out, out


def test_bench_watch_at_a_small_rate():
    """scripts/bench_watch.py end to end at a rate any machine keeps up with: every
    half-close incident it made is among the connections the watch showed."""
    require(os.geteuid() == 0, "live BPF tests need root")
    require(shutil.which("cc") is not None or shutil.which("gcc") is not None, "no C compiler")
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_watch.py"), "--rate", "200", "--seconds", "2",
                        "--incidents", "4", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    run = json.loads(p.stdout.strip().splitlines()[-1])
    assert run["incidents_made"] == 4 and run["incidents_shown"] == 4 and run["missing"] == []
    assert run["rc"] == 0 and run["events"] > 0
