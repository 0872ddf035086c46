"""The tool installed as a user gets it: `pip install .` (not editable) of this
checkout into a new venv made as README says (`/usr/bin/python3 -m venv
--system-site-packages`, for Debian's bcc), then run from a directory outside
the checkout: --ebpf as a normal user, replay of a recording, and a live run.

It catches what an editable install hides: the BPF sources must ship in the
wheel (tracer/bpf, mapped from bpf/ by pyproject.toml), the reproduction's
child must start from the installed package (python -m tracer.collect.repro_child).
Only the live run needs root; pip may fetch click and rich (from its cache or PyPI).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")
RECORDING = ROOT / "tests" / "unit" / "data" / "debian-6.1.0-56-writes3.jsonl"
pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def installed():
    """(the venv's trace-halfclose, a directory outside the checkout), readable by every user."""
    require(SYSTEM_PYTHON.exists(), f"{SYSTEM_PYTHON} missing")
    probe = subprocess.run([str(SYSTEM_PYTHON), "-c", "import bcc, venv, ensurepip"], capture_output=True, text=True)
    require(probe.returncode == 0, f"{SYSTEM_PYTHON} lacks bcc or venv (python3-bpfcc, python3-venv): {probe.stderr}")
    top = Path(tempfile.mkdtemp(prefix="thc-install-"))
    top.chmod(0o755)  # a normal user runs --ebpf from here
    try:
        # The files a build of the package reads, copied: the build then leaves nothing in the checkout.
        src = top / "src"
        for name in ("pyproject.toml", "README.md"):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
        for tree in ("tracer", "bpf"):
            shutil.copytree(ROOT / tree, src / tree, ignore=shutil.ignore_patterns("__pycache__"))
        venv = top / "venv"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--system-site-packages", str(venv)], check=True, env=env)
        pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", str(src)],
                             capture_output=True, text=True, env=env, timeout=600)
        assert pip.returncode == 0, pip.stdout + pip.stderr
        shutil.rmtree(src)  # from here on only the installed package exists
        elsewhere = top / "elsewhere"
        elsewhere.mkdir(mode=0o755)
        yield venv / "bin" / "trace-halfclose", elsewhere, env
    finally:
        shutil.rmtree(top, ignore_errors=True)


def run(installed, *args: str, as_nobody: bool = False, timeout: int = 300) -> subprocess.CompletedProcess:
    exe, cwd, env = installed
    cmd = [str(exe), *args]
    if as_nobody and os.geteuid() == 0:
        require(shutil.which("setpriv") is not None, "setpriv (util-linux) is needed to drop root")
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_ebpf_prints_the_joined_text_from_the_installed_package(installed):
    p = run(installed, "--ebpf", as_nobody=True)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert '#line 1 "bpf/common.bpf.c"' in p.stdout and '#line 1 "bpf/repro/' in p.stdout
    include = re.search(r"^ \*\s+-I(\S+)$", p.stdout, re.M)  # the cflags, in the text's first comment
    assert include and include.group(1).endswith("site-packages/tracer/bpf"), p.stdout[:1500]


def test_replay_of_a_recording(installed):
    p = run(installed, "replay", str(RECORDING))
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert "write 2" in p.stdout and "EPIPE" in p.stdout


def test_live_run_from_the_installed_package(installed):
    require(os.geteuid() == 0, "the live run needs root")
    p = run(installed, "--json")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    writes = {o["index"]: o for o in lines if o["type"] == "write"}
    assert writes[1]["ret"] == 6 and writes[1]["errno"] is None
    assert (writes[2]["ret"], writes[2]["errno"]) == (-1, "EPIPE")
