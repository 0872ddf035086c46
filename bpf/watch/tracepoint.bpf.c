/* watch/tracepoint.bpf.c: the watch with stable tracepoints only: the
 * write-like calls from their syscall tracepoints (attached by user space for
 * the whole watch), tcp_reset's tracepoint, sk_err reports and sock_sendmsg's
 * result (bcc attaches those at load, the optional ones only with
 * HAVE_<tracepoint>).
 *
 * Kernel: the syscall tracepoints (CONFIG_FTRACE_SYSCALLS), tcp:tcp_receive_reset;
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

int sys_enter_write(struct hc_sys_enter_args *args)
{
	return hc_watch_sys_enter(HC_CALL_WRITE, (s32)args->args[0], (s64)args->args[2]);
}

int sys_enter_sendto(struct hc_sys_enter_args *args)
{
	return hc_watch_sys_enter(HC_CALL_SENDTO, (s32)args->args[0], (s64)args->args[2]);
}

int sys_enter_sendmsg(struct hc_sys_enter_args *args)
{
	return hc_watch_sys_enter(HC_CALL_SENDMSG, (s32)args->args[0], hc_msg_bytes((const char *)args->args[1]));
}

int sys_enter_writev(struct hc_sys_enter_args *args)
{
	return hc_watch_sys_enter(HC_CALL_WRITEV, (s32)args->args[0],
				  hc_iov_bytes((const char *)args->args[1], args->args[2]));
}

/* syscalls:sys_exit_<call> of every call above */
int sys_exit_call(struct hc_sys_exit_args *args)
{
	return hc_watch_call_end(args->ret);
}

/* tcp:tcp_receive_reset and sock:inet_sk_error_report: bpf/shared/reset_report.bpf.c. */

#ifdef HAVE_sock_send_length
/* sock_sendmsg()'s return (net/socket.c, 6.3+), in the writer, for every socket
 * family: TCP first, or a watched task's AF_UNIX socket would join the watch. */
TRACEPOINT_PROBE(sock, sock_send_length)
{
	if (args->protocol != 6 /* IPPROTO_TCP */ || !hc_watch_sk(args->sk, 1))
		return 0;
	return hc_emit(HC_SEND_LENGTH, args->sk, args->ret);
}
#endif
