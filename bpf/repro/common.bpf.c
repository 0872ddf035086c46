/* repro/common.bpf.c: the reproduction's filter, and the programs all three of
 * its backends share: state changes, packets, signals, and the RST's sender.
 *
 * Every program first checks that its socket (or packet) belongs to the
 * reproduction's network namespace; the client's syscalls and signals are
 * matched by its pid. Tracepoints the kernel may lack are compiled only with
 * HAVE_<tracepoint>, which tracer/collect/plan.py defines for those it found.
 *
 * The tracepoint programs are raw tracepoint programs (attached by
 * tracer/collect/bpf.py): ctx->args[n] is the n-th argument of the
 * tracepoint's TP_PROTO, checked against BTF's btf_trace_<name> before they
 * are attached (tracer/collect/plan.py). What a perf tracepoint's record held
 * (ports, protocol, pid) is read from the socket or task at BTF offsets, as
 * TP_fast_assign read it when the tracepoint fired.
 */

/* Filters, filled by user space after load. target_netns[0]: inode of the
 * reproduction's network namespace (0: trace nothing yet). target_pid[0]: the
 * client process, for the syscall tracepoints and signals. No event passes on
 * a port alone: the host may use the same port (tests/live/test_robustness.py
 * connects 50,000 times to it during a run). */
BPF_ARRAY(target_netns, u32, 1);
BPF_ARRAY(target_pid, u32, 1);

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

/* The socket filter of bpf/shared/reset_report.bpf.c (tracepoint backend). */
#define HC_RESET_SOCK(sk) hc_traced(sk)

#ifdef HAVE_inet_sock_set_state
/* Every state change of a traced socket (since 4.16):
 * inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate). */
int tp_inet_sock_set_state(struct bpf_raw_tracepoint_args *ctx)
{
	const void *sk = (const void *)ctx->args[0];
	struct hc_event e = {};

	if (!hc_traced(sk) || hc_sk_protocol(sk) != 6 /* IPPROTO_TCP */)
		return 0;
	hc_fill(&e, HC_SET_STATE, sk);
	/* The tracepoint fires before the store (inet_sk_state_store, net/ipv4/af_inet.c):
	 * the new state comes from its arguments, not from the socket. */
	e.old_state = (u8)ctx->args[1];
	e.state = (u8)ctx->args[2];
	hc_record_ports(sk, &e.sport, &e.dport); /* skc_num is already 0 when it moves to CLOSE */
	hc_submit(&e);
	return 0;
}
#endif

#ifdef HAVE_net_dev_start_xmit
/* Every TCP segment sent in the traced namespace, as the article's tcpdump
 * saw them; loopback delivers each one it sends.
 * net_dev_start_xmit(const struct sk_buff *skb, const struct net_device *dev). */
int tp_net_dev_start_xmit(struct bpf_raw_tracepoint_args *ctx)
{
	const void *skb = (const void *)ctx->args[0];
	u32 want = hc_target_netns();
	struct hc_event e = {};

	if (!want || hc_skb_netns(skb) != want)
		return 0;
	hc_fill(&e, HC_PACKET, 0);
	if (!hc_read_tcp(&e, skb))
		return 0;
	hc_submit(&e);
	hc_capture(skb, &e, want); /* its bytes, for --pcap (bpf/shared/capture.bpf.c) */
	return 0;
}
#endif

#ifdef HAVE_signal_generate
/* Signals generated for the client (SIGPIPE from sk_stream_error's send_sig).
 * signal_generate(int sig, struct kernel_siginfo *info, struct task_struct *task,
 * int group, int result); the record's pid was task->pid. */
int tp_signal_generate(struct bpf_raw_tracepoint_args *ctx)
{
	u32 pid = hc_target_pid();
	struct hc_event e = {};

	if (!pid || hc_task_pid((const void *)ctx->args[2]) != pid)
		return 0;
	hc_fill(&e, HC_SIGNAL, 0);
	e.value = (int)ctx->args[0];
	e.fd = (int)ctx->args[4];
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
