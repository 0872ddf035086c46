/* repro/tracepoint.bpf.c: the reproduction with stable tracepoints only, for
 * kernels with neither kprobes nor fentry. What they cannot show (the branch
 * inside tcp_sendmsg_locked), the annotation marks as inferred.
 *
 * bcc attaches the TRACEPOINT_PROBEs at load (the optional ones only with
 * HAVE_<tracepoint>); user space attaches send_reset_tp, and the syscall
 * programs only while the client reads and writes (tracer/collect/bpf.py).
 *
 * Kernel: sock:inet_sock_set_state (4.16+), tcp:tcp_receive_reset, the
 * syscall tracepoints (CONFIG_FTRACE_SYSCALLS); sock:sock_send_length 6.3+.
 */

/* tcp:tcp_receive_reset and sock:inet_sk_error_report: bpf/shared/reset_report.bpf.c. */

#ifdef HAVE_tcp_send_reset
/* tcp:tcp_send_reset -- 6.1: only for full sockets (tcp_send_active_reset);
 * 6.10+: also in tcp_v4/v6_send_reset, with the timewait socket or none. The
 * record's layout changed (6.10 added `enum sk_rst_reason reason`, which bcc
 * cannot declare), so only the prefix both share is declared here
 * (include/trace/events/tcp.h, v6.1 and v6.12), and user space attaches it. */
struct tcp_send_reset_args {
	u64 common;
	const void *skbaddr;
	const void *skaddr;
};

int send_reset_tp(struct tcp_send_reset_args *args)
{
	return hc_send_reset(args->skaddr, args->skbaddr);
}
#endif

#ifdef HAVE_sock_send_length
/* sock_sendmsg()'s return (net/socket.c, 6.3+): the result inside the kernel. For
 * every socket family: the reproduction's own control socket (AF_UNIX, between its
 * two processes) is in the traced namespace too, so TCP is checked first. */
TRACEPOINT_PROBE(sock, sock_send_length)
{
	if (args->protocol != 6 /* IPPROTO_TCP */ || !hc_traced(args->sk))
		return 0;
	return hc_emit(HC_SEND_LENGTH, args->sk, args->ret);
}
#endif

/* The client's read(2), write(2) and send(2), attached only around its I/O:
 * an enabled syscall tracepoint sends every syscall of every task through
 * the slow path (syscall_regfunc, kernel/tracepoint.c). */
BPF_HASH(io_fd, u32, s32, 1024); /* tid -> fd of the read or write in progress */

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

/* read, write and sendto all begin with (fd, buffer, length). */
static __always_inline int hc_io_enter(u32 kind, struct hc_sys_enter_args *args)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	s32 fd = (s32)args->args[0];

	if (!hc_is_client())
		return 0;
	io_fd.update(&tid, &fd);
	return hc_write_event(kind, fd, (s64)args->args[2]);
}

static __always_inline int hc_io_exit(u32 kind, struct hc_sys_exit_args *args)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	s32 *fd;

	if (!hc_is_client())
		return 0;
	fd = io_fd.lookup(&tid);
	if (!fd)
		return 0;
	io_fd.delete(&tid);
	return hc_write_event(kind, *fd, args->ret);
}

/* syscalls:sys_enter_write and sys_enter_sendto */
int write_enter(struct hc_sys_enter_args *args)
{
	return hc_io_enter(HC_WRITE_ENTER, args);
}

/* syscalls:sys_exit_write and sys_exit_sendto */
int write_exit(struct hc_sys_exit_args *args)
{
	return hc_io_exit(HC_WRITE_EXIT, args);
}

int read_enter(struct hc_sys_enter_args *args)
{
	return hc_io_enter(HC_READ_ENTER, args);
}

int read_exit(struct hc_sys_exit_args *args)
{
	return hc_io_exit(HC_READ_EXIT, args);
}
