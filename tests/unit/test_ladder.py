"""The ladder diagram (--ladder, --svg FILE) on recorded runs: exact text at fixed widths
(goldens, as tests/unit/test_golden_display.py), the SVG read back with an XML parser, each
scenario's story in the ladder's data, and the errors of --svg and --ladder.

Expected values come from the recordings' raw events and from kernel facts (the TCP
header's flag bits), not from tracer/ (the code under test).
"""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.unit.helpers import state_code
from tests.unit.test_golden_display import DATA, K61, K61_ALL, W61, env, run_and_compare
from tracer.cli import main
from tracer.display import ladder
from tracer.process.annotate import annotate
from tracer.process.connections import connections
from tracer.record.event import Kind
from tracer.record.recording import Recording, WatchRecording

ROOT = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"
# The TCP header's flag bits (RFC 9293 3.1; include/net/tcp.h TCPHDR_*) in tcpdump's notation and order.
TCP_FLAGS = ((0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x10, "."))

# (golden file, arguments, COLUMNS, exit status), as test_golden_display.CASES
CASES = [
    ("replay-6.1-kprobe-close-ladder.txt", ["replay", "--ladder", K61], 100, 0),
    ("watch-6.1-kprobe-article-ladder.txt", ["watch", "--replay", W61, "--ladder", "--all"], 100, 0),
]


@pytest.mark.parametrize(("name", "args", "width", "exit_code"), CASES, ids=[c[0] for c in CASES])
def test_golden_ladder(name, args, width, exit_code, monkeypatch):
    """The ladder of the article's run (6.1, kprobes) and of a watched connection with its
    peer, exact at 100 columns; GOLDEN_UPDATE=1 regenerates them."""
    monkeypatch.chdir(DATA)
    run_and_compare(name, args, width, exit_code)


def _flags(tcp_flags: int) -> str:
    return "[" + "".join(ch for bit, ch in TCP_FLAGS if tcp_flags & bit) + "]"


def _ladders(path: Path) -> dict[str, ladder.Ladder]:
    return {rec.scenario: ladder.of_timeline(annotate(rec)) for rec in Recording.load_all(path)}


# --- the text ---------------------------------------------------------------------------


@pytest.mark.parametrize("width", [60, 80, 100, 160])
def test_text_fits_the_width(width):
    """Every scenario's ladder stays within the terminal's width, down to 60 columns."""
    for ld in _ladders(DATA / K61_ALL).values():
        lines = [ladder.plain(line) for line in ladder.text(ld, width)]
        assert max(map(len, lines)) <= width, ld.title


def test_the_articles_story_in_order():
    """The article's close, as the issue tells it: the FIN crosses, the client goes to
    CLOSE_WAIT, write 1's data crosses, the timewait server answers RST, tcp_reset and
    tcp_done close the client, write 2 fails in sk_stream_wait_connect."""
    rec = Recording.load(DATA / K61)
    ld = ladder.of_timeline(annotate(rec))
    story = [(s.kind, s.column, ladder.plain(s.lines[0])) for s in ld.steps]

    def at(pred) -> int:
        return next(i for i, s in enumerate(story) if pred(*s))

    fin = at(lambda k, c, t: k == ladder.PACKET and c == ladder.RIGHT and t.startswith("[F"))
    close_wait = at(lambda k, c, t: k == ladder.NOTE and c == ladder.LEFT and t.endswith("→ CLOSE_WAIT"))
    write1 = at(lambda k, c, t: k == ladder.CALL and t == "write 1 (6 bytes) → 6")
    data = at(lambda k, c, t: k == ladder.PACKET and c == ladder.LEFT and t.endswith("len 6"))
    sender = at(lambda k, c, t: c == ladder.RIGHT and t.startswith("RST sender: a timewait socket"))
    rst = at(lambda k, c, t: k == ladder.PACKET and c == ladder.RIGHT and t.startswith("[R"))
    reset = at(lambda k, c, t: c == ladder.LEFT and t == "tcp_reset: RST in CLOSE_WAIT")
    done = at(lambda k, c, t: c == ladder.LEFT and t == "tcp_done: CLOSE_WAIT → CLOSE")
    write2 = at(lambda k, c, t: k == ladder.CALL and t == "write 2 (6 bytes) → EPIPE")
    assert fin < close_wait < write1 < data < sender < rst < reset < done < write2
    done_lines = [ladder.plain(line) for line in ld.steps[done].lines]
    assert "sk_err 0 → EPIPE" in done_lines
    assert "sk_shutdown RCV_SHUTDOWN → RCV_SHUTDOWN|SEND_SHUTDOWN" in done_lines
    write2_lines = [ladder.plain(line) for line in ld.steps[write2].lines]
    assert "sk_stream_wait_connect" in write2_lines[1] and "took sk_err EPIPE" in write2_lines[1]
    assert "sk_err EPIPE → 0" in write2_lines


def test_packets_are_the_recorded_ones():
    """One arrow per packet the recording traced, in order, from its sender's line, with
    tcpdump's flags and the payload's length."""
    rec = Recording.load(DATA / K61)
    sent = [e for e in sorted(rec.events, key=lambda e: e.ts_ns) if e.kind == Kind.PACKET]
    arrows = ladder.of_timeline(annotate(rec)).packets()
    assert [a.flags for a in arrows] == [_flags(e.tcp_flags) for e in sent]
    assert [a.column for a in arrows] == [ladder.LEFT if e.sport == rec.client_port else ladder.RIGHT for e in sent]
    assert [ladder.plain(a.lines[0]).endswith(f" len {e.value}") for a, e in zip(arrows, sent)] == \
        [e.value > 0 for e in sent]


def test_scenario_all_tells_each_story():
    """--scenario all: no FIN in linger0 (an abortive close), no RST in shutdown-wr (a half-close
    the server keeps reading), an RST from a full socket in shutdown-rdwr, the RST sent
    after the server's own socket was reset."""
    lds = _ladders(DATA / K61_ALL)
    recs = {rec.scenario: rec for rec in Recording.load_all(DATA / K61_ALL)}
    linger0, wr, rdwr = lds["linger0"], lds["shutdown-wr"], lds["shutdown-rdwr"]

    assert not any("F" in p.flags for p in linger0.packets())
    assert any("R" in p.flags and p.column == ladder.RIGHT for p in linger0.packets())
    assert any(ladder.plain(s.lines[0]).startswith("RST sender: the socket resets its connection")
               for s in linger0.on(ladder.RIGHT))

    assert not any("R" in p.flags for p in wr.packets())
    assert not any("RST" in ladder.plain(line) for s in wr.steps for line in s.lines)
    assert all(s.lines[0][-1].role == "ok" for s in wr.on(ladder.LEFT) if s.kind == ladder.CALL)

    # shutdown-rdwr: the recording's RST was sent by a full socket (not a timewait one) ...
    rec = recs["shutdown-rdwr"]
    senders = [e for e in rec.events if e.kind == Kind.SEND_RESET]
    assert senders and all(e.sk and e.state != state_code(rec, "TIME_WAIT") for e in senders)
    # ... and the ladder says so on the server's line, before the RST's arrow
    right = [(i, ladder.plain(s.lines[0])) for i, s in enumerate(rdwr.steps) if s.column == ladder.RIGHT]
    sender = next(i for i, t in right if t.startswith("RST sender: a full socket in state CLOSE"))
    reset = next(i for i, t in right if t == "tcp_reset: RST in FIN_WAIT2")
    rst = next(i for i, s in enumerate(rdwr.steps) if s.kind == ladder.PACKET and "R" in s.flags)
    assert reset < sender < rst and rdwr.steps[rst].column == ladder.RIGHT


def test_scenario_all_ladders_in_the_output(monkeypatch):
    """`replay --ladder` of a --scenario all recording: one ladder per scenario, then the matrix."""
    monkeypatch.chdir(DATA)
    out = CliRunner(env=env(100)).invoke(main, ["replay", "--ladder", K61_ALL], catch_exceptions=False).stdout
    names = [rec.scenario for rec in Recording.load_all(DATA / K61_ALL)]
    starts = [out.index(f"scenario {n} on Linux 6.1.0-56-amd64, backend kprobe, ipv4") for n in names]
    assert starts == sorted(starts)
    sections = dict(zip(names, (out[a:b] for a, b in zip(starts, starts[1:] + [out.index("┏")]))))
    assert "[F" not in sections["linger0"] and "[R." in sections["linger0"]
    assert "[R" not in sections["shutdown-wr"]
    assert "RST sender: a full socket" in sections["shutdown-rdwr"]
    assert max(map(len, out.splitlines())) <= 100


def test_watch_pairs_a_connection_with_its_peer():
    """A watched connection and its peer are one ladder, the end that connected on the left;
    without traced packets, the FIN and the RST show where their receiver handled them."""
    wrec = WatchRecording.load(DATA / W61)
    cts = connections(wrec)
    lds = ladder.of_watch(cts)
    assert len(lds) == 1 and len(cts) == 2
    ld = lds[0]
    assert ld.columns[0].startswith("#1 ") and "watch_client" in ld.columns[0] and ld.columns[1].startswith("#2 ")
    received = [(s.flags, s.column) for s in ld.steps if s.kind == ladder.RECEIVED]
    assert received == [("FIN", ladder.RIGHT), ("RST", ladder.RIGHT)]
    assert not ld.packets()


# --- the SVG ----------------------------------------------------------------------------


def _svg_texts(path: Path) -> dict[str, str]:
    """Each text of the SVG by the id of its group (matplotlib writes an artist's gid so)."""
    root = ET.parse(path).getroot()
    out = {}
    for g in root.iter(f"{SVG}g"):
        t = g.find(f"{SVG}text")
        if g.get("id") and t is not None:
            out[g.get("id")] = "".join(t.itertext())
    return out


def _first_x(path: Path, gid: str) -> float:
    root = ET.parse(path).getroot()
    g = next(g for g in root.iter(f"{SVG}g") if g.get("id") == gid)
    return float(g.find(f"{SVG}path").get("d").split()[1])


def test_svg_packets_and_labels(tmp_path, monkeypatch):
    """`replay --svg FILE` of the article's run: the file parses as SVG; its title names the
    kernel, backend and scenario; an arrow per traced packet, from its sender's line, labelled
    with its flags; the writes' results; the RST's sender on the server's side."""
    monkeypatch.chdir(DATA)
    out = tmp_path / "close.svg"
    r = CliRunner(env=env(100)).invoke(main, ["replay", K61, "--svg", str(out)], catch_exceptions=False)
    assert r.exit_code == 0 and out.stat().st_size > 0
    assert "ladder diagram written to" in r.stderr
    texts = _svg_texts(out)
    rec = Recording.load(DATA / K61)

    title = texts["l0-title"]
    assert f"Linux {rec.kernel}" in title and f"backend {rec.backend}" in title and f"scenario {rec.scenario}" in title
    assert ET.parse(out).getroot().find(f"{SVG}title").text == title

    sent = [e for e in sorted(rec.events, key=lambda e: e.ts_ns) if e.kind == Kind.PACKET]
    labels = sorted((int(k.split("-")[2]), v) for k, v in texts.items() if k.endswith("-label") and "-packet-" in k)
    assert [v.split()[0] for _, v in labels] == [_flags(e.tcp_flags) for e in sent]
    assert any(v.endswith("len 6") for _, v in labels)
    left_x, right_x = _first_x(out, "l0-line-0"), _first_x(out, "l0-line-1")
    starts = [_first_x(out, f"l0-packet-{i}-arrow") for i, _ in labels]
    assert starts == [left_x if e.sport == rec.client_port else right_x for e in sent]

    calls = [v for k, v in texts.items() if "-call-" in k and k.endswith("-0")]
    expected = [f"write {w.index} ({w.size} bytes) → {w.ret if w.ret >= 0 else w.errno}" for w in rec.writes]
    assert calls == expected
    notes = {v for k, v in texts.items() if "-note-" in k}
    assert "RST sender: a timewait socket (substate FIN_WAIT2)" in notes
    assert "tcp_reset: RST in CLOSE_WAIT" in notes and "tcp_done: CLOSE_WAIT → CLOSE" in notes


def test_svg_of_every_scenario_and_of_a_watch(tmp_path, monkeypatch):
    """One ladder per scenario in one file, each titled; a watch's pair as one ladder."""
    monkeypatch.chdir(DATA)
    runner = CliRunner(env=env(100))
    r = runner.invoke(main, ["replay", K61_ALL, "--svg", str(tmp_path / "all.svg")], catch_exceptions=False)
    assert r.exit_code == 0
    titles = [v for k, v in _svg_texts(tmp_path / "all.svg").items() if k.endswith("-title")]
    assert [t.split()[1] for t in titles] == [rec.scenario for rec in Recording.load_all(DATA / K61_ALL)]
    r = runner.invoke(main, ["watch", "--replay", W61, "--all", "--svg", str(tmp_path / "w.svg")], catch_exceptions=False)
    assert r.exit_code == 0
    texts = _svg_texts(tmp_path / "w.svg")
    assert texts["l0-title"].startswith("connections #1 and #2 on Linux 6.1.0-56-amd64, backend kprobe")
    assert "l1-title" not in texts
    assert {"FIN (seen by tcp_fin)", "RST (seen by tcp_reset)"} <= set(texts.values())


def test_matplotlib_only_with_svg():
    """Without --svg, the command never imports matplotlib (startup stays fast)."""
    code = ("import sys; from click.testing import CliRunner; from tracer.cli import main; "
            f"r = CliRunner().invoke(main, ['replay', '--ladder', {str(DATA / K61)!r}]); "
            "print(r.exit_code, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False"]


# --- errors -----------------------------------------------------------------------------


def _bad_svg_paths(tmp_path: Path) -> list[str]:
    return [str(tmp_path), str(tmp_path / "no-such-dir" / "x.svg")]


@pytest.mark.parametrize("command", [["replay", K61], ["run"], ["watch", "--port", "9999"],
                                     ["watch", "--replay", W61]])
def test_bad_svg_path_is_one_line_and_exit_2(command, tmp_path, monkeypatch):
    """A directory, or a file in a directory that does not exist: one line, exit status 2,
    before anything is traced (run and watch would need root and bcc past this point)."""
    monkeypatch.chdir(DATA)
    for bad in _bad_svg_paths(tmp_path):
        r = CliRunner(env=env(100)).invoke(main, [*command, "--svg", bad], catch_exceptions=False)
        assert r.exit_code == 2, r.output
        assert r.stdout == ""
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: --svg {bad}: "), r.stderr
    assert not (tmp_path / "no-such-dir").exists()


@pytest.mark.parametrize("command", [["replay", K61], ["run"], ["watch", "--replay", W61]])
def test_ladder_with_json_is_one_line_and_exit_2(command, monkeypatch):
    monkeypatch.chdir(DATA)
    r = CliRunner(env=env(100)).invoke(main, [*command, "--ladder", "--json"], catch_exceptions=False)
    assert r.exit_code == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: --ladder draws for people")


def test_unwritable_svg_file(tmp_path, monkeypatch):
    """An existing file that cannot be written (checked as the user the tool runs as: root can write it)."""
    target = tmp_path / "ro.svg"
    target.write_text("")
    target.chmod(0o444)
    monkeypatch.chdir(DATA)
    r = CliRunner(env=env(100)).invoke(main, ["replay", K61, "--svg", str(target)], catch_exceptions=False)
    if os.access(target, os.W_OK):  # root
        assert r.exit_code == 0 and target.stat().st_size > 0
    else:
        assert r.exit_code == 2 and r.stderr == f"error: --svg {target}: not writable\n"


def test_readme_shows_the_articles_ladder(monkeypatch):
    """README's first picture is the ladder this version draws of the 6.1 recording at 100 columns."""
    monkeypatch.chdir(DATA)
    out = CliRunner(env=env(100)).invoke(main, ["replay", "--ladder", K61], catch_exceptions=False).stdout
    drawn = out[out.index("scenario close on Linux"):].split("\n\n")[0]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("```text\nscenario close on Linux") + len("```text\n")
    shown = readme[start:readme.index("\n```", start)]
    assert [line.rstrip() for line in shown.splitlines()] == [line.rstrip() for line in drawn.splitlines()]
