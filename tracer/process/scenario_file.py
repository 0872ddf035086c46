"""A scenario as a TOML file: read, checked, and turned into a Scenario value. Pure
(it reads the file it is given and nothing else; no BPF, no sockets).

The format (README "Your own scenario"; the built-ins in tracer/scenarios/*.toml):

    title = "..."                 # required
    description = "..."           # optional
    family = "any"                # any (the run's --ipv6 decides) | ipv4 | ipv6
    sigpipe = "ignore"            # the client's SIGPIPE: ignore (SIG_IGN) | default (SIG_DFL)
    eras = ["..."]                # keys of tracer/kernel/eras.py that change what happens
    [sysctl]                      # written in the reproduction's namespace only; net.* only
    net.ipv4.tcp_fin_timeout = 120
    [expect]
    peer_state = "CLOSE_WAIT"     # the client's state once the server's close arrived
    [[server]]                    # in order: accept first, then read/sleep/setsockopt/shutdown/close/exit
    do = "accept"
    [[client]]                    # in order: write/read/getsockopt/poll/shutdown/sleep/close
    do = "write"
    expect = "success"            # optional, with `why` (its source citation)
    why = ["..."]
    rst = ["timewait"]            # optional: who answers this step with an RST ([] = nobody)
    rst_why = ["..."]
    sigpipe = "ignored"           # optional: ignored | none | kills, with sigpipe_why

Every error is one ScenarioFileError: the file, the line, the key, what is wrong
and what is allowed.
"""
from __future__ import annotations

import errno as _errno
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tracer.process.scenario_model import (POLL_BITS, RST_SENDERS, SEND_FLAGS, SIGPIPE_EXPECTATIONS, ClientStep,
                                           Expected, Scenario, ServerStep)


class ScenarioFileError(ValueError):
    """A scenario file that cannot be run: `file:line: key: what is wrong`."""

    def __init__(self, path: str, line: int, key: str, what: str):
        super().__init__(f"{path}:{line}: {key}: {what}")
        self.path, self.line, self.key, self.what = path, line, key, what


TOP_KEYS = ("name", "title", "description", "family", "sigpipe", "eras", "sysctl", "expect", "server", "client")
FAMILIES = ("any", "ipv4", "ipv6")
SIGPIPE_HANDLING = ("ignore", "default")
PEER_STATES = ("CLOSE_WAIT", "CLOSE")
SHUTDOWN = ("rd", "wr", "rdwr")
SOCKOPTS = ("SO_LINGER", "SO_RCVBUF", "SO_SNDBUF")
GETSOCKOPTS = ("SO_ERROR",)
WHEN = ("connected", "peer closed")
EXPECT_KEYS = ("expect", "why", "rst", "rst_why", "sigpipe", "sigpipe_why")
# The keys each step may have besides `do`, by side and step.
SERVER_STEPS: dict[str, tuple[str, ...]] = {
    "accept": (), "read": ("bytes",), "sleep": ("seconds",), "setsockopt": ("option", "value"),
    "shutdown": ("how",), "close": (), "exit": (),
}
CLIENT_STEPS: dict[str, tuple[str, ...]] = {
    "write": ("bytes", "data", "flags", "when"), "read": ("bytes",), "getsockopt": ("option",),
    "poll": ("events", "timeout_ms"), "shutdown": ("how",), "sleep": ("seconds", "when"), "close": (),
}
# The steps after which the server's socket is gone, and those that send the client a FIN or RST.
SERVER_GONE = ("close", "exit")
SERVER_ENDS = ("close", "exit")
MAX_BYTES = 16 * 1024 * 1024
SYSCTL_NAME = re.compile(r"net(\.[A-Za-z0-9_-]+)+")
ERRNO_NAMES = frozenset(_errno.errorcode.values())


@dataclass
class _Ctx:
    path: str
    text: str

    def line_of(self, table: str | None, index: int | None, key: str | None) -> int:
        """The line of `key` in the table `table` (its index-th [[table]] for an array), or of the
        table's header, or 1. Found by scanning the text: tomllib keeps no positions."""
        lines = self.text.splitlines()
        start, end = 0, len(lines)
        if table is not None:
            headers = [i for i, ln in enumerate(lines)
                       if re.match(rf"\s*\[\[?\s*{re.escape(table)}\s*\]\]?\s*(#.*)?$", ln)]
            if index is not None:
                headers = [i for i in headers if lines[i].lstrip().startswith("[[")]
                headers = headers[index:index + 1]
            if not headers:
                return 1
            start = headers[0]
            end = next((i for i in range(start + 1, len(lines)) if re.match(r"\s*\[", lines[i])), len(lines))
        else:
            end = next((i for i in range(len(lines)) if re.match(r"\s*\[", lines[i])), len(lines))
        if key is not None:
            first = key.split(".")[0] if table != "sysctl" else key
            for i in range(start, end):
                if re.match(rf"""\s*["']?{re.escape(first)}["']?\s*[=.]""", lines[i]):
                    return i + 1
        return start + 1

    def error(self, table: str | None, index: int | None, key: str | None, what: str, shown: str | None = None):
        if shown is None and key is not None and index is not None:
            shown = f"{table}[{index + 1}].{key}"  # a step's key: server[2].how
        elif shown is None and key is not None and table == "expect":
            shown = f"expect.{key}"
        raise ScenarioFileError(self.path, self.line_of(table, index, key), shown or key or table or "file", what)


def _choices(values) -> str:
    return ", ".join(str(v) for v in values)


def _type_name(v) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(v), type(v).__name__)


def load(path: str | Path) -> Scenario:
    """Read and check the file; ScenarioFileError for anything wrong with it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioFileError(str(path), 0, "file", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioFileError(str(path), 0, "file", f"cannot be read ({exc})") from None
    return parse(text, str(path), default_name=p.stem)


def parse(text: str, path: str, default_name: str, builtin: bool = False) -> Scenario:
    ctx = _Ctx(path, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        line = int(m.group(1)) if m else 1
        what = re.sub(r" \(at line .*", "", msg)
        raise ScenarioFileError(path, line, "TOML", f"not valid TOML: {what}") from None
    for key in data:
        if key not in TOP_KEYS:
            ctx.error(None, None, key, f"unknown key; allowed: {_choices(TOP_KEYS)}")

    def want(table, index, key, value, kind, what):
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            ctx.error(table, index, key, f"is {_type_name(value)}, must be {what}")
        return value

    def strings(table, index, key, value) -> tuple[str, ...]:
        want(table, index, key, value, list, "a list of strings")
        for v in value:
            want(table, index, key, v, str, "a list of strings")
        return tuple(value)

    name = want(None, None, "name", data.get("name", default_name), str, "a string")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        ctx.error(None, None, "name", f"is {name!r}: letters, digits, '.', '_' and '-' only")
    if "title" not in data:
        ctx.error(None, None, None, "a scenario needs a title (title = \"...\")", shown="title")
    title = want(None, None, "title", data["title"], str, "a string")
    description = want(None, None, "description", data.get("description", ""), str, "a string")
    family = want(None, None, "family", data.get("family", "any"), str, "a string")
    if family not in FAMILIES:
        ctx.error(None, None, "family", f"is {family!r}; allowed: {_choices(FAMILIES)}")
    sigpipe = want(None, None, "sigpipe", data.get("sigpipe", "ignore"), str, "a string")
    if sigpipe not in SIGPIPE_HANDLING:
        ctx.error(None, None, "sigpipe", f"is {sigpipe!r}; allowed: {_choices(SIGPIPE_HANDLING)}")
    eras = strings(None, None, "eras", data.get("eras", []))
    from tracer.kernel.eras import BY_KEY

    for era in eras:
        if era not in BY_KEY:
            ctx.error(None, None, "eras", f"{era!r} is not a known era; allowed: {_choices(BY_KEY)}")

    sysctls = _sysctls(ctx, want(None, None, "sysctl", data.get("sysctl", {}), dict, "a table"))
    expect = want(None, None, "expect", data.get("expect", {}), dict, "a table")
    for key in expect:
        if key != "peer_state":
            ctx.error("expect", None, key, "unknown key; allowed: peer_state")
    peer_state = expect.get("peer_state")
    if peer_state is not None and (not isinstance(peer_state, str) or peer_state not in PEER_STATES):
        ctx.error("expect", None, "peer_state", f"is {peer_state!r}; allowed: {_choices(PEER_STATES)}")

    server_raw = want(None, None, "server", data.get("server", []), list, "an array of tables ([[server]])")
    client_raw = want(None, None, "client", data.get("client", []), list, "an array of tables ([[client]])")
    server = tuple(_step(ctx, "server", i, s, SERVER_STEPS, want, strings) for i, s in enumerate(server_raw))
    client = tuple(_step(ctx, "client", i, s, CLIENT_STEPS, want, strings) for i, s in enumerate(client_raw))
    _reachable(ctx, server, client)
    sc = _scenario(ctx, name, title, description, family, sigpipe, eras, sysctls, peer_state, server, client,
                   text if not builtin else None)
    return sc


def _sysctls(ctx: _Ctx, table: dict) -> tuple[tuple[str, str], ...]:
    """Dotted keys nest in TOML (net.ipv4.x = 1 is {net: {ipv4: {x: 1}}}): flattened again."""
    out: list[tuple[str, str]] = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
            return
        if not prefix.startswith("net.") or not SYSCTL_NAME.fullmatch(prefix):
            ctx.error("sysctl", None, prefix, "only net.* sysctls can be set (in the reproduction's own "
                      "network namespace), e.g. net.ipv4.tcp_fin_timeout")
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            ctx.error("sysctl", None, prefix, f"is {_type_name(value)}, must be an integer or a string")
        out.append((prefix, str(value)))

    walk("", table)
    return tuple(out)


def _step(ctx: _Ctx, side: str, i: int, raw, allowed: dict, want, strings):
    key = f"{side}[{i + 1}]"
    if not isinstance(raw, dict):
        ctx.error(side, None, None, f"is {_type_name(raw)}, must be an array of tables ([[{side}]])", shown=side)
    if "do" not in raw:
        ctx.error(side, i, None, f"a step needs `do`; allowed: {_choices(allowed)}", shown=f"{key}.do")
    do = raw["do"]
    if not isinstance(do, str) or do not in allowed:
        ctx.error(side, i, "do", f"unknown step {do!r}; allowed on the {side}: {_choices(allowed)}",
                  shown=f"{key}.do")
    keys = ("do", *allowed[do], *EXPECT_KEYS) if side == "client" else ("do", *allowed[do], "rst", "rst_why")
    for k in raw:
        if k not in keys:
            ctx.error(side, i, k, f"not a key of a {side} `{do}` step; allowed: {_choices(keys[1:])}",
                      shown=f"{key}.{k}")

    def get(k, kind, what, default=None):
        return want(side, i, k, raw[k], kind, what) if k in raw else default

    def shown(k):
        return f"{key}.{k}"

    args: dict = {}
    if do in ("read", "write"):
        n = get("bytes", int, "an integer (bytes)")
        if n is not None and not 1 <= n <= MAX_BYTES:
            ctx.error(side, i, "bytes", f"is {n}, must be from 1 to {MAX_BYTES}", shown("bytes"))
        args["bytes"] = n
    if do == "write":
        data = get("data", str, "a string (the bytes to write)")
        if data is not None and args["bytes"] is not None:
            ctx.error(side, i, "data", "give `bytes` or `data`, not both", shown("data"))
        if data is not None and not data:
            ctx.error(side, i, "data", "is empty: a write needs at least one byte", shown("data"))
        args["data"] = data
        flags = strings(side, i, "flags", raw.get("flags", []))
        for f in flags:
            if f not in SEND_FLAGS:
                ctx.error(side, i, "flags", f"{f!r} is not a flag this tool sends; allowed: {_choices(SEND_FLAGS)}",
                          shown("flags"))
        args["flags"] = flags
    if "when" in allowed[do]:
        when = get("when", str, "a string", "peer closed")
        if when not in WHEN:
            ctx.error(side, i, "when", f"is {when!r}; allowed: {_choices(WHEN)}", shown("when"))
        args["when"] = when
    if do == "sleep":
        s = raw.get("seconds")
        if s is None:
            ctx.error(side, i, None, "a sleep needs `seconds`", shown("seconds"))
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 60:
            ctx.error(side, i, "seconds", f"is {s!r}, must be a number from 0 to 60", shown("seconds"))
        args["seconds"] = float(s)
    if do == "shutdown":
        how = get("how", str, "a string")
        if how not in SHUTDOWN:
            ctx.error(side, i, "how" if "how" in raw else None, f"is {how!r}; allowed: {_choices(SHUTDOWN)}",
                      shown("how"))
        args["how"] = how
    if do == "setsockopt":
        opt = get("option", str, "a string")
        if opt not in SOCKOPTS:
            ctx.error(side, i, "option" if "option" in raw else None,
                      f"is {opt!r}; allowed: {_choices(SOCKOPTS)}", shown("option"))
        value = raw.get("value")
        if opt == "SO_LINGER":
            if (not isinstance(value, list) or len(value) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
                ctx.error(side, i, "value" if "value" in raw else None,
                          f"is {value!r}, must be [on, seconds] for SO_LINGER, e.g. [1, 0]", shown("value"))
            args["value"] = tuple(value)
        else:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BYTES:
                ctx.error(side, i, "value" if "value" in raw else None,
                          f"is {value!r}, must be an integer from 1 to {MAX_BYTES} (bytes) for {opt}",
                          shown("value"))
            args["value"] = value
        args["option"] = opt
    if do == "getsockopt":
        opt = get("option", str, "a string", "SO_ERROR")
        if opt not in GETSOCKOPTS:
            ctx.error(side, i, "option", f"is {opt!r}; allowed: {_choices(GETSOCKOPTS)}", shown("option"))
        args["option"] = opt
    if do == "poll":
        events = strings(side, i, "events", raw.get("events", ["POLLIN", "POLLOUT", "POLLRDHUP"]))
        for e in events:
            if e not in POLL_BITS:
                ctx.error(side, i, "events", f"{e!r} is not a poll event; allowed: {_choices(POLL_BITS)}",
                          shown("events"))
        t = get("timeout_ms", int, "an integer (milliseconds)", 0)
        if not 0 <= t <= 60000:
            ctx.error(side, i, "timeout_ms", f"is {t}, must be from 0 to 60000", shown("timeout_ms"))
        args["events"], args["timeout_ms"] = events, t

    # The expectations and their citations.
    exp = raw.get("expect")
    if exp is not None:
        exp = _expectation(ctx, side, i, do, exp, shown("expect"))
    why = strings(side, i, "why", raw.get("why", []))
    if why and exp is None:
        ctx.error(side, i, "why", "cites a source for an expectation that is not there: add `expect`", shown("why"))
    rst = raw.get("rst")
    if rst is not None:
        rst = strings(side, i, "rst", rst)
        for s in rst:
            if s not in RST_SENDERS:
                ctx.error(side, i, "rst", f"{s!r} is not an RST sender; allowed: {_choices(RST_SENDERS)}", shown("rst"))
    rst_why = strings(side, i, "rst_why", raw.get("rst_why", []))
    if rst_why and rst is None:
        ctx.error(side, i, "rst_why", "cites a source for an RST expectation that is not there: add `rst`",
                  shown("rst_why"))
    sig = raw.get("sigpipe")
    if sig is not None and sig not in SIGPIPE_EXPECTATIONS:
        ctx.error(side, i, "sigpipe", f"is {sig!r}; allowed: {_choices(SIGPIPE_EXPECTATIONS)}", shown("sigpipe"))
    sig_why = strings(side, i, "sigpipe_why", raw.get("sigpipe_why", []))
    if sig_why and sig is None:
        ctx.error(side, i, "sigpipe_why", "cites a source for a SIGPIPE expectation that is not there: add `sigpipe`",
                  shown("sigpipe_why"))
    if side == "client" and args.get("when") == "connected" and (exp is not None or rst is not None or sig):
        ctx.error(side, i, "expect" if exp is not None else ("rst" if rst is not None else "sigpipe"),
                  "a step before the server's close is not judged: expectations go on the later steps",
                  shown("expect"))
    common = dict(do=do, expect=exp, why=why, rst=rst, rst_why=rst_why)
    if side == "server":
        return ServerStep(**common, **args)
    return ClientStep(**common, sigpipe=sig, sigpipe_why=sig_why, **args)


def _expectation(ctx: _Ctx, side: str, i: int, do: str, value, shown: str):
    if do == "write":
        if not isinstance(value, str) or not (value in ("success", "SIGPIPE") or value in ERRNO_NAMES):
            ctx.error(side, i, "expect", f"is {value!r}; a write expects \"success\", \"SIGPIPE\" (the writer "
                      "is killed) or an errno name such as \"EPIPE\"", shown)
        return value
    if do == "read":
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return str(value)
        if not isinstance(value, str) or not (value.isdigit() or value in ERRNO_NAMES):
            ctx.error(side, i, "expect", f"is {value!r}; a read expects a byte count (0: end of file) or an "
                      "errno name such as \"ECONNRESET\"", shown)
        return value
    if do == "getsockopt":
        if value == 0:
            return "0"
        if not isinstance(value, str) or not (value == "0" or value in ERRNO_NAMES):
            ctx.error(side, i, "expect", f"is {value!r}; SO_ERROR expects 0 or an errno name such as \"EPIPE\"",
                      shown)
        return value
    if do == "poll":
        if not isinstance(value, list) or not all(isinstance(v, str) and v in POLL_BITS for v in value):
            ctx.error(side, i, "expect", f"is {value!r}; a poll expects the list of bits it returns, of "
                      f"{_choices(POLL_BITS)}", shown)
        return tuple(sorted(set(value), key=POLL_BITS.index))
    ctx.error(side, i, "expect", f"a {side} `{do}` step has no result to expect; only rst (and sigpipe on the "
              "client) can be expected here", shown)


def _reachable(ctx: _Ctx, server: tuple, client: tuple) -> None:
    """Each step must be reachable: no step after its own side's socket is gone, and
    no step waiting for something the other side never does."""
    if not server or server[0].do != "accept":
        ctx.error("server", 0 if server else None, "do" if server else None,
                  "the server's first step must be accept (the client connects first)",
                  shown="server[1].do" if server else "server")
    for i, s in enumerate(server[1:], 1):
        if s.do == "accept":
            ctx.error("server", i, "do", "accept comes once, as the server's first step", f"server[{i + 1}].do")
    for side, steps in (("server", server), ("client", client)):
        gone = next((i for i, s in enumerate(steps) if s.do in SERVER_GONE), None)
        if gone is not None:
            for i, s in enumerate(steps[gone + 1:], gone + 1):
                if s.do != "sleep":
                    ctx.error(side, i, "do", f"{s.do} after {steps[gone].do} (step {gone + 1}) can never run: the "
                              f"{side}'s socket is gone", f"{side}[{i + 1}].do")
    early = [i for i, s in enumerate(client) if getattr(s, "when", "peer closed") == "connected"]
    if early and early != list(range(len(early))):
        i = next(i for i in early if i >= len(early))
        ctx.error("client", i, "when", "steps with when = \"connected\" run before the server's steps: they "
                  "come first in the client's list", f"client[{i + 1}].when")
    sent = sum(s.size for s in client[:len(early)] if s.do == "write")
    wanted = 0
    for i, s in enumerate(server):
        if s.do == "read":
            wanted += s.bytes or 1
            if wanted > sent:
                ctx.error("server", i, "bytes" if s.bytes else "do",
                          f"the server reads {wanted} bytes in all by here, but the client writes only {sent} "
                          "before the server's close (when = \"connected\"): this read would wait forever",
                          f"server[{i + 1}].{'bytes' if s.bytes else 'do'}")
    later = client[len(early):]
    ends = any(s.do in SERVER_ENDS or (s.do == "shutdown" and s.how in ("wr", "rdwr")) for s in server)
    if later and not ends:
        i = len(early)
        ctx.error("client", i, "do", "the client's steps after connecting wait for the server's FIN or RST, "
                  "but no server step sends one (close, exit, or shutdown wr/rdwr)", f"client[{i + 1}].do")
    for name, field in (("rst", "rst"), ("sigpipe", "sigpipe")):
        holders = [(side, i) for side, steps in (("server", server), ("client", client))
                   for i, s in enumerate(steps) if getattr(s, field, None) is not None]
        if len(holders) > 1:
            side, i = holders[1]
            ctx.error(side, i, name, f"expected a second time (first in {holders[0][0]}[{holders[0][1] + 1}]): "
                      f"one {name} expectation per scenario", f"{side}[{i + 1}].{name}")


def _scenario(ctx, name, title, description, family, sigpipe, eras, sysctls, peer_state, server, client, text):
    """The Scenario value, with the expectations gathered in the file's order (each step's
    result, then its RST, then its SIGPIPE), citations in that order."""
    writes: list[str | None] = []
    reads: list[str | None] = []
    queries: list[tuple[str, str | tuple[str, ...] | None]] = []
    why: list[str] = []
    rst_from: tuple[str, ...] = ()
    sig = "none" if sigpipe == "default" else "ignored"
    for s in server:
        why += list(s.rst_why)
        if s.rst is not None:
            rst_from = s.rst
    for s in client:
        if getattr(s, "when", "peer closed") == "connected":
            continue
        if s.do == "write":
            writes.append(s.expect)
        elif s.do == "read":
            reads.append(s.expect)
        elif s.do in ("getsockopt", "poll"):
            queries.append((s.label, s.expect))
        why += list(s.why) + list(s.rst_why) + list(s.sigpipe_why)
        if s.rst is not None:
            rst_from = s.rst
        if s.sigpipe is not None:
            sig = s.sigpipe
    while writes and writes[-1] is None:
        writes.pop()
    expected = Expected(writes=tuple(writes), reads=tuple(reads), queries=tuple(queries),
                        peer_state=peer_state, rst_from=rst_from, sigpipe=sig, why=tuple(why))
    return Scenario(name=name, title=title, description=description, family=family,
                    sigpipe_default=sigpipe == "default",
                    sysctls=sysctls, server_steps=server, client_steps=client, expected=expected, eras=eras,
                    source_text=text, source_path=ctx.path)
