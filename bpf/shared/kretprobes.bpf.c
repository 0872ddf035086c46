/* shared/kretprobes.bpf.c: the return programs of the write path's kprobes,
 * the same in both modes: each reports on the socket its entry stashed
 * (shared/stash.bpf.c), and only then. The entries are the mode's own
 * (repro/kprobe.bpf.c, watch/kprobe.bpf.c): they filter differently.
 *
 * Kernel: CONFIG_KPROBES; signatures as in the entries' comments.
 */

int sendmsg_return(struct pt_regs *ctx)
{
	return hc_return(HC_SENDMSG_ENTER, HC_SENDMSG_RETURN, (s64)(int)PT_REGS_RC(ctx));
}

int wait_connect_return(struct pt_regs *ctx)
{
	return hc_return(HC_WAIT_CONNECT_ENTER, HC_WAIT_CONNECT_RETURN, (s64)(int)PT_REGS_RC(ctx));
}

int stream_error_return(struct pt_regs *ctx)
{
	return hc_return(HC_STREAM_ERROR_ENTER, HC_STREAM_ERROR_RETURN, (s64)(int)PT_REGS_RC(ctx));
}

int done_return(struct pt_regs *ctx)
{
	return hc_return(HC_TCP_DONE, HC_TCP_DONE_RETURN, 0);
}

int fin_return(struct pt_regs *ctx)
{
	return hc_return(HC_TCP_FIN, HC_TCP_FIN_RETURN, 0);
}
