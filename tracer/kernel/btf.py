"""Minimal reader for the kernel's BTF (BPF Type Format) type information.

Why this exists: the BPF programs read kernel struct fields by offset.  Those
offsets must come from the *running* kernel (/sys/kernel/btf/vmlinux), not
from whatever kernel headers happen to be installed, which may belong to a
different kernel build.  This module answers "where is field X of struct Y,
how big is it, is it a bitfield?" plus a few existence checks.

Written from the format description in the kernel's Documentation/bpf/btf.rst
and include/uapi/linux/btf.h.  Pure stdlib, Python 3.11.

Layout recap (all little endian; big-endian BTF is rejected):
  header:  u16 magic=0xeB9F, u8 version, u8 flags, u32 hdr_len,
           u32 type_off, type_len, str_off, str_len  (offsets are relative
           to the end of the header, i.e. to hdr_len)
  type:    u32 name_off, u32 info, u32 size_or_type, then kind-specific data
           info: bits 0-15 vlen, bits 24-28 kind, bit 31 kind_flag
Type ids are implicit: the n-th record in the type section has id n (from 1);
id 0 is void.

Speed: load() walks the type section once, remembering only where each record
starts and the names of structs/unions/enums/funcs (~0.1-0.2 s for a ~5 MB
vmlinux BTF).  Members are decoded on demand.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

__all__ = ["Btf", "BtfError", "FieldLoc", "FuncProto", "Param"]

# BTF kinds (uapi/linux/btf.h).
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR = 9, 10, 11, 12, 13, 14
DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 15, 16, 17, 18, 19

# Bytes of kind-specific data following the 12-byte common record:
# (fixed part, per-vlen-item part).  Getting any of these wrong desyncs the
# whole walk, since ids are positional.
_TRAILER = {
    INT: (4, 0), PTR: (0, 0), ARRAY: (12, 0), STRUCT: (0, 12), UNION: (0, 12),
    ENUM: (0, 8), FWD: (0, 0), TYPEDEF: (0, 0), VOLATILE: (0, 0),
    CONST: (0, 0), RESTRICT: (0, 0), FUNC: (0, 0), FUNC_PROTO: (0, 8),
    VAR: (4, 0), DATASEC: (0, 12), FLOAT: (0, 0), DECL_TAG: (4, 0),
    TYPE_TAG: (0, 0), ENUM64: (0, 12),
}
# Kinds that only qualify/rename another type; we look through them.
_MODIFIERS = frozenset({TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG})
_COMPOSITE = (STRUCT, UNION)
# Only these kinds get a name index (the things the public API looks up).
_INDEXED = frozenset({STRUCT, UNION, ENUM, ENUM64, FUNC, TYPEDEF})

_MAGIC = 0xEB9F
_HDR = struct.Struct("<HBBIIIII")  # 24 bytes, the minimum hdr_len
_U32X3 = struct.Struct("<III")
_U32 = struct.Struct("<I")
_PTR_SIZE = 8  # 64-bit kernels only (x86_64/arm64)


class BtfError(Exception):
    """Missing/unreadable/malformed BTF, or a name that is not in it."""


@dataclass(frozen=True)
class FieldLoc:
    path: str          # "struct.member.path" as asked
    byte_offset: int   # from start of the outer struct; bitfields: byte of first bit
    size: int          # byte size of the field type; bitfields: see below
    bit_shift: int     # bitfields: right shift after a little-endian load at byte_offset
    bit_size: int      # bitfields: width in bits; 0 for ordinary fields
    # For bitfields `size` is the smallest load width (1/2/4/8) that covers
    # bit_shift + bit_size bits starting at byte_offset, so a caller can do
    # `(load<size>(base + byte_offset) >> bit_shift) & ((1 << bit_size) - 1)`.


@dataclass(frozen=True)
class Param:
    """One parameter of a kernel function, as BTF records it."""

    name: str  # "" when BTF has no name for it (never for a vmlinux FUNC's own prototype)
    type: str  # spelled as in C, for messages: "struct sock *", "size_t", "int *"


@dataclass(frozen=True)
class FuncProto:
    """A kernel function's prototype (BTF_KIND_FUNC -> BTF_KIND_FUNC_PROTO).

    A BPF program reads the n-th argument in slot n: PT_REGS_PARM<n+1> in a
    kprobe, ctx[n] in an fentry/fexit program, whose return value is the slot
    after every parameter (ctx[len(params)], kernel/bpf/btf.c btf_ctx_access:
    `arg == nr_args` is the return value for BPF_TRACE_FEXIT)."""

    name: str
    params: tuple[Param, ...]
    returns: str  # "void" for none

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def position(self, param: str) -> int | None:
        """The slot of the parameter named `param`, or None when the function has none by that name."""
        return self.names.index(param) if param in self.names else None

    @property
    def ret_slot(self) -> int:
        """Where an fexit program finds the return value: after every parameter."""
        return len(self.params)


class Btf:
    def __init__(self, data: bytes):
        """Parse a raw BTF blob (the contents of /sys/kernel/btf/vmlinux)."""
        if len(data) < _HDR.size:
            raise BtfError(f"BTF blob too short ({len(data)} bytes)")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = \
            _HDR.unpack_from(data, 0)
        if magic != _MAGIC:
            if magic == 0x9FEB:
                raise BtfError("big-endian BTF is not supported")
            raise BtfError(f"bad BTF magic 0x{magic:04x} (expected 0xeb9f)")
        if version != 1:
            raise BtfError(f"unsupported BTF version {version}")
        if hdr_len < _HDR.size or hdr_len > len(data):
            raise BtfError(f"bad BTF hdr_len {hdr_len}")
        # Honour hdr_len: newer headers may be longer; section offsets are
        # relative to the end of the header whatever its length.
        t0, s0 = hdr_len + type_off, hdr_len + str_off
        if t0 + type_len > len(data) or s0 + str_len > len(data):
            raise BtfError("BTF section extends past end of data (truncated file?)")
        self._types = bytes(data[t0:t0 + type_len])
        self._strs = bytes(data[s0:s0 + str_len])
        self._offs: list[int] = [0]          # _offs[id] = record start; id 0 = void
        self._names: dict[str, list[int]] = {}
        self._scan()

    @classmethod
    def load(cls, path: str = "/sys/kernel/btf/vmlinux") -> "Btf":
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise BtfError(f"{path} not found: kernel built without "
                           "CONFIG_DEBUG_INFO_BTF, or sysfs not mounted") from None
        except OSError as e:
            raise BtfError(f"cannot read {path}: {e.strerror or e}") from None
        try:
            return cls(data)
        except BtfError as e:
            raise BtfError(f"{path}: {e}") from None

    # ---- parsing -----------------------------------------------------------

    def _scan(self) -> None:
        """One pass over the type section: record offsets and index names."""
        types, end, pos = self._types, len(self._types), 0
        offs, names, trailer, unpack = self._offs, self._names, _TRAILER, _U32X3.unpack_from
        while pos < end:
            if pos + 12 > end:
                raise BtfError(f"truncated type record at type section offset {pos}")
            name_off, info, _ = unpack(types, pos)
            kind = (info >> 24) & 0x1F
            tr = trailer.get(kind)
            if tr is None:
                raise BtfError(f"unknown BTF kind {kind} for type id {len(offs)}")
            offs.append(pos)
            if name_off and kind in _INDEXED:
                names.setdefault(self._str(name_off), []).append(len(offs) - 1)
            pos += 12 + tr[0] + tr[1] * (info & 0xFFFF)
        if pos != end:
            raise BtfError("type section length does not match its records")

    def _str(self, off: int) -> str:
        if off >= len(self._strs):
            raise BtfError(f"string offset {off} outside string section")
        end = self._strs.find(b"\0", off)
        return self._strs[off:end if end >= 0 else None].decode("utf-8", "replace")

    def _rec(self, tid: int) -> tuple[int, int, int, int, int]:
        """(kind, kind_flag, vlen, name_off, size_or_type) of type id tid."""
        if not 0 < tid < len(self._offs):
            raise BtfError(f"type id {tid} out of range")
        name_off, info, st = _U32X3.unpack_from(self._types, self._offs[tid])
        return (info >> 24) & 0x1F, info >> 31, info & 0xFFFF, name_off, st

    def _kind(self, tid: int) -> int:
        return 0 if tid == 0 else self._rec(tid)[0]

    def _strip(self, tid: int) -> int:
        """Follow typedef/const/volatile/restrict/type_tag to the real type."""
        for _ in range(100):           # guard against malformed cycles
            if tid == 0:
                return 0
            kind, _, _, _, ref = self._rec(tid)
            if kind not in _MODIFIERS:
                return tid
            tid = ref
        raise BtfError("modifier chain too long (cyclic BTF?)")

    def _size(self, tid: int) -> int:
        tid = self._strip(tid)
        if tid == 0:
            return 0
        kind, _, _, _, st = self._rec(tid)
        if kind == PTR:
            return _PTR_SIZE
        if kind == ARRAY:
            elem, _idx, nelems = _U32X3.unpack_from(self._types, self._offs[tid] + 12)
            return self._size(elem) * nelems
        if kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT):
            return st
        return 0                       # FWD, FUNC, FUNC_PROTO, ...: no size

    def _members(self, tid: int):
        """Yield (name, type_id, bit_offset, bitfield_size) of a struct/union.

        With kind_flag set, member.offset packs bitfield size (high 8 bits) and
        bit offset (low 24).  Without it, offset is a plain bit offset and a
        bitfield is expressed through the INT type's encoding (see _int_bits),
        which we fold into the same (bit_offset, bitfield_size) form here.
        """
        _, kflag, vlen, _, _ = self._rec(tid)
        base = self._offs[tid] + 12
        for i in range(vlen):
            name_off, mtype, off = _U32X3.unpack_from(self._types, base + 12 * i)
            name = self._str(name_off) if name_off else ""
            if kflag:
                yield name, mtype, off & 0xFFFFFF, off >> 24
            else:
                ib = self._int_bits(mtype)
                yield (name, mtype, off + ib[0], ib[1]) if ib else (name, mtype, off, 0)

    def _int_bits(self, tid: int) -> tuple[int, int] | None:
        """For a non-kind_flag member whose type is an INT narrower than its
        storage (or with a bit offset), return (extra_bit_offset, nr_bits)."""
        tid = self._strip(tid)
        if self._kind(tid) != INT:
            return None
        size = self._rec(tid)[4]
        (enc,) = _U32.unpack_from(self._types, self._offs[tid] + 12)
        int_off, nr_bits = (enc >> 16) & 0xFF, enc & 0xFF
        if int_off or nr_bits < size * 8:
            return int_off, nr_bits
        return None

    # ---- lookups -----------------------------------------------------------

    def _named(self, name: str, kinds) -> list[int]:
        return [t for t in self._names.get(name, ()) if self._kind(t) in kinds]

    def _find_struct(self, name: str) -> int:
        ids = self._named(name, (STRUCT,)) or self._named(name, (UNION,))
        if not ids:
            raise BtfError(f"no struct or union named '{name}' in BTF")
        # Prefer a definition with members over an empty one.
        return next((t for t in ids if self._rec(t)[2]), ids[0])

    def _lookup(self, tid: int, name: str):
        """C name lookup in struct/union tid: direct members first, and members
        of anonymous struct/union members recursively (their offsets added).
        Returns (type_id, bit_offset, bitfield_size) or None."""
        for mname, mtype, off, bits in self._members(tid):
            if mname == name:
                return mtype, off, bits
            if not mname:
                sub = self._strip(mtype)
                if self._kind(sub) in _COMPOSITE:
                    hit = self._lookup(sub, name)
                    if hit:
                        return hit[0], off + hit[1], hit[2]
        return None

    def _lookup_nested(self, tid: int, name: str):
        """Fallback when `name` is not visible in tid: breadth-first search of
        struct/union-typed members embedded by value (not pointers, not
        arrays), in declaration order, shallowest match wins.  This lets
        field("sock", "skc_state") find sock.__sk_common.skc_state."""
        queue = deque([(tid, 0)])
        seen = 0
        while queue:
            cur, base = queue.popleft()
            for _mname, mtype, off, bits in self._members(cur):
                sub = self._strip(mtype)
                if bits or self._kind(sub) not in _COMPOSITE:
                    continue
                hit = self._lookup(sub, name)
                if hit:
                    return hit[0], base + off + hit[1], hit[2]
                queue.append((sub, base + off))
                seen += 1
                if seen > 10000:       # a sane kernel struct never gets here
                    return None
        return None

    def field(self, struct_name: str, member_path: str) -> FieldLoc:
        """Locate a (possibly nested, dotted) member of struct/union struct_name.

        Each path component is looked up with C semantics (anonymous members
        are transparent); if that fails, nested by-value struct members are
        searched breadth-first (see _lookup_nested).  Intermediate components
        are followed through typedefs/modifiers but never through pointers.
        """
        path = f"{struct_name}.{member_path}"
        parts = member_path.split(".")
        if not all(parts):
            raise BtfError(f"bad member path '{member_path}'")
        cur = self._find_struct(struct_name)
        bit_off, mtype, bits = 0, cur, 0
        where = f"{'union' if self._kind(cur) == UNION else 'struct'} {struct_name}"
        for i, part in enumerate(parts):
            if i:
                if bits:
                    raise BtfError(f"{path}: '{parts[i - 1]}' is a bitfield")
                cur = self._strip(mtype)
                if self._kind(cur) not in _COMPOSITE:
                    raise BtfError(f"{path}: '{'.'.join(parts[:i])}' is not a "
                                   "struct/union (pointers are not followed)")
                where = f"{struct_name}.{'.'.join(parts[:i])}"
            hit = self._lookup(cur, part) or self._lookup_nested(cur, part)
            if hit is None:
                raise BtfError(f"{where} has no member '{part}'")
            mtype, off, bits = hit
            bit_off += off
        if not bits:
            if bit_off % 8:
                raise BtfError(f"{path}: non-bitfield member at bit offset {bit_off}")
            return FieldLoc(path, bit_off // 8, self._size(mtype), 0, 0)
        shift = bit_off % 8
        need = shift + bits
        load = next((n for n in (1, 2, 4, 8) if n * 8 >= need), None)
        if load is None:
            raise BtfError(f"{path}: bitfield spans more than 8 bytes")
        return FieldLoc(path, bit_off // 8, load, shift, bits)

    def enum_values(self, enum_name: str) -> dict[str, int]:
        """Enumerators of a named ENUM/ENUM64.  kind_flag set means signed
        values (per btf.rst); otherwise they are unsigned."""
        ids = self._named(enum_name, (ENUM, ENUM64))
        if not ids:
            raise BtfError(f"no enum named '{enum_name}' in BTF")
        return self._enum_members(next((t for t in ids if self._rec(t)[2]), ids[0]))

    def enum_with_value(self, enumerator: str) -> dict[str, int]:
        """Enumerators of the enum that defines `enumerator`, named or not:
        the TCP states (TCP_ESTABLISHED, ...) live in an anonymous enum."""
        for tid in range(1, len(self._offs)):
            kind, _, vlen, _, _ = self._rec(tid)
            if kind in (ENUM, ENUM64) and vlen:
                members = self._enum_members(tid)
                if enumerator in members:
                    return members
        raise BtfError(f"no enum defines '{enumerator}' in BTF")

    def _enum_members(self, tid: int) -> dict[str, int]:
        kind, signed, vlen, _, _ = self._rec(tid)
        base, out = self._offs[tid] + 12, {}
        if kind == ENUM:
            for i in range(vlen):
                name_off, val = struct.unpack_from("<II", self._types, base + 8 * i)
                if signed and val & 0x80000000:
                    val -= 1 << 32
                out[self._str(name_off)] = val
        else:
            for i in range(vlen):
                name_off, lo, hi = _U32X3.unpack_from(self._types, base + 12 * i)
                val = (hi << 32) | lo
                if signed and val & (1 << 63):
                    val -= 1 << 64
                out[self._str(name_off)] = val
        return out

    def has_struct(self, name: str) -> bool:
        """True if a STRUCT or UNION with this name exists (FWD does not count)."""
        return bool(self._named(name, _COMPOSITE))

    def func_exists(self, name: str) -> bool:
        """True if BTF has a BTF_KIND_FUNC of that name (i.e. a kernel function
        pahole recorded; static functions that were inlined are absent)."""
        return bool(self._named(name, (FUNC,)))

    def func_proto(self, name: str) -> FuncProto:
        """The prototype of kernel function `name`: its parameters' names and types
        in order, and its return type. A BtfError when BTF has no FUNC of that name,
        when its prototype is variadic, or when several FUNCs of that name (static
        functions of different files) disagree on their parameters: then which one a
        probe would hit is unknown."""
        ids = self._named(name, (FUNC,))
        if not ids:
            raise BtfError(f"no function named '{name}' in BTF")
        protos = {self._proto(name, self._rec(t)[4]) for t in ids}
        if len({p.params for p in protos}) > 1:
            shapes = "; ".join(sorted(f"({', '.join(p.names)})" for p in protos))
            raise BtfError(f"'{name}' has {len(protos)} different prototypes in BTF: {shapes}")
        return next(iter(protos))

    def tracepoint_proto(self, name: str) -> FuncProto:
        """The arguments a raw tracepoint program gets for tracepoint `name` (ctx->args[n]
        is the n-th): its TP_PROTO, which BTF has as the typedef btf_trace_<name>, a
        pointer to a FUNC_PROTO whose first parameter is the probe's data (void *),
        dropped here (include/trace/bpf_probe.h, __DEFINE_EVENT, 6.1 and 6.12). Its
        parameters have no names in BTF, only types. A BtfError when there is no such
        typedef (the kernel has no tracepoint of that name, or predates 5.5)."""
        typedef = f"btf_trace_{name}"
        ids = self._named(typedef, (TYPEDEF,))
        if not ids:
            raise BtfError(f"no typedef '{typedef}' in BTF")
        kind, _, _, _, ref = self._rec(ids[0])
        if self._kind(ref) != PTR:
            raise BtfError(f"'{typedef}' is not a pointer to a function prototype")
        proto = self._proto(typedef, self._rec(ref)[4])
        if not proto.params or proto.params[0].type != "void *":
            raise BtfError(f"'{typedef}' does not begin with the probe's void * ({proto.params[:1]})")
        return FuncProto(name, proto.params[1:], proto.returns)

    def _proto(self, name: str, tid: int) -> FuncProto:
        kind, _, vlen, _, ret = self._rec(tid)
        if kind != FUNC_PROTO:
            raise BtfError(f"'{name}': its FUNC does not point to a FUNC_PROTO (kind {kind})")
        base, params = self._offs[tid] + 12, []
        for i in range(vlen):
            name_off, ptype = struct.unpack_from("<II", self._types, base + 8 * i)
            if not name_off and not ptype:  # the "..." of a variadic function (btf.rst, BTF_KIND_FUNC_PROTO)
                raise BtfError(f"'{name}' is variadic: its arguments have no fixed slots")
            params.append(Param(self._str(name_off) if name_off else "", self.type_name(ptype)))
        return FuncProto(name, tuple(params), self.type_name(ret))

    def type_name(self, tid: int, _depth: int = 0) -> str:
        """A type as C spells it, for messages and checks: "struct sock *",
        "const char *", "size_t" (typedefs keep their name), "void"."""
        if _depth > 50:
            raise BtfError("type chain too long (cyclic BTF?)")
        if tid == 0:
            return "void"
        kind, _, _, name_off, ref = self._rec(tid)
        name = self._str(name_off) if name_off else ""
        if kind in (INT, FLOAT, TYPEDEF):
            return name
        if kind in (STRUCT, UNION, ENUM, ENUM64, FWD):
            tag = {STRUCT: "struct", UNION: "union"}.get(kind, "enum")
            if kind == FWD:
                tag = "union" if self._rec(tid)[1] else "struct"  # FWD: kind_flag 1 means union
            return f"{tag} {name or '(anon)'}"
        if kind == PTR:
            inner = self.type_name(ref, _depth + 1)
            return inner + ("*" if inner.endswith("*") else " *")
        if kind in (CONST, VOLATILE, RESTRICT):
            word = {CONST: "const", VOLATILE: "volatile", RESTRICT: "restrict"}[kind]
            inner = self.type_name(ref, _depth + 1)
            return f"{inner} {word}" if inner.endswith("*") else f"{word} {inner}"
        if kind == TYPE_TAG:  # __user, __rcu, ...: a tag on the pointee, not part of the C type
            return self.type_name(ref, _depth + 1)
        if kind == ARRAY:
            elem, _idx, nelems = _U32X3.unpack_from(self._types, self._offs[tid] + 12)
            return f"{self.type_name(elem, _depth + 1)}[{nelems}]"
        if kind == FUNC_PROTO:
            return "function"
        return name or f"kind {kind}"
