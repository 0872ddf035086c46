"""--pcap and --packetdrill on a live run of `close`, on this machine's kernel.

The pcapng is read with Debian's tcpdump and tshark (scripts/setup.sh --test
installs both), not with the tool's code: the 7 packets of the article's tcpdump
in order (client S, server S., client ., server F., client ., client P. 6 bytes,
server R), and the comments read back with tshark's frame.comment. The packetdrill
script is written from the same run; replaying it needs packetdrill, which is not
in Debian (the README says how the scripts were replayed).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.live
SERVER_PORT = 9999


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    require(os.geteuid() == 0, "live BPF tests need root")
    for binary in ("tcpdump", "tshark"):
        require(shutil.which(binary) is not None, f"{binary} is missing (scripts/setup.sh --test installs it)")
    out = tmp_path_factory.mktemp("pcap")
    p = subprocess.run([sys.executable, "-m", "tracer", "--pcap", str(out / "close.pcapng"), "--packetdrill",
                        str(out / "close.pkt"), "--record", str(out / "close.jsonl")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    return out


def tshark(path: Path, *fields: str) -> list[list[str]]:
    p = subprocess.run(["tshark", "-r", str(path), "-T", "fields", *[a for f in fields for a in ("-e", f)]],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [line.split("\t") for line in p.stdout.splitlines()]


def test_tcpdump_reads_the_seven_packets_in_order(run):
    p = subprocess.run(["tcpdump", "-nr", str(run / "close.pcapng")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "link-type RAW" in p.stderr
    seen = []
    for line in p.stdout.splitlines():
        m = re.search(r"IP6? \S+\.(\d+) > \S+\.(\d+): Flags \[([^\]]+)\].*length (\d+)", line)
        assert m, line
        side = "server" if int(m.group(1)) == SERVER_PORT else "client"
        seen.append((side, m.group(3), int(m.group(4))))
    assert seen == [("client", "S", 0), ("server", "S.", 0), ("client", ".", 0), ("server", "F.", 0),
                    ("client", ".", 0), ("client", "P.", 6), ("server", "R", 0)]


def test_tshark_reads_the_packets_and_their_comments(run):
    rows = tshark(run / "close.pcapng", "tcp.srcport", "tcp.flags.str", "tcp.len", "frame.comment")
    assert len(rows) == 7
    flags = [r[1].replace("·", "") for r in rows]
    assert flags == ["S", "AS", "A", "AF", "A", "AP", "R"]
    assert [int(r[2]) for r in rows] == [0, 0, 0, 0, 0, 6, 0]
    comments = [r[3] for r in rows]
    assert "write 1 → 6 in CLOSE_WAIT" in comments[5]
    assert re.match(r"sent by (a timewait socket \(substate FIN_WAIT2\), tcp_timewait_state_process"
                    r"|a full socket in state \w+, tcp_rcv_state_process)", comments[6]), comments[6]
    assert "RST in CLOSE_WAIT" in comments[6]
    assert "server called close(2)" in comments[3]


def test_the_section_names_kernel_backend_and_scenario(run):
    p = subprocess.run(["capinfos", str(run / "close.pcapng")], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:  # capinfos comes with tshark (wireshark-common); say so rather than guess
        pytest.fail(p.stderr)
    assert f"scenario close on Linux {os.uname().release}, backend " in p.stdout
    assert "Raw IP" in p.stdout


def test_the_packetdrill_script_of_the_same_run(run):
    text = (run / "close.pkt").read_text()
    assert text.startswith("// trace-halfclose: scenario close")
    assert re.search(r"^`sysctl -q net\.ipv4\.tcp_timestamps=\d ", text, re.M)
    assert re.search(r"write\(3, \.\.\., 6\) = 6\n.*> P\. 1:7\(6\) ack 2 ", text)
    assert re.search(r"< R 2:2\(0\) win 0 ", text)
    assert "write(3, ..., 6) = -1 EPIPE (Broken pipe)" in text
