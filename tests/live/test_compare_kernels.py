"""`trace-halfclose compare` live: every scenario on Debian's 6.1 and 6.12, one boot each.

Both kernels carry tcp_done_with_error (6.1.103+ backport, mainline 6.11) and run the
kprobe backend in the VM, so what a program sees must be the same on both: every
write's result, errno and signal. The run is one command, as a user types it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import require
from tests.live.conftest import KERNELS
from tracer.collect import vm
from tracer.process.scenarios import ORDER

ROOT = Path(__file__).resolve().parents[2]


def test_debian_kernels_side_by_side():
    require(os.geteuid() == 0, "live VM tests need root")
    require(len(KERNELS) >= 2, f"two distro kernels with headers under /boot (found {len(KERNELS)}; "
                               "scripts/setup.sh --test installs Debian's 6.1 and 6.12)")
    require(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86_64 missing")
    kernels = KERNELS[-2:]
    args = [sys.executable, "-m", "tracer", "compare", "--scenario", "all", "--json"]
    for k in kernels:
        args += ["--kernel", str(k)]
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    objs = [json.loads(line) for line in p.stdout.splitlines()]
    meta, summary = objs[0], objs[-1]
    assert [r["kernel"] for r in meta["runs"]] == [vm.release_of(k) for k in kernels]
    assert {r["backend"] for r in meta["runs"]} == {"kprobe"}
    assert len(meta["runs"][0]["scenarios"]) == len(ORDER) == len(meta["runs"][1]["scenarios"])
    rows = [o for o in objs if o["type"] == "row"]
    visible = [o for o in rows if o["user_visible"] and not o["same"]]
    assert visible == [], visible
    assert summary["user_visible_differences"] == 0
    # the article's answer on both: write 1 succeeds, write 2 EPIPE, sk_err stored by tcp_done_with_error
    close = {o["what"]: o for o in rows if o["scenario"] == "close"}
    assert set(close["write 1"]["values"].values()) == {"6"} and set(close["write 2"]["values"].values()) == {"EPIPE"}
    assert set(close["sk_err stored by"]["values"].values()) == {"tcp_done_with_error"}
    # one progress line per kernel on stderr, ending in "done"
    for k in kernels:
        assert any(line.startswith(f"{k}: done") for line in p.stderr.splitlines()), p.stderr
