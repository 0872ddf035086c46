"""A BPF ring buffer read from its mapped pages, records as bytes, many at a time.

bcc's ring_buffer_poll() calls a Python function per record through ctypes: some
5 µs each here, too slow for a busy server's 100,000+ events a second. The ring
buffer's memory can be mapped by user space (kernel/bpf/ringbuf.c,
Documentation/bpf/ringbuf.rst, Linux 5.8+): a consumer page (consumer position,
written by user space), then, read-only, a producer page (producer position)
and the data pages, mapped twice in a row so a record that wraps around reads
as one piece. Each record has an 8-byte header: its length, with
BPF_RINGBUF_BUSY_BIT (1 << 31: reserved, not committed yet) and
BPF_RINGBUF_DISCARD_BIT (1 << 30), and the page offset; records are 8-aligned.

Every record of this tool's `events` buffer is one struct hc_event (RECORD
bytes): the available region is cut in fixed steps by struct.iter_unpack, in C.
"""
from __future__ import annotations

import mmap
import os
import select
import struct

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER = 8
POS = struct.Struct("<Q")


def _max_entries(fd: int) -> int:
    """The map's size in bytes (a ring buffer's max_entries), from /proc/self/fdinfo."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("max_entries:"):
                return int(line.split()[1])
    raise OSError(f"fd {fd}: no max_entries in /proc/self/fdinfo (not a BPF map?)")


class RingReader:
    """Reads the fixed-size records of one BPF ring buffer map (its fd)."""

    def __init__(self, map_fd: int, record: int):
        self.fd = map_fd
        self.size = _max_entries(map_fd)
        self.mask = self.size - 1
        self.page = mmap.PAGESIZE
        self.step = (record + HEADER + 7) & ~7
        self.record = record
        pad = self.step - HEADER - record
        self.cut = struct.Struct(f"<I{HEADER - 4}x{record}s{pad}x")
        # hc_event's ts_ns, sk, kind and fd (offsets 0, 8, 36, 40), for the rows the watch groups by.
        self.head = struct.Struct(f"<{HEADER}xQQ20xIi{record - 44 + pad}x")
        self.consumer = mmap.mmap(map_fd, self.page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self.data = mmap.mmap(map_fd, self.page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=self.page)
        self.poller = select.poll()
        self.poller.register(map_fd, select.POLLIN)

    def wait(self, timeout_ms: int) -> None:
        """Until there is something to read, or timeout_ms. A signal ends it early (EINTR:
        Python retries poll() unless the handler raises, and the tool's handler raises)."""
        if self._available() == 0 and timeout_ms > 0:
            self.poller.poll(timeout_ms)

    def backlog(self) -> float:
        """How full the buffer is (0..1): how far behind the reader is."""
        return self._available() / self.size

    def _available(self) -> int:
        return POS.unpack_from(self.data, 0)[0] - POS.unpack_from(self.consumer, 0)[0]

    def read(self, most: int) -> list[tuple[int, int, int, int, bytes]]:
        """The committed records, up to `most` of them, oldest first, as (ts_ns, sk, kind, fd,
        record) rows; their space is given back."""
        cons = POS.unpack_from(self.consumer, 0)[0]
        prod = POS.unpack_from(self.data, 0)[0]
        n = min(prod - cons, most * self.step, self.size)
        n -= n % self.step
        if n <= 0:
            return []
        start = self.page + (cons & self.mask)
        chunk = self.data[start:start + n]
        out = []
        taken = 0
        for (length, rec), head in zip(self.cut.iter_unpack(chunk), self.head.iter_unpack(chunk)):
            if length & BUSY_BIT:
                break  # reserved, not committed yet: the next read takes it
            taken += self.step
            if not length & DISCARD_BIT:
                if length != self.record:
                    raise ValueError(f"a ring buffer record of {length & 0x3FFFFFFF} bytes, not {self.record}: "
                                     "the buffer holds another struct than hc_event")
                out.append(head + (rec,))
        POS.pack_into(self.consumer, 0, cons + taken)
        return out

    def close(self) -> None:
        self.consumer.close()
        self.data.close()


def available() -> bool:
    """Read this way on x86-64 only: hc_event's layout is little-endian and 64-bit, and x86's
    ordered loads make a record whose header reads committed whole when copied after it
    (elsewhere bcc's ring_buffer_poll, with its memory barriers, reads it)."""
    return os.uname().machine == "x86_64"
