"""Scenario files (tracer/process/scenario_file.py): the built-ins read back as the
scenarios the tool always had, a user's file becomes the scenario it says, and every
malformed file is one line naming the file, the line and the key."""
from __future__ import annotations

import tomllib

import pytest
from click.testing import CliRunner

from tracer.cli import main as cli
from tracer.process import scenarios
from tracer.process.scenario_file import ScenarioFileError, load, parse
from tracer.scenarios import builtin_path

GOOD = """\
title = "mine"
sigpipe = "ignore"

[sysctl]
net.ipv4.tcp_fin_timeout = 120

[[server]]
do = "accept"

[[server]]
do = "close"

[[client]]
do = "write"
bytes = 6
expect = "success"
why = ["tcp_sendmsg_locked (net/ipv4/tcp.c)"]
rst = ["full socket"]

[[client]]
do = "getsockopt"
option = "SO_ERROR"
expect = "EPIPE"

[[client]]
do = "write"
expect = "EPIPE"
"""


def test_a_good_file_is_the_scenario_it_says(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text(GOOD)
    sc = load(f)
    assert sc.name == "mine" and sc.title == "mine" and sc.sysctls == (("net.ipv4.tcp_fin_timeout", "120"),)
    assert [s.do for s in sc.server_steps] == ["accept", "close"]
    assert [s.do for s in sc.client_steps] == ["write", "getsockopt", "write"]
    assert sc.expected.writes == ("success", "EPIPE")
    assert sc.expected.queries == (("SO_ERROR", "EPIPE"),)
    assert sc.expected.rst_from == ("full socket",) and sc.expected.sigpipe == "ignored"
    assert sc.expected.why == ("tcp_sendmsg_locked (net/ipv4/tcp.c)",)
    assert sc.source_text == GOOD  # kept, so that a recording of it can be judged again


@pytest.mark.parametrize("name", scenarios.ORDER)
def test_every_builtin_file_is_shipped_and_names_itself(name):
    sc = scenarios.SCENARIOS[name]
    assert sc.name == name and sc.expected.why, name
    tomllib.loads(builtin_path(name).read_text())  # plain TOML, for a user to copy


def test_the_article_scenario_reads_as_before():
    """What `close` always predicted: write 1 succeeds, the closed server resets, writes 2 and 3
    fail with EPIPE, SIGPIPE ignored (the 8 first built-ins' goldens check every other field)."""
    e = scenarios.SCENARIOS["close"].expected
    assert e.writes == ("success", "EPIPE", "EPIPE") and e.rst_from == ("timewait", "full socket")
    assert e.sigpipe == "ignored" and e.peer_state == "CLOSE_WAIT"
    assert scenarios.ORDER[:8] == ("close", "shutdown-wr", "shutdown-rdwr", "linger0", "unread-data", "read-first",
                                   "nosignal", "sigpipe-default")


def _replace(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


# (id, file text, line, key, part of what is wrong)
BAD = [
    ("not-toml", GOOD + "[[client]\n", 28, "TOML", "not valid TOML"),
    ("unknown-top-key", "colour = 1\n" + GOOD, 1, "colour", "unknown key; allowed: name, title"),
    ("no-title", GOOD.replace('title = "mine"\n', ""), 1, "title", "needs a title"),
    ("title-not-string", _replace('title = "mine"', "title = 3"), 1, "title", "is an integer, must be a string"),
    ("family-unknown", 'family = "ipx"\n' + GOOD, 1, "family", "allowed: any, ipv4, ipv6"),
    ("sigpipe-unknown", _replace('sigpipe = "ignore"', 'sigpipe = "catch"'), 2, "sigpipe", "allowed: ignore, default"),
    ("sysctl-outside-net", _replace("net.ipv4.tcp_fin_timeout = 120", "kernel.panic = 1"), 5, "kernel.panic",
     "only net.* sysctls"),
    ("sysctl-not-a-value", _replace("net.ipv4.tcp_fin_timeout = 120", "net.ipv4.tcp_fin_timeout = [1]"), 5,
     "net.ipv4.tcp_fin_timeout", "is a list, must be an integer or a string"),
    ("unknown-server-step", _replace('do = "close"', 'do = "listen"'), 11, "server[2].do",
     "unknown step 'listen'; allowed on the server: accept, read"),
    ("unknown-client-step", _replace('do = "getsockopt"', 'do = "select"'), 21, "client[2].do",
     "unknown step 'select'; allowed on the client: write, read"),
    ("step-without-do", _replace('do = "getsockopt"\n', ""), 20, "client[2].do", "a step needs `do`"),
    ("key-of-another-step", _replace('do = "close"', 'do = "close"\nbytes = 3'), 12, "server[2].bytes",
     "not a key of a server `close` step"),
    ("bytes-not-integer", _replace("bytes = 6", 'bytes = "six"'), 15, "client[1].bytes",
     "is a string, must be an integer"),
    ("bytes-zero", _replace("bytes = 6", "bytes = 0"), 15, "client[1].bytes", "must be from 1 to"),
    ("flag-unknown", _replace("bytes = 6", 'bytes = 6\nflags = ["MSG_OOB"]'), 16, "client[1].flags",
     "'MSG_OOB' is not a flag this tool sends"),
    ("shutdown-how-unknown", _replace('do = "close"', 'do = "shutdown"\nhow = "both"'), 12, "server[2].how",
     "allowed: rd, wr, rdwr"),
    ("linger-value-wrong", _replace('do = "close"', 'do = "setsockopt"\noption = "SO_LINGER"\nvalue = 0\n'
                                    '[[server]]\ndo = "close"'), 13, "server[2].value", "must be [on, seconds]"),
    ("write-expect-unknown", _replace('expect = "success"', 'expect = "EWHATEVER"'), 16, "client[1].expect",
     "a write expects \"success\""),
    ("poll-expect-unknown", _replace('do = "getsockopt"\noption = "SO_ERROR"\nexpect = "EPIPE"',
                                     'do = "poll"\nexpect = ["POLLIN", "POLLFOO"]'), 22, "client[2].expect",
     "a poll expects the list of bits"),
    ("rst-sender-unknown", _replace('rst = ["full socket"]', 'rst = ["the router"]'), 18, "client[1].rst",
     "'the router' is not an RST sender"),
    ("why-without-expect", _replace('expect = "success"\n', ""), 16, "client[1].why", "add `expect`"),
    ("era-unknown", 'eras = ["bronze age"]\n' + GOOD, 1, "eras", "'bronze age' is not a known era"),
    ("peer-state-unknown", GOOD + '[expect]\npeer_state = "LISTEN"\n', 29, "expect.peer_state",
     "allowed: CLOSE_WAIT, CLOSE"),
    ("first-server-step-not-accept", _replace('do = "accept"', 'do = "sleep"\nseconds = 1'), 8, "server[1].do",
     "first step must be accept"),
    ("client-step-after-close", GOOD + '[[client]]\ndo = "close"\n[[client]]\ndo = "read"\n', 31, "client[5].do",
     "read after close (step 4) can never run"),
    ("server-step-after-close", _replace('do = "close"', 'do = "close"\n[[server]]\ndo = "read"'), 13,
     "server[3].do", "read after close (step 2) can never run"),
    ("server-read-never-reached", _replace('do = "close"', 'do = "read"\nbytes = 6\n[[server]]\ndo = "close"'), 12,
     "server[2].bytes", "this read would wait forever"),
    ("client-waits-for-a-close-never-made", _replace('do = "close"', 'do = "shutdown"\nhow = "rd"'), 15,
     "client[1].do", "no server step sends one"),
    ("expectation-before-the-close", _replace("bytes = 6", 'bytes = 6\nwhen = "connected"'), 17,
     "client[1].expect", "not judged"),
    ("two-sigpipe-expectations", GOOD + 'sigpipe = "ignored"\n[[client]]\ndo = "write"\nsigpipe = "none"\n', 31,
     "client[4].sigpipe", "one sigpipe expectation per scenario"),
]


@pytest.mark.parametrize("text, line, key, what", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_malformed_file_is_one_line_with_file_line_and_key(tmp_path, text, line, key, what):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ScenarioFileError) as exc:
        load(f)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{f}:{line}: {key}: "), msg
    assert what in msg, msg


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(ScenarioFileError, match=r"missing\.toml:0: file: no such file"):
        load(tmp_path / "missing.toml")


def test_the_cli_refuses_a_bad_file_before_loading_anything(tmp_path, monkeypatch):
    from tracer.collect import runner

    def no_collection(*a, **k):
        raise AssertionError("nothing may be loaded for a bad scenario file")

    monkeypatch.setattr(runner, "collected", no_collection)
    f = tmp_path / "bad.toml"
    f.write_text(_replace("net.ipv4.tcp_fin_timeout = 120", "vm.swappiness = 1"))
    r = CliRunner().invoke(cli, ["--scenario", str(f)])
    assert r.exit_code == 2
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and f"{f}:5: vm.swappiness: only net.* sysctls" in lines[0], r.output


def test_an_ipv4_only_file_is_refused_with_ipv6(tmp_path):
    f = tmp_path / "v4.toml"
    f.write_text('family = "ipv4"\n' + GOOD)
    r = CliRunner().invoke(cli, ["--scenario", str(f), "--ipv6"])
    assert r.exit_code == 2 and "family: the file says ipv4" in r.output


def test_show_prints_a_builtin_that_reads_back_as_itself(tmp_path):
    r = CliRunner().invoke(cli, ["scenarios", "--show", "so-error"])
    assert r.exit_code == 0
    f = tmp_path / "copy.toml"
    f.write_text(r.output)
    copy, orig = load(f), scenarios.SCENARIOS["so-error"]
    assert (copy.expected, copy.client_steps, copy.server_steps) == (orig.expected, orig.client_steps,
                                                                      orig.server_steps)


def test_show_checks_a_users_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text(_replace('do = "close"', 'do = "listen"'))
    r = CliRunner().invoke(cli, ["scenarios", "--show", str(f)])
    assert r.exit_code == 2 and "server[2].do: unknown step 'listen'" in r.output


def test_late_steps_follow_writes():
    from tracer.collect.repro import late_steps

    sc = scenarios.SCENARIOS["so-error"]
    assert [s.do for _, s in late_steps(sc, None)] == ["write", "getsockopt", "write", "getsockopt"]
    assert [s.do for _, s in late_steps(sc, 1)] == ["write", "getsockopt", "getsockopt"]
    assert [s.do for _, s in late_steps(sc, 3)] == ["write", "getsockopt", "write", "getsockopt", "write"]
    assert [s.do for _, s in late_steps(scenarios.SCENARIOS["close"], 2)] == ["write", "write"]


def test_parse_names_the_file_given():
    with pytest.raises(ScenarioFileError, match=r"^here\.toml:1: title: "):
        parse("title = 1\n", "here.toml", "here")
