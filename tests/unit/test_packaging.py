"""pyproject.toml ships what the tool needs: every package under tracer/ (they are
listed, since tracer.bpf is mapped from the top-level bpf/ and cannot be found),
and every file of bpf/ as package data. tests/live/test_install.py installs it."""
from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from tracer.collect import sources

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_is_listed_and_bpf_is_mapped_into_it():
    config = setuptools_config()
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "tracer").rglob("__init__.py")}
    assert set(config["packages"]) == found | {"tracer.bpf"}
    assert config["package-dir"] == {"tracer.bpf": "bpf"}


def test_every_bpf_file_is_package_data():
    patterns = setuptools_config()["package-data"]["tracer.bpf"]
    bpf = ROOT / "bpf"
    files = [str(p.relative_to(bpf)) for p in bpf.rglob("*") if p.is_file()]
    assert files
    for rel in files:
        assert any(fnmatch.fnmatch(rel, pat) and rel.count("/") == pat.count("/") for pat in patterns), rel


def test_bpf_dir_in_a_checkout_is_the_top_level_bpf():
    assert sources.bpf_dir() == ROOT / "bpf"


def test_every_data_file_of_the_tracer_packages_is_package_data():
    """Files beside the modules that the tool reads at run time (the kernel config fragment
    `trace-halfclose vm --kconfig` prints) must ship in the wheel too."""
    data = setuptools_config()["package-data"]
    tracer = ROOT / "tracer"
    files = [p for p in tracer.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
             and "__pycache__" not in p.parts]
    assert files
    for f in files:
        package = ".".join(f.parent.relative_to(ROOT).parts)
        assert any(fnmatch.fnmatch(f.name, pat) for pat in data.get(package, ())), f
