"""The scenarios every VM boot runs (tests/live/guest_runner.py), by name.

Paths under {out} are inside the directory shared writable with the guest.
"""


def noisy(record: str) -> dict:
    """Foreign connections in the guest's own namespace, to the reproduction's port 9999 and
    to 9997, while the probes are in (tests/live/noise.py; bounded, and stopped when the run
    ends); record: the run's recording, searched for their events."""
    return {"count": 50_000, "ports": [9999, 9997], "record": record}


CLIENTS = "tests/live/watch_clients.sh"

# "What if the server reads first?": the client sends 6 bytes, the server reads them and closes,
# so its close sends a FIN, not the RST of unread-data (tcp_close, net/ipv4/tcp.c).
USER_SCENARIO = """
title = "the server reads the client's bytes, then closes"
[[server]]
do = "accept"
[[server]]
do = "read"
bytes = 6
[[server]]
do = "close"
[[client]]
do = "write"
bytes = 6
when = "connected"
[[client]]
do = "write"
expect = "success"
why = ["tcp_sendmsg_locked sends in CLOSE_WAIT (net/ipv4/tcp.c)"]
rst = ["timewait", "full socket"]
[[client]]
do = "write"
expect = "EPIPE"
why = ["sk_stream_wait_connect: sock_error() takes sk_err (net/core/stream.c)"]
"""

SCENARIOS = {
    # The article's case with a third write, for machines and recorded for replay.
    "writes3_json": {"args": ["--writes", "3", "--json", "--record", "{out}/writes3.rec.jsonl"],
                     "noise": noisy("{out}/writes3.rec.jsonl")},
    # What a person sees by default.
    "default_human": {"args": []},
    # The same reproduction through the other backends, to compare what each sees.
    "fentry_json": {"args": ["--backend", "fentry", "--writes", "3", "--json", "--record", "{out}/fentry.rec.jsonl"],
                    "noise": noisy("{out}/fentry.rec.jsonl")},
    "tracepoint_json": {"args": ["--backend", "tracepoint", "--writes", "3", "--json",
                                 "--record", "{out}/tracepoint.rec.jsonl"],
                        "noise": noisy("{out}/tracepoint.rec.jsonl")},
    "doctor_json": {"args": ["doctor", "--json"]},
    # Every scenario under one loaded program, judged against the source (--check), and over IPv6.
    "all_json": {"args": ["--scenario", "all", "--check", "--json", "--record", "{out}/all.rec.jsonl"]},
    # A scenario file of the user's (USER_SCENARIO, written to {out}/mine.toml before the boot).
    "user_file_json": {"args": ["--scenario", "{out}/mine.toml", "--check", "--json"]},
    "all_ipv6_json": {"args": ["--scenario", "all", "--ipv6", "--check", "--json"]},
    # Every scenario with fentry (each argument at the slot the kernel's BTF gives) and with
    # tracepoints (what this kernel's tracepoints can see: tests/live/test_vm_eras.py).
    "fentry_all_json": {"args": ["--backend", "fentry", "--scenario", "all", "--check", "--json"]},
    "tracepoint_all_json": {"args": ["--backend", "tracepoint", "--scenario", "all", "--check", "--json"]},
    # Signals with the kprobes attached (tests/live/robustness.py run_signalled), all at once:
    # probes, processes and namespaces must go away. [ARGS, SIGNAL, [EVENT, DELAY, N]]
    "signals": {"signals": [
        [[], "SIGINT", ["child", 0.5, 1]],  # reproducing
        [[], "SIGTERM", ["attached", 0, 1]],  # attaching
        [[], "SIGHUP", ["gone", 0, 1]],  # detaching
        [[], "SIGKILL", ["child", 0.3, 1]],
        [["watch", "--json", "--", "sh", CLIENTS, "{client}", "9995", "1", "1", "0.3"], "SIGTERM", ["child", 1.5, 1]],
    ]},
    # watch: the article's C client (compiled in the guest) against `ncat -l 9999`, watched by port
    # through three backends at once, a noise connection on 9998 beside it; stopped by Ctrl-C.
    "watch_article": {
        "watch:kprobe_json": ["watch", "--backend", "kprobe", "--port", "9999", "--json",
                              "--record", "{out}/watch-kprobe.rec.jsonl"],
        "watch:kprobe_human": ["watch", "--backend", "kprobe", "--port", "9999"],
        "watch:tracepoint_json": ["watch", "--backend", "tracepoint", "--port", "9999", "--json",
                                  "--record", "{out}/watch-tracepoint.rec.jsonl"],
        "traffic": ["{out}", "9999", "1"],
    },
    # watch -- CMD: two clients at once against `ncat -l -k`, by name and as the command's processes (fentry).
    "watch_multi": {
        "watch:fentry_multi": ["watch", "--backend", "fentry", "--comm", "watch_client", "--json",
                               "--record", "{out}/watch-fentry-multi.rec.jsonl",
                               "--", "sh", "tests/live/watch_clients.sh", "{out}/watch_client", "9999", "2", "2", "0.3"],
        "client": ["{out}"],
    },
}
