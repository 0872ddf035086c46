"""The boot's BTF cache (tracer/kernel/btf_cache.py): the same answers as the BTF itself,
errors included, and a second run that asks the same questions never reads the BTF."""
import pytest

from tracer.kernel import btf_cache
from tracer.kernel.btf import Btf, BtfError

from .test_btf import build_sample

QUESTIONS = [("field", "outer", "g"), ("field", "outer", "in.state"), ("enum_values", "color"),
             ("has_struct", "outer"), ("func_exists", "my_func"), ("func_exists", "nope"),
             ("field", "outer", "nope"), ("enum_values", "nocolor"), ("tracepoint_proto", "nope")]


def _answer(obj, q):
    try:
        return True, getattr(obj, q[0])(*q[1:])
    except BtfError as exc:
        return False, str(exc)


@pytest.fixture
def blob(tmp_path):
    path = tmp_path / "vmlinux"
    path.write_bytes(build_sample().blob())
    return path


def test_answers_are_the_btfs_and_the_second_run_reads_no_btf(blob, tmp_path, monkeypatch):
    cache = tmp_path / "run" / "btf.pickle"
    truth = Btf.load(str(blob))
    first = btf_cache.CachedBtf(blob, cache)
    assert [_answer(first, q) for q in QUESTIONS] == [_answer(truth, q) for q in QUESTIONS]
    first.save()
    assert cache.exists()

    def no_btf(*_a, **_k):
        raise AssertionError("the BTF was read although every answer was cached")

    monkeypatch.setattr(Btf, "load", no_btf)
    second = btf_cache.CachedBtf(blob, cache)
    assert [_answer(second, q) for q in QUESTIONS] == [_answer(truth, q) for q in QUESTIONS]


def test_a_broken_cache_is_read_again_and_said(blob, tmp_path, capsys):
    cache = tmp_path / "btf.pickle"
    cache.write_bytes(b"not a pickle")
    again = btf_cache.CachedBtf(blob, cache)
    assert again.enum_values("color") == {"RED": 0, "GREEN": 7, "NEG": -2}
    assert "could not be read" in capsys.readouterr().err
    again.save()
    assert btf_cache.CachedBtf(blob, cache).enum_values("color") == {"RED": 0, "GREEN": 7, "NEG": -2}


def test_another_format_is_ignored(blob, tmp_path):
    import pickle

    cache = tmp_path / "btf.pickle"
    cache.write_bytes(pickle.dumps({"format": 0, "answers": {("enum_values", "color"): (True, {"RED": 9})}}))
    assert btf_cache.CachedBtf(blob, cache).enum_values("color")["RED"] == 0
