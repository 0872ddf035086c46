"""Tests for tracer.btf: synthetic BTF blobs built here, plus the running
kernel's /sys/kernel/btf/vmlinux (skipped if absent, except under CI=true)."""

import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

try:
    from tracer.kernel.btf import Btf, BtfError, FieldLoc, FuncProto, Param
except ImportError:  # plain `pytest` run: repo root may not be on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tracer.kernel.btf import Btf, BtfError, FieldLoc, FuncProto, Param

(INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT,
 FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64) = range(1, 20)

VMLINUX = "/sys/kernel/btf/vmlinux"


class BtfBuilder:
    """Encodes types + string table into a BTF blob. add_* return type ids."""

    def __init__(self):
        self.strs = bytearray(b"\0")
        self.types = bytearray()
        self.next_id = 1

    def s(self, name):
        if not name:
            return 0
        off = len(self.strs)
        self.strs += name.encode() + b"\0"
        return off

    def add(self, kind, name="", vlen=0, kflag=0, size_or_type=0, trailer=b""):
        info = (kflag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + trailer
        self.next_id += 1
        return self.next_id - 1

    def int_(self, name, size, bits=None, bit_off=0):
        enc = (bit_off << 16) | (size * 8 if bits is None else bits)
        return self.add(INT, name, size_or_type=size, trailer=struct.pack("<I", enc))

    def composite(self, kind, name, size, members, kflag=0):
        """members: (name, type_id, bit_offset[, bitfield_size])."""
        tr = b""
        for m in members:
            mname, mtype, off = m[:3]
            if kflag:
                off |= (m[3] if len(m) > 3 else 0) << 24
            tr += struct.pack("<III", self.s(mname), mtype, off)
        return self.add(kind, name, len(members), kflag, size, tr)

    def enum(self, name, values, size=4, signed=False):
        tr = b"".join(struct.pack("<Ii", self.s(n), v) for n, v in values)
        return self.add(ENUM, name, len(values), int(signed), size, tr)

    def blob(self, magic=0xEB9F, hdr_pad=0, strings_first=False):
        hdr_len = 24 + hdr_pad
        t, s = bytes(self.types), bytes(self.strs)
        type_off, str_off = (len(s), 0) if strings_first else (0, len(t))
        hdr = struct.pack("<HBBIIIII", magic, 1, 0, hdr_len,
                          type_off, len(t), str_off, len(s)) + b"\0" * hdr_pad
        return hdr + (s + t if strings_first else t + s)


def build_sample():
    """A small type graph.  The 'noise' kinds come first so a wrong trailer
    size for any of them would shift every later type id."""
    b = BtfBuilder()
    u32 = b.int_("unsigned int", 4)
    u16 = b.int_("unsigned short", 2)
    u8 = b.int_("unsigned char", 1)
    # --- noise: every other kind, with trailing data ---
    b.add(ARRAY, trailer=struct.pack("<III", u8, u32, 16))                 # u8[16]
    b.add(FWD, "fwd_only")
    proto = b.add(FUNC_PROTO, vlen=2, size_or_type=u32,
                  trailer=struct.pack("<IIII", b.s("a"), u32, b.s("b"), u16))
    b.add(FUNC, "my_func", size_or_type=proto)
    var = b.add(VAR, "my_var", size_or_type=u32, trailer=struct.pack("<I", 1))
    b.add(DATASEC, ".data", vlen=1, size_or_type=4, trailer=struct.pack("<III", var, 0, 4))
    b.add(FLOAT, "double", size_or_type=8)
    b.add(DECL_TAG, "tag", size_or_type=var, trailer=struct.pack("<i", -1))
    b.add(ENUM64, "big", vlen=2, kflag=1, size_or_type=8,
          trailer=struct.pack("<III", b.s("BIG_A"), 0, 1) + struct.pack("<III", b.s("BIG_NEG"), 0xFFFFFFFF, 0xFFFFFFFF))
    # --- the interesting bits ---
    vol_u8 = b.add(VOLATILE, size_or_type=u8)
    tagged = b.add(TYPE_TAG, "rcu", size_or_type=u16)
    # Anonymous struct inside an anonymous union (like sock_common's ports).
    ports = b.composite(STRUCT, "", 4, [("dport", u16, 0), ("num", tagged, 16)])
    anon_u = b.composite(UNION, "", 4, [("portpair", u32, 0), ("", ports, 0)])
    inner = b.composite(STRUCT, "inner", 8, [("ino", u32, 0), ("state", vol_u8, 32)])
    inner_td = b.add(TYPEDEF, "inner_t", size_or_type=inner)
    const_inner = b.add(CONST, size_or_type=inner_td)
    ptr = b.add(PTR, size_or_type=inner)
    b.add(RESTRICT, size_or_type=ptr)
    arr = b.add(ARRAY, trailer=struct.pack("<III", u16, u32, 3))             # u16[3]
    # struct outer { u32 a; union {...}; u8 f1:3, f2:5; u32 g:9; inner_t in; inner *p; u16 arr[3]; }
    b.composite(STRUCT, "outer", 40, [
        ("a", u32, 0),
        ("", anon_u, 32),
        ("f1", u8, 64, 3),
        ("f2", u8, 67, 5),
        ("g", u32, 78, 9),          # spans bytes 9 and 10: shift 6
        ("in", const_inner, 128),
        ("p", ptr, 192),
        ("arr", arr, 256),
    ], kflag=1)
    # No kind_flag: bitfields described by narrow INTs (2nd one with an INT bit offset).
    u4 = b.int_("u4", 1, bits=4)
    u3o = b.int_("u3o", 1, bits=3, bit_off=2)
    b.composite(STRUCT, "legacy", 4, [("x", u4, 8), ("y", u3o, 10), ("z", u16, 16)])
    b.enum("color", [("RED", 0), ("GREEN", 7), ("NEG", -2)], signed=True)
    b.composite(UNION, "just_union", 4, [("w", u32, 0)])
    return b


@pytest.fixture
def btf():
    return Btf(build_sample().blob())


def test_plain_and_anonymous_members(btf):
    assert btf.field("outer", "a") == FieldLoc("outer.a", 0, 4, 0, 0)
    assert btf.field("outer", "portpair") == FieldLoc("outer.portpair", 4, 4, 0, 0)
    assert btf.field("outer", "dport") == FieldLoc("outer.dport", 4, 2, 0, 0)
    assert btf.field("outer", "num") == FieldLoc("outer.num", 6, 2, 0, 0)  # through TYPE_TAG


def test_nested_path_through_typedef_const(btf):
    assert btf.field("outer", "in.ino") == FieldLoc("outer.in.ino", 16, 4, 0, 0)
    assert btf.field("outer", "in.state") == FieldLoc("outer.in.state", 20, 1, 0, 0)
    assert btf.field("outer", "in").size == 8


def test_sizes_of_ptr_and_array(btf):
    assert btf.field("outer", "p").size == 8
    assert btf.field("outer", "arr") == FieldLoc("outer.arr", 32, 6, 0, 0)


def test_omitted_intermediate_member_found_breadth_first(btf):
    loc = btf.field("outer", "state")        # lives in outer.in
    assert (loc.path, loc.byte_offset, loc.size) == ("outer.state", 20, 1)


def test_kind_flag_bitfields(btf):
    assert btf.field("outer", "f1") == FieldLoc("outer.f1", 8, 1, 0, 3)
    assert btf.field("outer", "f2") == FieldLoc("outer.f2", 8, 1, 3, 5)
    g = btf.field("outer", "g")             # bit 78 = byte 9, shift 6, needs 2 bytes
    assert (g.byte_offset, g.bit_shift, g.bit_size, g.size) == (9, 6, 9, 2)


def test_int_encoded_bitfields_without_kind_flag(btf):
    assert btf.field("legacy", "x") == FieldLoc("legacy.x", 1, 1, 0, 4)
    assert btf.field("legacy", "y") == FieldLoc("legacy.y", 1, 1, 4, 3)   # 10 + INT offset 2
    assert btf.field("legacy", "z") == FieldLoc("legacy.z", 2, 2, 0, 0)


def test_missing_members_and_types(btf):
    with pytest.raises(BtfError, match=r"^struct outer has no member 'nope'$"):
        btf.field("outer", "nope")
    with pytest.raises(BtfError, match="has no member 'nope'"):
        btf.field("outer", "in.nope")
    with pytest.raises(BtfError, match="not a struct/union"):
        btf.field("outer", "p.ino")           # pointers are not followed
    with pytest.raises(BtfError, match="no struct or union named 'missing'"):
        btf.field("missing", "a")
    with pytest.raises(BtfError):
        btf.field("outer", "in..ino")


def test_enums(btf):
    assert btf.enum_values("color") == {"RED": 0, "GREEN": 7, "NEG": -2}
    assert btf.enum_values("big") == {"BIG_A": 1 << 32, "BIG_NEG": -1}
    with pytest.raises(BtfError, match="no enum named 'nocolor'"):
        btf.enum_values("nocolor")


def test_has_struct_and_func_exists(btf):
    assert btf.has_struct("outer") and btf.has_struct("inner") and btf.has_struct("just_union")
    assert not btf.has_struct("fwd_only") and not btf.has_struct("inner_t")
    assert btf.func_exists("my_func")
    assert not btf.func_exists("my_var") and not btf.func_exists("outer")


def test_header_layout_variants():
    b = build_sample()
    for blob in (b.blob(hdr_pad=8), b.blob(strings_first=True)):
        assert Btf(blob).field("outer", "num").byte_offset == 6


def test_load_errors(tmp_path):
    with pytest.raises(BtfError, match="not found"):
        Btf.load(str(tmp_path / "nonexistent"))
    bad = tmp_path / "bad"
    bad.write_bytes(build_sample().blob(magic=0x1234))
    with pytest.raises(BtfError, match="bad BTF magic"):
        Btf.load(str(bad))
    short = tmp_path / "short"
    short.write_bytes(build_sample().blob()[:-10])
    with pytest.raises(BtfError, match="truncated"):
        Btf.load(str(short))
    good = tmp_path / "good"
    good.write_bytes(build_sample().blob())
    assert Btf.load(str(good)).has_struct("outer")


def test_desync_detected():
    b = BtfBuilder()
    b.int_("int", 4)
    blob = bytearray(b.blob())
    struct.pack_into("<I", blob, 12, len(b.types) + 4)   # type_len claims 4 more bytes
    with pytest.raises(BtfError):
        Btf(bytes(blob) + b"\0" * 8)


# ---- the running kernel ------------------------------------------------------

@pytest.fixture(scope="module")
def kbtf():
    if not os.path.exists(VMLINUX):
        msg = f"{VMLINUX} absent (kernel without CONFIG_DEBUG_INFO_BTF?)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " -- required when CI=true")
        pytest.skip(msg)
    return Btf.load(VMLINUX)


def test_vmlinux_fields(kbtf):
    assert kbtf.field("sock", "sk_err").size == 4
    assert kbtf.field("sock_common", "skc_state").size == 1
    assert kbtf.field("sock", "__sk_common.skc_state") == \
        FieldLoc("sock.__sk_common.skc_state", *[getattr(kbtf.field("sock", "skc_state"), f)
                                                 for f in ("byte_offset", "size", "bit_shift", "bit_size")])
    num, dport = kbtf.field("sock_common", "skc_num"), kbtf.field("sock_common", "skc_dport")
    assert num.size == 2 and dport.size == 2 and num.byte_offset != dport.byte_offset
    assert kbtf.field("sock_common", "skc_net.net").size == 8
    assert kbtf.field("net", "ns.inum").size == 4
    assert kbtf.func_exists("tcp_sendmsg_locked")
    assert kbtf.has_struct("sock") and kbtf.has_struct("tcp_sock")


def _bpftool():
    return shutil.which("bpftool") or next(
        (p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if os.access(p, os.X_OK)), None)


def test_vmlinux_offsets_match_bpftool(kbtf):
    tool = _bpftool()
    if tool is None:
        pytest.skip("bpftool not installed")
    out = subprocess.run([tool, "btf", "dump", "file", VMLINUX, "format", "raw"],
                         capture_output=True, text=True, check=True).stdout
    # Direct members of a struct: "\t'name' type_id=N bits_offset=B[ bitfield_size=S]"
    def bits_offset(struct_name, member):
        block = re.search(rf"^\[\d+\] STRUCT '{struct_name}' size=\d+ vlen=\d+\n((?:\t.*\n)*)",
                          out, re.M)
        assert block, f"struct {struct_name} not in bpftool output"
        m = re.search(rf"^\t'{member}' type_id=\d+ bits_offset=(\d+)", block[1], re.M)
        assert m, f"{struct_name}.{member} not in bpftool output"
        return int(m[1])

    for s, m in (("sock", "sk_err"), ("sock_common", "skc_state"),
                 ("sock_common", "skc_family"), ("net", "ns")):
        assert kbtf.field(s, m).byte_offset * 8 == bits_offset(s, m), (s, m)


# ---- FUNC -> FUNC_PROTO: where each argument is ---------------------------------------------


def add_func(b: BtfBuilder, name: str, params, ret: int = 0, variadic: bool = False) -> int:
    """A FUNC named `name` whose FUNC_PROTO has params [(name, type_id)] and returns type ret."""
    items = [(b.s(n), t) for n, t in params] + ([(0, 0)] if variadic else [])
    proto = b.add(FUNC_PROTO, vlen=len(items), size_or_type=ret,
                  trailer=b"".join(struct.pack("<II", n, t) for n, t in items))
    return b.add(FUNC, name, size_or_type=proto)


def kernel_types(b: BtfBuilder) -> dict[str, int]:
    """The types the TCP prototypes use, as the kernel's BTF spells them."""
    t = {"int": b.int_("int", 4), "uint": b.int_("unsigned int", 4), "ulong": b.int_("long unsigned int", 8),
         "char": b.int_("char", 1)}
    t["size_t"] = b.add(TYPEDEF, "size_t", size_or_type=t["ulong"])
    for s in ("sock", "msghdr", "sk_buff"):
        t[s] = b.composite(STRUCT, s, 8, [("x", t["ulong"], 0)])
        t[f"{s} *"] = b.add(PTR, size_or_type=t[s])
    t["int *"] = b.add(PTR, size_or_type=t["int"])
    const_sock = b.add(CONST, size_or_type=t["sock"])
    t["const sock *"] = b.add(PTR, size_or_type=const_sock)
    user_char = b.add(TYPE_TAG, "user", size_or_type=b.add(CONST, size_or_type=t["char"]))
    t["const char __user *"] = b.add(PTR, size_or_type=user_char)
    return t


def kernel_5_15() -> Btf:
    """Linux 5.15.100's prototypes (net/ipv4/tcp.c, net/ipv4/tcp_input.c, fs/read_write.c)."""
    b = BtfBuilder()
    t = kernel_types(b)
    add_func(b, "tcp_recvmsg", [("sk", t["sock *"]), ("msg", t["msghdr *"]), ("len", t["size_t"]),
                                ("nonblock", t["int"]), ("flags", t["int"]), ("addr_len", t["int *"])], t["int"])
    add_func(b, "tcp_sendmsg_locked", [("sk", t["sock *"]), ("msg", t["msghdr *"]), ("size", t["size_t"])], t["int"])
    add_func(b, "tcp_reset", [("sk", t["sock *"]), ("skb", t["sk_buff *"])])
    add_func(b, "tcp_v4_send_reset", [("sk", t["const sock *"]), ("skb", t["sk_buff *"])])
    add_func(b, "ksys_write", [("fd", t["uint"]), ("buf", t["const char __user *"]), ("count", t["size_t"])],
             t["ulong"])
    return Btf(b.blob())


def test_5_15_tcp_recvmsg_has_six_arguments_and_its_fexit_return_in_slot_6():
    proto = kernel_5_15().func_proto("tcp_recvmsg")
    assert proto.names == ("sk", "msg", "len", "nonblock", "flags", "addr_len")
    assert (proto.position("sk"), proto.position("len"), proto.position("flags")) == (0, 2, 4)
    assert proto.ret_slot == 6          # 6.1's program read it at ctx[5]: addr_len, an int * (the issue's refusal)
    assert proto.params[5] == Param("addr_len", "int *") and proto.returns == "int"


def test_5_15_tcp_sendmsg_locked_size_in_slot_2_return_in_slot_3():
    proto = kernel_5_15().func_proto("tcp_sendmsg_locked")
    assert proto.names == ("sk", "msg", "size")
    assert (proto.position("sk"), proto.position("size"), proto.ret_slot) == (0, 2, 3)
    assert [p.type for p in proto.params] == ["struct sock *", "struct msghdr *", "size_t"]


def test_6_1_tcp_recvmsg_without_nonblock_returns_in_slot_5():
    b = BtfBuilder()
    t = kernel_types(b)
    add_func(b, "tcp_recvmsg", [("sk", t["sock *"]), ("msg", t["msghdr *"]), ("len", t["size_t"]),
                                ("flags", t["int"]), ("addr_len", t["int *"])], t["int"])
    proto = Btf(b.blob()).func_proto("tcp_recvmsg")
    assert proto.position("nonblock") is None and proto.position("flags") == 3 and proto.ret_slot == 5


def test_types_are_spelled_as_in_c():
    btf = kernel_5_15()
    assert btf.func_proto("tcp_v4_send_reset").params[0].type == "const struct sock *"
    assert btf.func_proto("ksys_write").params[1].type == "const char *"   # the __user type tag is not C
    assert btf.func_proto("tcp_reset").returns == "void"


def test_a_function_not_in_btf_a_variadic_one_and_disagreeing_statics_are_errors():
    b = BtfBuilder()
    t = kernel_types(b)
    add_func(b, "printk", [("fmt", t["const char __user *"])], t["int"], variadic=True)
    add_func(b, "helper", [("sk", t["sock *"])])            # two static functions of one name ...
    add_func(b, "helper", [("skb", t["sk_buff *"]), ("sk", t["sock *"])])  # ... with other arguments
    add_func(b, "same", [("sk", t["sock *"])])
    add_func(b, "same", [("sk", t["sock *"])])              # identical duplicates are one prototype
    btf = Btf(b.blob())
    with pytest.raises(BtfError, match="no function named 'tcp_nope'"):
        btf.func_proto("tcp_nope")
    with pytest.raises(BtfError, match="variadic"):
        btf.func_proto("printk")
    with pytest.raises(BtfError, match=r"2 different prototypes in BTF: \(sk\); \(skb, sk\)"):
        btf.func_proto("helper")
    assert btf.func_proto("same").names == ("sk",)


def test_sample_func_proto(btf):
    proto = btf.func_proto("my_func")
    assert proto == FuncProto("my_func", (Param("a", "unsigned int"), Param("b", "unsigned short")), "unsigned int")


def test_vmlinux_prototypes(kbtf):
    """The running kernel: the write path's prototype is the same from 4.18 to 6.18."""
    proto = kbtf.func_proto("tcp_sendmsg_locked")
    assert proto.names == ("sk", "msg", "size") and proto.ret_slot == 3
    assert proto.params[0].type == "struct sock *"
    recv = kbtf.func_proto("tcp_recvmsg")
    assert recv.names[:3] == ("sk", "msg", "len") and recv.ret_slot == len(recv.params)


# ---- raw tracepoints: btf_trace_<name> -----------------------------------------

def add_trace_typedef(b: BtfBuilder, name: str, params) -> int:
    """typedef void (*btf_trace_<name>)(void *, params...): what include/trace/bpf_probe.h
    declares for every tracepoint (__DEFINE_EVENT), its parameters unnamed. params: type ids."""
    void_ptr = b.add(PTR, size_or_type=0)
    items = [void_ptr, *params]
    proto = b.add(FUNC_PROTO, vlen=len(items), size_or_type=0,
                  trailer=b"".join(struct.pack("<II", 0, t) for t in items))
    return b.add(TYPEDEF, f"btf_trace_{name}", size_or_type=b.add(PTR, size_or_type=proto))


def test_a_tracepoint_prototype_is_its_typedef_without_the_probe_data():
    b = BtfBuilder()
    t = kernel_types(b)
    const_int = b.add(CONST, size_or_type=t["int"])
    add_trace_typedef(b, "inet_sock_set_state", [t["const sock *"], const_int, const_int])
    add_trace_typedef(b, "tcp_receive_reset", [t["sock *"]])
    b.add(TYPEDEF, "btf_trace_broken", size_or_type=t["int"])
    btf = Btf(b.blob())
    proto = btf.tracepoint_proto("inet_sock_set_state")
    assert [p.type for p in proto.params] == ["const struct sock *", "const int", "const int"]
    assert proto.names == ("", "", "") and proto.returns == "void"  # BTF names none of them
    assert [p.type for p in btf.tracepoint_proto("tcp_receive_reset").params] == ["struct sock *"]
    with pytest.raises(BtfError, match="no typedef 'btf_trace_sock_send_length'"):
        btf.tracepoint_proto("sock_send_length")  # a kernel before 6.3
    with pytest.raises(BtfError, match="not a pointer"):
        btf.tracepoint_proto("broken")


def test_vmlinux_tracepoint_prototypes(kbtf):
    """The running kernel: the raw tracepoints the tool attaches, as their TP_PROTO declares them."""
    assert [p.type for p in kbtf.tracepoint_proto("inet_sock_set_state").params] == [
        "const struct sock *", "const int", "const int"]
    assert [p.type for p in kbtf.tracepoint_proto("sys_enter").params] == ["struct pt_regs *", "long int"]
