/* repro/kprobe.bpf.c: the reproduction's kprobes on the functions of the
 * write path, of the RST's sender and of reads.
 *
 * User space attaches each program (tracer/collect/bpf.py, from the rows of
 * tracer/collect/plan.py), so a function missing from /proc/kallsyms is simply
 * not attached. The returns of the write path are in shared/kretprobes.bpf.c.
 * Arguments are read at the positions the running kernel's BTF gives
 * (HC_KARG: args.h); a program of an optional function is compiled only when
 * the plan has it (HAVE_<function>), which defines its positions.
 *
 * Kernel: CONFIG_KPROBES (Debian's 6.1 and 6.12 have it).
 */
#include "args.h"

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
	return hc_enter(HC_SENDMSG_ENTER, (void *)HC_KARG(tcp_sendmsg_locked, sk),
			(s64)HC_KARG(tcp_sendmsg_locked, size), 1);
}

#ifdef HAVE_sk_stream_wait_connect
/* int sk_stream_wait_connect(struct sock *sk, long *timeo_p) */
int wait_connect_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_WAIT_CONNECT_ENTER, (void *)HC_KARG(sk_stream_wait_connect, sk), 0, 1);
}
#endif

#ifdef HAVE_sk_stream_error
/* int sk_stream_error(struct sock *sk, int flags, int err) */
int stream_error_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_STREAM_ERROR_ENTER, (void *)HC_KARG(sk_stream_error, sk),
			(s64)(int)HC_KARG(sk_stream_error, err), 1);
}
#endif

/* void tcp_reset(struct sock *sk) until 5.10, (sk, skb) since 5.11: sk either way. */
int reset_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_TCP_RESET, (void *)HC_KARG(tcp_reset, sk), 0, 0);
}

#ifdef HAVE_tcp_done_with_error
/* void tcp_done_with_error(struct sock *sk, int err): mainline 6.11, in stable 6.10.y, 6.6.44, 6.1.103 */
int done_with_error_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_DONE_WITH_ERROR, (void *)HC_KARG(tcp_done_with_error, sk),
			(s64)(int)HC_KARG(tcp_done_with_error, err), 0);
}
#endif

/* void tcp_done(struct sock *sk) */
int done_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_TCP_DONE, (void *)HC_KARG(tcp_done, sk), 0, 1);
}

#ifdef HAVE_tcp_fin
/* void tcp_fin(struct sock *sk) */
int fin_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_TCP_FIN, (void *)HC_KARG(tcp_fin, sk), 0, 1);
}
#endif

#ifdef HAVE_tcp_v4_send_reset
/* void tcp_v4_send_reset(const struct sock *sk, struct sk_buff *skb[, enum sk_rst_reason reason]) */
int send_reset_v4_enter(struct pt_regs *ctx)
{
	return hc_send_reset((void *)HC_KARG(tcp_v4_send_reset, sk), (void *)HC_KARG(tcp_v4_send_reset, skb));
}
#endif

#ifdef HAVE_tcp_v6_send_reset
/* void tcp_v6_send_reset(const struct sock *sk, struct sk_buff *skb[, enum sk_rst_reason reason]) */
int send_reset_v6_enter(struct pt_regs *ctx)
{
	return hc_send_reset((void *)HC_KARG(tcp_v6_send_reset, sk), (void *)HC_KARG(tcp_v6_send_reset, skb));
}
#endif

#ifdef HAVE_tcp_send_active_reset
/* void tcp_send_active_reset(struct sock *sk, ...): what follows sk changed in 6.10 and 6.12 */
int active_reset_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_ACTIVE_RESET, (void *)HC_KARG(tcp_send_active_reset, sk), 0, 0);
}
#endif

#ifdef HAVE_sk_getsockopt
/* int sk_getsockopt(struct sock *sk, int level, int optname, sockptr_t optval, sockptr_t optlen)
 * (net/core/sock.c): SO_ERROR returns -sock_error(sk), the sk_err seen here, and clears it. */
int getsockopt_enter(struct pt_regs *ctx)
{
	if ((int)HC_KARG(sk_getsockopt, optname) != 4 /* SO_ERROR */)
		return 0;
	return hc_enter(HC_GETSOCKOPT_ENTER, (void *)HC_KARG(sk_getsockopt, sk), 4, 0);
}
#endif

#ifdef HAVE_tcp_recvmsg
/* int tcp_recvmsg(struct sock *sk, struct msghdr *msg, size_t len, ...) */
int recvmsg_enter(struct pt_regs *ctx)
{
	return hc_enter(HC_RECVMSG_ENTER, (void *)HC_KARG(tcp_recvmsg, sk), (s64)HC_KARG(tcp_recvmsg, len), 1);
}

int recvmsg_return(struct pt_regs *ctx)
{
	return hc_return(HC_RECVMSG_ENTER, HC_RECVMSG_RETURN, (s64)(int)PT_REGS_RC(ctx));
}
#endif
