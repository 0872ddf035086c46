/* kprobe.bpf.c: the half-close write path, traced with kprobes/kretprobes.
 *
 * Requires a kernel with CONFIG_KPROBES (Debian's 6.1 and 6.12 have it).
 * tracer/probes.py loads this file with -D offsets from BTF (see
 * sock_read.h) and attaches only the functions that exist on the running
 * kernel; programs for missing functions stay unattached.
 *
 * Return probes need the socket the entry saw: the entry stores it in
 * `entered`, keyed by task and function, and the return probe takes it back.
 * A socket that failed the filter at entry is never stored, so its return
 * costs one failed lookup.
 */
#include <uapi/linux/ptrace.h>
#include "sock_read.h"

/* target_netns[0]: inode of the network namespace to trace (0 = trace nothing
 * yet), filled by user space once the reproduction's namespace exists.
 * dropped[0]: events lost because the ring buffer was full. */
BPF_ARRAY(target_netns, u32, 1);
BPF_PERCPU_ARRAY(dropped, u64, 1);
BPF_RINGBUF_OUTPUT(events, 64);

/* The filter, first thing in every program: only sockets of the traced
 * network namespace pass. */
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

/* Entry: filter, emit, and remember the socket for the return probe. */
static __always_inline int hc_enter(u32 kind, const void *sk, s64 value, int remember)
{
	struct hc_event e = {};

	if (!hc_traced(sk))
		return 0;
	if (remember) {
		struct entered_key k = hc_key(kind);
		u64 v = (u64)sk;
		entered.update(&k, &v);
	}
	hc_fill(&e, kind, sk);
	e.value = value;
	hc_submit(&e);
	return 0;
}

/* Return: emit the return value with the socket's fields as they are now. */
static __always_inline int hc_return(u32 entry_kind, u32 kind, s64 ret)
{
	struct entered_key k = hc_key(entry_kind);
	u64 *skp = entered.lookup(&k);
	struct hc_event e = {};
	const void *sk;

	if (!skp)
		return 0;
	sk = (const void *)*skp;
	entered.delete(&k);
	hc_fill(&e, kind, sk);
	e.value = ret;
	hc_submit(&e);
	return 0;
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

/* void tcp_reset(struct sock *sk) before 5.11, (struct sock *sk, struct sk_buff *skb) since:
 * sk is the first argument either way. */
int reset_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_TCP_RESET, (void *)PT_REGS_PARM1(ctx), 0, 0);
}

/* void tcp_done_with_error(struct sock *sk, int err): 6.10+, backported to some stable kernels */
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

#ifdef HC_STATE_TRACEPOINT
/* Every state change of a traced socket (stable tracepoint since 4.16). */
TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
	struct hc_event e = {};

	if (args->protocol != 6 /* IPPROTO_TCP */ || !hc_traced(args->skaddr))
		return 0;
	hc_fill(&e, HC_SET_STATE, args->skaddr);
	/* The tracepoint fires before the store: report the new state from its
	 * arguments, not from the socket. */
	e.old_state = args->oldstate;
	e.state = args->newstate;
	hc_submit(&e);
	return 0;
}
#endif
