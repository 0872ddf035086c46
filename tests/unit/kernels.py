"""Recorded kernels for the plan and era tests: prototypes from real BTF
(tests/unit/data/btf-prototypes.json: Debian's 6.1.0-57 and 6.12.117, this
machine's 6.18.44), tracepoint formats from real tracefs
(tests/unit/data/tracefs-formats-*.txt), and a 5.15-shaped kernel written
from the source of 5.15.100 (no 5.15 BTF was at hand: each prototype below
is the one in that tree, file named).

Nothing here is copied from tracer/ (the code under test): the views are built
from these recordings with the view's own dataclasses.
"""
from __future__ import annotations

import json
from pathlib import Path

from tracer.kernel.btf import FuncProto, Param
from tracer.kernel.support import format_fields
from tracer.kernel.view import KernelView

DATA = Path(__file__).parent / "data"
RECORDED = ("6.1.0-57-amd64", "6.12.117+deb12-amd64", "6.18.44-fc-v769")


def recorded_prototypes(kernel: str) -> dict[str, FuncProto]:
    funcs = json.loads((DATA / "btf-prototypes.json").read_text())["kernels"][kernel]["functions"]
    return {name: FuncProto(name, tuple(Param(n, t) for n, t in d["params"]), d["returns"])
            for name, d in funcs.items()}


def recorded_tracepoint_protos(kernel: str) -> dict[str, FuncProto]:
    """"category:name" -> the raw tracepoint's arguments (types only: BTF names none)."""
    tps = json.loads((DATA / "btf-prototypes.json").read_text())["kernels"][kernel]["tracepoints"]
    return {tp: FuncProto(tp.split(":")[1], tuple(Param("", t) for t in types), "void") for tp, types in tps.items()}


def _proto(name: str, params: str, returns: str = "void") -> FuncProto:
    """params: "sk: struct sock *, msg: struct msghdr *" -- as the source declares them."""
    out = []
    for p in params.split(", "):
        n, t = p.split(": ")
        out.append(Param(n, t))
    return FuncProto(name, tuple(out), returns)


# Linux 5.15.100 (the tree read: zcjie1/linux-5.15.100, Makefile 5.15.100): the table's functions.
PROTOTYPES_5_15 = {p.name: p for p in (
    # net/ipv4/tcp.c
    _proto("tcp_sendmsg_locked", "sk: struct sock *, msg: struct msghdr *, size: size_t", "int"),
    _proto("tcp_recvmsg", "sk: struct sock *, msg: struct msghdr *, len: size_t, nonblock: int, flags: int, "
                          "addr_len: int *", "int"),
    _proto("tcp_done", "sk: struct sock *"),
    # net/core/stream.c
    _proto("sk_stream_wait_connect", "sk: struct sock *, timeo_p: long int *", "int"),
    _proto("sk_stream_error", "sk: struct sock *, flags: int, err: int", "int"),
    # net/ipv4/tcp_input.c: tcp_reset(sk, skb) since 5.11; no tcp_done_with_error before 6.10/6.11
    _proto("tcp_reset", "sk: struct sock *, skb: struct sk_buff *"),
    _proto("tcp_fin", "sk: struct sock *"),
    # net/ipv4/tcp_ipv4.c, net/ipv6/tcp_ipv6.c, net/ipv4/tcp_output.c
    _proto("tcp_v4_send_reset", "sk: const struct sock *, skb: struct sk_buff *"),
    _proto("tcp_v6_send_reset", "sk: const struct sock *, skb: struct sk_buff *"),
    _proto("tcp_send_active_reset", "sk: struct sock *, priority: gfp_t"),
    # fs/read_write.c, net/socket.c
    _proto("ksys_write", "fd: unsigned int, buf: const char *, count: size_t", "ssize_t"),
    _proto("__sys_sendto", "fd: int, buff: void *, len: size_t, flags: unsigned int, addr: struct sockaddr *, "
                           "addr_len: int", "int"),
    _proto("__sys_sendmsg", "fd: int, msg: struct user_msghdr *, flags: unsigned int, forbid_cmsg_compat: bool",
           "long int"),
    _proto("do_writev", "fd: long unsigned int, vec: const struct iovec *, vlen: long unsigned int, flags: rwf_t",
           "ssize_t"),
)}


def formats(kernel: str) -> dict[str, frozenset[str]]:
    """tracepoint -> its record's fields, from a recorded dump of tracefs format files
    (`=== category/name` then the file, as tests/unit/data/tracefs-formats-*.txt hold them)."""
    text = (DATA / f"tracefs-formats-{kernel}.txt").read_text()
    out = {}
    for chunk in text.split("=== ")[1:]:
        head, _, body = chunk.partition("\n")
        if "field:" in body:
            out[head.strip().replace("/", ":")] = format_fields(body)
    return out


def view(functions, tracepoints, prototypes, *, kprobes=True, btf=True, ringbuf=True,
         tracepoint_fields=None, btf_functions=None, tracepoint_protos=None) -> KernelView:
    """A kernel with these functions (in kallsyms) and tracepoints (in tracefs), and these prototypes in BTF
    (tracepoint_protos: the raw tracepoints' arguments; None: not read, not checked)."""
    functions, tracepoints = frozenset(functions), frozenset(tracepoints)
    return KernelView(kprobes=kprobes, btf=btf, functions=functions, tracepoints=tracepoints,
                      btf_functions=btf_functions, prototypes={f: p for f, p in prototypes.items() if f in functions},
                      ringbuf=ringbuf, tracepoint_fields=tracepoint_fields or {},
                      tracepoint_protos=None if tracepoint_protos is None else
                      {tp: p for tp, p in tracepoint_protos.items() if tp in tracepoints})
