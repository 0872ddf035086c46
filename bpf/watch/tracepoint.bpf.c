/* watch/tracepoint.bpf.c: the watch with stable tracepoints only: the
 * write-like calls from every syscall's entry and exit (raw_syscalls), tcp_reset's
 * tracepoint, sk_err reports and sock_sendmsg's result. Raw tracepoint programs,
 * attached by user space for the whole watch (the optional ones compiled only
 * with HAVE_<tracepoint>).
 *
 * Kernel: raw_syscalls:sys_enter and sys_exit, tcp:tcp_receive_reset;
 * sock:sock_send_length 6.3+.
 */

/* sk_protocol IPPROTO_TCP (6) and sk_type SOCK_STREAM (1): a TCP socket, not
 * a raw one (include/uapi/linux/in.h, include/linux/net.h; v6.1). */
static __always_inline int hc_is_tcp(const void *sk)
{
	u16 protocol = 0, type = 0;

	bpf_probe_read_kernel(&protocol, sizeof(protocol), (const char *)sk + OFF_SK_PROTOCOL);
	bpf_probe_read_kernel(&type, sizeof(type), (const char *)sk + OFF_SK_TYPE);
	return protocol == 6 && type == 1;
}

#define HC_IOV_MAX 8
#define HC_IOV_ADD(i)								\
	if (n > i) {								\
		len = 0;							\
		if (bpf_probe_read_user(&len, sizeof(len), iov + i * 16 + 8))	\
			return -1;						\
		total += len;							\
	}
/* The bytes a writev/sendmsg asks to send: the sum of its iovec lengths
 * (struct iovec {void *iov_base; size_t iov_len;}, include/uapi/linux/uio.h, v6.1);
 * -1 past HC_IOV_MAX entries or when user memory cannot be read. Written out,
 * not a loop: 6.1's verifier refuses the loop clang makes of it. */
static __always_inline s64 hc_iov_bytes(const char *iov, u64 n)
{
	s64 total = 0;
	u64 len;

	if (n > HC_IOV_MAX)
		return -1;
	HC_IOV_ADD(0) HC_IOV_ADD(1) HC_IOV_ADD(2) HC_IOV_ADD(3)
	HC_IOV_ADD(4) HC_IOV_ADD(5) HC_IOV_ADD(6) HC_IOV_ADD(7)
	return total;
}

/* struct user_msghdr (include/linux/socket.h, v6.1): msg_iov at 16, msg_iovlen at 24 (64-bit). */
static __always_inline s64 hc_msg_bytes(const char *msg)
{
	const char *iov = 0;
	u64 n = 0;

	if (bpf_probe_read_user(&iov, sizeof(iov), msg + 16) || bpf_probe_read_user(&n, sizeof(n), msg + 24))
		return -1;
	return hc_iov_bytes(iov, n);
}

/* The task filter first (every write of the machine comes through here), then
 * the fd's socket; the event has the socket as the call found it. */
static __always_inline int hc_watch_sys_enter(u32 call, s32 fd, s64 size)
{
	const void *sk;
	struct hc_watch_call c = {};

	if (!hc_watch_task())
		return 0;
	sk = hc_fd_sock(fd);
	if (!sk || !hc_is_tcp(sk) || !hc_watch_sk(sk, 1))
		return 0;
	hc_watch_call_begin(&c, call, fd, sk);
	hc_watch_call_event(HC_WATCH_CALL_ENTER, &c, size);
	return 0;
}

/* raw_syscalls:sys_enter, for every syscall of the machine: the number first
 * (a register argument, free to compare), then the task filter in
 * hc_watch_sys_enter (which may compare a 16-byte comm). */
int watch_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	long nr = hc_sys_enter_nr(ctx);

	if (nr == __NR_write)
		return hc_watch_sys_enter(HC_CALL_WRITE, (s32)HC_SYS_ARG0(ctx), (s64)HC_SYS_ARG2(ctx));
	if (nr == __NR_sendto)
		return hc_watch_sys_enter(HC_CALL_SENDTO, (s32)HC_SYS_ARG0(ctx), (s64)HC_SYS_ARG2(ctx));
	if (nr == __NR_sendmsg)
		return hc_watch_sys_enter(HC_CALL_SENDMSG, (s32)HC_SYS_ARG0(ctx),
					  hc_msg_bytes((const char *)HC_SYS_ARG1(ctx)));
	if (nr == __NR_writev)
		return hc_watch_sys_enter(HC_CALL_WRITEV, (s32)HC_SYS_ARG0(ctx),
					  hc_iov_bytes((const char *)HC_SYS_ARG1(ctx), HC_SYS_ARG2(ctx)));
	return 0;
}

/* raw_syscalls:sys_exit: the number first, then the call kept at its entry. No
 * task filter here: a call kept must be let go even if its task left the watch. */
int watch_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	long nr = hc_sys_exit_nr(ctx);

	if (nr != __NR_write && nr != __NR_sendto && nr != __NR_sendmsg && nr != __NR_writev)
		return 0;
	return hc_watch_call_end(hc_sys_ret(ctx));
}

/* tcp:tcp_receive_reset and sock:inet_sk_error_report: bpf/shared/reset_report.bpf.c. */

#ifdef HAVE_sock_send_length
/* sock_sendmsg()'s return (net/socket.c, 6.3+), in the writer, for every socket
 * family: TCP first, or a watched task's AF_UNIX socket would join the watch.
 * sock_send_length(struct sock *sk, int ret, int flags). */
int tp_sock_send_length(struct bpf_raw_tracepoint_args *ctx)
{
	const void *sk = (const void *)ctx->args[0];

	if (hc_sk_protocol(sk) != 6 /* IPPROTO_TCP */ || !hc_watch_sk(sk, 1))
		return 0;
	return hc_emit(HC_SEND_LENGTH, sk, (int)ctx->args[1]);
}
#endif
