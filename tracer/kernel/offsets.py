"""Kernel struct offsets from the running kernel's BTF, as -D flags for bpf/.

The pure functions that turn kernel facts into compile-time constants for the
BPF C (see bpf/sock_read.h for why no struct header is included).
"""
from __future__ import annotations

from tracer.kernel.btf import Btf, FieldLoc

# macro name -> (struct, member path): the socket fields every backend reads
SOCK_FIELDS = {
    "OFF_SKC_STATE": ("sock", "__sk_common.skc_state"),
    "OFF_SK_ERR": ("sock", "sk_err"),
    "OFF_SKC_NUM": ("sock", "__sk_common.skc_num"),
    "OFF_SKC_DPORT": ("sock", "__sk_common.skc_dport"),
    "OFF_SKC_NET": ("sock", "__sk_common.skc_net.net"),
    "OFF_NET_INUM": ("net", "ns.inum"),
    "OFF_SK_SHUTDOWN": ("sock", "sk_shutdown"),
    # packets and the RST's sender
    "OFF_SKB_HEAD": ("sk_buff", "head"),
    "OFF_SKB_NETWORK_HEADER": ("sk_buff", "network_header"),
    "OFF_SKB_DEV": ("sk_buff", "dev"),
    "OFF_DEV_NET": ("net_device", "nd_net.net"),
    "OFF_TW_SUBSTATE": ("inet_timewait_sock", "tw_substate"),
}
# fd -> socket, for the write(2) tracepoints: task->files->fdt->fd[fd]->private_data->sk
FD_FIELDS = {
    "OFF_TASK_FILES": ("task_struct", "files"),
    "OFF_FILES_FDT": ("files_struct", "fdt"),
    "OFF_FDTABLE_FD": ("fdtable", "fd"),
    "OFF_FILE_PRIVATE": ("file", "private_data"),
    "OFF_SOCKET_FILE": ("socket", "file"),
    "OFF_SOCKET_SK": ("socket", "sk"),
}


def field_locations(btf: Btf, fields: dict[str, tuple[str, str]] = SOCK_FIELDS) -> dict[str, FieldLoc]:
    return {macro: btf.field(struct, path) for macro, (struct, path) in fields.items()}


def cflags(locs: dict[str, FieldLoc]) -> list[str]:
    """-D flags for bpf/. sk_shutdown is read as a u32 and then shifted and
    masked, which serves both the old 2-bit bitfield and today's u8."""
    flags = [f"-D{macro}={loc.byte_offset}" for macro, loc in locs.items()]
    shut = locs.get("OFF_SK_SHUTDOWN")
    if shut is not None:
        bits = shut.bit_size or shut.size * 8
        flags += [f"-DSK_SHUTDOWN_SHIFT={shut.bit_shift}", f"-DSK_SHUTDOWN_MASK={(1 << min(bits, 8)) - 1:#x}"]
    return flags
