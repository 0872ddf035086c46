/* repro/fentry.bpf.c: the reproduction's fentry/fexit programs, on the same
 * functions as repro/kprobe.bpf.c: arguments and return value together, no
 * stash map.
 *
 * bcc attaches KFUNC_PROBE/KRETFUNC_PROBE programs at load, so each optional
 * one is compiled only when its function exists (HAVE_<function>, defined by
 * tracer/collect/plan.py for those in /proc/kallsyms and BTF). Each program is
 * declared without arguments and reads only the slots it needs, at the
 * positions the running kernel's BTF gives (HC_FARG, HC_FRET: args.h).
 *
 * Kernel: BTF and BPF trampolines (5.5+); refused on some kernels, e.g. the
 * 6.18 microVMs (EPERM), where auto falls back to tracepoints.
 */
#include "args.h"

static __always_inline int hc_fentry(u32 kind, const void *sk, s64 value)
{
	if (!hc_traced(sk))
		return 0;
	return hc_emit(kind, sk, value);
}

/* int tcp_sendmsg_locked(struct sock *sk, struct msghdr *msg, size_t size) */
KFUNC_PROBE(tcp_sendmsg_locked)
{
	return hc_fentry(HC_SENDMSG_ENTER, (void *)HC_FARG(tcp_sendmsg_locked, sk),
			 (s64)HC_FARG(tcp_sendmsg_locked, size));
}

KRETFUNC_PROBE(tcp_sendmsg_locked)
{
	return hc_fentry(HC_SENDMSG_RETURN, (void *)HC_FARG(tcp_sendmsg_locked, sk),
			 (s64)(int)HC_FRET(tcp_sendmsg_locked));
}

#ifdef HAVE_sk_stream_wait_connect
/* int sk_stream_wait_connect(struct sock *sk, long *timeo_p) */
KFUNC_PROBE(sk_stream_wait_connect)
{
	return hc_fentry(HC_WAIT_CONNECT_ENTER, (void *)HC_FARG(sk_stream_wait_connect, sk), 0);
}

KRETFUNC_PROBE(sk_stream_wait_connect)
{
	return hc_fentry(HC_WAIT_CONNECT_RETURN, (void *)HC_FARG(sk_stream_wait_connect, sk),
			 (s64)(int)HC_FRET(sk_stream_wait_connect));
}
#endif

#ifdef HAVE_sk_stream_error
/* int sk_stream_error(struct sock *sk, int flags, int err) */
KFUNC_PROBE(sk_stream_error)
{
	return hc_fentry(HC_STREAM_ERROR_ENTER, (void *)HC_FARG(sk_stream_error, sk),
			 (s64)(int)HC_FARG(sk_stream_error, err));
}

KRETFUNC_PROBE(sk_stream_error)
{
	return hc_fentry(HC_STREAM_ERROR_RETURN, (void *)HC_FARG(sk_stream_error, sk),
			 (s64)(int)HC_FRET(sk_stream_error));
}
#endif

/* void tcp_reset(struct sock *sk) until 5.10, (sk, skb) since 5.11 */
KFUNC_PROBE(tcp_reset)
{
	return hc_fentry(HC_TCP_RESET, (void *)HC_FARG(tcp_reset, sk), 0);
}

#ifdef HAVE_tcp_done_with_error
/* void tcp_done_with_error(struct sock *sk, int err): mainline 6.11, stable 6.10.y, 6.6.44, 6.1.103 */
KFUNC_PROBE(tcp_done_with_error)
{
	return hc_fentry(HC_DONE_WITH_ERROR, (void *)HC_FARG(tcp_done_with_error, sk),
			 (s64)(int)HC_FARG(tcp_done_with_error, err));
}
#endif

/* void tcp_done(struct sock *sk) */
KFUNC_PROBE(tcp_done)
{
	return hc_fentry(HC_TCP_DONE, (void *)HC_FARG(tcp_done, sk), 0);
}

KRETFUNC_PROBE(tcp_done)
{
	return hc_fentry(HC_TCP_DONE_RETURN, (void *)HC_FARG(tcp_done, sk), 0);
}

#ifdef HAVE_tcp_fin
/* void tcp_fin(struct sock *sk) */
KFUNC_PROBE(tcp_fin)
{
	return hc_fentry(HC_TCP_FIN, (void *)HC_FARG(tcp_fin, sk), 0);
}

KRETFUNC_PROBE(tcp_fin)
{
	return hc_fentry(HC_TCP_FIN_RETURN, (void *)HC_FARG(tcp_fin, sk), 0);
}
#endif

#ifdef HAVE_tcp_v4_send_reset
/* void tcp_v4_send_reset(const struct sock *sk, struct sk_buff *skb[, enum sk_rst_reason reason]) */
KFUNC_PROBE(tcp_v4_send_reset)
{
	return hc_send_reset((void *)HC_FARG(tcp_v4_send_reset, sk), (void *)HC_FARG(tcp_v4_send_reset, skb));
}
#endif

#ifdef HAVE_tcp_v6_send_reset
/* void tcp_v6_send_reset(const struct sock *sk, struct sk_buff *skb[, enum sk_rst_reason reason]) */
KFUNC_PROBE(tcp_v6_send_reset)
{
	return hc_send_reset((void *)HC_FARG(tcp_v6_send_reset, sk), (void *)HC_FARG(tcp_v6_send_reset, skb));
}
#endif

#ifdef HAVE_tcp_send_active_reset
/* void tcp_send_active_reset(struct sock *sk, ...): what follows sk changed in 6.10 and 6.12 */
KFUNC_PROBE(tcp_send_active_reset)
{
	return hc_fentry(HC_ACTIVE_RESET, (void *)HC_FARG(tcp_send_active_reset, sk), 0);
}
#endif

/* sk_getsockopt is not traced with fentry: its sockptr_t arguments are structs passed by value,
 * which Debian 6.1's trampoline refuses (attaching fails with ENOTSUPP, 524; seen in the VM). */

#ifdef HAVE_tcp_recvmsg
/* int tcp_recvmsg(struct sock *sk, struct msghdr *msg, size_t len, ...): 6 arguments
 * until 5.18 (nonblock), 5 from 5.19, 4 on 6.18: the return value's slot from BTF. */
KFUNC_PROBE(tcp_recvmsg)
{
	return hc_fentry(HC_RECVMSG_ENTER, (void *)HC_FARG(tcp_recvmsg, sk), (s64)HC_FARG(tcp_recvmsg, len));
}

KRETFUNC_PROBE(tcp_recvmsg)
{
	return hc_fentry(HC_RECVMSG_RETURN, (void *)HC_FARG(tcp_recvmsg, sk), (s64)(int)HC_FRET(tcp_recvmsg));
}
#endif
