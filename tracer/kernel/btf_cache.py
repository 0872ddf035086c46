"""The answers the tool asks of the kernel's BTF, kept for the rest of the boot.

Reading /sys/kernel/btf/vmlinux means walking ~125,000 type records in
Python (0.3 s here), and the tool asks the same few dozen questions every run
(field offsets, TCP state names, prototypes, whether a function exists). The
vmlinux BTF cannot change while the kernel runs, so the answers are stored in
/run (tmpfs, gone at reboot), keyed by the boot's id and the kernel release;
a question not asked before loads the BTF once and joins the stored answers.

CachedBtf answers like tracer.kernel.btf.Btf for the methods the tool uses,
errors included (a BtfError is an answer too).
"""
from __future__ import annotations

import os
import pickle
import sys
import tempfile
from pathlib import Path

from tracer.kernel.btf import Btf, BtfError

CACHE_DIR = Path("/run/trace-halfclose")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
# Pickled by this tool into a root-only directory; a file of another format or version is ignored.
FORMAT = 1


def cache_file(cache_dir: Path = CACHE_DIR, boot_id: Path = BOOT_ID) -> Path:
    return cache_dir / f"btf-{boot_id.read_text().strip()}-{os.uname().release}.pickle"


class CachedBtf:
    """Btf's questions, answered from the cache when this boot asked them before."""

    def __init__(self, path: Path, cache: Path):
        self.path, self.cache = path, cache
        self._btf: Btf | None = None
        self._answers: dict[tuple, tuple[bool, object]] = self._read()
        self._new = False

    def _read(self) -> dict:
        """The stored answers; none when there is no cache yet or it is not ours."""
        try:
            with open(self.cache, "rb") as f:
                stored = pickle.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
            # Only this tool writes there (root only); a broken file is replaced by the next save.
            sys.stderr.write(f"trace-halfclose: note: the BTF cache {self.cache} could not be read ({exc}); "
                             "reading the BTF again\n")
            return {}
        if not isinstance(stored, dict) or stored.get("format") != FORMAT:
            return {}
        return stored["answers"]

    def _ask(self, *question):
        if question not in self._answers:
            if self._btf is None:
                self._btf = Btf.load(str(self.path))
            try:
                self._answers[question] = (True, getattr(self._btf, question[0])(*question[1:]))
            except BtfError as exc:
                self._answers[question] = (False, str(exc))
            self._new = True
        ok, value = self._answers[question]
        if not ok:
            raise BtfError(value)
        return value

    def save(self) -> None:
        """Store the answers (when some are new): written whole, then renamed into place."""
        if not self._new:
            return
        self.cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache.parent, prefix=".btf-")
        with os.fdopen(fd, "wb") as f:
            pickle.dump({"format": FORMAT, "answers": self._answers}, f)
        os.replace(tmp, self.cache)
        self._new = False

    # The questions the tool asks (tracer/kernel/{offsets,names,view}.py).
    def field(self, struct_name: str, member_path: str):
        return self._ask("field", struct_name, member_path)

    def enum_values(self, enum_name: str) -> dict[str, int]:
        return self._ask("enum_values", enum_name)

    def enum_with_value(self, enumerator: str) -> dict[str, int]:
        return self._ask("enum_with_value", enumerator)

    def func_proto(self, name: str):
        return self._ask("func_proto", name)

    def func_exists(self, name: str) -> bool:
        return self._ask("func_exists", name)

    def tracepoint_proto(self, name: str):
        return self._ask("tracepoint_proto", name)

    def has_struct(self, name: str) -> bool:
        return self._ask("has_struct", name)


def keep(btf) -> None:
    """Store what this run asked of a CachedBtf (nothing to do for a plain Btf)."""
    if isinstance(btf, CachedBtf):
        btf.save()


def writable(cache_dir: Path = CACHE_DIR) -> bool:
    """Whether this process can keep things for the boot: root, and a writable /run (a
    virtme-ng guest sees the host's files read-only: there nothing is kept)."""
    if os.geteuid() != 0 or not BOOT_ID.exists():
        return False
    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(cache_dir, os.W_OK)


def load(path: Path, cache_dir: Path = CACHE_DIR) -> Btf | CachedBtf:
    """The BTF at path, through the boot's cache when this process may keep one."""
    if not path.exists() or not writable(cache_dir):
        return Btf.load(str(path))  # for a missing file, its error names it
    return CachedBtf(path, cache_file(cache_dir))
