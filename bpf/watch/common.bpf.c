/* watch/common.bpf.c: the watch's filter and what its three backends share:
 * the watched sockets, the write-like call in progress, each socket's state
 * changes and end, and the processes followed (trace-halfclose watch).
 *
 * The filters are -D constants from tracer/collect/watch.py:
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
 * never joins.
 *
 * Kernel: sock:inet_sock_set_state (4.16+); tcp:tcp_destroy_sock,
 * task:task_newtask and sched:sched_process_exit where present (HAVE_<tracepoint>).
 */
#if !defined(HC_WATCH_BY_PID) && !defined(HC_WATCH_BY_COMM) && !HC_WATCH_PORT
#error "watch needs a filter: HC_WATCH_PORT, HC_WATCH_BY_PID or HC_WATCH_BY_COMM"
#endif
#if defined(HC_WATCH_BY_PID) || defined(HC_WATCH_BY_COMM)
#define HC_WATCH_BY_TASK
#endif

/* The write-like calls (old_state of HC_WATCH_CALL_*; mirrored in tracer/record/event.py CALLS). */
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

/* The socket filter of bpf/shared/reset_report.bpf.c (tracepoint backend): tcp_reset
 * runs in softirq, not in a watched task. */
#define HC_RESET_SOCK(sk) hc_watch_sk(sk, 0)

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

/* Every state change of a watched socket (stable tracepoint since 4.16;
 * required by watch, so not guarded). A raw tracepoint program, as every
 * tracepoint program below (tracer/collect/bpf.py attaches them):
 * inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate). */
int tp_inet_sock_set_state(struct bpf_raw_tracepoint_args *ctx)
{
	const void *sk = (const void *)ctx->args[0];
	u64 key = (u64)sk;
	int state = (int)ctx->args[2];
	u16 sport, dport;
	struct hc_event e = {};

	if (hc_sk_protocol(sk) != 6 /* IPPROTO_TCP */)
		return 0;
	if (state == HC_TCP_SYN_SENT || state == HC_TCP_SYN_RECV || state == HC_TCP_LISTEN) {
		watched_sk.delete(&key); /* a new socket at this address */
		if (state == HC_TCP_LISTEN)
			return 0;
	}
	/* The ports as the perf record had them (hc_record_ports: the local port
	 * from inet_sport, since skc_num is already 0 when it moves to CLOSE).
	 * SYN_SENT is set by connect(2) in the connecting task (tcp_v4_connect,
	 * net/ipv4/tcp_ipv4.c; on 6.1 and 6.12 the event's task is the client's):
	 * the writer's filter applies. */
	hc_record_ports(sk, &sport, &dport);
	if (!hc_watch_match(sk, sport, dport, state == HC_TCP_SYN_SENT))
		return 0;
	hc_fill(&e, HC_SET_STATE, sk);
	e.old_state = (u8)ctx->args[1];
	e.state = state;
	e.sport = sport;
	e.dport = dport;
	hc_submit(&e);
	return 0;
}

#ifdef HAVE_tcp_destroy_sock
/* trace_tcp_destroy_sock() in tcp_v4_destroy_sock (net/ipv4/tcp_ipv4.c): the
 * socket's end (in tracefs of Debian's 6.1.0-56, 6.12.117 and the 6.18.44 microVM).
 * tcp_destroy_sock(struct sock *sk). */
int tp_tcp_destroy_sock(struct bpf_raw_tracepoint_args *ctx)
{
	const void *sk = (const void *)ctx->args[0];
	u64 key = (u64)sk;

	if (!watched_sk.lookup(&key))
		return 0;
	hc_emit(HC_WATCH_DESTROY, sk, 0);
	watched_sk.delete(&key);
	return 0;
}
#endif

#ifdef HAVE_task_newtask
/* copy_process() (kernel/fork.c), in the parent: a new process of a watched
 * task, or the launcher's child (the command), is watched too. Threads
 * (CLONE_THREAD, include/uapi/linux/sched.h) share their tgid already.
 * Planned only when the watch follows a command (HC_WATCH_FOLLOW).
 * task_newtask(struct task_struct *task, unsigned long clone_flags) (u64 in 6.18);
 * the record's pid was task->pid, the new process's tgid. */
int tp_task_newtask(struct bpf_raw_tracepoint_args *ctx)
{
	int zero = 0;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	u32 *launcher = watch_launcher.lookup(&zero);
	u32 child;
	u8 one = 1;

	if (ctx->args[1] & 0x00010000 /* CLONE_THREAD, include/uapi/linux/sched.h v6.1 */)
		return 0;
	if ((launcher && *launcher == tgid) || watch_pids.lookup(&tgid)) {
		child = hc_task_pid((const void *)ctx->args[0]);
		watch_pids.update(&child, &one);
	}
	return 0;
}
#endif

#ifdef HAVE_sched_process_exit
/* do_exit() (kernel/exit.c): a watched process's pid number may be reused by
 * an unrelated one once it is gone. Planned only with pids (HC_WATCH_BY_PID).
 * Reads no argument: the exiting task is the current one. */
int tp_sched_process_exit(struct bpf_raw_tracepoint_args *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;

	if ((u32)id == tgid)
		watch_pids.delete(&tgid);
	return 0;
}
#endif
