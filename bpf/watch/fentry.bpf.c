/* watch/fentry.bpf.c: the watch's fentry/fexit programs: the write path, and
 * the write-like calls where each gets its fd.
 *
 * bcc attaches them at load, so each optional one is compiled only when its
 * function exists (HAVE_<function>: in /proc/kallsyms and in BTF). A return
 * is reported when its entry passed the filter (shared/stash.bpf.c).
 *
 * Kernel: BTF and BPF trampolines (5.5+); refused on some kernels (EPERM).
 */
KFUNC_PROBE(tcp_sendmsg_locked, void *sk, void *msg, size_t size)
{
	return hc_watch_sendmsg(sk, (s64)size);
}

KRETFUNC_PROBE(tcp_sendmsg_locked, void *sk, void *msg, size_t size, int ret)
{
	return hc_return(HC_SENDMSG_ENTER, HC_SENDMSG_RETURN, ret);
}

#ifdef HAVE_sk_stream_wait_connect
KFUNC_PROBE(sk_stream_wait_connect, void *sk, long *timeo_p)
{
	return hc_watch_entry(HC_WAIT_CONNECT_ENTER, sk, 0, 1, 1);
}

KRETFUNC_PROBE(sk_stream_wait_connect, void *sk, long *timeo_p, int ret)
{
	return hc_return(HC_WAIT_CONNECT_ENTER, HC_WAIT_CONNECT_RETURN, ret);
}
#endif

#ifdef HAVE_sk_stream_error
KFUNC_PROBE(sk_stream_error, void *sk, int flags, int err)
{
	return hc_watch_entry(HC_STREAM_ERROR_ENTER, sk, err, 1, 1);
}

KRETFUNC_PROBE(sk_stream_error, void *sk, int flags, int err, int ret)
{
	return hc_return(HC_STREAM_ERROR_ENTER, HC_STREAM_ERROR_RETURN, ret);
}
#endif

KFUNC_PROBE(tcp_reset, void *sk)
{
	return hc_watch_entry(HC_TCP_RESET, sk, 0, 0, 0);
}

#ifdef HAVE_tcp_done_with_error
KFUNC_PROBE(tcp_done_with_error, void *sk, int err)
{
	return hc_watch_entry(HC_DONE_WITH_ERROR, sk, err, 0, 0);
}
#endif

KFUNC_PROBE(tcp_done, void *sk)
{
	return hc_watch_entry(HC_TCP_DONE, sk, 0, 0, 1);
}

KRETFUNC_PROBE(tcp_done, void *sk)
{
	return hc_return(HC_TCP_DONE, HC_TCP_DONE_RETURN, 0);
}

#ifdef HAVE_tcp_fin
KFUNC_PROBE(tcp_fin, void *sk)
{
	return hc_watch_entry(HC_TCP_FIN, sk, 0, 0, 1);
}

KRETFUNC_PROBE(tcp_fin, void *sk)
{
	return hc_return(HC_TCP_FIN, HC_TCP_FIN_RETURN, 0);
}
#endif

/* The write-like calls (signatures as in watch/kprobe.bpf.c): fexit sees
 * every argument before the return value, so all are declared. */
#ifdef HAVE_ksys_write
KFUNC_PROBE(ksys_write, unsigned int fd, const char *buf, size_t count)
{
	return hc_watch_call_start(HC_CALL_WRITE, (s32)fd);
}

KRETFUNC_PROBE(ksys_write, unsigned int fd, const char *buf, size_t count, long ret)
{
	return hc_watch_call_end(ret);
}
#endif

#ifdef HAVE___sys_sendto
KFUNC_PROBE(__sys_sendto, int fd, void *buff, size_t len, unsigned int flags, void *addr, int addr_len)
{
	return hc_watch_call_start(HC_CALL_SENDTO, fd);
}

KRETFUNC_PROBE(__sys_sendto, int fd, void *buff, size_t len, unsigned int flags, void *addr, int addr_len, int ret)
{
	return hc_watch_call_end(ret);
}
#endif

#ifdef HAVE___sys_sendmsg
KFUNC_PROBE(__sys_sendmsg, int fd, void *msg, unsigned int flags, bool forbid_cmsg_compat)
{
	return hc_watch_call_start(HC_CALL_SENDMSG, fd);
}

KRETFUNC_PROBE(__sys_sendmsg, int fd, void *msg, unsigned int flags, bool forbid_cmsg_compat, long ret)
{
	return hc_watch_call_end(ret);
}
#endif

#ifdef HAVE_do_writev
KFUNC_PROBE(do_writev, unsigned long fd, void *vec, unsigned long vlen, int flags)
{
	return hc_watch_call_start(HC_CALL_WRITEV, (s32)fd);
}

KRETFUNC_PROBE(do_writev, unsigned long fd, void *vec, unsigned long vlen, int flags, long ret)
{
	return hc_watch_call_end(ret);
}
#endif
