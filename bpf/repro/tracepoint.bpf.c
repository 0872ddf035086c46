/* repro/tracepoint.bpf.c: the reproduction with stable tracepoints only, for
 * kernels with neither kprobes nor fentry. What they cannot show (the branch
 * inside tcp_sendmsg_locked), the annotation marks as inferred.
 *
 * Raw tracepoint programs, all attached by user space (tracer/collect/bpf.py):
 * the optional ones are compiled only with HAVE_<tracepoint>, and the syscall
 * programs are attached only while the client reads and writes.
 *
 * Kernel: sock:inet_sock_set_state (4.16+), tcp:tcp_receive_reset,
 * raw_syscalls:sys_enter and sys_exit; sock:sock_send_length 6.3+.
 */

/* tcp:tcp_receive_reset and sock:inet_sk_error_report: bpf/shared/reset_report.bpf.c. */

#ifdef HAVE_tcp_send_reset
/* tcp:tcp_send_reset -- 6.1: only for full sockets (tcp_send_active_reset);
 * 6.10+: also in tcp_v4/v6_send_reset, with the timewait socket or none.
 * tcp_send_reset(const struct sock *sk, const struct sk_buff *skb), and since
 * 6.10 a third argument, the reason, not read (include/trace/events/tcp.h,
 * v6.1 and v6.12). */
int tp_tcp_send_reset(struct bpf_raw_tracepoint_args *ctx)
{
	return hc_send_reset((const void *)ctx->args[0], (const void *)ctx->args[1]);
}
#endif

#ifdef HAVE_sock_send_length
/* sock_sendmsg()'s return (net/socket.c, 6.3+): the result inside the kernel. For
 * every socket family: the reproduction's own control socket (AF_UNIX, between its
 * two processes) is in the traced namespace too, so TCP is checked too.
 * sock_send_length(struct sock *sk, int ret, int flags). */
int tp_sock_send_length(struct bpf_raw_tracepoint_args *ctx)
{
	const void *sk = (const void *)ctx->args[0];

	if (!hc_traced(sk) || hc_sk_protocol(sk) != 6 /* IPPROTO_TCP */)
		return 0;
	return hc_emit(HC_SEND_LENGTH, sk, (int)ctx->args[1]);
}
#endif

/* The client's read(2), write(2) and send(2) (sendto on x86-64), from every
 * syscall's entry and exit, attached only around its I/O: while they are
 * attached every syscall of every task takes the slow path that runs them
 * (syscall_regfunc, kernel/tracepoint.c). */
struct hc_io {
	s32 fd;
	u32 exit_kind; /* HC_WRITE_EXIT or HC_READ_EXIT */
};
BPF_HASH(io_fd, u32, struct hc_io, 1024); /* tid -> the read or write in progress */

static __always_inline int hc_is_client(void)
{
	u32 pid = hc_target_pid();

	return pid && (bpf_get_current_pid_tgid() >> 32) == pid;
}

static __always_inline int hc_write_event(u32 kind, s32 fd, s64 value)
{
	const void *sk = hc_fd_sock(fd);
	struct hc_event e = {};

	if (!hc_traced(sk))
		return 0;
	hc_fill(&e, kind, sk);
	/* The client's connected TCP socket has a remote port (skc_dport stays set after
	 * tcp_done); the AF_UNIX socket it answers the tool on, in the same namespace, has
	 * none: its writes are not the reproduction's. */
	if (!e.dport)
		return 0;
	e.fd = fd;
	e.value = value;
	hc_submit(&e);
	return 0;
}

/* raw_syscalls:sys_enter: read, write and sendto all begin with (fd, buffer, length). */
int io_enter(struct bpf_raw_tracepoint_args *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	long nr;
	u32 kind;
	struct hc_io io = {};

	if (!hc_is_client())
		return 0;
	nr = hc_sys_enter_nr(ctx);
	if (nr == __NR_write || nr == __NR_sendto) {
		kind = HC_WRITE_ENTER;
		io.exit_kind = HC_WRITE_EXIT;
	} else if (nr == __NR_read) {
		kind = HC_READ_ENTER;
		io.exit_kind = HC_READ_EXIT;
	} else {
		return 0;
	}
	io.fd = (s32)HC_SYS_ARG0(ctx);
	io_fd.update(&tid, &io);
	return hc_write_event(kind, io.fd, (s64)HC_SYS_ARG2(ctx));
}

/* raw_syscalls:sys_exit: only a call io_enter kept has an entry. */
int io_exit(struct bpf_raw_tracepoint_args *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct hc_io *found, io;

	if (!hc_is_client())
		return 0;
	found = io_fd.lookup(&tid);
	if (!found)
		return 0;
	io = *found;
	io_fd.delete(&tid);
	return hc_write_event(io.exit_kind, io.fd, hc_sys_ret(ctx));
}
