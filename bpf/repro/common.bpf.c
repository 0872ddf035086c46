/* repro/common.bpf.c: the reproduction's filter, and the programs all three of
 * its backends share: state changes, packets, signals, and the RST's sender.
 *
 * Every program first checks that its socket (or packet) belongs to the
 * reproduction's network namespace; the client's syscalls and signals are
 * matched by its pid. Tracepoints the kernel may lack are compiled only with
 * HAVE_<tracepoint> (bcc attaches TRACEPOINT_PROBEs at load), which
 * tracer/collect/plan.py defines for those it found in tracefs.
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

#ifdef HAVE_net_dev_start_xmit
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
	hc_capture(args->skbaddr, &e, want); /* its bytes, for --pcap (bpf/shared/capture.bpf.c) */
	return 0;
}
#endif

#ifdef HAVE_signal_generate
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
