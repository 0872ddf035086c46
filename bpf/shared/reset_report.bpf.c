/* shared/reset_report.bpf.c: the RST a socket receives, and the error it then
 * reports, for the tracepoint texts of both modes. Each mode's common part
 * defines HC_RESET_SOCK(sk): whether that socket is traced (the reproduction's
 * namespace, or the watch's filter).
 *
 * An error report is kept only when it follows an RST: it runs within
 * tcp_reset, on the same CPU (tcp_reset -> tcp_done_with_error ->
 * sk_error_report, net/ipv4/tcp_input.c, 6.1.192 and 6.12.117;
 * docs/kernel-source.md item 3), so a report is the traced socket's RST error
 * when tcp:tcp_receive_reset just ran on this CPU on the very socket the report
 * is for. The filter is not asked again at the report: the watch's port filter
 * could fail on a socket tcp_done has just unhashed.
 *
 * Raw tracepoint programs (tracer/collect/bpf.py attaches them):
 * tcp_receive_reset(struct sock *sk), inet_sk_error_report(const struct sock *sk)
 * (include/trace/events/{tcp,sock}.h, 6.1 and 6.12).
 *
 * Kernel: tcp:tcp_receive_reset (4.16+), sock:inet_sk_error_report (5.15+).
 */

BPF_PERCPU_ARRAY(last_reset, u64, 1); /* the traced socket tcp_reset runs on, on this CPU */

/* tcp_reset's first statement (net/ipv4/tcp_input.c, 6.1+): state and sk_err at entry. */
int tp_tcp_receive_reset(struct bpf_raw_tracepoint_args *ctx)
{
	const void *sk = (const void *)ctx->args[0];
	int zero = 0;
	u64 *last = last_reset.lookup(&zero);

	if (!HC_RESET_SOCK(sk))
		return 0;
	if (last)
		*last = (u64)sk;
	return hc_emit(HC_RESET_TP, sk, 0);
}

#ifdef HAVE_inet_sk_error_report
/* sk_error_report() (net/core/sock.c): the error just stored in sk_err. */
int tp_inet_sk_error_report(struct bpf_raw_tracepoint_args *ctx)
{
	const void *sk = (const void *)ctx->args[0];
	int zero = 0;
	u64 *last = last_reset.lookup(&zero);
	struct hc_event e = {};

	if (!last || !*last || *last != (u64)sk)
		return 0;
	*last = 0;
	hc_fill(&e, HC_ERROR_REPORT, sk);
	e.value = e.sk_err; /* the record's error was sk->sk_err when it fired */
	hc_record_ports(sk, &e.sport, &e.dport); /* its ports: skc_num may be 0 by now (tcp_done unhashed it) */
	hc_submit(&e);
	return 0;
}
#endif
