"""Shared fixtures for the unit tests: the real 6.1 recording, loaded fresh per test."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # plain `pytest` from elsewhere: make `tracer` importable
    sys.path.insert(0, str(ROOT))

from tracer.record.recording import Recording  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
REC_6_1 = DATA / "debian-6.1.0-56-writes3.jsonl"


@pytest.fixture
def rec_path() -> Path:
    """Recorded on Debian 12's 6.1.0-56-amd64 in a VM: kprobe backend, --writes 3."""
    return REC_6_1


@pytest.fixture
def rec(rec_path) -> Recording:
    """A fresh Recording per test (annotate() sorts rec.events in place)."""
    return Recording.load(rec_path)
