"""A user's scenario file, written here and run live on this machine's kernel (as the
README's guide does it). The built-ins from files, over IPv4 and IPv6, are in
test_native_tracepoints.py's `--scenario all` runs.

Predictions from the kernel source (docs/kernel-source.md; the files' citations):
a server that reads the client's bytes before close() sends a FIN, not the RST of
unread data (tcp_close, net/ipv4/tcp.c); SO_ERROR takes sk_err and clears it
(sk_getsockopt, net/core/sock.c; sock_error, include/net/sock.h).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.live

# The guide's steps: copy a built-in (so-error), change one step (the server reads 6 bytes the
# client wrote before the close), run it, read the verdict.
CHANGE = ('[[server]]\ndo = "close"\n',
          '[[server]]\ndo = "read"\nbytes = 6\n\n[[server]]\ndo = "close"\n')
EARLY = '[[client]]\ndo = "write"\nbytes = 6\nwhen = "connected"\n\n'


def tool(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracer", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def objs_of(p: subprocess.CompletedProcess) -> list[dict]:
    assert "Traceback" not in p.stderr, p.stderr
    return [json.loads(x) for x in p.stdout.splitlines() if x.strip()]


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    require(os.geteuid() == 0, "live BPF tests need root")
    shown = tool("scenarios", "--show", "so-error")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert CHANGE[0] in text
    first_client = text.index("[[client]]")
    text = text[:first_client] + EARLY + text[first_client:]
    text = text.replace(CHANGE[0], CHANGE[1], 1)
    path = tmp_path_factory.mktemp("scenario") / "server-reads-first.toml"
    path.write_text(text)
    p = tool("--scenario", str(path), "--check", "--json")
    return p, objs_of(p)


def test_a_users_file_runs_live_and_matches(users_file):
    p, objs = users_file
    assert p.returncode == 0, p.stderr + p.stdout
    v = next(o for o in objs if o["type"] == "scenario")
    assert v["name"] == "server-reads-first" and v["ok"], v
    rows = {r["what"]: r["observed"] for r in v["rows"]}
    assert rows["write 1"] == "success" and rows["write 2"] == "EPIPE"
    assert rows["SO_ERROR 1"] == "EPIPE" and rows["SO_ERROR 2"] == "0"
    # The server read the early bytes, so its close sent a FIN: the client saw CLOSE_WAIT, and the
    # RST came from the closed server, not from an abortive close.
    assert rows["RST sent by"] in ("timewait", "full socket")
    marks = [o["what"] for o in objs if o["type"] == "user"]
    assert "the server read 6 bytes (recv of 6, MSG_WAITALL)" in marks
    states = [o for o in objs if o["type"] == "kernel" and o["event"] == "SET_STATE" and o.get("side") == "client"]
    assert any("CLOSE_WAIT" in json.dumps(o) for o in states)
