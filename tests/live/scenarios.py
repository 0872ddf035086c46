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
    # Ctrl-C while attached: probes and the reproduction's process must go away.
    "sigint": {"sigint": ["--delay", "30"]},
}
