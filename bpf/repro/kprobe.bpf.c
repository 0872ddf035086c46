/* repro/kprobe.bpf.c: the reproduction's kprobes on the functions of the
 * write path, of the RST's sender and of reads.
 *
 * User space attaches each program (tracer/collect/bpf.py, from the rows of
 * tracer/collect/plan.py), so a function missing from /proc/kallsyms is simply
 * not attached. The returns of the write path are in shared/kretprobes.bpf.c.
 *
 * Kernel: CONFIG_KPROBES (Debian's 6.1 and 6.12 have it).
 */

/* Entry of a traced socket; remember: its return is reported too. */
static __always_inline int hc_enter(u32 kind, const void *sk, s64 value, int remember)
{
	if (!hc_traced(sk))
		return 0;
	if (remember)
		hc_stash(kind, sk);
	return hc_emit(kind, sk, value);
}

/* int tcp_sendmsg_locked(struct sock *sk, struct msghdr *msg, size_t size) */
int sendmsg_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_SENDMSG_ENTER, (void *)PT_REGS_PARM1(ctx), (s64)PT_REGS_PARM3(ctx), 1);
}

/* int sk_stream_wait_connect(struct sock *sk, long *timeo_p) */
int wait_connect_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_WAIT_CONNECT_ENTER, (void *)PT_REGS_PARM1(ctx), 0, 1);
}

/* int sk_stream_error(struct sock *sk, int flags, int err) */
int stream_error_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_STREAM_ERROR_ENTER, (void *)PT_REGS_PARM1(ctx), (s64)(int)PT_REGS_PARM3(ctx), 1);
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

/* void tcp_fin(struct sock *sk) */
int fin_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_TCP_FIN, (void *)PT_REGS_PARM1(ctx), 0, 1);
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
