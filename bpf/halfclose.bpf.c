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

/* The filters' values: 0 means not set yet, and then nothing passes. */
static __always_inline u32 hc_target_netns(void)
{
	int zero = 0;
	u32 *v = target_netns.lookup(&zero);

	return v ? *v : 0;
}

static __always_inline u32 hc_target_pid(void)
{
	int zero = 0;
	u32 *v = target_pid.lookup(&zero);

	return v ? *v : 0;
}

/* First thing in every program: only sockets of the traced namespace pass. */
static __always_inline int hc_traced(const void *sk)
{
	u32 want = hc_target_netns();

	return sk && want && hc_sk_netns(sk) == want;
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
	u32 want = hc_target_netns();
	struct hc_event e = {};

	if (!want || hc_skb_netns(args->skbaddr) != want)
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
	u32 pid = hc_target_pid();
	struct hc_event e = {};

	if (!pid || args->pid != pid)
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
static __always_inline int hc_send_reset(const void *sk, const void *skb)
{
	u32 want = hc_target_netns();
	struct hc_event e = {};
	u16 port;

	if (!want || (sk ? hc_sk_netns(sk) : (skb ? hc_skb_netns(skb) : 0)) != want)
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
	return hc_send_reset((void *)PT_REGS_PARM1(ctx), (void *)PT_REGS_PARM2(ctx));
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
	return hc_send_reset(sk, skb);
}
#endif

#ifdef HAVE_tcp_v6_send_reset
KFUNC_PROBE(tcp_v6_send_reset, void *sk, void *skb)
{
	return hc_send_reset(sk, skb);
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
};

int send_reset_tp(struct tcp_send_reset_args *args)
{
	return hc_send_reset(args->skaddr, args->skbaddr);
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
	u32 pid = hc_target_pid();

	return pid && (bpf_get_current_pid_tgid() >> 32) == pid;
}
#endif /* HC_TRACEPOINTS */

#if defined(HC_TRACEPOINTS) || defined(HC_WATCH)
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
#endif

#if defined(HC_TRACEPOINTS)
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

#if defined(HC_WATCH)
/* ---- watch: the writes of any program (trace-halfclose watch) ----------------
 * tracer/watch.py compiles this section with one of HC_WATCH_KPROBE,
 * HC_WATCH_FENTRY or HC_WATCH_TRACEPOINTS, never with HC_FENTRY,
 * HC_TRACEPOINTS or HC_STATE_TRACEPOINT (this section has its own programs on
 * those hooks). With kprobe and fentry HC_KPROBE is defined as well, for its
 * `entered` map and return programs: a return is reported exactly when its
 * entry, filtered here, stashed the socket. The filters are -D constants:
 *   HC_WATCH_PORT       local or remote port of the socket (0: any port)
 *   HC_WATCH_BY_PID     only tasks whose tgid is in watch_pids
 *   HC_WATCH_BY_COMM    only tasks whose comm is watch_comm[0]
 *   HC_WATCH_FOLLOW     new processes of watched tasks (and the launcher's) join watch_pids
 *   HC_TCP_SYN_SENT, HC_TCP_SYN_RECV, HC_TCP_LISTEN  state numbers, from BTF
 *
 * Where each filter applies, first thing in every program:
 * - in the writer's own context (the write-like calls, tcp_sendmsg_locked and
 *   what it calls, connect(2)'s move to SYN_SENT): the task, then the socket:
 *   already watched, or on the port. A socket that passes joins watched_sk.
 * - everywhere else (FIN, RST, tcp_done, state changes: softirq, or the
 *   release_sock() of whichever task owns the socket) the current task means
 *   nothing: only the socket counts, watched_sk or, when no task filter is
 *   given, the port.
 * A socket leaves watched_sk when it is destroyed (tcp:tcp_destroy_sock) and
 * when a new life starts at its address (SYN_SENT, SYN_RECV, LISTEN), so a
 * reused address never carries the watch over to an unrelated socket.
 * --port matches connections only: a socket with no remote port (a listener)
 * never joins. */
#if !defined(HC_WATCH_BY_PID) && !defined(HC_WATCH_BY_COMM) && !HC_WATCH_PORT
#error "watch needs a filter: HC_WATCH_PORT, HC_WATCH_BY_PID or HC_WATCH_BY_COMM"
#endif
#if defined(HC_WATCH_BY_PID) || defined(HC_WATCH_BY_COMM)
#define HC_WATCH_BY_TASK
#endif

/* The write-like calls (old_state of HC_WATCH_CALL_*; mirrored in tracer/watch_annotate.py). */
#define HC_CALL_WRITE 1
#define HC_CALL_SENDTO 2
#define HC_CALL_SENDMSG 3
#define HC_CALL_WRITEV 4

struct hc_watch_call {
	u64 ts_ns;  /* when the call began */
	u64 sk;     /* 0 until the call reaches a watched socket */
	s32 fd;
	u32 call;   /* HC_CALL_* */
};
struct hc_comm {
	char c[16];
};

BPF_HASH(watch_pids, u32, u8, 8192);               /* tgids of the watched tasks */
BPF_ARRAY(watch_comm, struct hc_comm, 1);         /* --comm */
BPF_ARRAY(watch_launcher, u32, 1);                /* tgid whose next child is the command (-- CMD) */
BPF_HASH(watched_sk, u64, u8, 65536);             /* the sockets of the watch */
BPF_HASH(watch_call, u32, struct hc_watch_call, 4096); /* tid -> its write-like call in progress */
BPF_PERCPU_ARRAY(watch_reset, u64, 1);            /* tracepoints: the socket tcp_reset runs on, on this CPU */

static __always_inline int hc_watch_task(void)
{
#ifdef HC_WATCH_BY_PID
	u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (!watch_pids.lookup(&tgid))
		return 0;
#endif
#ifdef HC_WATCH_BY_COMM
	int zero = 0;
	struct hc_comm *want = watch_comm.lookup(&zero);
	char comm[16] = {};
	u8 diff = 0;

	if (!want)
		return 0;
	bpf_get_current_comm(comm, sizeof(comm));
	/* Both NUL-padded: the whole array compares, with no early exit for
	 * clang to turn into a loop the verifier may refuse. */
#pragma unroll
	for (int i = 0; i < 16; i++)
		diff |= comm[i] ^ want->c[i];
	if (diff)
		return 0;
#endif
	return 1;
}

/* A socket joins: its addresses go out once, in HC_WATCH_ADDR events. */
static __always_inline void hc_watch_join(const void *sk)
{
	const char *p = (const char *)sk;
	u64 key = (u64)sk;
	u8 one = 1;
	u16 family = 0;
	u32 local = 0, remote = 0;
	struct hc_event e = {};

	if (watched_sk.insert(&key, &one))
		return; /* already in (or the map is full) */
	bpf_probe_read_kernel(&family, sizeof(family), p + OFF_SKC_FAMILY);
	hc_fill(&e, HC_WATCH_ADDR, sk);
	e.old_state = family;
	if (family == 2 /* AF_INET */) {
		bpf_probe_read_kernel(&local, sizeof(local), p + OFF_SKC_RCV_SADDR);
		bpf_probe_read_kernel(&remote, sizeof(remote), p + OFF_SKC_DADDR);
		e.fd = 0;
		e.value = (s64)(((u64)remote << 32) | local);
		hc_submit(&e);
	}
#ifdef OFF_SKC_V6_DADDR
	if (family == 10 /* AF_INET6 */) {
		/* fd 1, 2: the local address; 3, 4: the remote one */
		e.fd = 1;
		bpf_probe_read_kernel(&e.value, 8, p + OFF_SKC_V6_RCV_SADDR);
		hc_submit(&e);
		e.fd = 2;
		bpf_probe_read_kernel(&e.value, 8, p + OFF_SKC_V6_RCV_SADDR + 8);
		hc_submit(&e);
		e.fd = 3;
		bpf_probe_read_kernel(&e.value, 8, p + OFF_SKC_V6_DADDR);
		hc_submit(&e);
		e.fd = 4;
		bpf_probe_read_kernel(&e.value, 8, p + OFF_SKC_V6_DADDR + 8);
		hc_submit(&e);
	}
#endif
}

/* Is sk watched, or does it join now? in_task: the current task is the socket's
 * user (its filter applies); sport/dport (host order) are the socket's ports. */
static __always_inline int hc_watch_match(const void *sk, u16 sport, u16 dport, int in_task)
{
	u64 key = (u64)sk;

	if (!sk)
		return 0;
	if (in_task && !hc_watch_task())
		return 0;
	if (watched_sk.lookup(&key))
		return 1;
#ifdef HC_WATCH_BY_TASK
	if (!in_task)
		return 0;
#endif
#if HC_WATCH_PORT
	if (!dport || (sport != HC_WATCH_PORT && dport != HC_WATCH_PORT))
		return 0;
#endif
	hc_watch_join(sk);
	return 1;
}

static __always_inline int hc_watch_sk(const void *sk, int in_task)
{
	u16 sport = 0, dport = 0;

	if (!sk)
		return 0;
	bpf_probe_read_kernel(&sport, sizeof(sport), (const char *)sk + OFF_SKC_NUM);
	bpf_probe_read_kernel(&dport, sizeof(dport), (const char *)sk + OFF_SKC_DPORT);
	return hc_watch_match(sk, sport, __builtin_bswap16(dport), in_task);
}

/* A watched task begins a write-like call: remembered by thread until it returns. */
static __always_inline void hc_watch_call_begin(struct hc_watch_call *c, u32 call, s32 fd, const void *sk)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();

	c->ts_ns = bpf_ktime_get_ns();
	c->sk = (u64)sk;
	c->fd = fd;
	c->call = call;
	watch_call.update(&tid, c);
}

static __always_inline void hc_watch_call_event(u32 kind, struct hc_watch_call *c, s64 value)
{
	struct hc_event e = {};

	hc_fill(&e, kind, (const void *)c->sk);
	if (kind == HC_WATCH_CALL_ENTER)
		e.ts_ns = c->ts_ns;
	e.fd = c->fd;
	e.value = value;
	e.old_state = c->call;
	hc_submit(&e);
}

/* The call returns: reported if it reached a watched socket. */
static __always_inline int hc_watch_call_end(s64 ret)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct hc_watch_call *c = watch_call.lookup(&tid);

	if (!c)
		return 0;
	if (c->sk)
		hc_watch_call_event(HC_WATCH_CALL_EXIT, c, ret);
	watch_call.delete(&tid);
	return 0;
}

/* Every state change of a watched socket (stable tracepoint since 4.16). */
TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
	const void *sk = args->skaddr;
	u64 key = (u64)sk;
	int state = args->newstate;
	struct hc_event e = {};

	if (args->protocol != 6 /* IPPROTO_TCP */)
		return 0;
	if (state == HC_TCP_SYN_SENT || state == HC_TCP_SYN_RECV || state == HC_TCP_LISTEN) {
		watched_sk.delete(&key); /* a new socket at this address */
		if (state == HC_TCP_LISTEN)
			return 0;
	}
	/* The record's ports: the socket's local port is already 0 when it
	 * moves to CLOSE (inet_put_port). SYN_SENT is set by connect(2) in the
	 * connecting task (tcp_v4_connect, net/ipv4/tcp_ipv4.c; on 6.1 and 6.12
	 * the event's task is the client's): the writer's filter applies. */
	if (!hc_watch_match(sk, args->sport, args->dport, state == HC_TCP_SYN_SENT))
		return 0;
	hc_fill(&e, HC_SET_STATE, sk);
	e.old_state = args->oldstate;
	e.state = state;
	e.sport = args->sport;
	e.dport = args->dport;
	hc_submit(&e);
	return 0;
}

#ifdef HAVE_tcp_destroy_sock
/* trace_tcp_destroy_sock() in tcp_v4_destroy_sock (net/ipv4/tcp_ipv4.c): the
 * socket's end (in tracefs of Debian's 6.1.0-56, 6.12.117 and the 6.18.44 microVM). */
TRACEPOINT_PROBE(tcp, tcp_destroy_sock)
{
	u64 key = (u64)args->skaddr;

	if (!watched_sk.lookup(&key))
		return 0;
	hc_emit(HC_WATCH_DESTROY, args->skaddr, 0);
	watched_sk.delete(&key);
	return 0;
}
#endif

#if defined(HC_WATCH_FOLLOW) && defined(HAVE_task_newtask)
/* copy_process() (kernel/fork.c), in the parent: a new process of a watched
 * task, or the launcher's child (the command), is watched too. Threads
 * (CLONE_THREAD, include/uapi/linux/sched.h) share their tgid already. */
TRACEPOINT_PROBE(task, task_newtask)
{
	int zero = 0;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	u32 child = args->pid;
	u32 *launcher = watch_launcher.lookup(&zero);
	u8 one = 1;

	if (args->clone_flags & 0x00010000 /* CLONE_THREAD, include/uapi/linux/sched.h v6.1 */)
		return 0;
	if ((launcher && *launcher == tgid) || watch_pids.lookup(&tgid))
		watch_pids.update(&child, &one);
	return 0;
}
#endif

#if defined(HC_WATCH_BY_PID) && defined(HAVE_sched_process_exit)
/* do_exit() (kernel/exit.c): a watched process's pid number may be reused by
 * an unrelated one once it is gone. */
TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;

	if ((u32)id == tgid)
		watch_pids.delete(&tgid);
	return 0;
}
#endif

#if defined(HC_WATCH_KPROBE) || defined(HC_WATCH_FENTRY)
/* An entry: in_task for the writer's functions, not for the socket's events;
 * remember: its return is reported too (HC_KPROBE's `entered`). */
static __always_inline int hc_watch_entry(u32 kind, const void *sk, s64 value, int in_task, int remember)
{
	if (!hc_watch_sk(sk, in_task))
		return 0;
	if (remember) {
		struct entered_key k = hc_key(kind);
		u64 v = (u64)sk;
		entered.update(&k, &v);
	}
	return hc_emit(kind, sk, value);
}

/* tcp_sendmsg_locked on a watched socket: the call in progress, if one of the
 * traced ones, gets its socket; its entry event carries the size the kernel
 * counted (for sendmsg and writev the sum of the iovecs). */
static __always_inline int hc_watch_sendmsg(const void *sk, s64 size)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct hc_watch_call *c;

	if (!hc_watch_sk(sk, 1))
		return 0;
	c = watch_call.lookup(&tid);
	if (c && !c->sk) {
		c->sk = (u64)sk;
		hc_watch_call_event(HC_WATCH_CALL_ENTER, c, size);
	}
	return hc_watch_entry(HC_SENDMSG_ENTER, sk, size, 1, 1);
}

static __always_inline int hc_watch_call_start(u32 call, s32 fd)
{
	struct hc_watch_call c = {};

	if (hc_watch_task())
		hc_watch_call_begin(&c, call, fd, 0);
	return 0;
}
#endif

#if defined(HC_WATCH_KPROBE)
/* Entries; the returns are HC_KPROBE's sendmsg_return, wait_connect_return,
 * stream_error_return, done_return and fin_return. */
int watch_sendmsg_enter(struct pt_regs *ctx)
{
	return hc_watch_sendmsg((void *)PT_REGS_PARM1(ctx), (s64)PT_REGS_PARM3(ctx));
}

int watch_wait_connect_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_WAIT_CONNECT_ENTER, (void *)PT_REGS_PARM1(ctx), 0, 1, 1);
}

int watch_stream_error_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_STREAM_ERROR_ENTER, (void *)PT_REGS_PARM1(ctx), (s64)(int)PT_REGS_PARM3(ctx), 1, 1);
}

int watch_reset_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_TCP_RESET, (void *)PT_REGS_PARM1(ctx), 0, 0, 0);
}

int watch_done_with_error_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_DONE_WITH_ERROR, (void *)PT_REGS_PARM1(ctx), (s64)(int)PT_REGS_PARM2(ctx), 0, 0);
}

int watch_done_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_TCP_DONE, (void *)PT_REGS_PARM1(ctx), 0, 0, 1);
}

int watch_fin_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_TCP_FIN, (void *)PT_REGS_PARM1(ctx), 0, 0, 1);
}

/* The write-like calls, where they get their fd (signatures read from the BTF of
 * Debian's 6.1.0-56 and 6.12.117 and of 6.18.44): ssize_t ksys_write(unsigned int fd, ...) (fs/read_write.c),
 * int __sys_sendto(int fd, ...) and long __sys_sendmsg(int fd, ...)
 * (net/socket.c), ssize_t do_writev(unsigned long fd, ...) (fs/read_write.c). */
int watch_ksys_write(struct pt_regs *ctx)
{
	return hc_watch_call_start(HC_CALL_WRITE, (s32)PT_REGS_PARM1(ctx));
}

int watch_sys_sendto(struct pt_regs *ctx)
{
	return hc_watch_call_start(HC_CALL_SENDTO, (s32)PT_REGS_PARM1(ctx));
}

int watch_sys_sendmsg(struct pt_regs *ctx)
{
	return hc_watch_call_start(HC_CALL_SENDMSG, (s32)PT_REGS_PARM1(ctx));
}

int watch_do_writev(struct pt_regs *ctx)
{
	return hc_watch_call_start(HC_CALL_WRITEV, (s32)PT_REGS_PARM1(ctx));
}

int watch_call_return_long(struct pt_regs *ctx)
{
	return hc_watch_call_end((s64)PT_REGS_RC(ctx));
}

int watch_call_return_int(struct pt_regs *ctx)
{
	return hc_watch_call_end((s64)(int)PT_REGS_RC(ctx));
}
#endif /* HC_WATCH_KPROBE */

#if defined(HC_WATCH_FENTRY)
KFUNC_PROBE(tcp_sendmsg_locked, void *sk, void *msg, size_t size)
{
	return hc_watch_sendmsg(sk, (s64)size);
}

KRETFUNC_PROBE(tcp_sendmsg_locked, void *sk, void *msg, size_t size, int ret)
{
	return hc_return(HC_SENDMSG_ENTER, HC_SENDMSG_RETURN, ret);
}

#ifdef HAVE_sk_stream_wait_connect
KFUNC_PROBE(sk_stream_wait_connect, void *sk, long *timeo_p)
{
	return hc_watch_entry(HC_WAIT_CONNECT_ENTER, sk, 0, 1, 1);
}

KRETFUNC_PROBE(sk_stream_wait_connect, void *sk, long *timeo_p, int ret)
{
	return hc_return(HC_WAIT_CONNECT_ENTER, HC_WAIT_CONNECT_RETURN, ret);
}
#endif

#ifdef HAVE_sk_stream_error
KFUNC_PROBE(sk_stream_error, void *sk, int flags, int err)
{
	return hc_watch_entry(HC_STREAM_ERROR_ENTER, sk, err, 1, 1);
}

KRETFUNC_PROBE(sk_stream_error, void *sk, int flags, int err, int ret)
{
	return hc_return(HC_STREAM_ERROR_ENTER, HC_STREAM_ERROR_RETURN, ret);
}
#endif

KFUNC_PROBE(tcp_reset, void *sk)
{
	return hc_watch_entry(HC_TCP_RESET, sk, 0, 0, 0);
}

#ifdef HAVE_tcp_done_with_error
KFUNC_PROBE(tcp_done_with_error, void *sk, int err)
{
	return hc_watch_entry(HC_DONE_WITH_ERROR, sk, err, 0, 0);
}
#endif

KFUNC_PROBE(tcp_done, void *sk)
{
	return hc_watch_entry(HC_TCP_DONE, sk, 0, 0, 1);
}

KRETFUNC_PROBE(tcp_done, void *sk)
{
	return hc_return(HC_TCP_DONE, HC_TCP_DONE_RETURN, 0);
}

#ifdef HAVE_tcp_fin
KFUNC_PROBE(tcp_fin, void *sk)
{
	return hc_watch_entry(HC_TCP_FIN, sk, 0, 0, 1);
}

KRETFUNC_PROBE(tcp_fin, void *sk)
{
	return hc_return(HC_TCP_FIN, HC_TCP_FIN_RETURN, 0);
}
#endif

/* fexit sees every argument before the return value: all are declared. */
#ifdef HAVE_ksys_write
KFUNC_PROBE(ksys_write, unsigned int fd, const char *buf, size_t count)
{
	return hc_watch_call_start(HC_CALL_WRITE, (s32)fd);
}

KRETFUNC_PROBE(ksys_write, unsigned int fd, const char *buf, size_t count, long ret)
{
	return hc_watch_call_end(ret);
}
#endif

#ifdef HAVE___sys_sendto
KFUNC_PROBE(__sys_sendto, int fd, void *buff, size_t len, unsigned int flags, void *addr, int addr_len)
{
	return hc_watch_call_start(HC_CALL_SENDTO, fd);
}

KRETFUNC_PROBE(__sys_sendto, int fd, void *buff, size_t len, unsigned int flags, void *addr, int addr_len, int ret)
{
	return hc_watch_call_end(ret);
}
#endif

#ifdef HAVE___sys_sendmsg
KFUNC_PROBE(__sys_sendmsg, int fd, void *msg, unsigned int flags, bool forbid_cmsg_compat)
{
	return hc_watch_call_start(HC_CALL_SENDMSG, fd);
}

KRETFUNC_PROBE(__sys_sendmsg, int fd, void *msg, unsigned int flags, bool forbid_cmsg_compat, long ret)
{
	return hc_watch_call_end(ret);
}
#endif

#ifdef HAVE_do_writev
KFUNC_PROBE(do_writev, unsigned long fd, void *vec, unsigned long vlen, int flags)
{
	return hc_watch_call_start(HC_CALL_WRITEV, (s32)fd);
}

KRETFUNC_PROBE(do_writev, unsigned long fd, void *vec, unsigned long vlen, int flags, long ret)
{
	return hc_watch_call_end(ret);
}
#endif
#endif /* HC_WATCH_FENTRY */

#if defined(HC_WATCH_TRACEPOINTS)
/* Syscall records (SYSCALL_DEFINE): six argument slots, or the return value.
 * Attached by hand (tracer/watch.py), like write_enter above. */
struct hc_sys_enter_args {
	u64 common;
	s32 nr;
	u32 pad;
	u64 args[6];
};
struct hc_sys_exit_args {
	u64 common;
	s32 nr;
	u32 pad;
	s64 ret;
};

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

int watch_sys_enter_write(struct hc_sys_enter_args *args)
{
	return hc_watch_sys_enter(HC_CALL_WRITE, (s32)args->args[0], (s64)args->args[2]);
}

int watch_sys_enter_sendto(struct hc_sys_enter_args *args)
{
	return hc_watch_sys_enter(HC_CALL_SENDTO, (s32)args->args[0], (s64)args->args[2]);
}

int watch_sys_enter_sendmsg(struct hc_sys_enter_args *args)
{
	return hc_watch_sys_enter(HC_CALL_SENDMSG, (s32)args->args[0], hc_msg_bytes((const char *)args->args[1]));
}

int watch_sys_enter_writev(struct hc_sys_enter_args *args)
{
	return hc_watch_sys_enter(HC_CALL_WRITEV, (s32)args->args[0],
				  hc_iov_bytes((const char *)args->args[1], args->args[2]));
}

int watch_sys_exit(struct hc_sys_exit_args *args)
{
	return hc_watch_call_end(args->ret);
}

/* tcp_reset's first statement (net/ipv4/tcp_input.c, 6.1+). */
TRACEPOINT_PROBE(tcp, tcp_receive_reset)
{
	int zero = 0;
	u64 *last = watch_reset.lookup(&zero);

	if (!hc_watch_sk(args->skaddr, 0))
		return 0;
	if (last)
		*last = (u64)args->skaddr;
	return hc_emit(HC_RESET_TP, args->skaddr, 0);
}

#ifdef HAVE_inet_sk_error_report
/* sk_error_report() (net/core/sock.c) has ports, no socket. After an RST it
 * runs within tcp_reset, on the same CPU (tcp_reset -> tcp_done_with_error
 * -> sk_error_report, net/ipv4/tcp_input.c, 6.1.192 and 6.12.117,
 * docs/kernel-source.md item 3): attributed to that socket when the ports agree. */
TRACEPOINT_PROBE(sock, inet_sk_error_report)
{
	int zero = 0;
	u64 *last = watch_reset.lookup(&zero);
	const void *sk;
	u16 sport = 0, dport = 0;
	struct hc_event e = {};

	if (args->protocol != 6 || !last || !*last)
		return 0;
	sk = (const void *)*last;
	*last = 0;
	/* The local port may already be 0 (tcp_done unhashed the socket). */
	bpf_probe_read_kernel(&sport, sizeof(sport), (const char *)sk + OFF_SKC_NUM);
	bpf_probe_read_kernel(&dport, sizeof(dport), (const char *)sk + OFF_SKC_DPORT);
	if (__builtin_bswap16(dport) != args->dport || (sport && sport != args->sport))
		return 0;
	hc_fill(&e, HC_ERROR_REPORT, sk);
	e.value = args->error;
	hc_submit(&e);
	return 0;
}
#endif

#ifdef HAVE_sock_send_length
/* sock_sendmsg()'s return (net/socket.c, 6.3+), in the writer. */
TRACEPOINT_PROBE(sock, sock_send_length)
{
	if (!hc_watch_sk(args->sk, 1))
		return 0;
	return hc_emit(HC_SEND_LENGTH, args->sk, args->ret);
}
#endif
#endif /* HC_WATCH_TRACEPOINTS */
#endif /* HC_WATCH */
