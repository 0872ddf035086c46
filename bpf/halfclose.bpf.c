/* halfclose.bpf.c: the BPF programs of trace-halfclose, one section per backend.
 *
 *   HC_KPROBE       kprobes/kretprobes on the functions of the write path
 *                   (needs CONFIG_KPROBES; Debian's 6.1 and 6.12 have it)
 *   HC_FENTRY       the same functions through fentry/fexit (BTF + trampolines;
 *                   refused on some kernels, e.g. the 6.18 microVMs: EPERM)
 *   HC_TRACEPOINTS  stable tracepoints only, for kernels without either
 *   HC_STATE_TRACEPOINT  sock:inet_sock_set_state, with every backend
 *
 * tracer/probe_plan.py chooses the backend and passes, besides it, socket
 * field offsets from BTF (see sock_read.h) and HAVE_<function> for each
 * function that exists here (fentry programs attach at load, so a program for
 * a missing function must not be compiled).
 *
 * One file because bcc rewrites map calls (map.lookup()) only in its main
 * source: the maps and their helpers below serve every section.
 */
#include <uapi/linux/ptrace.h>
#include "sock_read.h"

/* Filters, filled by user space after load. target_netns[0]: inode of the
 * reproduction's network namespace (0: trace nothing yet). target_pid[0]: the
 * client process, for the syscall tracepoints. target_port[0]: the server
 * port, for the one tracepoint that gives ports but no socket. */
BPF_ARRAY(target_netns, u32, 1);
BPF_ARRAY(target_pid, u32, 1);
BPF_ARRAY(target_port, u32, 1);
BPF_PERCPU_ARRAY(dropped, u64, 1); /* events lost because the ring buffer was full */
BPF_RINGBUF_OUTPUT(events, 64);

/* First thing in every program: only sockets of the traced namespace pass. */
static __always_inline int hc_traced(const void *sk)
{
	int zero = 0;
	u32 *want = target_netns.lookup(&zero);

	if (!sk || !want || !*want)
		return 0;
	return hc_sk_netns(sk) == *want;
}

/* A full ring buffer loses the event: counted, never silent. */
static __always_inline void hc_submit(struct hc_event *e)
{
	int zero = 0;

	if (events.ringbuf_output(e, sizeof(*e), 0)) {
		u64 *n = dropped.lookup(&zero);
		if (n)
			(*n)++;
	}
}

static __always_inline int hc_emit(u32 kind, const void *sk, s64 value)
{
	struct hc_event e = {};

	hc_fill(&e, kind, sk);
	e.value = value;
	hc_submit(&e);
	return 0;
}

#ifdef HC_STATE_TRACEPOINT
/* Every state change of a traced socket (stable tracepoint since 4.16). */
TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
	struct hc_event e = {};

	if (args->protocol != 6 /* IPPROTO_TCP */ || !hc_traced(args->skaddr))
		return 0;
	hc_fill(&e, HC_SET_STATE, args->skaddr);
	/* The tracepoint fires before the store: the new state comes from its
	 * arguments, not from the socket. */
	e.old_state = args->oldstate;
	e.state = args->newstate;
	/* The record's ports: moving to CLOSE unhashes the socket and zeroes its
	 * local port (inet_put_port) before the tracepoint fires. */
	e.sport = args->sport;
	e.dport = args->dport;
	hc_submit(&e);
	return 0;
}
#endif

#ifdef HC_PACKETS
/* Every TCP segment sent in the traced namespace, as the article's tcpdump
 * saw them; loopback delivers each one it sends. */
TRACEPOINT_PROBE(net, net_dev_start_xmit)
{
	int zero = 0;
	u32 *want = target_netns.lookup(&zero);
	struct hc_event e = {};

	if (!want || !*want || hc_skb_netns(args->skbaddr) != *want)
		return 0;
	hc_fill(&e, HC_PACKET, 0);
	if (!hc_read_tcp(&e, args->skbaddr))
		return 0;
	hc_submit(&e);
	return 0;
}
#endif

#ifdef HC_SIGNALS
/* Signals generated for the client (SIGPIPE from sk_stream_error's send_sig). */
TRACEPOINT_PROBE(signal, signal_generate)
{
	int zero = 0;
	u32 *pid = target_pid.lookup(&zero);
	struct hc_event e = {};

	if (!pid || !*pid || args->pid != *pid)
		return 0;
	hc_fill(&e, HC_SIGNAL, 0);
	e.value = args->sig;
	e.fd = args->result;
	hc_submit(&e);
	return 0;
}
#endif

/* An RST answering a segment: sk is the socket it was sent for -- a full
 * socket, a timewait socket (only its sock_common part is valid), or none. */
static __always_inline int hc_send_reset(const void *sk, const void *skb, int state_known, u8 tp_state)
{
	int zero = 0;
	u32 *want = target_netns.lookup(&zero);
	struct hc_event e = {};
	u16 port;

	if (!want || !*want)
		return 0;
	if ((sk ? hc_sk_netns(sk) : (skb ? hc_skb_netns(skb) : 0)) != *want)
		return 0;
	/* No segment to answer: the socket resets its own connection
	 * (tcp_send_active_reset fires tcp:tcp_send_reset with skb NULL, 6.1+). */
	hc_fill(&e, sk && !skb ? HC_ACTIVE_RESET : HC_SEND_RESET, 0);
	e.sk = (u64)sk;
	e.state = 0xff;
	if (sk) {
		bpf_probe_read_kernel(&e.state, 1, (const char *)sk + OFF_SKC_STATE);
		if (e.state == 6 /* TCP_TIME_WAIT */)
			bpf_probe_read_kernel(&e.old_state, 1, (const char *)sk + OFF_TW_SUBSTATE);
	} else if (state_known) {
		e.state = tp_state;
	}
	/* The answered segment's ports, turned to the sender's view. */
	if (skb && hc_read_tcp(&e, skb)) {
		port = e.sport;
		e.sport = e.dport;
		e.dport = port;
	}
	e.seq = e.ack_seq = 0;
	e.tcp_flags = 0;
	e.value = 0;
	hc_submit(&e);
	return 0;
}

#if defined(HC_KPROBE)
/* ---- kprobes ------------------------------------------------------------
 * A return probe needs the socket its entry saw: the entry stores it in
 * `entered`, keyed by task and function. A socket that failed the filter is
 * never stored, so its return costs one failed lookup. */
struct entered_key {
	u64 id;    /* pid_tgid; for the idle task (0) the CPU, as every CPU's idle task is pid 0 */
	u32 kind;  /* the entry's enum hc_kind */
	u32 pad;
};
BPF_HASH(entered, struct entered_key, u64, 4096);

static __always_inline struct entered_key hc_key(u32 kind)
{
	struct entered_key k = {};

	k.id = bpf_get_current_pid_tgid();
	if (!k.id)
		k.id = 0xffffffff00000000ULL | bpf_get_smp_processor_id();
	k.kind = kind;
	return k;
}

static __always_inline int hc_enter(u32 kind, const void *sk, s64 value, int remember)
{
	if (!hc_traced(sk))
		return 0;
	if (remember) {
		struct entered_key k = hc_key(kind);
		u64 v = (u64)sk;
		entered.update(&k, &v);
	}
	return hc_emit(kind, sk, value);
}

static __always_inline int hc_return(u32 entry_kind, u32 kind, s64 ret)
{
	struct entered_key k = hc_key(entry_kind);
	u64 *skp = entered.lookup(&k);
	const void *sk;

	if (!skp)
		return 0;
	sk = (const void *)*skp;
	entered.delete(&k);
	return hc_emit(kind, sk, ret);
}

/* int tcp_sendmsg_locked(struct sock *sk, struct msghdr *msg, size_t size) */
int sendmsg_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_SENDMSG_ENTER, (void *)PT_REGS_PARM1(ctx), (s64)PT_REGS_PARM3(ctx), 1);
}

int sendmsg_return(struct pt_regs *ctx)
{
	return hc_return(HC_SENDMSG_ENTER, HC_SENDMSG_RETURN, (s64)(int)PT_REGS_RC(ctx));
}

/* int sk_stream_wait_connect(struct sock *sk, long *timeo_p) */
int wait_connect_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_WAIT_CONNECT_ENTER, (void *)PT_REGS_PARM1(ctx), 0, 1);
}

int wait_connect_return(struct pt_regs *ctx)
{
	return hc_return(HC_WAIT_CONNECT_ENTER, HC_WAIT_CONNECT_RETURN, (s64)(int)PT_REGS_RC(ctx));
}

/* int sk_stream_error(struct sock *sk, int flags, int err) */
int stream_error_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_STREAM_ERROR_ENTER, (void *)PT_REGS_PARM1(ctx), (s64)(int)PT_REGS_PARM3(ctx), 1);
}

int stream_error_return(struct pt_regs *ctx)
{
	return hc_return(HC_STREAM_ERROR_ENTER, HC_STREAM_ERROR_RETURN, (s64)(int)PT_REGS_RC(ctx));
}

/* void tcp_reset(struct sock *sk) before 5.11, (sk, skb) since: sk first either way. */
int reset_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_TCP_RESET, (void *)PT_REGS_PARM1(ctx), 0, 0);
}

/* void tcp_done_with_error(struct sock *sk, int err): mainline 6.11, in stable 6.10.y, 6.6.44, 6.1.103 */
int done_with_error_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_DONE_WITH_ERROR, (void *)PT_REGS_PARM1(ctx), (s64)(int)PT_REGS_PARM2(ctx), 0);
}

/* void tcp_done(struct sock *sk) */
int done_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_TCP_DONE, (void *)PT_REGS_PARM1(ctx), 0, 1);
}

int done_return(struct pt_regs *ctx)
{
	return hc_return(HC_TCP_DONE, HC_TCP_DONE_RETURN, 0);
}

/* void tcp_fin(struct sock *sk) */
int fin_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_TCP_FIN, (void *)PT_REGS_PARM1(ctx), 0, 1);
}

int fin_return(struct pt_regs *ctx)
{
	return hc_return(HC_TCP_FIN, HC_TCP_FIN_RETURN, 0);
}
/* void tcp_v4_send_reset(const struct sock *sk, struct sk_buff *skb[, reason]); likewise v6 */
int send_reset_enter(struct pt_regs *ctx)
{
	return hc_send_reset((void *)PT_REGS_PARM1(ctx), (void *)PT_REGS_PARM2(ctx), 0, 0);
}

/* void tcp_send_active_reset(struct sock *sk, gfp_t priority[, reason]) */
int active_reset_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_ACTIVE_RESET, (void *)PT_REGS_PARM1(ctx), 0, 0);
}

/* int tcp_recvmsg(struct sock *sk, struct msghdr *msg, size_t len, ...) */
int recvmsg_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_RECVMSG_ENTER, (void *)PT_REGS_PARM1(ctx), (s64)PT_REGS_PARM3(ctx), 1);
}

int recvmsg_return(struct pt_regs *ctx)
{
	return hc_return(HC_RECVMSG_ENTER, HC_RECVMSG_RETURN, (s64)(int)PT_REGS_RC(ctx));
}
#endif /* HC_KPROBE */

#if defined(HC_FENTRY)
/* ---- fentry/fexit: arguments and return value together, no stash map.
 * bcc attaches kfunc__/kretfunc__ programs at load: each is compiled only
 * when its function exists (HAVE_<function>). */
static __always_inline int hc_fentry(u32 kind, const void *sk, s64 value)
{
	if (!hc_traced(sk))
		return 0;
	return hc_emit(kind, sk, value);
}

KFUNC_PROBE(tcp_sendmsg_locked, void *sk, void *msg, size_t size)
{
	return hc_fentry(HC_SENDMSG_ENTER, sk, (s64)size);
}

KRETFUNC_PROBE(tcp_sendmsg_locked, void *sk, void *msg, size_t size, int ret)
{
	return hc_fentry(HC_SENDMSG_RETURN, sk, ret);
}

#ifdef HAVE_sk_stream_wait_connect
KFUNC_PROBE(sk_stream_wait_connect, void *sk, long *timeo_p)
{
	return hc_fentry(HC_WAIT_CONNECT_ENTER, sk, 0);
}

KRETFUNC_PROBE(sk_stream_wait_connect, void *sk, long *timeo_p, int ret)
{
	return hc_fentry(HC_WAIT_CONNECT_RETURN, sk, ret);
}
#endif

#ifdef HAVE_sk_stream_error
KFUNC_PROBE(sk_stream_error, void *sk, int flags, int err)
{
	return hc_fentry(HC_STREAM_ERROR_ENTER, sk, err);
}

KRETFUNC_PROBE(sk_stream_error, void *sk, int flags, int err, int ret)
{
	return hc_fentry(HC_STREAM_ERROR_RETURN, sk, ret);
}
#endif

KFUNC_PROBE(tcp_reset, void *sk)
{
	return hc_fentry(HC_TCP_RESET, sk, 0);
}

#ifdef HAVE_tcp_done_with_error
KFUNC_PROBE(tcp_done_with_error, void *sk, int err)
{
	return hc_fentry(HC_DONE_WITH_ERROR, sk, err);
}
#endif

KFUNC_PROBE(tcp_done, void *sk)
{
	return hc_fentry(HC_TCP_DONE, sk, 0);
}

KRETFUNC_PROBE(tcp_done, void *sk)
{
	return hc_fentry(HC_TCP_DONE_RETURN, sk, 0);
}

#ifdef HAVE_tcp_fin
KFUNC_PROBE(tcp_fin, void *sk)
{
	return hc_fentry(HC_TCP_FIN, sk, 0);
}

KRETFUNC_PROBE(tcp_fin, void *sk)
{
	return hc_fentry(HC_TCP_FIN_RETURN, sk, 0);
}
#endif
#ifdef HAVE_tcp_v4_send_reset
KFUNC_PROBE(tcp_v4_send_reset, void *sk, void *skb)
{
	return hc_send_reset(sk, skb, 0, 0);
}
#endif

#ifdef HAVE_tcp_v6_send_reset
KFUNC_PROBE(tcp_v6_send_reset, void *sk, void *skb)
{
	return hc_send_reset(sk, skb, 0, 0);
}
#endif

#ifdef HAVE_tcp_send_active_reset
KFUNC_PROBE(tcp_send_active_reset, void *sk)
{
	return hc_fentry(HC_ACTIVE_RESET, sk, 0);
}
#endif

#ifdef HAVE_tcp_recvmsg
/* int tcp_recvmsg(sk, msg, len, flags, addr_len): five arguments since 5.19 */
KFUNC_PROBE(tcp_recvmsg, void *sk, void *msg, size_t len)
{
	return hc_fentry(HC_RECVMSG_ENTER, sk, (s64)len);
}

KRETFUNC_PROBE(tcp_recvmsg, void *sk, void *msg, size_t len, int flags, int *addr_len, int ret)
{
	return hc_fentry(HC_RECVMSG_RETURN, sk, ret);
}
#endif
#endif /* HC_FENTRY */

#if defined(HC_TRACEPOINTS)
/* ---- stable tracepoints only: what they cannot show, the annotation marks
 * as inferred. */

/* tcp_reset's first statement (net/ipv4/tcp_input.c, 6.1+): state and sk_err at entry. */
TRACEPOINT_PROBE(tcp, tcp_receive_reset)
{
	if (!hc_traced(args->skaddr))
		return 0;
	return hc_emit(HC_RESET_TP, args->skaddr, 0);
}

/* sk_error_report(): the error just stored in sk_err. The record has ports,
 * no socket: filtered on the reproduction's server port. */
TRACEPOINT_PROBE(sock, inet_sk_error_report)
{
	int zero = 0;
	u32 *port = target_port.lookup(&zero);
	struct hc_event e = {};

	if (args->protocol != 6 || !port || !*port || (args->sport != *port && args->dport != *port))
		return 0;
	hc_fill(&e, HC_ERROR_REPORT, 0);
	e.value = args->error;
	e.sport = args->sport;
	e.dport = args->dport;
	hc_submit(&e);
	return 0;
}

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
	int state;
};

int send_reset_tp(struct tcp_send_reset_args *args)
{
	return hc_send_reset(args->skaddr, args->skbaddr, 1, (u8)args->state);
}
#endif

#ifdef HAVE_sock_send_length
/* sock_sendmsg()'s return (net/socket.c, 6.3+): the result inside the kernel. */
TRACEPOINT_PROBE(sock, sock_send_length)
{
	if (!hc_traced(args->sk))
		return 0;
	return hc_emit(HC_SEND_LENGTH, args->sk, args->ret);
}
#endif

/* write(2) of the client, attached only around the writes: an enabled
 * syscall tracepoint sends every syscall of every task through the slow
 * path (syscall_regfunc, kernel/tracepoint.c). The record layouts of
 * syscall tracepoints are fixed by SYSCALL_DEFINE: declared here, not
 * generated, because these programs are attached by hand. */
struct sys_enter_write_args {
	u64 common;
	s32 nr;
	u32 pad;
	u64 fd;
	u64 buf;
	u64 count;
};
struct sys_exit_write_args {
	u64 common;
	s32 nr;
	u32 pad;
	s64 ret;
};
BPF_HASH(io_fd, u32, s32, 1024); /* tid -> fd of the read or write in progress */

static __always_inline int hc_is_client(void)
{
	int zero = 0;
	u32 *pid = target_pid.lookup(&zero);

	return pid && *pid && (bpf_get_current_pid_tgid() >> 32) == *pid;
}

/* The socket behind fd in the current task: task->files->fdt->fd[fd]->private_data->sk,
 * at offsets from BTF. A file is taken for a socket only if socket->file points back at it. */
static __always_inline const void *hc_fd_sock(s32 fd)
{
	const char *task = (const char *)bpf_get_current_task();
	const char *files = 0, *fdt = 0, *fds = 0, *file = 0, *sock = 0, *back = 0;
	const void *sk = 0;

	bpf_probe_read_kernel(&files, sizeof(files), task + OFF_TASK_FILES);
	if (!files)
		return 0;
	bpf_probe_read_kernel(&fdt, sizeof(fdt), files + OFF_FILES_FDT);
	if (!fdt)
		return 0;
	bpf_probe_read_kernel(&fds, sizeof(fds), fdt + OFF_FDTABLE_FD);
	if (!fds)
		return 0;
	bpf_probe_read_kernel(&file, sizeof(file), fds + (u64)fd * sizeof(void *));
	if (!file)
		return 0;
	bpf_probe_read_kernel(&sock, sizeof(sock), file + OFF_FILE_PRIVATE);
	if (!sock)
		return 0;
	bpf_probe_read_kernel(&back, sizeof(back), sock + OFF_SOCKET_FILE);
	if (back != file)
		return 0;
	bpf_probe_read_kernel(&sk, sizeof(sk), sock + OFF_SOCKET_SK);
	return sk;
}

static __always_inline int hc_write_event(u32 kind, s32 fd, s64 value)
{
	const void *sk = hc_fd_sock(fd);
	struct hc_event e = {};

	if (!hc_traced(sk))
		return 0;
	hc_fill(&e, kind, sk);
	e.fd = fd;
	e.value = value;
	hc_submit(&e);
	return 0;
}

static __always_inline int hc_io_enter(u32 kind, struct sys_enter_write_args *args)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	s32 fd = (s32)args->fd;

	if (!hc_is_client())
		return 0;
	io_fd.update(&tid, &fd);
	return hc_write_event(kind, fd, (s64)args->count);
}

static __always_inline int hc_io_exit(u32 kind, struct sys_exit_write_args *args)
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

int write_enter(struct sys_enter_write_args *args)
{
	return hc_io_enter(HC_WRITE_ENTER, args);
}

int write_exit(struct sys_exit_write_args *args)
{
	return hc_io_exit(HC_WRITE_EXIT, args);
}

/* sys_enter_read/sendto and sys_exit_read/sendto start with the same fields
 * (fd, buffer, length; ret) as the write ones. */
int read_enter(struct sys_enter_write_args *args)
{
	return hc_io_enter(HC_READ_ENTER, args);
}

int read_exit(struct sys_exit_write_args *args)
{
	return hc_io_exit(HC_READ_EXIT, args);
}
#endif /* HC_TRACEPOINTS */
