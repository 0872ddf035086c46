"""Kernel struct offsets from the running kernel's BTF, as -D flags for bpf/.

Every table of struct fields the BPF C reads lives here (see bpf/sock_read.h
for why no struct header is included), with the pure functions that turn
them into compile-time constants.
"""
from __future__ import annotations

from tracer.errors import UserError
from tracer.kernel.btf import Btf, BtfError, FieldLoc

# macro name -> (struct, member path): the socket fields every backend reads
SOCK_FIELDS = {
    "OFF_SKC_STATE": ("sock", "__sk_common.skc_state"),
    "OFF_SK_ERR": ("sock", "sk_err"),
    "OFF_SKC_NUM": ("sock", "__sk_common.skc_num"),
    "OFF_SKC_DPORT": ("sock", "__sk_common.skc_dport"),
    "OFF_SKC_NET": ("sock", "__sk_common.skc_net.net"),
    "OFF_NET_INUM": ("net", "ns.inum"),
    "OFF_SK_SHUTDOWN": ("sock", "sk_shutdown"),
    # The tracepoints' records had these; raw tracepoints pass the socket: inet_sock_set_state's and
    # inet_sk_error_report's ports are ntohs(inet->inet_sport) and inet_dport (skc_dport), their
    # protocol sk->sk_protocol (TP_fast_assign, include/trace/events/sock.h, 6.1 and 6.12).
    # inet_sport, unlike skc_num, keeps the local port after inet_put_port (moving to CLOSE).
    "OFF_INET_SPORT": ("inet_sock", "inet_sport"),
    "OFF_SK_PROTOCOL": ("sock", "sk_protocol"),
    # signal_generate's and task_newtask's pid is task->pid (include/trace/events/{signal,task}.h).
    "OFF_TASK_PID": ("task_struct", "pid"),
    # packets and the RST's sender
    "OFF_SKB_HEAD": ("sk_buff", "head"),
    "OFF_SKB_NETWORK_HEADER": ("sk_buff", "network_header"),
    "OFF_SKB_TAIL": ("sk_buff", "tail"),  # the end of the linear data: packet capture (bpf/shared/capture.bpf.c)
    "OFF_SKB_DEV": ("sk_buff", "dev"),
    "OFF_DEV_NET": ("net_device", "nd_net.net"),
    "OFF_TW_SUBSTATE": ("inet_timewait_sock", "tw_substate"),
}
# fd -> socket, for the syscall tracepoints (bpf/shared/fd_sock.bpf.c):
# task->files->fdt->fd[fd]->private_data->sk
FD_FIELDS = {
    "OFF_TASK_FILES": ("task_struct", "files"),
    "OFF_FILES_FDT": ("files_struct", "fdt"),
    "OFF_FDTABLE_FD": ("fdtable", "fd"),
    "OFF_FILE_PRIVATE": ("file", "private_data"),
    "OFF_SOCKET_FILE": ("socket", "file"),
    "OFF_SOCKET_SK": ("socket", "sk"),
}
# The watch's: a socket's addresses when it joins, and whether an fd's socket is TCP (bpf/watch/).
WATCH_FIELDS = {
    "OFF_SKC_FAMILY": ("sock", "__sk_common.skc_family"),
    "OFF_SKC_RCV_SADDR": ("sock", "__sk_common.skc_rcv_saddr"),
    "OFF_SKC_DADDR": ("sock", "__sk_common.skc_daddr"),
    "OFF_SK_TYPE": ("sock", "sk_type"),
}
# The raw_syscalls tracepoints pass the task's registers (struct pt_regs *): a syscall's
# arguments on x86-64 are in di, si, dx (then r10, r8, r9), its number in orig_ax at exit
# (syscall_get_arguments, syscall_get_nr: arch/x86/include/asm/syscall.h, 6.1 and 6.12).
SYSCALL_FIELDS = {
    "OFF_REGS_ARG0": ("pt_regs", "di"),
    "OFF_REGS_ARG1": ("pt_regs", "si"),
    "OFF_REGS_ARG2": ("pt_regs", "dx"),
    "OFF_REGS_NR": ("pt_regs", "orig_ax"),
}
# Only with CONFIG_IPV6 (struct sock_common has them under #if IS_ENABLED(CONFIG_IPV6)).
V6_FIELDS = {
    "OFF_SKC_V6_RCV_SADDR": ("sock", "__sk_common.skc_v6_rcv_saddr"),
    "OFF_SKC_V6_DADDR": ("sock", "__sk_common.skc_v6_daddr"),
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


def struct_offsets(btf: Btf, *, fd: bool = False, watch: bool = False, syscalls: bool = False) -> list[str]:
    """The -D offset flags for a BPF text: SOCK_FIELDS always; FD_FIELDS for the
    programs that find a socket from an fd; SYSCALL_FIELDS for the raw_syscalls
    programs; WATCH_FIELDS (and V6_FIELDS when the kernel has IPv6) for the watch.
    A UserError when a field is not in BTF."""
    fields = {**SOCK_FIELDS, **(FD_FIELDS if fd else {}), **(WATCH_FIELDS if watch else {})}
    try:
        locs = field_locations(btf, fields)
    except BtfError as exc:
        raise UserError(f"a kernel struct field is missing from BTF: {exc}", "report this kernel version") from None
    if syscalls:
        try:
            locs.update(field_locations(btf, SYSCALL_FIELDS))
        except BtfError as exc:
            raise UserError(f"the syscalls' arguments cannot be read here: {exc} (the tracepoint backend reads "
                            "them from x86-64's registers)", "use the kprobe or fentry backend") from None
    if watch:
        try:
            locs.update(field_locations(btf, V6_FIELDS))
        except BtfError:
            # A kernel without CONFIG_IPV6: bpf/watch/common.bpf.c then reports IPv4 addresses only.
            pass
    for macro in ("OFF_SK_PROTOCOL", "OFF_SK_TYPE"):
        if macro in locs and (locs[macro].bit_size or locs[macro].size != 2):
            raise UserError(f"sock.{fields[macro][1]} is not a 16-bit field on this kernel (a bitfield "
                            "before 5.6)", "use a newer kernel")
    return cflags(locs)
