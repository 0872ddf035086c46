/* repro/fentry.bpf.c: the reproduction's fentry/fexit programs, on the same
 * functions as repro/kprobe.bpf.c: arguments and return value together, no
 * stash map.
 *
 * bcc attaches KFUNC_PROBE/KRETFUNC_PROBE programs at load, so each optional
 * one is compiled only when its function exists (HAVE_<function>, defined by
 * tracer/collect/plan.py for those in /proc/kallsyms and BTF).
 *
 * Kernel: BTF and BPF trampolines (5.5+); refused on some kernels, e.g. the
 * 6.18 microVMs (EPERM), where auto falls back to tracepoints.
 */
static __always_inline int hc_fentry(u32 kind, const void *sk, s64 value)
{
	if (!hc_traced(sk))
		return 0;
	return hc_emit(kind, sk, value);
}

KFUNC_PROBE(tcp_sendmsg_locked, void *sk, void *msg, size_t size)
{
	return hc_fentry(HC_SENDMSG_ENTER, sk, (s64)size);
}

KRETFUNC_PROBE(tcp_sendmsg_locked, void *sk, void *msg, size_t size, int ret)
{
	return hc_fentry(HC_SENDMSG_RETURN, sk, ret);
}

#ifdef HAVE_sk_stream_wait_connect
KFUNC_PROBE(sk_stream_wait_connect, void *sk, long *timeo_p)
{
	return hc_fentry(HC_WAIT_CONNECT_ENTER, sk, 0);
}

KRETFUNC_PROBE(sk_stream_wait_connect, void *sk, long *timeo_p, int ret)
{
	return hc_fentry(HC_WAIT_CONNECT_RETURN, sk, ret);
}
#endif

#ifdef HAVE_sk_stream_error
KFUNC_PROBE(sk_stream_error, void *sk, int flags, int err)
{
	return hc_fentry(HC_STREAM_ERROR_ENTER, sk, err);
}

KRETFUNC_PROBE(sk_stream_error, void *sk, int flags, int err, int ret)
{
	return hc_fentry(HC_STREAM_ERROR_RETURN, sk, ret);
}
#endif

KFUNC_PROBE(tcp_reset, void *sk)
{
	return hc_fentry(HC_TCP_RESET, sk, 0);
}

#ifdef HAVE_tcp_done_with_error
KFUNC_PROBE(tcp_done_with_error, void *sk, int err)
{
	return hc_fentry(HC_DONE_WITH_ERROR, sk, err);
}
#endif

KFUNC_PROBE(tcp_done, void *sk)
{
	return hc_fentry(HC_TCP_DONE, sk, 0);
}

KRETFUNC_PROBE(tcp_done, void *sk)
{
	return hc_fentry(HC_TCP_DONE_RETURN, sk, 0);
}

#ifdef HAVE_tcp_fin
KFUNC_PROBE(tcp_fin, void *sk)
{
	return hc_fentry(HC_TCP_FIN, sk, 0);
}

KRETFUNC_PROBE(tcp_fin, void *sk)
{
	return hc_fentry(HC_TCP_FIN_RETURN, sk, 0);
}
#endif

#ifdef HAVE_tcp_v4_send_reset
KFUNC_PROBE(tcp_v4_send_reset, void *sk, void *skb)
{
	return hc_send_reset(sk, skb);
}
#endif

#ifdef HAVE_tcp_v6_send_reset
KFUNC_PROBE(tcp_v6_send_reset, void *sk, void *skb)
{
	return hc_send_reset(sk, skb);
}
#endif

#ifdef HAVE_tcp_send_active_reset
KFUNC_PROBE(tcp_send_active_reset, void *sk)
{
	return hc_fentry(HC_ACTIVE_RESET, sk, 0);
}
#endif

#ifdef HAVE_tcp_recvmsg
/* int tcp_recvmsg(sk, msg, len, flags, addr_len): five arguments since 5.19 */
KFUNC_PROBE(tcp_recvmsg, void *sk, void *msg, size_t len)
{
	return hc_fentry(HC_RECVMSG_ENTER, sk, (s64)len);
}

KRETFUNC_PROBE(tcp_recvmsg, void *sk, void *msg, size_t len, int flags, int *addr_len, int ret)
{
	return hc_fentry(HC_RECVMSG_RETURN, sk, ret);
}
#endif
