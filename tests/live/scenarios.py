"""The scenarios every VM boot runs (tests/live/guest_runner.py), by name.

Paths under {out} are inside the directory shared writable with the guest.
"""

SCENARIOS = {
    # The article's case with a third write, for machines and recorded for replay.
    "writes3_json": {"args": ["--writes", "3", "--json", "--record", "{out}/writes3.rec.jsonl"]},
    # What a person sees by default.
    "default_human": {"args": []},
    # The same reproduction through the other backends, to compare what each sees.
    "fentry_json": {"args": ["--backend", "fentry", "--writes", "3", "--json"]},
    "tracepoint_json": {"args": ["--backend", "tracepoint", "--writes", "3", "--json"]},
    "doctor_json": {"args": ["doctor", "--json"]},
    # Every scenario under one loaded program, judged against the source (--check), and over IPv6.
    "all_json": {"args": ["--scenario", "all", "--check", "--json"]},
    "all_ipv6_json": {"args": ["--scenario", "all", "--ipv6", "--check", "--json"]},
    # Every scenario with fentry (each argument at the slot the kernel's BTF gives) and with
    # tracepoints (what this kernel's tracepoints can see: tests/live/test_vm_eras.py).
    "fentry_all_json": {"args": ["--backend", "fentry", "--scenario", "all", "--check", "--json"]},
    "tracepoint_all_json": {"args": ["--backend", "tracepoint", "--scenario", "all", "--check", "--json"]},
    # Ctrl-C while attached: probes and the reproduction's process must go away.
    "sigint": {"sigint": ["--delay", "30"]},
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
