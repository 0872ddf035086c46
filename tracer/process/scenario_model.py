"""A scenario as a value: the server's and the client's steps, the sysctls of its
namespace, and what the kernel source predicts for each step. Pure.
tracer/process/scenario_file.py builds it from a TOML file; tracer/process/scenarios.py
holds the built-ins.
"""
from __future__ import annotations

from dataclasses import dataclass

RST_SENDERS = ("timewait", "full socket", "active reset", "no socket")
SIGPIPE_EXPECTATIONS = ("ignored", "none", "kills")
SEND_FLAGS = ("MSG_NOSIGNAL", "MSG_DONTWAIT")
POLL_BITS = ("POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLRDNORM", "POLLWRNORM", "POLLRDHUP")
PAYLOADS = (b"hello\n", b"world\n", b"again\n")


@dataclass(frozen=True)
class Expected:
    """What the source predicts for writes 1..N ("success", an errno name, "SIGPIPE"; None: not
    judged), the reads, the SO_ERROR/poll queries, and the RST."""

    writes: tuple[str | None, ...]
    reads: tuple[str | None, ...] = ()  # "0" for end of file, a byte count, an errno name; None: not judged
    queries: tuple[tuple[str, object], ...] = ()  # (label, expected): "SO_ERROR" -> errno name or "0"; "poll" -> bits
    peer_state: str | None = None  # the client's state once the peer's close arrived (None: CLOSE_WAIT or CLOSE)
    # Who may send the RST ("timewait", "full socket", "active reset", "no socket"); any one matches. () = no RST.
    rst_from: tuple[str, ...] = ()
    sigpipe: str = "ignored"  # "ignored", "none", "kills" (SIG_DFL: the writer dies)
    why: tuple[str, ...] = ()  # the source facts, one per line, with function and file

    @property
    def read(self) -> str | None:
        """The first read's expectation (None when the scenario does not read)."""
        return self.reads[0] if self.reads else None


@dataclass(frozen=True)
class ServerStep:
    do: str  # accept | read | sleep | setsockopt | shutdown | close | exit
    bytes: int | None = None
    seconds: float = 0.0
    option: str | None = None
    value: object = None
    how: str | None = None
    expect: object = None
    why: tuple[str, ...] = ()
    rst: tuple[str, ...] | None = None
    rst_why: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClientStep:
    do: str  # write | read | getsockopt | poll | shutdown | sleep | close
    when: str = "peer closed"  # "connected": before the server's steps after accept
    bytes: int | None = None
    data: str | None = None
    flags: tuple[str, ...] = ()
    option: str | None = None
    events: tuple[str, ...] = ()
    timeout_ms: int = 0
    how: str | None = None
    seconds: float = 0.0
    expect: object = None
    why: tuple[str, ...] = ()
    rst: tuple[str, ...] | None = None
    rst_why: tuple[str, ...] = ()
    sigpipe: str | None = None
    sigpipe_why: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        """The bytes a write sends, or a read asks for."""
        if self.do == "read":
            return self.bytes or 4096
        if self.data is not None:
            return len(self.data.encode())
        return self.bytes or 6

    @property
    def label(self) -> str:
        return {"getsockopt": self.option or "SO_ERROR", "poll": "poll"}.get(self.do, self.do)

    def payload(self, index: int) -> bytes:
        """A write's bytes: its data, or the article's lines (hello, world, again, by write index) to size."""
        if self.data is not None:
            return self.data.encode()
        line = PAYLOADS[(max(index, 1) - 1) % len(PAYLOADS)]
        n = self.size
        return (line * (n // len(line) + 1))[:n]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    expected: Expected
    description: str = ""
    family: str = "any"  # any | ipv4 | ipv6
    sigpipe_default: bool = False  # SIGPIPE left at SIG_DFL
    sysctls: tuple[tuple[str, str], ...] = ()  # set in the reproduction's namespace
    server_steps: tuple[ServerStep, ...] = ()
    client_steps: tuple[ClientStep, ...] = ()
    # The kernel eras that change what happens or what can be seen (keys of tracer/kernel/eras.py's
    # ERAS, each stated there with the oldest kernel that has it and where that was read).
    eras: tuple[str, ...] = ()
    source_text: str | None = None  # a user's file: its text (kept in recordings, for replay)
    source_path: str = ""

    @property
    def early_steps(self) -> tuple[ClientStep, ...]:
        """The client's steps before the server's (after accept)."""
        return tuple(s for s in self.client_steps if s.when == "connected")

    @property
    def late_steps(self) -> tuple[ClientStep, ...]:
        """The client's steps once the peer's FIN or RST arrived."""
        return tuple(s for s in self.client_steps if s.when != "connected")

    @property
    def nosignal(self) -> bool:
        return any("MSG_NOSIGNAL" in s.flags for s in self.client_steps if s.do == "write")

    @property
    def wait_for(self) -> tuple[str, ...]:
        """The client states that show the peer's close arrived (the late steps start then)."""
        return (self.expected.peer_state,) if self.expected.peer_state else ("CLOSE_WAIT", "CLOSE")

    @property
    def write_count(self) -> int:
        return sum(1 for s in self.late_steps if s.do == "write")


