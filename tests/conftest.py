"""Shared test helpers: in CI a missing prerequisite fails instead of skipping."""
from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, why: str) -> None:
    """Skip locally when a prerequisite is missing; in CI (CI=true) fail loudly."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {why}", pytrace=False)
    pytest.skip(why)
