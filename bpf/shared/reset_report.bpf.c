/* shared/reset_report.bpf.c: the RST a socket receives, and the error it then
 * reports, for the tracepoint texts of both modes. Each mode's common part
 * defines HC_RESET_SOCK(sk): whether that socket is traced (the reproduction's
 * namespace, or the watch's filter).
 *
 * sock:inet_sk_error_report's record has ports and no socket, and the host may
 * use the same ports. After an RST it runs within tcp_reset, on the same CPU
 * (tcp_reset -> tcp_done_with_error -> sk_error_report, net/ipv4/tcp_input.c,
 * 6.1.192 and 6.12.117; docs/kernel-source.md item 3): so a report is the
 * traced socket's when tcp:tcp_receive_reset just ran on that socket on this
 * CPU and the socket's ports are the record's. Any other report is not ours.
 *
 * Kernel: tcp:tcp_receive_reset (4.16+), sock:inet_sk_error_report (5.15+).
 */

BPF_PERCPU_ARRAY(last_reset, u64, 1); /* the traced socket tcp_reset runs on, on this CPU */

/* tcp_reset's first statement (net/ipv4/tcp_input.c, 6.1+): state and sk_err at entry. */
TRACEPOINT_PROBE(tcp, tcp_receive_reset)
{
	int zero = 0;
	u64 *last = last_reset.lookup(&zero);

	if (!HC_RESET_SOCK(args->skaddr))
		return 0;
	if (last)
		*last = (u64)args->skaddr;
	return hc_emit(HC_RESET_TP, args->skaddr, 0);
}

#ifdef HAVE_inet_sk_error_report
/* sk_error_report() (net/core/sock.c): the error just stored in sk_err. */
TRACEPOINT_PROBE(sock, inet_sk_error_report)
{
	int zero = 0;
	u64 *last = last_reset.lookup(&zero);
	const void *sk;
	u16 sport = 0, dport = 0;
	struct hc_event e = {};

	if (args->protocol != 6 /* IPPROTO_TCP */ || !last || !*last)
		return 0;
	sk = (const void *)*last; /* filtered when its RST came: the filter is not asked again,
				   * a port filter could fail on the now unhashed socket */
	*last = 0;
	/* The local port may already be 0 (tcp_done unhashed the socket). */
	bpf_probe_read_kernel(&sport, sizeof(sport), (const char *)sk + OFF_SKC_NUM);
	bpf_probe_read_kernel(&dport, sizeof(dport), (const char *)sk + OFF_SKC_DPORT);
	if (__builtin_bswap16(dport) != args->dport || (sport && sport != args->sport))
		return 0;
	hc_fill(&e, HC_ERROR_REPORT, sk);
	e.value = args->error;
	e.sport = args->sport; /* the record's: the socket's local port may be 0 by now */
	e.dport = args->dport;
	hc_submit(&e);
	return 0;
}
#endif
